// Side-by-side A/B of two workload configurations at one memory limit: for telling whether a
// policy change pays, where one run after another cannot (the machine's speed moves by more than
// the change). Each pair starts A and B together, in two cgroups with the same limit, one per core;
// which one is spawned first alternates. Two ratios of A over B per pair, with median and range:
// requests per CPU second at equal speed (`scaled`, see workload.mjs), and per CPU second as
// measured. Decide on the second where V8's helper threads mark a large JavaScript heap (--values
// objects): they inflate the per-computation CPU time the first divides by.
//
//   node bench/ab.mjs --limit 512 --a '{"mp-options":"{\"hysteresis\":\"5%\"}"}' --b '{}' \
//     [--pairs 10] [--out results.json]
//
// --a and --b are workload options as JSON (default strategy: node-memory-pressure), as in cramm.mjs:
// { "strategy": "fixed", "cache-mib": 384 } runs a fixed size; an "env" object in them is added to
// that side's environment (for a switch read from process.env while trying a change, or
// MP_BUILD_DIR: the dist/ of another build, e.g. the engine before a change). Writes the
// pairs and the summary as JSON to --out (default: print only). Needs root and a writable cgroup
// v1 memory hierarchy.

import fs from 'node:fs'
import { parseArgs } from 'node:util'
import { MiB, makeCgroup, removeAll } from './lib/cgroup.mjs'
import { fmt, machine as describeMachine, pairMedian as median } from './lib/report.mjs'
import { runWorkload } from './lib/workload.mjs'

const { values } = parseArgs({
  options: {
    limit: { type: 'string' },
    a: { type: 'string', default: '{}' },
    b: { type: 'string', default: '{}' },
    pairs: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '7' },
    seconds: { type: 'string', default: '9' },
    out: { type: 'string' },
  },
})
const limitMib = Number(values.limit)
if (!(limitMib > 0)) throw new RangeError(`--limit: a limit in MiB is needed (received ${JSON.stringify(values.limit)})`)
const pairs = Number(values.pairs)
if (!Number.isInteger(pairs) || pairs < 1) throw new RangeError(`--pairs: a whole number above 0 (received ${JSON.stringify(values.pairs)})`)
const config = (name) => {
  const v = JSON.parse(values[name])
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new TypeError(`--${name}: a JSON object of workload options`)
  const env = v.env
  if (env !== undefined && (env === null || typeof env !== 'object' || Object.values(env).some((x) => typeof x !== 'string'))) {
    throw new TypeError(`--${name}: "env" must be an object of strings`)
  }
  return v
}
const A = config('a')
const B = config('b')

for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => void removeAll().finally(() => process.exit(130)))

const start = ({ env, ...args }) => {
  const cg = makeCgroup({ limit: limitMib * MiB, tag: 'ab' })
  return runWorkload(cg, { strategy: 'node-memory-pressure', warmup: values.warmup, seconds: values.seconds, ...args }, { env }).finally(() => cg.remove())
}
const brief = (r) => ({
  scaled: r.scaled, perCpuSecond: r.perCpuSecond, throughput: r.throughput, hitRatio: r.hitRatio, killed: r.killed, heapExhausted: r.heapExhausted, shrinks: r.shrinks,
  systemShare: r.resources ? r.resources.systemMs / 1000 / r.cpuSeconds : null, majorGcs: r.gc?.major ?? null,
  majorGcShare: r.gc ? r.gc.majorMs / 1000 / r.cpuSeconds : null, peakUsage: r.peakUsage, computeCpuMs: r.computeCpuMs ?? null,
  // the SDK's own forced collections in the measured window, from its shrink reports (heap.gcMs)
  ...(r.shrinkLog ? forced(r.shrinkLog.filter((x) => x.t >= Number(values.warmup) * 1000)) : {}),
})
const forced = (log) => ({ windowCycles: log.length, forcedGcMs: log.reduce((a, x) => a + (x.gcMs ?? 0), 0), heapRuns: log.reduce((a, x) => a + (x.heapRuns ?? 0), 0) })
const json = { bench: 'ab', machine: describeMachine(), limitMib, a: A, b: B, settings: { pairs, warmup: Number(values.warmup), seconds: Number(values.seconds) }, pairs: [], summary: null }
for (let i = 0; i < pairs; i++) {
  // spawned in turn: A first in even pairs, B first in odd ones
  const [pa, pb] = i % 2 === 0 ? [start(A), start(B)] : (() => { const b = start(B); return [start(A), b] })()
  // both settle (and remove their cgroups) before a failure of either stops the run
  const settled = await Promise.allSettled([pa, pb])
  const failed = settled.find((x) => x.status === 'rejected')
  if (failed) {
    await removeAll()
    throw failed.reason
  }
  const [a, b] = settled.map((x) => x.value)
  const ratio = b.scaled > 0 ? a.scaled / b.scaled : null
  // per CPU second as measured: the figure to decide on where V8's helper threads (marking a large
  // JavaScript heap) inflate the per-computation CPU time the equal-speed figure divides by
  const ratioCpu = !a.killed && !b.killed && !a.heapExhausted && !b.heapExhausted && b.perCpuSecond > 0 ? a.perCpuSecond / b.perCpuSecond : null
  json.pairs.push({ a: brief(a), b: brief(b), ratio, ratioCpu })
  console.error(`pair ${i + 1}: ratio ${fmt(ratio, 3)} at equal speed, ${fmt(ratioCpu, 3)} per CPU second, hit ${fmt(a.hitRatio, 3)} / ${fmt(b.hitRatio, 3)}, shrink cycles ${a.shrinks} / ${b.shrinks}, major GCs ${a.gc?.major ?? '–'} / ${b.gc?.major ?? '–'}${a.killed || b.killed ? `, OOM-killed: ${a.killed ? 'A' : ''}${b.killed ? 'B' : ''}` : ''}${a.heapExhausted || b.heapExhausted ? `, heap exhausted: ${a.heapExhausted ? 'A' : ''}${b.heapExhausted ? 'B' : ''}` : ''}`)
  if (values.out) fs.writeFileSync(values.out, `${JSON.stringify(json, null, 1)}\n`)
}
const ratios = json.pairs.map((p) => p.ratio).filter((x) => x !== null)
const cpuRatios = json.pairs.map((p) => p.ratioCpu).filter((x) => x !== null)
json.summary = {
  ratioMedian: ratios.length > 0 ? median(ratios) : null, ratioMin: ratios.length > 0 ? Math.min(...ratios) : null, ratioMax: ratios.length > 0 ? Math.max(...ratios) : null, n: ratios.length,
  cpuRatioMedian: cpuRatios.length > 0 ? median(cpuRatios) : null, cpuRatioMin: cpuRatios.length > 0 ? Math.min(...cpuRatios) : null, cpuRatioMax: cpuRatios.length > 0 ? Math.max(...cpuRatios) : null,
  hitA: median(json.pairs.map((p) => p.a.hitRatio ?? 0)), hitB: median(json.pairs.map((p) => p.b.hitRatio ?? 0)),
  higherHitA: json.pairs.filter((p) => (p.a.hitRatio ?? 0) > (p.b.hitRatio ?? 0)).length,
  killedA: json.pairs.filter((p) => p.a.killed).length, killedB: json.pairs.filter((p) => p.b.killed).length,
  heapExhaustedA: json.pairs.filter((p) => p.a.heapExhausted).length, heapExhaustedB: json.pairs.filter((p) => p.b.heapExhausted).length,
}
if (values.out) fs.writeFileSync(values.out, `${JSON.stringify(json, null, 1)}\n`)
const s = json.summary
console.log(`A/B at ${limitMib} MiB, ${s.n} pairs: median ${fmt(s.ratioMedian, 3)} (${fmt(s.ratioMin, 3)}–${fmt(s.ratioMax, 3)}) at equal speed, ${fmt(s.cpuRatioMedian, 3)} (${fmt(s.cpuRatioMin, 3)}–${fmt(s.cpuRatioMax, 3)}) per CPU second; hit ratio ${fmt(s.hitA, 3)} / ${fmt(s.hitB, 3)} (A higher in ${s.higherHitA} pairs); OOM kills ${s.killedA} / ${s.killedB}; heap exhausted ${s.heapExhaustedA} / ${s.heapExhaustedB}`)
