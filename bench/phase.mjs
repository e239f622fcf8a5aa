// Benchmark 5, a burst of pressure (CRAMM's phase change): the workload runs in a cgroup below a
// parent that holds the limit; mid-run a second process in a sibling cgroup takes a large share of
// the limit and later gives it back. Usage, cache size and throughput over time, per strategy.

import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { MiB, makeCgroup } from './lib/cgroup.mjs'
import { fmt, machineLine, mib, sleep, table } from './lib/report.mjs'
import { lineChart } from './lib/svg.mjs'
import { runWorkload } from './lib/workload.mjs'

const allocator = fileURLToPath(new URL('../test/helpers/allocator.mjs', import.meta.url))

const hogStepMs = 100

async function once({ limitMib, hogMib, args, warmup, seconds, hogAt, hogUntil }) {
  const parent = makeCgroup({ limit: limitMib * MiB, tag: 'phase' })
  try {
    const app = parent.child({ tag: 'phase-app' })
    const hogCg = parent.child({ tag: 'phase-hog' })
    const hog = hogCg.spawn([allocator], { env: { MALLOC_MMAP_THRESHOLD_: '65536' } })
    await hog.waitLine((l) => l === 'ready')
    const samples = []
    let t0 = null
    let hogState = 'idle'
    const hogLog = []
    const driveHog = async () => {
      await sleep(hogAt * 1000)
      hogState = 'taking'
      for (let got = 0; got < hogMib; got += 16) {
        hog.send(`alloc ${16 * MiB}`)
        await hog.waitLine((l) => l.startsWith('ok ')).catch(() => {})
        await sleep(hogStepMs)
      }
      hogLog.push(['held', (Number(process.hrtime.bigint() - t0) / 1e9)])
      hogState = 'holding'
      await sleep((hogUntil - hogAt) * 1000)
      hog.send('freeall')
      await hog.waitLine((l) => l.startsWith('ok ')).catch(() => {})
      hogState = 'released'
    }
    let hogDone
    const r = await runWorkload(app, { warmup, seconds, ...args }, {
      onProgress: (p) => {
        if (t0 === null) {
          t0 = p.ns - BigInt(p.tMs) * 1000000n
          hogDone = driveHog().catch((e) => hogLog.push(['error', String(e)]))
        }
        samples.push({ t: p.tMs / 1000, requests: p.requests, cacheBytes: p.cacheBytes, parentUsage: parent.usage(), hog: hogState })
      },
    })
    await Promise.race([hogDone, sleep(2000)])
    const hogKilled = fs.readFileSync(path.join(hogCg.dir, 'memory.oom_control'), 'utf8').match(/oom_kill (\d+)/)?.[1] ?? '0'
    const series = samples.map((s, i) => {
      const prev = samples[i - 1]
      return { ...s, rate: prev ? (s.requests - prev.requests) / (s.t - prev.t) : null }
    })
    return { args, shrinkLog: r.shrinkLog, workloadKilled: r.killed, hogOomKills: Number(hogKilled), parentPeak: parent.peak(), throughput: r.throughput, hitRatio: r.hitRatio, shrinks: r.shrinks, series }
  } finally {
    await parent.remove()
  }
}

export async function run({ quick, machine, out }) {
  const limitMib = 384
  const hogMib = 160
  const seconds = quick ? 16 : 30
  const warmup = quick ? 4 : 6
  const hogAt = warmup + seconds / 3
  const hogUntil = warmup + (2 * seconds) / 3
  // the best fixed size at this limit from the sweep, when it ran first in this output directory
  let fixedMib = 192
  try {
    const cramm = JSON.parse(fs.readFileSync(path.join(out, 'cramm.json'), 'utf8'))
    const oracle = cramm.perLimit.find((l) => l.limitMib === limitMib)?.oracle
    if (oracle) fixedMib = Number(/fixed (\d+) MiB/.exec(oracle)[1])
  } catch { /* sweep not run: keep the default */ }
  const strategies = [
    { label: 'node-memory-pressure', args: { strategy: 'node-memory-pressure' } },
    { label: 'node-memory-pressure, hold: false', args: { strategy: 'node-memory-pressure', 'shrinker-options': JSON.stringify({ hold: false }) } },
    { label: `fixed ${fixedMib} MiB (best fixed size at ${limitMib} MiB)`, args: { strategy: 'fixed', 'cache-mib': fixedMib } },
  ]
  const results = []
  for (const s of strategies) {
    const r = await once({ limitMib, hogMib, args: s.args, warmup, seconds, hogAt, hogUntil })
    console.error(`   ${s.label}: ${fmt(r.throughput, 0)} req/s${r.workloadKilled ? ', workload OOM-killed' : ''}${r.hogOomKills ? ', hog OOM-killed' : ''}`)
    results.push({ label: s.label, ...r })
  }
  const json = { bench: 'phase', machine, limitMib, hogMib, warmup, seconds, hogAt, hogUntil, results }
  const md = `# 5. A burst of pressure from a neighbour

${machineLine(machine)}. One run per strategy: the workload runs ${warmup} s + ${seconds} s in a cgroup under a parent limited to ${limitMib} MiB; from ${fmt(hogAt, 0)} s to ${fmt(hogUntil, 0)} s a second process in a sibling cgroup takes ${hogMib} MiB (16 MiB every ${hogStepMs} ms) and then frees it at once. The SDK in the workload watches the parent (it holds the effective limit).

${table(['strategy', 'req/s over the measured window', 'hit ratio', 'shrinks', 'parent peak MiB', 'workload OOM-killed', 'neighbour OOM-killed'], results.map((r) => [
  r.label, fmt(r.throughput, 0), fmt(r.hitRatio, 3), String(r.shrinks), mib(r.parentPeak), r.workloadKilled ? 'yes' : 'no', r.hogOomKills ? 'yes' : 'no',
]))}
`
  const spans = [{ x0: hogAt, x1: hogUntil, label: `neighbour holds ${hogMib} MiB` }]
  const charts = {
    'phase-usage': lineChart({
      title: `Usage of the ${limitMib} MiB parent cgroup (workload + neighbour) and the workload's cache`,
      xLabel: 'seconds', yLabel: 'MiB', spans, yMin: 0,
      series: results.flatMap((r, i) => [
        { name: `${r.label}: usage`, points: r.series.map((s) => [s.t, s.parentUsage / MiB]), color: ['#1f77b4', '#9467bd', '#d62728'][i] },
        { name: `${r.label}: cache`, points: r.series.map((s) => [s.t, s.cacheBytes / MiB]), color: ['#1f77b4', '#9467bd', '#d62728'][i], dash: '5 4', width: 1.5 },
      ]),
      hlines: [{ y: limitMib, label: 'limit', color: '#d62728' }],
      width: 980,
    }),
    'phase-throughput': lineChart({
      title: 'Requests per second over time (0 after an OOM kill)',
      xLabel: 'seconds', yLabel: 'requests / s', spans, yMin: 0,
      series: results.map((r, i) => ({ name: r.label, points: r.series.filter((s) => s.rate !== null).map((s) => [s.t, s.rate]), color: ['#1f77b4', '#9467bd', '#d62728'][i] })),
      width: 980,
    }),
  }
  return { name: 'phase', json, md, charts }
}
