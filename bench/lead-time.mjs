// Benchmark 3, warning lead time: a child leaks at a steady rate in a limited cgroup until the OOM
// kill; every strategy watches a threshold at 80% of the limit; lead time = kill − first warning.

import { fileURLToPath } from 'node:url'
import { MiB, makeCgroup } from './lib/cgroup.mjs'
import { fmt, machineLine, median, table } from './lib/report.mjs'
import { lineChart } from './lib/svg.mjs'
import { STRATEGIES, startWatchers, stopWatchers } from './latency.mjs'

const ramp = fileURLToPath(new URL('./ramp.mjs', import.meta.url))

async function once({ limit, stepBytes, everyMs }) {
  const cg = makeCgroup({ limit, v2: true, tag: 'lead' })
  let watchers = []
  try {
    const threshold = Math.floor((0.8 * limit) / 4096) * 4096
    watchers = await startWatchers(cg, threshold)
    const trace = []
    const child = cg.spawn([ramp, '--step', String(stepBytes), '--every', String(everyMs)], {
      env: { MALLOC_MMAP_THRESHOLD_: '65536' },
      onLine: (line, ns) => {
        if (line.startsWith('alloc ')) trace.push([ns, cg.usage()])
      },
    })
    await child.waitLine((l) => l === 'ready').catch(() => {})
    const t0 = process.hrtime.bigint()
    const exit = await child.exited
    const killNs = exit.ns
    const oomKills = cg.oomKills()
    const results = watchers.map((w) => {
      const first = w.events.find((e) => e.direction === 'up')
      return {
        strategy: w.name,
        warned: Boolean(first && first.ns <= killNs),
        leadMs: first ? Number(killNs - first.ns) / 1e6 : null,
        usageAtWarning: first?.usage ?? null,
        events: w.events.map((e) => [Number(e.ns - t0) / 1e9, e.usage / MiB, e.direction]),
      }
    })
    return {
      limit, threshold, signal: exit.signal, oomKills, killAtS: Number(killNs - t0) / 1e9, results,
      trace: trace.map(([ns, u]) => [Number(ns - t0) / 1e9, u / MiB]),
    }
  } finally {
    await stopWatchers(watchers)
    await cg.remove()
  }
}

export async function run({ quick, machine }) {
  const runs = quick ? 1 : 3
  const limit = 256 * MiB
  const stepBytes = MiB
  const everyMs = 50
  const all = []
  for (let i = 0; i < runs; i++) all.push(await once({ limit, stepBytes, everyMs }))
  const names = all[0].results.map((r) => r.strategy)
  const rows = names.map((name) => {
    const per = all.map((a) => a.results.find((r) => r.strategy === name))
    const leads = per.filter((r) => r.warned).map((r) => r.leadMs)
    return { strategy: name, warnedRuns: leads.length, runs, leadMsMedian: median(leads), leadMsMin: leads.length ? Math.min(...leads) : null, leadMsMax: leads.length ? Math.max(...leads) : null }
  })
  const rate = (stepBytes / MiB) * (1000 / everyMs)
  const ideal = ((limit - all[0].threshold) / MiB / rate) * 1000
  const json = { bench: 'lead-time', machine, runs, limit, stepBytes, everyMs, rateMiBps: rate, idealLeadMs: ideal, summary: rows, runsDetail: all }
  const md = `# 3. Warning lead time before the OOM kill

${machineLine(machine)}. ${runs} run${runs > 1 ? 's' : ''}: a child leaks ${stepBytes / MiB} MiB every ${everyMs} ms (${rate} MiB/s nominal) in a cgroup limited to ${limit / MiB} MiB until the OOM killer ends it (kills counted by \`memory.oom_control\`: ${all.map((a) => `${a.oomKills} (${a.signal})`).join(', ')}). Every strategy watches a threshold at 80% of the limit. Lead time = the kill (the parent sees the child exit) minus the strategy's first warning; at the nominal rate the threshold is ${fmt(ideal / 1000, 2)} s before the limit. Median [min–max] over the runs.

${table(['strategy', 'runs with a warning', 'lead time ms', 'usage at warning MiB (run 1)'], rows.map((r) => {
  const first = all[0].results.find((x) => x.strategy === r.strategy)
  return [r.strategy, `${r.warnedRuns} of ${r.runs}`, r.warnedRuns ? `${fmt(r.leadMsMedian, 0)} [${fmt(r.leadMsMin, 0)}–${fmt(r.leadMsMax, 0)}]` : 'no warning', first.usageAtWarning === null ? '–' : fmt(first.usageAtWarning / MiB, 1)]
}))}
`
  const a = all[0]
  const charts = {
    'lead-time': lineChart({
      title: `A steady leak to the OOM kill (${limit / MiB} MiB limit): first warning of each strategy`,
      xLabel: 'seconds', yLabel: 'usage (MiB)',
      series: [
        { name: 'usage', points: a.trace, color: '#999', width: 1.5 },
        // bigger dots first, so that warnings at the same moment stay visible
        ...a.results.map((r, i) => ({ name: r.strategy, points: r.events.filter((e) => e[2] === 'up').slice(0, 1).map((e) => [e[0], e[1]]), dotsOnly: true, r: 10 - 1.5 * i })),
      ],
      hlines: [{ y: a.threshold / MiB, label: 'threshold (80%)' }, { y: limit / MiB, label: 'limit', color: '#d62728' }],
      vlines: [{ x: a.killAtS, label: 'OOM kill', color: '#d62728', dash: '3 3' }],
    }),
  }
  return { name: 'lead-time', json, md, charts }
}
