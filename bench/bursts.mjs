// Bursts: a service whose cache grows by 1 MiB a step and which serves a 48 MiB burst every 10 steps,
// in a 192 MiB cgroup v1 limit. Without the SDK the kernel OOM-kills it; with a monitor and a
// shrinker on the cache, how many of N runs survive, and why any did not.
// `node bench/bursts.mjs [--runs 10] [--baseline 3] [--json]`; the child is this file with `--child`.

import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

const MiB = 2 ** 20
const { values } = parseArgs({
  options: {
    child: { type: 'boolean', default: false },
    sdk: { type: 'boolean', default: false },
    runs: { type: 'string', default: '10' },
    baseline: { type: 'string', default: '3' },
    'limit-mib': { type: 'string', default: '192' },
    steps: { type: 'string', default: '220' },
    json: { type: 'boolean', default: false },
  },
})

if (values.child) await child()
else await parent()

/** The workload. Prints `done <cache entries> <shrink cycles> <MiB reported freed>` when it finishes all steps. */
async function child() {
  const steps = Number(values.steps)
  const cache = new Map()
  let key = 0
  let cycles = 0
  let freed = 0
  if (values.sdk) {
    const { createMemoryMonitor } = await import('../dist/index.js')
    const monitor = createMemoryMonitor({ levels: { moderate: '60%', high: '75%', critical: '85%' } })
    monitor.on('shrink', (r) => { cycles++; freed += r.reportedBytes ?? 0 })
    monitor.on('error', (err) => process.stderr.write(`sdk error ${err.code}: ${err.message}\n`))
    monitor.register({
      name: 'cache',
      size: () => cache.size * MiB,
      shrink: (req) => {
        let bytes = 0
        for (const [k] of cache) {
          if (bytes >= req.targetBytes) break
          cache.delete(k)
          bytes += MiB
        }
        return bytes
      },
    })
  }
  const tick = () => new Promise((r) => setImmediate(r))
  for (let step = 0; step < steps; step++) {
    cache.set(key++, Buffer.alloc(MiB, 1))
    if (step % 10 === 9) {
      // A burst of requests: 48 MiB of buffers held across 12 turns of the event loop, then dropped.
      const held = []
      for (let i = 0; i < 12; i++) {
        for (let j = 0; j < 4; j++) held.push(Buffer.alloc(MiB, 2))
        await tick()
      }
      held.length = 0
    }
    await new Promise((r) => setTimeout(r, 2))
  }
  process.stdout.write(`done ${cache.size} ${cycles} ${(freed / MiB).toFixed(0)}\n`)
  process.exit(0)
}

async function parent() {
  const { makeCgroup, removeAll } = await import('./lib/cgroup.mjs')
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => void removeAll().finally(() => process.exit(130)))
  const self = fileURLToPath(import.meta.url)
  const limit = Number(values['limit-mib']) * MiB
  const one = async (sdk) => {
    const cg = makeCgroup({ limit, tag: 'bursts' })
    try {
      let out = ''
      const c = cg.spawn([self, '--child', '--steps', values.steps, ...(sdk ? ['--sdk'] : [])], {
        env: { MALLOC_MMAP_THRESHOLD_: '65536' },
        onLine: (l) => (out += `${l}\n`),
      })
      const exit = await c.exited
      const done = /^done (\d+) (\d+) (\d+)$/m.exec(out)
      return {
        sdk, survived: exit.code === 0 && done !== null, code: exit.code, signal: exit.signal,
        oomKills: cg.oomKills(), peakMiB: Math.round(cg.peak() / MiB), failcnt: Number(cg.read('memory.failcnt')),
        cacheEntries: done ? Number(done[1]) : null, shrinkCycles: done ? Number(done[2]) : null, reportedFreedMiB: done ? Number(done[3]) : null,
        stderr: c.stderr().slice(-500),
      }
    } finally {
      await cg.remove()
    }
  }
  const results = []
  try {
    for (let i = 0; i < Number(values.baseline); i++) results.push(await one(false))
    for (let i = 0; i < Number(values.runs); i++) {
      results.push(await one(true))
      process.stderr.write(`run ${i + 1}: ${JSON.stringify(results[results.length - 1])}\n`)
    }
  } finally {
    await removeAll()
  }
  const without = results.filter((r) => !r.sdk)
  const withSdk = results.filter((r) => r.sdk)
  const summary = {
    limitMiB: limit / MiB, steps: Number(values.steps),
    without: { runs: without.length, survived: without.filter((r) => r.survived).length, oomKilled: without.filter((r) => r.oomKills > 0).length },
    with: { runs: withSdk.length, survived: withSdk.filter((r) => r.survived).length, oomKilled: withSdk.filter((r) => r.oomKills > 0).length },
    results,
  }
  if (values.json) process.stdout.write(`${JSON.stringify(summary)}\n`)
  else {
    console.log(`limit ${summary.limitMiB} MiB, ${summary.steps} steps (cache +1 MiB a step, a 48 MiB burst every 10)`)
    console.log(`without the SDK: ${summary.without.survived}/${summary.without.runs} survived, ${summary.without.oomKilled} OOM-killed`)
    console.log(`with the SDK:    ${summary.with.survived}/${summary.with.runs} survived, ${summary.with.oomKilled} OOM-killed`)
    console.log('| run | SDK | exit | OOM kills | peak MiB | failcnt | cache entries at end | shrink cycles | reported freed MiB |')
    console.log('| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |')
    results.forEach((r, i) => console.log(`| ${i + 1} | ${r.sdk ? 'yes' : 'no'} | ${r.code ?? r.signal} | ${r.oomKills} | ${r.peakMiB} | ${r.failcnt} | ${r.cacheEntries ?? '-'} | ${r.shrinkCycles ?? '-'} | ${r.reportedFreedMiB ?? '-'} |`))
  }
}
