// Benchmark 8, the control: identical cells side by side (the same fixed cache size and limit, two
// cgroups started together, one per core), as the CRAMM sweep and the overhead bench run their
// pairs. Every ratio here should be 1: how far each measure moves away from it is the noise of a
// pair on this machine, and which measure the other benches can trust.

import { MiB, makeCgroup } from './lib/cgroup.mjs'
import { fmt, machineLine, median, table } from './lib/report.mjs'
import { runWorkload } from './lib/workload.mjs'

export async function run({ quick, machine }) {
  const pairs = quick ? 2 : 8
  const limitMib = 192
  const cacheMib = 96
  const warmup = quick ? 3 : 7
  const seconds = quick ? 5 : 9
  const results = []
  for (let i = 0; i < pairs; i++) {
    const cgs = [makeCgroup({ limit: limitMib * MiB, tag: 'ctl' }), makeCgroup({ limit: limitMib * MiB, tag: 'ctl' })]
    try {
      const [a, b] = await Promise.all(cgs.map((cg) => runWorkload(cg, { strategy: 'fixed', 'cache-mib': cacheMib, warmup, seconds })))
      if (a.killed || b.killed) throw new Error(`the control cell (fixed ${cacheMib} MiB at ${limitMib} MiB) was OOM-killed`)
      const pair = {
        a: { perCpuSecond: a.perCpuSecond, throughput: a.throughput, computeCpuMs: a.computeCpuMs, computeP50Ms: a.computeP50Ms, hitRatio: a.hitRatio },
        b: { perCpuSecond: b.perCpuSecond, throughput: b.throughput, computeCpuMs: b.computeCpuMs, computeP50Ms: b.computeP50Ms, hitRatio: b.hitRatio },
        ratioCpu: a.perCpuSecond / b.perCpuSecond,
        ratioWall: a.throughput / b.throughput,
        ratioScaled: a.scaled && b.scaled ? a.scaled / b.scaled : null,
        ratioHit: a.hitRatio / b.hitRatio,
      }
      console.error(`   pair ${i + 1}: ${fmt(pair.ratioScaled, 3)} at equal speed, ${fmt(pair.ratioCpu, 3)} per CPU s, ${fmt(pair.ratioWall, 3)} wall; a computation ${fmt(a.computeCpuMs, 3)} / ${fmt(b.computeCpuMs, 3)} ms CPU`)
      results.push(pair)
    } finally {
      for (const cg of cgs) await cg.remove()
    }
  }
  const measure = (label, key) => {
    const xs = results.map((p) => p[key]).filter((x) => typeof x === 'number')
    return { label, key, n: xs.length, median: median(xs), min: Math.min(...xs), max: Math.max(...xs) }
  }
  const measures = [
    measure('at equal speed', 'ratioScaled'),
    measure('per CPU second', 'ratioCpu'),
    measure('per wall second', 'ratioWall'),
    measure('hit ratio', 'ratioHit'),
  ]
  const json = { bench: 'control', machine, pairs, limitMib, cacheMib, warmup, seconds, results, measures }
  const md = `# 8. Control: identical cells side by side

${machineLine(machine)}. ${pairs} pairs of the same cell run side by side (the CRAMM workload with a fixed ${cacheMib} MiB lru-cache under a ${limitMib} MiB limit, ${warmup} s warm-up + ${seconds} s measured, two cgroups started together, as the CRAMM sweep and the overhead bench run their pairs). Every ratio should be 1; its spread is what a pair can resolve on this machine. "At equal speed" is requests per CPU second times the run's mean CPU time of one computation (\`workload.mjs\`), the measure the CRAMM sweep and the overhead bench decide on.

${table(['measure (a / b)', 'pairs', 'median', 'min', 'max'], measures.map((m) => [m.label, String(m.n), fmt(m.median, 3), fmt(m.min, 3), fmt(m.max, 3)]))}

${table(['pair', 'at equal speed', 'per CPU s', 'per wall s', 'a: ms CPU a computation', 'b: ms CPU a computation', 'a: hit ratio', 'b: hit ratio'], results.map((p, i) => [
  String(i + 1), fmt(p.ratioScaled, 3), fmt(p.ratioCpu, 3), fmt(p.ratioWall, 3), fmt(p.a.computeCpuMs, 3), fmt(p.b.computeCpuMs, 3), fmt(p.a.hitRatio, 3), fmt(p.b.hitRatio, 3),
]))}
`
  return { name: 'control', json, md, charts: {} }
}
