// Benchmark 7, reclaim speed: a Node child holds an lru-cache of 64 or 256 MiB in a cgroup whose limit
// puts the moderate level just above it, then grows the cache slowly; from the 'pressure' event to the
// end of the shrink cycle that brings usage back under its target (moderate − hysteresis).

import { fileURLToPath } from 'node:url'
import { MiB, makeCgroup } from './lib/cgroup.mjs'
import { fmt, machineLine, median, mib, table } from './lib/report.mjs'

const child = fileURLToPath(new URL('./reclaim-child.mjs', import.meta.url))

/**
 * The limit whose default moderate level is `bytes`: 70% of it up to a 320 MiB limit, then
 * limit − 96 MiB up to 480 MiB, then 80% (see DEFAULT_LEVEL_HEADROOM in src/policy/levels.ts).
 */
const limitFor = (bytes) => (bytes <= 224 * MiB ? bytes / 0.7 : bytes <= 384 * MiB ? bytes + 96 * MiB : bytes / 0.8)

export async function run({ quick, machine }) {
  const sizes = [64, 256]
  const reps = quick ? 1 : 3
  const results = []
  for (const cacheMib of sizes) {
    for (let i = 0; i < reps; i++) {
      // what Node itself charges to a fresh cgroup here is about 16 MiB (its code is page cache charged
      // elsewhere); the default moderate level is then reached with the cache at about cacheMib
      const limit = Math.round(limitFor((cacheMib + 16) * MiB) / 4096) * 4096
      const cg = makeCgroup({ limit, tag: 'reclaim' })
      try {
        let result = null
        const c = cg.spawn([child, '--fill-mib', String(cacheMib)], {
          onLine: (line) => {
            if (line.startsWith('result ')) result = JSON.parse(line.slice(7))
          },
        })
        const exit = await c.exited
        if (!result) throw new Error(`reclaim child ended without a result (${exit.code ?? exit.signal}): ${c.stderr().slice(-2000)}`)
        console.error(`   ${cacheMib} MiB: ${fmt(result.toTargetMs, 1)} ms to target, freed ${mib(result.freedBytes)} MiB`)
        results.push({ cacheMib, limit, ...result })
      } finally {
        await cg.remove()
      }
    }
  }
  const rows = sizes.map((cacheMib) => {
    const rs = results.filter((r) => r.cacheMib === cacheMib)
    const m = (k) => median(rs.map((r) => r[k]))
    const rg = (k) => `${fmt(m(k), 1)}${rs.length > 1 ? ` [${fmt(Math.min(...rs.map((r) => r[k])), 1)}–${fmt(Math.max(...rs.map((r) => r[k])), 1)}]` : ''}`
    const over = median(rs.map((r) => r.basisAfter - r.target))
    return [`${cacheMib} MiB`, String(rs.length), mib(m('cacheBytesAtPressure')), rg('toTargetMs'), rg('shrinkerMs'), rg('gcMs'), rg('mallocTrimMs'), mib(m('requestedBytes')), mib(m('freedBytes')), `${rs.filter((r) => r.underTarget).length} of ${rs.length} (${over > 0 ? '+' : ''}${mib(over, 2)} MiB)`]
  })
  const json = { bench: 'reclaim', machine, reps, results }
  const md = `# 7. Reclaim speed

${machineLine(machine)}. ${reps} run${reps > 1 ? 's' : ''} per size (median, range in brackets): a child fills an lru-cache to the size, in a cgroup whose default moderate level lies just above it (limit ${results.map((r) => r.limit).filter((x, i, a) => a.indexOf(x) === i).map((x) => `${mib(x)} MiB`).join(' and ')}: moderate at 70% of the limit for the smaller, at limit − 96 MiB for the larger), then keeps adding 64 KiB entries every 2 ms; \`createMemoryMonitor()\` with \`lruCacheShrinker(cache)\`. Time from the \`'pressure'\` event to the end of the first shrink cycle, split into the shrinker, the V8 garbage collection and \`malloc_trim\`; the target is moderate − hysteresis (5% of the limit, at most 10 MiB), compared with the basis the levels decide on in the cycle's snapshot after (the working set less the malloc free bytes counted as available). The cache keeps growing (one entry every 2 ms) while the cycle runs.

${table(['cache', 'runs', 'cache at pressure MiB', 'pressure → usage under target ms', 'shrinker ms', 'GC ms', 'malloc_trim ms', 'requested MiB', 'freed MiB (measured)', 'under target after the cycle (basis − target, median)'], rows)}
`
  return { name: 'reclaim', json, md, charts: {} }
}
