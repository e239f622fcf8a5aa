// Benchmark 4, the CRAMM sweep: the same workload at several memory limits with each cache strategy;
// the oracle is the best fixed cache size in hindsight at each limit (the fastest run not OOM-killed).

import { MiB, makeCgroup } from './lib/cgroup.mjs'
import { fmt, machineLine, mib, pairMedian as median, table } from './lib/report.mjs'
import { lineChart } from './lib/svg.mjs'
import { runWorkload } from './lib/workload.mjs'

export function settings(quick) {
  return quick
    ? { limits: [128, 256], grid: [32, 64, 128, 192], warmup: 5, seconds: 5, pollRssMib: 256, repeats: 1, candidates: 1 }
    : { limits: [128, 192, 256, 384, 512], grid: [32, 64, 96, 128, 192, 256, 384], warmup: 7, seconds: 9, pollRssMib: 256, repeats: 6, candidates: 2 }
}

// node-memory-pressure as shipped, and one change each, to show what each part of the policy is worth
const MP_VARIANTS = [
  { label: 'node-memory-pressure', args: {} },
  { label: 'node-memory-pressure, hold: false', args: { 'shrinker-options': JSON.stringify({ hold: false }) } },
  { label: 'node-memory-pressure, tuning.collectFirst: false', args: { 'mp-options': JSON.stringify({ tuning: { collectFirst: false } }) } },
  { label: 'node-memory-pressure, tuning.allocatorFree: false', args: { 'mp-options': JSON.stringify({ tuning: { allocatorFree: false } }) } },
  { label: 'node-memory-pressure, tuning.garbageRoom: false', args: { 'mp-options': JSON.stringify({ tuning: { garbageRoom: false } }) } },
  { label: 'node-memory-pressure, levels 70/85/95% at every limit', args: { 'mp-options': JSON.stringify({ levels: { moderate: '70%', high: '85%', critical: '95%' } }) } },
]
const label = (r, args) =>
  r.strategy === 'fixed' ? `fixed ${r.cacheMib} MiB` : r.strategy === 'poll' ? 'poll 1 s, fixed rss threshold'
    : r.strategy === 'node-memory-pressure' ? MP_VARIANTS.find((v) => Object.entries(v.args).every(([k, x]) => args[k] === x) && Object.keys(v.args).length === Object.keys(args).filter((k) => k.endsWith('-options')).length)?.label ?? 'node-memory-pressure (other)'
      : r.strategy

/**
 * The workloads every cell of a sweep can run (workload.mjs options, and the environment), by limit:
 * Buffers (the default); JavaScript objects of lognormal size; the same with V8's heap limit at half
 * the cgroup's (the heap the nearer limit); a phase change half-way through the measured window
 * with a transient allocation of 20% of the limit held for 2 s; two caches of different miss cost;
 * no cache, a service whose memory grows and shrinks.
 */
export const WORKLOADS = {
  buffers: () => ({ args: {} }),
  objects: () => ({ args: { values: 'objects', 'value-kib': 16 } }),
  heap: (limitMib) => ({ args: { values: 'objects', 'value-kib': 16 }, env: { NODE_OPTIONS: `--max-old-space-size=${Math.floor(limitMib / 2)}` } }),
  phase: (limitMib, s) => ({ args: { 'phase-at': s.seconds / 2, 'transient-mib': Math.round(limitMib * 0.2) } }),
  'two-caches': () => ({ args: { caches: 2 } }),
  // no cache: responses held in a window that grows to half the limit and back (the cache sizes of
  // the fixed cells do nothing; the table compares the SDK's collections with none)
  'no-cache': (limitMib) => ({ args: { 'no-cache': true, 'window-mib': Math.floor(limitMib / 2) } }),
}

export async function run({ quick, machine, cramm = {} }) {
  const s = { ...settings(quick), ...cramm }
  const workload = WORKLOADS[s.workload ?? 'buffers']
  if (workload === undefined) throw new RangeError(`--workload: one of ${Object.keys(WORKLOADS).join(', ')} (received ${JSON.stringify(s.workload)})`)
  const runs = []
  const one = async (limitMib, args, rep, pairWith = null) => {
    const cg = makeCgroup({ limit: limitMib * MiB, tag: 'cramm' })
    const w = workload(limitMib, s)
    try {
      const r = await runWorkload(cg, { warmup: s.warmup, seconds: s.seconds, ...w.args, ...args }, { env: w.env })
      const { progress, ...rest } = r
      const row = { limitMib, rep, cacheMib: args['cache-mib'] ?? null, pairWith, ...rest }
      row.label = label(row, args)
      console.error(`   ${limitMib} MiB ${row.label}${pairWith ? ` (beside ${pairWith})` : ''}: ${fmt(row.perCpuSecond, 0)} req/CPU s, ${fmt(row.scaled, 3)} scaled, ${fmt(row.throughput, 0)} req/s, hit ${fmt(row.hitRatio, 3)}, peak ${mib(row.peakUsage)} MiB${row.killed ? ', OOM-KILLED' : ''}${row.heapExhausted ? ', HEAP EXHAUSTED' : ''}`)
      runs.push(row)
      return row
    } finally {
      await cg.remove()
    }
  }
  for (let rep = 0; rep < s.repeats; rep++) {
    for (const limitMib of s.limits) {
      if (rep === 0) {
        // every strategy once, one after the other: the table's absolute figures, and the fixed
        // sizes worth repeating
        for (const v of MP_VARIANTS) await one(limitMib, { strategy: 'node-memory-pressure', ...v.args }, rep)
        for (const size of s.grid.filter((g) => g < limitMib)) await one(limitMib, { strategy: 'fixed', 'cache-mib': size }, rep)
        await one(limitMib, { strategy: 'unbounded' }, rep)
        await one(limitMib, { strategy: 'poll', 'poll-rss-mib': s.pollRssMib }, rep)
      } else {
        // The machine is shared and its speed drifts by tens of percent within minutes, so later
        // repetitions run node-memory-pressure as shipped and a candidate fixed size at the same time,
        // in two cgroups with the same limit: both see the same machine. The candidates are the
        // two best fixed sizes of rep 0 (one run each is too noisy to tell neighbours apart).
        for (const size of bestFixed(runs, limitMib, s.candidates)) {
          await Promise.all([
            one(limitMib, { strategy: 'node-memory-pressure' }, rep, `fixed ${size} MiB`),
            one(limitMib, { strategy: 'fixed', 'cache-mib': size }, rep, 'node-memory-pressure'),
          ])
        }
      }
    }
  }
  const perLimit = s.limits.map((limitMib) => {
    const here = runs.filter((r) => r.limitMib === limitMib)
    const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length
    // one row per strategy label: mean over repetitions, with the range
    const labels = [...new Set(here.map((r) => r.label))]
    const rows = labels.map((l) => {
      const rs = here.filter((r) => r.label === l)
      const t = rs.map((r) => r.throughput)
      const c = rs.map((r) => r.perCpuSecond)
      return {
        label: l, strategy: rs[0].strategy, cacheMib: rs[0].cacheMib, n: rs.length, runs: rs,
        throughput: mean(t), throughputRange: [Math.min(...t), Math.max(...t)],
        perCpuSecond: mean(c), perCpuSecondRange: [Math.min(...c), Math.max(...c)],
        scaled: mean(rs.map((r) => r.scaled ?? 0)),
        // the main thread's share of the CPU time: the rest is helper threads (V8's concurrent
        // marking and sweeping), which the scaled figure counts in the speed too (see workload.mjs)
        mainThreadShare: rs.some((r) => r.mainThreadShare) ? mean(rs.filter((r) => r.mainThreadShare).map((r) => r.mainThreadShare)) : null,
        hitRatio: mean(rs.map((r) => r.hitRatio ?? 0)),
        p99Ms: rs.every((r) => r.p99Ms !== null) ? Math.max(...rs.map((r) => r.p99Ms)) : null,
        peakUsage: Math.max(...rs.map((r) => r.peakUsage)),
        oomKills: rs.reduce((a, r) => a + r.oomKills, 0),
        heapExhaustions: rs.filter((r) => r.heapExhausted).length,
        shrinks: mean(rs.map((r) => r.shrinks ?? 0)),
        // share of the measured window's CPU time spent inside shrink cycles, and in their GC
        cycleShare: rs[0].strategy === 'node-memory-pressure' ? mean(rs.map((r) => cycleMs(r, s.warmup, 'durationMs') / (1000 * (r.cpuSeconds ?? Infinity)))) : null,
        gcShare: rs[0].strategy === 'node-memory-pressure' ? mean(rs.map((r) => cycleMs(r, s.warmup, 'gcMs') / (1000 * (r.cpuSeconds ?? Infinity)))) : null,
        // kernel time share and minor faults per second of the measured window (killed runs: none)
        systemShare: rs.some((r) => r.resources) ? mean(rs.filter((r) => r.resources).map((r) => r.resources.systemMs / (1000 * r.cpuSeconds))) : null,
        minorFaultsPerS: rs.some((r) => r.resources) ? mean(rs.filter((r) => r.resources).map((r) => r.resources.minorFaults / s.seconds)) : null,
        // every major (mark-compact) collection in the measured window, V8's own and forced ones,
        // and the main thread's time in them as a share of the CPU time
        majorGcPerS: rs.some((r) => r.gc) ? mean(rs.filter((r) => r.gc).map((r) => r.gc.major / s.seconds)) : null,
        majorGcShare: rs.some((r) => r.gc) ? mean(rs.filter((r) => r.gc).map((r) => r.gc.majorMs / (1000 * r.cpuSeconds))) : null,
      }
    })
    const safeFixed = rows.filter((r) => r.strategy === 'fixed' && r.oomKills === 0 && r.heapExhaustions === 0)
    const best = (key) => safeFixed.reduce((b, r) => (b === null || r[key] > b[key] ? r : b), null)
    const sdk = rows.find((r) => r.label === MP_VARIANTS[0].label)
    // node-memory-pressure against fixed size x, pair by pair, from the runs made side by side
    const sideBySide = (x, key) => (sdk?.runs ?? []).filter((r) => r.pairWith === x.label).flatMap((r) => {
      const o = x.runs.find((q) => q.rep === r.rep && q.pairWith === sdk.label)
      return o && o[key] > 0 ? [r[key] / o[key]] : []
    })
    // The oracle: of the sizes run side by side with node-memory-pressure, the one node-memory-pressure did
    // worst against (one run after another, a lucky run of a neighbouring size could take its
    // place: the 07:36 run's did at 256 MiB); without repetitions, the fastest size of rep 0.
    // The ratios are on the scaled figure: requests per CPU second at equal speed (runWorkload)
    const paired = safeFixed.filter((r) => sideBySide(r, 'scaled').length > 0)
    const oracle = paired.length > 0 ? paired.reduce((b, r) => (median(sideBySide(r, 'scaled')) < median(sideBySide(b, 'scaled')) ? r : b)) : best('scaled')
    const oracleWall = paired.length > 0 ? oracle : best('throughput')
    for (const r of rows) {
      let pr = null
      let pc = null
      let pw = null
      if (r === sdk && paired.includes(oracle)) {
        // side by side: the ratio is the median of the pairs, with their range
        pr = sideBySide(oracle, 'scaled')
        pc = sideBySide(oracle, 'perCpuSecond')
        pw = sideBySide(oracle, 'throughput')
      } else if (paired.includes(r) && paired.includes(oracle)) {
        // another size run side by side: compared with the oracle through node-memory-pressure
        pr = [median(sideBySide(oracle, 'scaled')) / median(sideBySide(r, 'scaled'))]
        pc = [median(sideBySide(oracle, 'perCpuSecond')) / median(sideBySide(r, 'perCpuSecond'))]
        pw = [median(sideBySide(oracle, 'throughput')) / median(sideBySide(r, 'throughput'))]
      } else {
        // one run each in rep 0, one after the other: against the oracle's run of rep 0
        pr = pairRatios(r.runs.filter((x) => x.rep === 0), oracle?.runs, 'scaled')
        pc = pairRatios(r.runs.filter((x) => x.rep === 0), oracle?.runs, 'perCpuSecond')
        pw = pairRatios(r.runs.filter((x) => x.rep === 0), oracleWall?.runs, 'throughput')
      }
      r.ratio = pr ? median(pr) : null
      r.ratioRange = pr ? [Math.min(...pr), Math.max(...pr)] : null
      r.pairs = pr?.length ?? 0
      r.ratioCpu = pc ? median(pc) : null
      r.ratioCpuRange = pc ? [Math.min(...pc), Math.max(...pc)] : null
      r.ratioWall = pw ? median(pw) : null
    }
    for (const r of rows) delete r.runs
    return { limitMib, ratioOn: 'scaled', oracle: oracle?.label ?? null, oracleWall: oracleWall?.label ?? null, rows }
  })
  const verdicts = MP_VARIANTS.map((v) => ({
    label: v.label,
    limits: perLimit.map((l) => {
      const r = l.rows.find((x) => x.label === v.label)
      return { limitMib: l.limitMib, ratio: r?.ratio ?? null, oomKills: r?.oomKills ?? null, heapExhaustions: r?.heapExhaustions ?? null, met: (r?.ratio ?? 0) >= 0.95 && r?.oomKills === 0 && r?.heapExhaustions === 0 }
    }),
  }))
  const json = { bench: 'cramm', machine, settings: s, workload: { name: s.workload ?? 'buffers', keys: 16384, zipf: 0.8, valueKiB: 64, pbkdf2Iterations: 2000 }, perLimit, target: verdicts[0].limits, variants: verdicts, runs: runs.map(({ shrinkLog, ...r }) => ({ ...r, shrinkLog: shrinkLog?.slice(0, 50) })) }
  const md = `# 4. CRAMM sweep: throughput at each memory limit against the best fixed cache size in hindsight

${s.workload && s.workload !== 'buffers' ? `**Workload \`${s.workload}\`** (WORKLOADS in cramm.mjs: what it changes in the Buffer workload described here). ` : ''}${machineLine(machine)}. One run of the sweep; each cell is one ${s.warmup} s warm-up + ${s.seconds} s measured run in its own cgroup. ${s.repeats > 1 ? `Every strategy runs once (rep 0, one cell after the other); then, ${s.repeats - 1} times over, node-memory-pressure as shipped runs side by side with each of the ${s.candidates} best fixed sizes of rep 0: two cells with the same limit started together, one per core, so both see the same machine (rows give the mean over all their runs, the range in brackets)` : 'One repetition, one cell after the other'}. Workload: 16384 keys, zipf s = 0.8, values of 64 KiB costing 2000 PBKDF2-SHA256 iterations (about 0.4–0.6 ms, as fast as the machine is at the time) to compute. Throughput is counted three ways: requests per second of wall time; requests per CPU second of the whole process (all threads, kernel time included: the GC and shrinking the SDK causes are charged to it); and that **at equal speed**: requests per CPU second times the mean CPU time of one computation in the same run (every 4th one measured), so that a cell on a slower core is not counted as a slower strategy. The machine is shared, the same cell runs up to 25% faster or slower a few minutes later${s.repeats > 1 ? ' (see the ranges)' : ''}, and one of its two cores is at times about 1.5 times as slow as the other, so a side-by-side pair's ratio per CPU second mostly says which core each cell got (the control bench, \`control.md\`, runs identical cells side by side to show how far each measure moves); the hit ratio does not depend on the machine's speed. ${s.repeats > 1 ? `**node-memory-pressure's ratio is the median of its side-by-side pairs with the oracle (their range in brackets)**, at equal speed; the ratios per CPU second and per wall second are shown beside it. A fixed size also run side by side is compared with the oracle through node-memory-pressure (the ratio of their medians against it). Every other row has one run, compared with the oracle's run in rep 0, one after the other: read those ratios as ±10–20%. Oracle = of the sizes run side by side, the one node-memory-pressure did worst against at equal speed (sizes tried: ${s.grid.join(', ')} MiB below the limit).` : `Ratios compare each run with the oracle's, one after the other (±10–20% on this machine). Oracle = the fixed size with the highest throughput and no OOM kill (sizes tried: ${s.grid.join(', ')} MiB below the limit).`} "poll" trims its cache to 75% when \`process.memoryUsage.rss()\` read once a second exceeds a fixed ${s.pollRssMib} MiB. node-memory-pressure: an lru-cache without a size bound, \`createMemoryMonitor()\` with its default levels (moderate 70%, high 85%, critical 95% of the limit up to 320 MiB; above it moderate and high keep a fixed room, limit − 96 MiB and limit − 48 MiB, at most 80% and 90%: 75/87.5/95% at 384 MiB, 80/90/95% at 512 MiB; hysteresis 5% of the limit, at most 10 MiB) and \`lruCacheShrinker(cache)\` with its defaults, as the README shows: each shrink cycle collects garbage first and asks the cache only for what is still over the level (\`collectFirst\`), memory on malloc's free lists counts as available so that \`malloc_trim\` runs only near the limit, from critical or 8 MiB below the limit, whichever is lower (\`allocatorFree\`), and the cache is held at its new size until the level is back to normal, then grows 5% a second while it presses the cap (\`hold\`); a cycle at high within the cool-down of one at high asks the cache for at least half the hysteresis, even when its collection alone brought the level down, and for at least enough that the level after its collection is 80 MiB below the limit, V8's 64 MiB external step and 16 MiB; a cycle at moderate asks for that floor too, as at high, when the process holds at least that much in Buffers (\`garbageRoom\`). The other node-memory-pressure rows (one run each, in rep 0) change one thing each: \`lruCacheShrinker(cache, { hold: false })\`, \`createMemoryMonitor({ tuning: { collectFirst: false } })\` (an internal setting) (shrinkers first, then the collection), \`tuning.allocatorFree: false\` (every cycle trims, and the levels see only what the trim gave back), \`tuning.garbageRoom: false\` (a cycle at high that follows one at high within the cool-down asks the cache for nothing when the collection alone brought the level down, and one at moderate only what is over the level), and \`levels: { moderate: '70%', high: '85%', critical: '95%' }\` (the percentages at every limit, the default before the levels kept a fixed room at large limits; the same as shipped up to 320 MiB). The last columns give where the CPU went in the measured window: kernel (system) time; minor page faults, which are mostly pages \`malloc_trim\` gave back being faulted in again; and every major (mark-compact) collection, V8's own and the ones the SDK forces, with the main thread's time in them as a share of the CPU time (V8's own collections mark mostly on helper threads, a forced one all on the main thread); and the main thread's share of the process's CPU time (what helper threads ran during a computation is counted in its CPU time, so a cell whose helper threads run more is measured a little slower than it is, and its figure at equal speed comes out a little higher: by up to about the difference of the two cells' helper shares).

Target for node-memory-pressure: at least 0.95 of the oracle with no OOM kill at every limit.
${verdicts.map((v) => `- ${v.label === 'node-memory-pressure' ? 'node-memory-pressure as shipped' : v.label}: ${verdict(v.limits)}.`).join('\n')}

${perLimit.map((l) => `### Limit ${l.limitMib} MiB (oracle: ${l.oracle ?? 'none survived'}; by wall time: ${l.oracleWall ?? 'none'})

${table(['strategy', 'runs', 'req / CPU s', 'ratio to oracle (at equal speed)', 'ratio per CPU s', 'req/s (wall)', 'ratio (wall)', 'hit ratio', 'p99 ms', 'peak usage MiB', 'OOM kills', 'heap exhausted', 'shrink cycles', 'CPU in cycles (in GC)', 'kernel CPU', 'minor faults / s', 'major GCs / s (time)', 'main thread share of CPU'], l.rows.map((r) => [
  r.label, String(r.n), range(r.perCpuSecond, r.perCpuSecondRange, r.n), ratioCell(r), r.ratioCpuRange && r.pairs > 1 ? `${fmt(r.ratioCpu, 3)} [${fmt(r.ratioCpuRange[0], 2)}–${fmt(r.ratioCpuRange[1], 2)}]` : fmt(r.ratioCpu, 3), range(r.throughput, r.throughputRange, r.n), fmt(r.ratioWall, 3), fmt(r.hitRatio, 3), fmt(r.p99Ms, 2), mib(r.peakUsage), String(r.oomKills), String(r.heapExhaustions), fmt(r.shrinks, 0),
  r.cycleShare === null ? '' : `${fmt(100 * r.cycleShare, 0)}% (${fmt(100 * r.gcShare, 0)}%)`,
  r.systemShare === null ? '' : `${fmt(100 * r.systemShare, 1)}%`, r.minorFaultsPerS === null ? '' : fmt(r.minorFaultsPerS, 0),
  r.majorGcPerS === null ? '' : `${fmt(r.majorGcPerS, 1)} (${fmt(100 * r.majorGcShare, 1)}%)`,
  r.mainThreadShare === null ? '' : `${fmt(100 * r.mainThreadShare, 1)}%`,
]))}`).join('\n\n')}
`
  const strategies = [...MP_VARIANTS.map((v) => v.label), 'unbounded', 'poll 1 s, fixed rss threshold', ...s.grid.map((g) => `fixed ${g} MiB`)]
  const series = strategies.map((name) => ({
    name,
    points: perLimit.map((l) => {
      const r = l.rows.find((x) => x.label === name)
      return [l.limitMib, r ? (r.oomKills > 0 || r.heapExhaustions > 0 ? 0 : r.ratio) : NaN]
    }).filter((p) => Number.isFinite(p[1])),
    dots: true,
    width: name.startsWith('node-memory-pressure') ? 3.5 : 1.5,
    dash: name.startsWith('fixed') ? '4 3' : undefined,
  })).filter((x) => x.points.length > 0)
  const charts = {
    'cramm-ratio': lineChart({
      title: 'Requests per CPU second at equal speed, relative to the best fixed size in hindsight (OOM-killed: 0)',
      xLabel: 'memory limit (MiB)', yLabel: 'ratio to oracle', series, yMin: 0, yMax: 1.2,
      hlines: [{ y: 0.95, label: 'target 0.95', color: '#2ca02c' }, { y: 1, label: '' }],
    }),
  }
  return { name: 'cramm', json, md, charts }
}

const cycleMs = (r, warmup, key) => (r.shrinkLog ?? []).filter((x) => x.t >= warmup * 1000).reduce((a, x) => a + (x[key] ?? 0), 0)
const verdict = (ms) => ms.map((m) => `${m.limitMib} MiB ${m.met ? 'met' : '**missed**'} (${fmt(m.ratio, 3)}${m.oomKills ? `, ${m.oomKills} OOM kills` : ''}${m.heapExhaustions ? `, ${m.heapExhaustions} heap exhaustions` : ''})`).join('; ')
/** A row's runs against the oracle's run of the same repetition; null when no repetition has both. */
function pairRatios(runs, oracleRuns, key) {
  if (!oracleRuns) return null
  const xs = runs.flatMap((r) => {
    const o = oracleRuns.find((x) => x.rep === r.rep && !x.pairWith)
    return o && o[key] > 0 ? [r[key] / o[key]] : []
  })
  return xs.length > 0 ? xs : null
}
const ratioCell = (r) => (r.pairs > 1 ? `${fmt(r.ratio, 3)} [${fmt(r.ratioRange[0], 2)}–${fmt(r.ratioRange[1], 2)}]` : fmt(r.ratio, 3))
const range = (x, [lo, hi], n) => (n > 1 ? `${fmt(x, 0)} [${fmt(lo, 0)}–${fmt(hi, 0)}]` : fmt(x, 0))

function bestFixed(runs, limitMib, k) {
  return runs
    .filter((r) => r.limitMib === limitMib && r.rep === 0 && r.strategy === 'fixed' && !r.killed && !r.heapExhausted)
    .sort((a, b) => (b.scaled ?? 0) - (a.scaled ?? 0))
    .slice(0, k)
    .map((r) => r.cacheMib)
}
