// Benchmark 6, overhead without pressure: the same workload (fixed 128 MiB lru-cache, 1 GiB limit, so
// no level is ever reached) with a node-memory-pressure monitor and lru-cache shrinker attached and
// without, in pairs run side by side; the ratio of throughput within each pair.

import { MiB, makeCgroup } from './lib/cgroup.mjs'
import { fmt, machineLine, median, table } from './lib/report.mjs'
import { runWorkload } from './lib/workload.mjs'

export async function run({ quick, machine }) {
  const pairs = quick ? 2 : 10
  const warmup = quick ? 3 : 5
  const seconds = quick ? 5 : 10
  const results = []
  for (let i = 0; i < pairs; i++) {
    const pair = {}
    // both at the same time, each in its own cgroup: whatever else the shared machine runs slows
    // both alike, so the ratio within a pair holds even when absolute throughput does not
    const cgs = [makeCgroup({ limit: 1024 * MiB, tag: 'ovh' }), makeCgroup({ limit: 1024 * MiB, tag: 'ovh' })]
    try {
      const rs = await Promise.all([false, true].map((attach, k) =>
        runWorkload(cgs[k], { strategy: 'fixed', 'cache-mib': 128, warmup, seconds, 'attach-mp': attach, seed: i + 1 })))
      for (const [k, r] of rs.entries()) {
        if (r.killed) throw new Error('the overhead workload was OOM-killed under a 1 GiB limit')
        pair[k === 1 ? 'with' : 'without'] = { throughput: r.throughput, perCpuSecond: r.perCpuSecond, computeCpuMs: r.computeCpuMs, scaled: r.scaled, hitRatio: r.hitRatio, shrinks: r.shrinks }
      }
    } finally {
      for (const cg of cgs) await cg.remove()
    }
    pair.ratioCpu = pair.with.perCpuSecond / pair.without.perCpuSecond
    pair.ratioWall = pair.with.throughput / pair.without.throughput
    // at equal speed (runWorkload's scaled): whichever core each side got, the ratio is the SDK's
    pair.ratioScaled = pair.with.scaled && pair.without.scaled ? pair.with.scaled / pair.without.scaled : null
    console.error(`   pair ${i + 1}: with/without ${fmt(pair.ratioScaled, 3)} at equal speed, ${fmt(pair.ratioCpu, 3)} per CPU s, ${fmt(pair.ratioWall, 3)} wall`)
    results.push(pair)
  }
  const rc = results.map((p) => p.ratioCpu)
  const rw = results.map((p) => p.ratioWall)
  const rs = results.map((p) => p.ratioScaled).filter((x) => x !== null)
  const json = { bench: 'overhead', machine, pairs, warmup, seconds, results, medianRatioCpu: median(rc), medianRatioWall: median(rw), medianRatioScaled: rs.length ? median(rs) : null }
  const md = `# 6. Overhead without pressure

${machineLine(machine)}. ${pairs} pairs of runs (${warmup} s warm-up + ${seconds} s measured, same key sequence within a pair, the two runs of a pair at the same time in two cgroups, so that the rest of the machine's load hits both alike): the workload with a fixed 128 MiB lru-cache under a 1 GiB limit, with and without \`createMemoryMonitor()\` + \`lruCacheShrinker(cache)\` attached (no level is reached: shrinks with the monitor attached: ${results.map((p) => p.with.shrinks).join(', ')}). Target: within 1%.

Median ratio with/without: **${rs.length ? fmt(median(rs), 3) : '–'}** in requests per CPU second at equal speed (times each run's mean CPU time of one computation, so that the core each side got does not count; range ${rs.length ? `${fmt(Math.min(...rs), 3)}–${fmt(Math.max(...rs), 3)}` : '–'}), ${fmt(median(rc), 3)} in requests per CPU second (range ${fmt(Math.min(...rc), 3)}–${fmt(Math.max(...rc), 3)}), ${fmt(median(rw), 3)} in requests per second of wall time (range ${fmt(Math.min(...rw), 3)}–${fmt(Math.max(...rw), 3)}).

${table(['pair', 'ratio at equal speed', 'without: req / CPU s', 'with: req / CPU s', 'ratio', 'without: ms CPU a computation', 'with: ms CPU a computation', 'without: req/s', 'with: req/s', 'ratio (wall)'], results.map((p, i) => [
  String(i + 1), fmt(p.ratioScaled, 3), fmt(p.without.perCpuSecond, 0), fmt(p.with.perCpuSecond, 0), fmt(p.ratioCpu, 3), fmt(p.without.computeCpuMs, 3), fmt(p.with.computeCpuMs, 3), fmt(p.without.throughput, 0), fmt(p.with.throughput, 0), fmt(p.ratioWall, 3),
]))}
`
  return { name: 'overhead', json, md, charts: {} }
}
