// The headline figures of a results directory, drawn from its JSON files only, as Markdown.

import fs from 'node:fs'
import path from 'node:path'
import { fmt, machineLine, mib } from './report.mjs'

const load = (dir, name) => {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, `${name}.json`), 'utf8'))
  } catch {
    return null
  }
}

export function summarize(dir) {
  const out = []
  const lat = load(dir, 'latency')
  const any = lat ?? load(dir, 'cramm') ?? load(dir, 'idle')
  if (any) out.push(`Machine: ${machineLine(any.machine)}.`, '')
  if (lat) {
    const e = lat.results[0]
    const fast = lat.fastResults?.find((r) => r.strategy === e.strategy)
    out.push(`- **Latency** (kernel crossing to handler, ${lat.results[0].crossings} crossings seen by all strategies at once${fast ? `, plus ${fast.crossings} fast crossings` : ''}): ` +
      lat.results.map((r) => `${r.strategy} p50 ${fmt(r.latencyFromStepEndMs.all.p50, 2)} ms / p99 ${fmt(r.latencyFromStepEndMs.all.p99, 2)} ms (${r.seen} of ${r.crossings} seen)`).join('; ') +
      (fast ? `; fast rounds: ${lat.fastResults.map((r) => `${r.strategy} p50 ${fmt(r.latencyFromStepEndMs.all.p50, 2)} / p99 ${fmt(r.latencyFromStepEndMs.all.p99, 2)} ms`).join(', ')}` : '') + '.')
  }
  const idle = load(dir, 'idle')
  if (idle) out.push(`- **Idle cost** per minute (median of ${idle.samples} samples over ${idle.seconds} s): ${idle.results.map((r) => `${r.strategy} ${fmt(r.cpuMsPerMinute, 1)} ms CPU, ${fmt(r.wakeupsPerMinute, 0)} wake-ups`).join('; ')}.`)
  const lead = load(dir, 'lead-time')
  if (lead) out.push(`- **Lead time** before the OOM kill (${lead.runs} runs, ${lead.rateMiBps} MiB/s leak, threshold 80%, ${fmt(lead.idealLeadMs, 0)} ms at the nominal rate): ${lead.summary.map((r) => `${r.strategy} ${r.warnedRuns ? `${fmt(r.leadMsMedian, 0)} ms [${fmt(r.leadMsMin, 0)}–${fmt(r.leadMsMax, 0)}]` : 'no warning'}`).join('; ')}.`)
  const cramm = load(dir, 'cramm')
  if (cramm) {
    const v = (t) => t.map((m) => `${m.limitMib} MiB ${fmt(m.ratio, 3)}${m.oomKills ? ` (${m.oomKills} OOM kill${m.oomKills > 1 ? 's' : ''})` : ''}`).join(', ')
    out.push(`- **CRAMM sweep**, ratio to the best fixed size in hindsight (${cramm.perLimit.every((l) => l.ratioOn === 'scaled') ? 'requests per CPU second at equal speed, median of the side-by-side pairs' : 'requests per CPU second'}; target ≥ 0.95, no OOM kill): ${(cramm.variants ?? [{ label: 'node-memory-pressure', limits: cramm.target }]).map((x) => `${x.label === 'node-memory-pressure' ? 'node-memory-pressure as shipped' : x.label}: ${v(x.limits)}`).join('; ')}. ` +
      `Killed at some limit: ${[...new Set(cramm.perLimit.flatMap((l) => l.rows.filter((r) => r.oomKills > 0).map((r) => r.label)))].join(', ') || 'none'}; heap exhausted at some limit: ${[...new Set(cramm.perLimit.flatMap((l) => l.rows.filter((r) => r.heapExhaustions > 0).map((r) => r.label)))].join(', ') || 'none'}.`)
  }
  const ph = load(dir, 'phase')
  if (ph) out.push(`- **Burst from a neighbour** (${ph.hogMib} MiB of a ${ph.limitMib} MiB parent): ${ph.results.map((r) => `${r.label}: ${fmt(r.throughput, 0)} req/s, ${r.workloadKilled ? 'OOM-killed' : 'survived'}${r.hogOomKills ? ' (neighbour killed)' : ''}`).join('; ')}.`)
  const ov = load(dir, 'overhead')
  if (ov) {
    const rc = ov.results.map((p) => p.ratioCpu)
    const rs = ov.results.map((p) => p.ratioScaled).filter((x) => typeof x === 'number')
    const scaled = rs.length === ov.results.length ? `${fmt(ov.medianRatioScaled, 3)} at equal speed (range ${fmt(Math.min(...rs), 3)}–${fmt(Math.max(...rs), 3)}), ` : ''
    out.push(`- **Overhead without pressure** (${ov.pairs} side-by-side pairs): with/without ${scaled}${fmt(ov.medianRatioCpu, 3)} per CPU second (range ${fmt(Math.min(...rc), 3)}–${fmt(Math.max(...rc), 3)}), ${fmt(ov.medianRatioWall, 3)} per wall second.`)
  }
  const ctl = load(dir, 'control')
  if (ctl) out.push(`- **Control** (${ctl.pairs} pairs of identical cells side by side, fixed ${ctl.cacheMib} MiB at ${ctl.limitMib} MiB): ${ctl.measures.map((m) => `${m.label} ${fmt(m.median, 3)} [${fmt(m.min, 3)}–${fmt(m.max, 3)}]`).join('; ')}.`)
  const rec = load(dir, 'reclaim')
  if (rec) {
    const by = [...new Set(rec.results.map((r) => r.cacheMib))]
    out.push(`- **Reclaim speed** (pressure event to the end of the shrink cycle, ${rec.reps} runs each): ${by.map((c) => {
      const rs = rec.results.filter((r) => r.cacheMib === c)
      const t = rs.map((r) => r.toTargetMs).sort((a, b) => a - b)
      return `${c} MiB cache ${fmt(t[Math.floor(t.length / 2)], 0)} ms [${fmt(t[0], 0)}–${fmt(t.at(-1), 0)}], freed ${mib(rs[0].freedBytes)} MiB in run 1, of which GC ${fmt(rs[0].gcMs, 0)} ms`
    }).join('; ')}.`)
  }
  return out.join('\n')
}
