// Preloaded (`node --import`) into a bench child to count the files it opens, by name, and the
// time spent opening, reading and closing them: what a backend's sampling costs in a real run.
// Writes `{ <basename>: { opens, reads, ms, callers? } }` to $MP_COUNT_FILES when the process exits,
// counted from $MP_COUNT_AFTER_MS after start (the end of a warm-up); with MP_COUNT_CALLERS=1 each
// cgroup file also says which functions opened it (every open's stack, five frames, by count).

import fs from 'node:fs'
import path from 'node:path'
import { syncBuiltinESMExports } from 'node:module'
import { performance } from 'node:perf_hooks'
import { getHeapStatistics } from 'node:v8'

const out = process.env.MP_COUNT_FILES
const counts = {}
const fds = new Map()
let on = true
const from = Number(process.env.MP_COUNT_AFTER_MS ?? 0)
const live = () => on && performance.now() >= from
const callers = process.env.MP_COUNT_CALLERS === '1'
const trace = []
const caller = () => {
  const frames = (new Error().stack ?? '').split('\n').slice(1).map((l) => l.trim().replace(/^at /, ''))
    .filter((l) => !l.includes('count-files.mjs') && !l.includes('/cgroup/files.js'))
  return frames.slice(0, 5).map((l) => l.replace(/ \(.*\/(dist|src)\//, ' (').replace(/:\d+\)$/, ')')).join(' < ')
}
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
  if (callers && name.startsWith('memory.')) {
    const c = (entry(name).callers ??= {})
    const key = caller()
    c[key] = (c[key] ?? 0) + 1
  }
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
    const r = timed(name, () => orig.call(this, fd, ...rest))
    // With callers: what each memory.current read found, beside V8's own counters then (ms, bytes, bytes).
    if (callers && key === 'readSync' && name === 'memory.current' && r > 0 && trace.length < 20000) {
      const h = getHeapStatistics()
      trace.push([Math.round(performance.now()), Number(rest[0].toString('latin1', 0, r)), h.total_heap_size + h.external_memory])
    }
    return r
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
  if (callers) counts['memory.current'] && (counts['memory.current'].trace = trace)
  if (out) fs.writeFileSync(out, JSON.stringify(counts))
})
