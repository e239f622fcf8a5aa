// Runs bench/workload.mjs in a cgroup and turns its output into one result, also when the OOM killer
// ended it (throughput then counts only the requests served before the kill).

import { fileURLToPath } from 'node:url'

const script = fileURLToPath(new URL('../workload.mjs', import.meta.url))

/**
 * `args`: workload options as an object ({ strategy: 'fixed', 'cache-mib': 64, ... }); `env`:
 * environment variables added to the child's.
 */
export async function runWorkload(cg, args, { onProgress, env } = {}) {
  const argv = [script]
  for (const [k, v] of Object.entries(args)) {
    if (v === true) argv.push(`--${k}`)
    else if (v !== false && v !== undefined) argv.push(`--${k}`, String(v))
  }
  const progress = []
  let result = null
  const errors = []
  const shrinkLog = []
  const pressureLog = []
  const child = cg.spawn(argv, {
    env,
    onLine: (line, ns) => {
      if (line.startsWith('progress ')) {
        const [tMs, requests, hits, cacheBytes, entries, rss, shrinks, cpuUs] = line.split(' ').slice(1).map(Number)
        const p = { tMs, requests, hits, cacheBytes, entries, rss, shrinks, cpuUs, usage: safeUsage(cg), ns }
        progress.push(p)
        onProgress?.(p)
      } else if (line.startsWith('result ')) result = JSON.parse(line.slice(7))
      else if (line.startsWith('error ')) errors.push(line.slice(6))
      else if (line.startsWith('shrink ')) shrinkLog.push(JSON.parse(line.slice(7)))
      else if (line.startsWith('pressure ')) pressureLog.push(JSON.parse(line.slice(9)))
    },
  })
  const exit = await child.exited
  const oomKills = cg.oomKills()
  const peak = cg.peak()
  if (!result) {
    // killed: requests served between the end of the warm-up and the kill, over the whole window
    const warm = Number(args.warmup) * 1000
    const before = progress.filter((p) => p.tMs <= warm).at(-1) ?? { requests: 0, hits: 0, cpuUs: 0 }
    const last = progress.at(-1) ?? before
    const served = Math.max(0, last.requests - before.requests)
    // a dead service serves nothing for the rest of the window: count CPU as if it had kept working
    const cpuSeconds = ((last.cpuUs - before.cpuUs) / 1e6) * (Number(args.seconds) * 1000 / Math.max(1, last.tMs - warm))
    result = {
      strategy: args.strategy, requests: served, throughput: served / Number(args.seconds),
      cpuSeconds: served > 0 ? cpuSeconds : null, perCpuSecond: served > 0 ? served / cpuSeconds : 0,
      hitRatio: served > 0 ? (last.hits - before.hits) / served : null, p50Ms: null, p99Ms: null,
      cacheBytes: last.cacheBytes ?? null, peakCacheBytes: Math.max(0, ...progress.map((p) => p.cacheBytes)), shrinks: last.shrinks ?? 0, shrinkLog,
    }
  }
  // V8's heap exhausted (its FATAL ERROR, then abort): the other way a service dies of memory, where
  // --max-old-space-size (or Node's default) is below what the cgroup leaves; a death like the OOM
  // kill, counted apart from it, not a failure of the bench
  const heapExhausted = exit.code !== 0 && exit.signal !== 'SIGKILL' && /heap out of memory/i.test(child.stderr())
  if (exit.code !== 0 && exit.signal !== 'SIGKILL' && !heapExhausted) throw new Error(`workload failed (${exit.code ?? exit.signal}): ${child.stderr().slice(-3000)}`)
  const killed = exit.signal === 'SIGKILL'
  // requests per CPU second at equal speed: times the run's mean CPU time of one computation (see
  // workload.mjs, computeCpuMs), so that the core a run got does not count; a killed run served
  // nothing
  const scaled = killed || heapExhausted ? 0 : result.computeCpuMs ? result.perCpuSecond * result.computeCpuMs : null
  return { ...result, scaled, killed, heapExhausted, oomKills, peakUsage: peak, errors, progress, pressureLog }
}

function safeUsage(cg) {
  try {
    return cg.usage()
  } catch {
    return null
  }
}
