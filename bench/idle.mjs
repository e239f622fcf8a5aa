// Benchmark 2, idle cost: one watcher process per strategy on a cgroup whose memory does not change;
// CPU time (schedstat, all threads) and wake-ups (voluntary context switches, all threads) per minute.

import { fileURLToPath } from 'node:url'
import { MiB, makeCgroup } from './lib/cgroup.mjs'
import { fmt, machineLine, median, procCost, sleep, table } from './lib/report.mjs'
import { lineChart } from './lib/svg.mjs'
import { STRATEGIES, startWatchers, stopWatchers } from './latency.mjs'

const allocator = fileURLToPath(new URL('../test/helpers/allocator.mjs', import.meta.url))

export async function run({ quick, machine }) {
  const seconds = quick ? 10 : 60
  const samples = quick ? 1 : 3
  const settleMs = 15000
  const cg = makeCgroup({ limit: 256 * MiB, v2: true, tag: 'idle' })
  let watchers = []
  try {
    const child = cg.spawn([allocator], { env: { MALLOC_MMAP_THRESHOLD_: '65536' } })
    await child.waitLine((l) => l === 'ready')
    const threshold = cg.usage() + 64 * MiB
    watchers = await startWatchers(cg, threshold, [
      { name: 'idle Node process (baseline)', args: ['none'] },
      ...STRATEGIES,
      { name: 'node-memory-pressure monitor, levels on the cgroup and the heap', args: ['node-memory-pressure-levels'] },
    ])
    // V8 keeps working for several seconds after start-up (background GC, the memory reducer's timed
    // GCs): measured here, a watcher's threads stop waking about 10 s after start.
    await sleep(settleMs)
    const perMinute = watchers.map(() => [])
    for (let s = 0; s < samples; s++) {
      const before = watchers.map((w) => procCost(w.child.pid))
      await sleep((seconds * 1000) / samples)
      const after = watchers.map((w) => procCost(w.child.pid))
      watchers.forEach((w, i) => {
        const k = 60 / (seconds / samples)
        perMinute[i].push({
          cpuMs: ((after[i].cpuNs - before[i].cpuNs) / 1e6) * k,
          wakeups: (after[i].voluntary - before[i].voluntary) * k,
          involuntary: (after[i].involuntary - before[i].involuntary) * k,
          threads: after[i].threads,
        })
      })
    }
    const results = watchers.map((w, i) => ({
      strategy: w.name,
      samples: perMinute[i],
      cpuMsPerMinute: median(perMinute[i].map((x) => x.cpuMs)),
      wakeupsPerMinute: median(perMinute[i].map((x) => x.wakeups)),
      cpuMsPerMinuteRange: [Math.min(...perMinute[i].map((x) => x.cpuMs)), Math.max(...perMinute[i].map((x) => x.cpuMs))],
      events: w.events.length,
    }))
    const json = { bench: 'idle', machine, seconds, samples, settleMs, results }
    const md = `# 2. Idle cost

${machineLine(machine)}. One run: each strategy in its own process watching a cgroup whose memory does not change, measured from ${settleMs / 1000} s after start-up, for ${seconds} s in ${samples} sample${samples > 1 ? 's' : ''} (median per minute, range in brackets). CPU time from \`/proc/<pid>/task/*/schedstat\`, wake-ups are voluntary context switches of all threads.

${table(['strategy', 'CPU ms / min', 'wake-ups / min', 'events (should be 0)'], results.map((r) => [
  r.strategy, `${fmt(r.cpuMsPerMinute, 1)} [${fmt(r.cpuMsPerMinuteRange[0], 1)}–${fmt(r.cpuMsPerMinuteRange[1], 1)}]`, fmt(r.wakeupsPerMinute, 0), String(r.events),
]))}
`
    return { name: 'idle', json, md, charts: {} }
  } finally {
    await stopWatchers(watchers)
    await cg.remove()
  }
}
