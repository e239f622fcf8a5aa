// Soak: memory of a child in a limited cgroup v1 oscillates across two thresholds and the level
// points for a while; checks every crossing arrives in order, levels do not flap, and this watcher's
// own fds, libuv handles and heap stay flat. `node bench/soak.mjs [--duration-s 3600] [--json]`.

import fs from 'node:fs'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import v8 from 'node:v8'
import vm from 'node:vm'
import { createMemoryMonitor } from '../dist/index.js'
import { MiB, makeCgroup, removeAll } from './lib/cgroup.mjs'

const allocator = fileURLToPath(new URL('../test/helpers/allocator.mjs', import.meta.url))
const { values } = parseArgs({
  options: {
    'duration-s': { type: 'string', default: '3600' },
    'limit-mib': { type: 'string', default: '128' },
    'step-mib': { type: 'string', default: '4' },
    'sample-every': { type: 'string', default: '20' },
    json: { type: 'boolean', default: false },
  },
})
const durationS = Number(values['duration-s'])
const limit = Number(values['limit-mib']) * MiB
const step = Number(values['step-mib']) * MiB
const sampleEvery = Number(values['sample-every'])
for (const [name, v] of [['--duration-s', durationS], ['--limit-mib', limit], ['--step-mib', step], ['--sample-every', sampleEvery]]) {
  if (!Number.isFinite(v) || v <= 0) throw new RangeError(`${name} must be a positive number (received ${JSON.stringify(values[name.slice(2)])})`)
}

v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc')
const log = (s) => process.stderr.write(`${s}\n`)
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => void removeAll().finally(() => process.exit(130)))

/** This process's own footprint: open fds, libuv handles/requests, heap after a full GC, RSS. */
async function footprint() {
  // v1 registrations are written off the loop: count the fds once those in flight have landed
  // (a crossing delivered when one lands can re-arm the levels' watches: a few turns).
  for (let i = 0; i < 3; i++) {
    await monitor.registered()
    await new Promise((resolve) => setImmediate(resolve))
  }
  await monitor.registered()
  gc()
  gc()
  return {
    fds: fs.readdirSync('/proc/self/fd').length,
    resources: process.getActiveResourcesInfo().length,
    heapUsed: process.memoryUsage().heapUsed,
    rss: process.memoryUsage().rss,
  }
}

const cg = makeCgroup({ limit, tag: 'soak' })
const result = {
  limitBytes: limit, stepBytes: step, durationS, cycles: 0, crossings: 0,
  /** Per threshold: crossings whose direction repeated the previous one (a lost or reordered event). */
  outOfOrder: 0,
  /** Cycles in which a threshold crossed more than once each way (a bounce at the threshold). */
  extraCrossings: 0,
  missing: 0, nudges: 0, misses: [], anomalies: [], pressureEvents: 0, reliefEvents: 0, maxPressurePerCycle: 0, errors: [], samples: [],
  oomKills: 0, elapsedS: 0,
}
const started = Date.now()
let monitor
try {
  // One pending answer at a time, fed by onLine: waitLine() would keep a closure per command.
  let answered = null
  const child = cg.spawn([allocator], {
    env: { MALLOC_MMAP_THRESHOLD_: '65536' },
    onLine: (line) => { if (line.startsWith('ok ') || line === 'ready') answered?.(line) },
  })
  let childExit = null
  child.exited.then((e) => { childExit = e; answered?.(null) })
  const command = async (cmd) => {
    const line = await new Promise((resolve) => {
      answered = resolve
      if (cmd !== null) child.send(cmd)
    })
    answered = null
    if (line === null) throw new Error(`the allocator exited (${childExit.code ?? childExit.signal}): ${child.stderr().slice(-2000)}`)
  }
  await command(null)
  const thresholds = [0.4, 0.6].map((f) => Math.round(f * limit))
  monitor = createMemoryMonitor({
    backend: 'cgroup-v1',
    cgroup: cg.dir,
    thresholds: thresholds.map((t) => ({ threshold: t, direction: 'both' })),
    levels: { moderate: '50%', high: '70%', critical: '95%' },
    reduceHeap: false,
  })
  const last = new Map()
  const seen = []
  let waiter = null
  monitor.on('threshold', (e) => {
    if (e.initial) return
    result.crossings++
    if (last.get(e.threshold) === e.direction) result.outOfOrder++
    last.set(e.threshold, e.direction)
    seen.push(e)
    waiter?.()
  })
  let pressureThisCycle = 0
  monitor.on('pressure', () => { result.pressureEvents++; pressureThisCycle++ })
  monitor.on('relief', () => result.reliefEvents++)
  monitor.on('error', (err) => result.errors.push(err.code))
  /**
   * Waits until every threshold's last crossing is `direction`. memory.rst: thresholds are checked
   * every 128 page events per CPU, so when usage stops right after a crossing the event waits for
   * more page events: after 2 s a 2 MiB alloc/free supplies them (counted in `nudges`); after 10 s
   * more the crossing is counted as missing.
   */
  const settle = async (direction) => {
    const done = () => thresholds.every((t) => last.get(t) === direction)
    for (const [waitMs, nudge] of [[2_000, true], [10_000, false]]) {
      const deadline = Date.now() + waitMs
      while (!done() && Date.now() < deadline) {
        await new Promise((resolve) => {
          waiter = resolve
          setTimeout(resolve, 250).unref()
        })
      }
      if (done()) return
      if (nudge) {
        result.nudges++
        await command(`alloc ${2 * MiB}`)
        await command('free')
      }
    }
    const missed = thresholds.filter((t) => last.get(t) !== direction)
    result.missing += missed.length
    if (result.misses.length < 20) result.misses.push({ cycle: result.cycles, direction, thresholds: missed, usage: cg.usage() })
  }
  const baseline = await footprint()
  result.samples.push({ cycle: 0, ...baseline })
  const top = Math.round(0.8 * limit)
  const bottom = Math.round(0.2 * limit)
  while ((Date.now() - started) / 1000 < durationS) {
    const before = seen.length
    pressureThisCycle = 0
    let held = 0
    while (held + step <= top) {
      await command(`alloc ${step}`)
      held += step
    }
    await settle('up')
    while (held > bottom) {
      await command('free')
      held -= step
    }
    await command('freeall')
    await settle('down')
    result.cycles++
    const counts = new Map()
    for (const e of seen.slice(before)) counts.set(`${e.threshold}:${e.direction}`, (counts.get(`${e.threshold}:${e.direction}`) ?? 0) + 1)
    if ([...counts.values()].some((n) => n > 1)) result.extraCrossings++
    const expected = thresholds.flatMap((t) => [`${t}:up`, `${t}:down`])
    if (expected.some((k) => counts.get(k) !== 1) && result.anomalies.length < 20) {
      result.anomalies.push({ cycle: result.cycles, counts: Object.fromEntries(expected.map((k) => [k, counts.get(k) ?? 0])) })
    }
    result.maxPressurePerCycle = Math.max(result.maxPressurePerCycle, pressureThisCycle)
    seen.length = 0
    if (result.cycles % sampleEvery === 0) {
      const s = { cycle: result.cycles, elapsedS: Math.round((Date.now() - started) / 1000), ...(await footprint()) }
      result.samples.push(s)
      log(`cycle ${s.cycle} ${s.elapsedS}s crossings ${result.crossings} outOfOrder ${result.outOfOrder} missing ${result.missing} nudges ${result.nudges} fds ${s.fds} handles ${s.resources} heap ${(s.heapUsed / MiB).toFixed(2)} MiB rss ${(s.rss / MiB).toFixed(1)} MiB`)
    }
  }
  result.samples.push({ cycle: result.cycles, elapsedS: Math.round((Date.now() - started) / 1000), ...(await footprint()) })
  result.oomKills = cg.oomKills()
} finally {
  await monitor?.close()
  await cg.remove()
  await removeAll()
}
result.elapsedS = Math.round((Date.now() - started) / 1000)
// The first sample after warm-up (JIT, lazily created objects) is the baseline of growth.
const first = result.samples[Math.min(1, result.samples.length - 1)]
const end = result.samples[result.samples.length - 1]
result.growth = { fds: end.fds - first.fds, resources: end.resources - first.resources, heapUsed: end.heapUsed - first.heapUsed, rss: end.rss - first.rss }
if (values.json) process.stdout.write(`${JSON.stringify(result)}\n`)
else {
  log(`${result.cycles} cycles in ${result.elapsedS} s, ${result.crossings} crossings, ${result.outOfOrder} out of order, ${result.missing} missing, ${result.extraCrossings} cycles with a bounce`)
  log(`pressure events ${result.pressureEvents} (at most ${result.maxPressurePerCycle} in a cycle), relief ${result.reliefEvents}, errors ${result.errors.length}, OOM kills ${result.oomKills}`)
  log(`growth from the sample after warm-up (cycle ${first.cycle}) to the last: fds ${result.growth.fds}, handles ${result.growth.resources}, heap ${(result.growth.heapUsed / 1024).toFixed(0)} KiB, rss ${(result.growth.rss / MiB).toFixed(1)} MiB`)
  process.stdout.write(`${JSON.stringify(result)}\n`)
}
