// `npm run example:fastify`: a fastify service whose lru-cache of rendered pages would outgrow a
// 256 MiB limit under load; node-memory-pressure shrinks the cache by level and sheds load with 503 at
// 'critical', so the service is never OOM-killed. It loads itself with autocannon for a few seconds.
// Without a writable cgroup v1 memory controller the same service runs on the simulated backend.
//
//   node examples/fastify-service.mjs                  (a real 256 MiB cgroup where possible)
//   node examples/fastify-service.mjs --compare        (the same load with @fastify/under-pressure
//                                                       and with neither, then a table)
//   node examples/fastify-service.mjs --simulated
//   node examples/fastify-service.mjs --serve [--no-sdk [--under-pressure]]
//       serve and load here, in whatever cgroup this process is (the tests use it); --no-sdk without
//       node-memory-pressure, --under-pressure with @fastify/under-pressure instead (RSS sampled every
//       second against 90% of the limit: it sheds, but nothing gives memory back)
// Environment: LOAD_SECONDS (default 5), or LOAD_REQUESTS (a number of requests instead of a
// duration), CONNECTIONS (default 10).

import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import autocannon from 'autocannon'
import Fastify from 'fastify'
import { LRUCache } from 'lru-cache'
import { SimulatedBackend, createMemoryMonitor, findMemoryCgroup, formatBytes } from 'node-memory-pressure'
import memoryPressure from 'node-memory-pressure/fastify'
import { lruCacheShrinker } from 'node-memory-pressure/lru-cache'

const MiB = 2 ** 20
const LIMIT = 256 * MiB
const PAGE = 512 * 1024
const levels = { moderate: '60%', high: '75%', critical: '90%' }
const seconds = Number(process.env.LOAD_SECONDS ?? 5)
const amount = process.env.LOAD_REQUESTS === undefined ? undefined : Number(process.env.LOAD_REQUESTS)
const connections = Number(process.env.CONNECTIONS ?? 10)

if (process.argv.includes('--serve')) await serve({ sdk: !process.argv.includes('--no-sdk'), underPressure: process.argv.includes('--under-pressure') })
else if (process.argv.includes('--simulated')) await serve({ sdk: true, simulated: 'asked for with --simulated' })
else await inLimitedCgroup()

/**
 * The service, loaded by autocannon in the same process for `seconds` (or `amount` requests);
 * prints `ready` once listening and one `result <json>` line at the end.
 */
async function serve({ sdk, simulated, underPressure }) {
  const sim = simulated === undefined ? undefined : new SimulatedBackend({ limit: LIMIT, usage: 60 * MiB })
  const cache = new LRUCache({
    max: 100_000,
    maxSize: 2 ** 40,
    sizeCalculation: (page) => page.length,
    dispose: sim === undefined ? undefined : () => sim.free(PAGE),
  })
  const render = (id) => {
    if (sim !== undefined) sim.allocate(PAGE)
    // Filled, so its pages are charged to the cgroup now.
    return Buffer.alloc(PAGE, id % 251)
  }

  const app = Fastify()
  let monitor
  const counts = { pressure: [], shrinks: 0, evicted: 0 }
  if (sdk) {
    if (simulated !== undefined) console.log(`Simulated backend (${simulated}).`)
    monitor = createMemoryMonitor({ backend: sim ?? 'auto', levels })
    const shrinker = lruCacheShrinker(cache, { name: 'pages', minEntries: 16 })
    monitor.register(shrinker)
    monitor.on('pressure', (e) => counts.pressure.push(e.level))
    monitor.on('shrink', () => {
      counts.shrinks++
      counts.evicted = shrinker.stats.evicted
    })
    await app.register(memoryPressure, { monitor, shedAt: 'critical', retryAfter: 1, exposeStatusRoute: true })
    const s = monitor.snapshot()
    console.log(`backend ${monitor.backend}, limit ${formatBytes(s.limit)}, levels ${JSON.stringify(levels)}`)
  }
  if (underPressure) {
    const { default: plugin } = await import('@fastify/under-pressure')
    await app.register(plugin, { maxRssBytes: 0.9 * LIMIT, retryAfter: 1 })
  }
  app.get('/page/:id', async (req) => {
    const id = Number(req.params.id)
    let page = cache.get(id)
    const hit = page !== undefined
    if (!hit) cache.set(id, (page = render(id)))
    return { id, bytes: page.length, hit }
  })
  const address = await app.listen({ port: 0, host: '127.0.0.1' })
  console.log('ready')

  let next = 0
  const load = await autocannon({
    url: address,
    connections,
    ...(amount === undefined ? { duration: seconds } : { amount }),
    // Every request asks for a new page: the cache only grows, as a cache of rendered pages
    // does when the key space is larger than memory.
    requests: [{ setupRequest: (request) => ({ ...request, path: `/page/${next++}` }) }],
  })
  const result = {
    requests: load.requests.total,
    ok: load['2xx'],
    shed: load.non2xx,
    errors: load.errors,
    cacheEntries: cache.size,
    cacheBytes: cache.calculatedSize,
    levels: counts.pressure,
    shrinks: counts.shrinks,
    evicted: counts.evicted,
  }
  console.log(`result ${JSON.stringify(result)}`)
  console.log(
    `${result.requests} requests: ${result.ok} served, ${result.shed} shed with 503; ` +
      `${result.shrinks} shrink cycles evicted ${result.evicted} pages; the cache ends at ${formatBytes(result.cacheBytes)}`,
  )
  await app.close()
  await monitor?.close()
}

/** Makes a 256 MiB cgroup below this process's own, serves inside it, reports how it ended. */
async function inLimitedCgroup() {
  let own
  try {
    own = findMemoryCgroup()
  } catch (err) {
    return serve({ sdk: true, simulated: `no memory cgroup: ${err.code}` })
  }
  if (own.version !== 1) return serve({ sdk: true, simulated: 'cgroup v2: a limited child cgroup needs a delegated subtree' })
  if (process.getuid?.() !== 0) return serve({ sdk: true, simulated: 'not root: cannot create a cgroup' })
  const dir = path.join(own.path, `node-memory-pressure-fastify-example-${process.pid}`)
  try {
    fs.mkdirSync(dir)
    fs.writeFileSync(path.join(dir, 'memory.limit_in_bytes'), String(LIMIT))
  } catch (err) {
    fs.rmSync(dir, { force: true, recursive: false })
    return serve({ sdk: true, simulated: `cannot create a limited cgroup (${err.code})` })
  }
  console.log(`Made ${dir} with a ${formatBytes(LIMIT)} limit.`)
  // --compare: the same load three times, with node-memory-pressure, with @fastify/under-pressure, with
  // neither; otherwise only the first.
  const variants = [
    { name: 'node-memory-pressure', args: [] },
    { name: '@fastify/under-pressure (maxRssBytes 90%)', args: ['--no-sdk', '--under-pressure'] },
    { name: 'neither', args: ['--no-sdk'] },
  ].slice(0, process.argv.includes('--compare') ? 3 : 1)
  const env = { ...process.env, MALLOC_MMAP_THRESHOLD_: '131072', ...(process.argv.includes('--compare') ? { LOAD_REQUESTS: process.env.LOAD_REQUESTS ?? '1500' } : {}) }
  const rows = []
  let child
  try {
    for (const variant of variants) {
      const killsBefore = oomKills(dir)
      child = spawn('/bin/sh', ['-c', 'echo $$ > "$0" && exec "$@"', path.join(dir, 'cgroup.procs'), process.execPath, fileURLToPath(import.meta.url), '--serve', ...variant.args], {
        stdio: ['ignore', 'pipe', 'inherit'],
        // Freed pages go back to the kernel at once instead of staying in malloc's arenas.
        env,
      })
      let result = null
      child.stdout.on('data', (d) => {
        process.stdout.write(d)
        const line = /^result (.*)$/m.exec(String(d))
        if (line) result = JSON.parse(line[1])
      })
      const [code, signal] = await new Promise((resolve) => child.on('exit', (c, s) => resolve([c, s])))
      const kills = oomKills(dir) - killsBefore
      console.log(`The service (${variant.name}) exited with ${signal ?? code}; OOM kills in its cgroup: ${kills}.`)
      rows.push({ variant: variant.name, exit: signal ?? code, oomKills: kills, served: result?.ok ?? '-', shed: result?.shed ?? '-' })
      if (variant.args.length === 0 && code !== 0) process.exitCode = 1
      // What a killed service left charged (page cache) would count against the next one.
      fs.writeFileSync(path.join(dir, 'memory.force_empty'), '0')
    }
    if (rows.length > 1) console.table(rows)
  } finally {
    try { process.kill(child.pid, 'SIGKILL') } catch { /* gone */ }
    while (fs.existsSync(dir) && fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').trim() !== '') await new Promise((r) => setImmediate(r))
    try { fs.writeFileSync(path.join(dir, 'memory.force_empty'), '0') } catch { /* rmdir moves the rest to the parent */ }
    fs.rmdirSync(dir)
  }
}

function oomKills(dir) {
  return Number(/oom_kill (\d+)/.exec(fs.readFileSync(path.join(dir, 'memory.oom_control'), 'utf8'))?.[1] ?? 0)
}
