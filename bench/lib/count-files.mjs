// Preloaded (`node --import`) into a bench child to count the files it opens, by name, and the
// time spent opening, reading and closing them: what a backend's sampling costs in a real run.
// Writes `{ <basename>: { opens, reads, ms } }` to $MP_COUNT_FILES when the process exits, counted
// from $MP_COUNT_AFTER_MS after start (the end of a warm-up).

import fs from 'node:fs'
import path from 'node:path'
import { syncBuiltinESMExports } from 'node:module'
import { performance } from 'node:perf_hooks'

const out = process.env.MP_COUNT_FILES
const counts = {}
const fds = new Map()
let on = true
const from = Number(process.env.MP_COUNT_AFTER_MS ?? 0)
const live = () => on && performance.now() >= from
const entry = (name) => (counts[name] ??= { opens: 0, reads: 0, ms: 0 })
const timed = (name, fn) => {
  const t = process.hrtime.bigint()
  try {
    return fn()
  } finally {
    entry(name).ms += Number(process.hrtime.bigint() - t) / 1e6
  }
}
const { openSync, readSync, fstatSync, closeSync, readFileSync } = fs
fs.openSync = function (p, ...rest) {
  if (!live() || typeof p !== 'string') return openSync.call(this, p, ...rest)
  const name = path.basename(p)
  entry(name).opens++
  const fd = timed(name, () => openSync.call(this, p, ...rest))
  fds.set(fd, name)
  return fd
}
for (const [key, orig] of [['readSync', readSync], ['fstatSync', fstatSync], ['closeSync', closeSync]]) {
  fs[key] = function (fd, ...rest) {
    const name = live() ? fds.get(fd) : undefined
    if (name === undefined) return orig.call(this, fd, ...rest)
    if (key === 'readSync') entry(name).reads++
    if (key === 'closeSync') fds.delete(fd)
    return timed(name, () => orig.call(this, fd, ...rest))
  }
}
fs.readFileSync = function (p, ...rest) {
  if (!live() || typeof p !== 'string') return readFileSync.call(this, p, ...rest)
  const name = path.basename(p)
  entry(name).opens++
  entry(name).reads++
  // readFileSync opens through fs.openSync: not counted twice.
  on = false
  try {
    return timed(name, () => readFileSync.call(this, p, ...rest))
  } finally {
    on = true
  }
}
syncBuiltinESMExports()
process.on('exit', () => {
  on = false
  if (out) fs.writeFileSync(out, JSON.stringify(counts))
})
