// Leak check: 10,000 subscribe/unsubscribe cycles and 1,000 monitor create/close cycles, on the
// simulated backend and on a real cgroup v1 cgroup, with this process's open fds, libuv handles
// and heap after a full GC sampled along the way. `node bench/leaks.mjs [--subscribe N] [--monitors N] [--json]`.

import fs from 'node:fs'
import { parseArgs } from 'node:util'
import v8 from 'node:v8'
import vm from 'node:vm'
import { createMemoryMonitor } from '../dist/index.js'
import { MiB, makeCgroup, removeAll } from './lib/cgroup.mjs'

const { values } = parseArgs({
  options: {
    subscribe: { type: 'string', default: '10000' },
    monitors: { type: 'string', default: '1000' },
    samples: { type: 'string', default: '10' },
    backends: { type: 'string', default: 'simulated,cgroup-v1' },
    json: { type: 'boolean', default: false },
  },
})
const subscribeCycles = Number(values.subscribe)
const monitorCycles = Number(values.monitors)
const samples = Number(values.samples)
for (const [name, v] of [['--subscribe', subscribeCycles], ['--monitors', monitorCycles], ['--samples', samples]]) {
  if (!Number.isSafeInteger(v) || v <= 0) throw new RangeError(`${name} must be a positive integer (received ${JSON.stringify(values[name.slice(2)])})`)
}
v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc')
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => void removeAll().finally(() => process.exit(130)))

/** Open fds, libuv handles and requests, heap used after two full GCs (bytes). */
async function footprint() {
  // Let closed handles finish closing (uv_close completes on the next loop turn).
  await new Promise((r) => setImmediate(r))
  gc()
  gc()
  // The setImmediate just above can still be listed: it is this script's, not the SDK's.
  const resources = process.getActiveResourcesInfo().filter((r) => r !== 'Immediate')
  return {
    fds: fs.readdirSync('/proc/self/fd').length,
    handles: resources.length,
    kinds: resources.join(','),
    heapUsed: process.memoryUsage().heapUsed,
  }
}

async function measure(name, cycles, once) {
  // Warm-up: code paths compiled and lazily created objects made before the baseline.
  for (let i = 0; i < Math.min(50, cycles); i++) await once(i)
  const series = [{ cycle: 0, ...(await footprint()) }]
  const every = Math.max(1, Math.floor(cycles / samples))
  const t0 = performance.now()
  for (let i = 1; i <= cycles; i++) {
    await once(i)
    if (i % every === 0 || i === cycles) series.push({ cycle: i, ...(await footprint()) })
  }
  const first = series[0]
  const last = series[series.length - 1]
  return {
    name, cycles, ms: Math.round(performance.now() - t0), series,
    growth: { fds: last.fds - first.fds, handles: last.handles - first.handles, heapUsed: last.heapUsed - first.heapUsed },
    maxFds: Math.max(...series.map((s) => s.fds)) - first.fds,
    maxHandles: Math.max(...series.map((s) => s.handles)) - first.handles,
  }
}

const results = []
const cg = values.backends.includes('cgroup-v1') ? makeCgroup({ limit: 256 * MiB, tag: 'leaks' }) : null
try {
  for (const backend of values.backends.split(',')) {
    const options = backend === 'simulated'
      ? { backend: 'simulated', simulated: { limit: 256 * MiB, usage: 64 * MiB } }
      : { backend: 'cgroup-v1', cgroup: cg.dir }
    const monitor = createMemoryMonitor(options)
    monitor.on('error', (err) => { throw err })
    // Its own registrations (v1: OOM notifications) are written off the loop: not part of a cycle.
    await monitor.registered()
    const handler = () => {}
    results.push(await measure(`${backend}: addThreshold + unsubscribe`, subscribeCycles, (i) => {
      const off = monitor.addThreshold(`${10 + (i % 80)}%`, { direction: i % 2 === 0 ? 'up' : 'both', handler })
      off()
    }))
    await monitor.close()
    results.push(await measure(`${backend}: createMemoryMonitor (thresholds, levels, a shrinker) + close`, monitorCycles, async () => {
      const m = createMemoryMonitor({ ...options, thresholds: ['50%', { threshold: '90%', direction: 'both' }], levels: true })
      m.register({ name: 'cache', shrink: () => 0 })
      const it = m.events()
      await m.close()
      await it.next()
    }))
  }
} finally {
  await cg?.remove()
  await removeAll()
}

if (values.json) process.stdout.write(`${JSON.stringify({ node: process.version, results })}\n`)
else {
  const kib = (b) => `${(b / 1024).toFixed(0)} KiB`
  console.log('| cycles | what | fds before → after (max above) | libuv handles before → after (max above) | heap after GC before → after | time |')
  console.log('| ---: | --- | --- | --- | --- | ---: |')
  for (const r of results) {
    const a = r.series[0]
    const b = r.series[r.series.length - 1]
    console.log(`| ${r.cycles} | ${r.name} | ${a.fds} → ${b.fds} (+${r.maxFds}) | ${a.handles} → ${b.handles} (+${r.maxHandles}) | ${kib(a.heapUsed)} → ${kib(b.heapUsed)} (${r.growth.heapUsed >= 0 ? '+' : ''}${kib(r.growth.heapUsed)}) | ${(r.ms / 1000).toFixed(1)} s |`)
  }
}
