// How long a v1 threshold registration blocks the event loop: 20 registrations through the SDK
// (the cgroup.event_control write goes to the threadpool) side by side with the same 20 written
// synchronously (fs.writeSync, as the SDK did before), in rounds that alternate the two, on a
// v1 cgroup below this process's own. The longest gap between 1 ms timer ticks around each batch
// is the stall; a window of the same length with no registration says what scheduling alone does. `node bench/registration-stall.mjs [--rounds N] [--json]`

import fs from 'node:fs'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import { CgroupV1Backend } from '../dist/index.js'
import { loadNative } from '../dist/native.js'
import { MiB, makeCgroup, removeAll } from './lib/cgroup.mjs'
import { median } from './lib/report.mjs'

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '5' }, json: { type: 'boolean', default: false } } })
const rounds = Number(values.rounds)
if (!Number.isSafeInteger(rounds) || rounds <= 0) throw new RangeError(`--rounds must be a positive integer (received ${values.rounds})`)
const N = 20

/** Runs `batch`, ticking a 1 ms timer until `done` resolves; returns the longest gap between ticks and the batch's time (ms). */
async function stall(batch) {
  let last = performance.now()
  let longest = 0
  const timer = setInterval(() => {
    const now = performance.now()
    longest = Math.max(longest, now - last)
    last = now
  }, 1)
  await new Promise((r) => setTimeout(r, 20))
  last = performance.now()
  longest = 0
  const t0 = performance.now()
  await batch()
  const ms = performance.now() - t0
  await new Promise((r) => setTimeout(r, 5))
  clearInterval(timer)
  return { longest: Math.max(longest, performance.now() - last), ms }
}

const native = loadNative()
const cg = makeCgroup({ limit: 256 * MiB, tag: 'regstall' })
const results = { sdk: [], sync: [], idle: [] }
/** Time of each registering call on the loop (ms). */
const calls = { sdk: [], sync: [], idle: [0] }
try {
  for (let round = 0; round < rounds; round++) {
    // 'idle': the same window with no registration, as long as the SDK's batch: what this
    // machine's scheduling alone makes of the 1 ms timer.
    const order = round % 2 === 0 ? ['sdk', 'sync', 'idle'] : ['idle', 'sync', 'sdk']
    for (const kind of order) {
      const backend = CgroupV1Backend.open({ cgroup: cg.dir, oom: false })
      const usage = backend.readUsage()
      const opened = []
      const r = await stall(async () => {
        if (kind === 'idle') {
          await new Promise((r) => setTimeout(r, 400))
          return
        }
        if (kind === 'sdk') {
          for (let i = 1; i <= N; i++) {
            const t = performance.now()
            opened.push(backend.watchThreshold(usage + i * MiB, () => {}))
            calls[kind].push(performance.now() - t)
          }
          await backend.idle()
          return
        }
        for (let i = 1; i <= N; i++) {
          const t = performance.now()
          const efd = native.eventfd()
          const tfd = fs.openSync(path.join(cg.dir, 'memory.usage_in_bytes'), 'r')
          const cfd = fs.openSync(path.join(cg.dir, 'cgroup.event_control'), 'w')
          fs.writeSync(cfd, `${efd} ${tfd} ${usage + i * MiB}`)
          fs.closeSync(tfd)
          fs.closeSync(cfd)
          opened.push({ close: () => native.close(efd) })
          calls[kind].push(performance.now() - t)
        }
      })
      for (const w of opened) w.close()
      backend.close()
      await backend.idle()
      results[kind].push(r)
    }
  }
} finally {
  await cg.remove()
  await removeAll()
}
const line = (kind) => {
  const xs = results[kind]
  const c = calls[kind]
  return `| ${{ sdk: 'the SDK (fs.write on the threadpool)', sync: 'fs.writeSync (before)', idle: 'none (400 ms of idle loop)' }[kind]} | ${median(c).toFixed(2)} | ${Math.max(...c).toFixed(2)} | ${median(xs.map((x) => x.longest)).toFixed(1)} | ${Math.max(...xs.map((x) => x.longest)).toFixed(1)} | ${median(xs.map((x) => x.ms)).toFixed(0)} |`
}
if (values.json) process.stdout.write(`${JSON.stringify({ node: process.version, registrations: N, results, calls })}\n`)
else {
  console.log(`${rounds} rounds of ${N} registrations each, alternating; ms`)
  console.log('| registrations | one call on the loop, median | one call, max | longest stall around 20 calls in a row, median | same, max | 20 registered, median |')
  console.log('| --- | ---: | ---: | ---: | ---: | ---: |')
  console.log(line('sdk'))
  console.log(line('sync'))
  console.log(line('idle'))
}
