// `npm run example:lru-cache`: an lru-cache that grows by memory availability. Inside a 256 MiB
// cgroup it fills with 1 MiB entries; the monitor shrinks it at each pressure level before the
// kernel would OOM-kill, and once other memory goes away ('relief') the cache grows back.
// Without a writable cgroup v1 memory controller (not root, cgroup v2, macOS) the same story runs
// on the simulated backend, a virtual cgroup with the kernel's semantics.
//
//   node examples/lru-cache.mjs              (a real limited cgroup where possible)
//   node examples/lru-cache.mjs --simulated

import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { setImmediate as turn } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { LRUCache } from 'lru-cache'
import { SimulatedBackend, createMemoryMonitor, findMemoryCgroup, formatBytes, reduceHeap } from 'node-memory-pressure'
import { lruCacheShrinker, withHoldHook } from 'node-memory-pressure/lru-cache'

const MiB = 2 ** 20
const LIMIT = 256 * MiB
const BALLAST = 64 * MiB
const levels = { moderate: '60%', high: '75%', critical: '90%' }

if (process.argv.includes('--child')) await inCgroup()
else if (process.argv.includes('--simulated')) await onSimulated('asked for with --simulated')
else await makeCgroupAndRun()

/**
 * The story, whatever the backend: other memory (a ballast) and a growing cache share the limit;
 * the cache gives way under pressure, then grows back once the ballast is gone.
 */
async function story(monitor, cache, { entry, takeBallast, dropBallast }) {
  const mib = (n) => formatBytes(n).padStart(9)
  let changes = 0
  let reliefs = 0
  monitor.on('pressure', (e) => {
    // The first few level changes in full; afterwards only the rise above moderate is news.
    if (++changes <= 4 || e.level === 'high' || e.level === 'critical') console.log(`  pressure ${e.previous} → ${e.level}: working set ${mib(e.bytes)}`)
  })
  monitor.on('relief', () => reliefs++ === 0 && console.log('  relief: below moderate − hysteresis again, the cache may grow'))
  monitor.on('shrink', (r) => {
    const heap = r.heap ? `, GC ${r.heap.gcMs.toFixed(1)} ms, malloc_trim ${r.heap.mallocTrim}` : ''
    console.log(`  shrink #${r.cycle} at ${r.level}: asked ${mib(r.requestedBytes)}, cache reported ${mib(r.reportedBytes)}, measured ${mib(r.freedBytes)} freed${heap}`)
  })
  // After a shrink the plugin holds the cache at its new size; once the level is back to normal the
  // cap grows by `regrowth` of itself per second while the cache presses it (default 5%; 20% here
  // so that the story is short).
  const shrinker = lruCacheShrinker(cache, { name: 'entries', minEntries: 8, regrowth: 0.2 })
  monitor.register(shrinker)
  console.log(`the cache is held through ${shrinker.holdBy}`)
  const s = monitor.snapshot()
  console.log(`backend ${monitor.backend}, limit ${formatBytes(s.limit)}, levels ${JSON.stringify(levels)}`)

  let ballast = takeBallast()
  console.log(`1. holding ${formatBytes(BALLAST)} of other memory, filling the cache with 300 × 1 MiB`)
  for (let i = 0; i < 300; i++) {
    cache.set(`a${i}`, entry())
    await turn()
  }
  await monitor.until('moderate')
  const before = cache.calculatedSize
  console.log(`   the cache holds ${formatBytes(before)} (evicted ${shrinker.stats.evicted} entries so far; ${changes} level changes, ${reliefs} reliefs)`)

  console.log(`2. the other memory goes away; adding an entry every 10 ms while the cap lets it grow`)
  ballast = dropBallast(ballast)
  await reduceHeap()
  // the monitor hears of it from the kernel (or, for memory left on malloc's free lists, at its
  // next re-check): wait for the level to be normal again
  const waited = new AbortController()
  const timer = setTimeout(() => waited.abort(), 5000) // a timer that keeps the process alive
  await monitor.until('normal', { signal: waited.signal }).catch(() => console.log(`   still ${monitor.level} after 5 s`))
  clearTimeout(timer)
  const started = Date.now()
  let next = started + 1000
  for (let i = 0; Date.now() - started < 15_000 && cache.calculatedSize < before + BALLAST && monitor.level === 'normal'; i++) {
    cache.set(`b${i}`, entry())
    await new Promise((resolve) => setTimeout(resolve, 10))
    if (Date.now() >= next) {
      next += 1000
      console.log(`   after ${Math.round((Date.now() - started) / 1000)} s: the cache holds ${formatBytes(cache.calculatedSize)}, cap ${shrinker.cap === null ? 'none' : formatBytes(shrinker.cap)}`)
    }
  }
  console.log(`   the cache holds ${formatBytes(cache.calculatedSize)}: it grew back into the room (${formatBytes(before)} before), level ${monitor.level}`)
  console.log(`   never killed; ${shrinker.stats.runs} shrinks evicted ${shrinker.stats.evicted} entries in all`)
  await monitor.close()
}

// withHoldHook: the shrinker holds the cache through lru-cache's onInsert (11.1+) instead of
// wrapping its methods.
function newCache(dispose) {
  return new LRUCache(withHoldHook({ max: 10_000, maxSize: 2 ** 40, sizeCalculation: (v) => v.length, dispose }))
}

/** Inside the limited cgroup: real Buffers, real kernel thresholds. */
async function inCgroup() {
  const monitor = createMemoryMonitor({ levels })
  await story(monitor, newCache(), {
    entry: () => Buffer.alloc(MiB, 1), // filled, so its pages are charged now
    takeBallast: () => Buffer.alloc(BALLAST, 1),
    dropBallast: () => null,
  })
}

/** The same on a virtual cgroup: every cache entry charges it 1 MiB, eviction uncharges. */
async function onSimulated(reason) {
  console.log(`Simulated backend (${reason}).`)
  const sim = new SimulatedBackend({ limit: LIMIT, usage: 40 * MiB })
  const monitor = createMemoryMonitor({ backend: sim, levels, reduceHeap: { gc: 'none', mallocTrim: false } })
  const entry = () => {
    sim.allocate(MiB)
    return 'x'.repeat(MiB)
  }
  await story(monitor, newCache(() => sim.free(MiB)), {
    entry,
    takeBallast: () => sim.allocate(BALLAST),
    dropBallast: () => sim.free(BALLAST),
  })
}

/** Makes a 256 MiB cgroup below our own, reruns this file inside it, removes the cgroup afterwards. */
async function makeCgroupAndRun() {
  let own
  try {
    own = findMemoryCgroup()
  } catch (err) {
    return onSimulated(`no memory cgroup: ${err.code}`)
  }
  if (own.version !== 1) return onSimulated('cgroup v2: creating a limited child cgroup needs a delegated subtree')
  if (process.getuid?.() !== 0) return onSimulated('not root: cannot create a cgroup')
  const dir = path.join(own.path, `node-memory-pressure-lru-example-${process.pid}`)
  try {
    fs.mkdirSync(dir)
    fs.writeFileSync(path.join(dir, 'memory.limit_in_bytes'), String(LIMIT))
  } catch (err) {
    fs.rmSync(dir, { recursive: false, force: true })
    return onSimulated(`cannot create a limited cgroup (${err.code})`)
  }
  const self = fileURLToPath(import.meta.url)
  const child = spawn('/bin/sh', ['-c', 'echo $$ > "$0" && exec "$@"', path.join(dir, 'cgroup.procs'), process.execPath, self, '--child'], {
    stdio: 'inherit',
    // Freed 1 MiB Buffers go back to the kernel at once instead of staying in malloc's arenas.
    env: { ...process.env, MALLOC_MMAP_THRESHOLD_: '131072' },
  })
  const removeCgroup = async () => {
    try { process.kill(child.pid, 'SIGKILL') } catch { /* already gone */ }
    while (fs.existsSync(dir) && fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').trim() !== '') await turn()
    try { fs.writeFileSync(path.join(dir, 'memory.force_empty'), '0') } catch { /* rmdir moves what is left to the parent */ }
    fs.rmdirSync(dir)
  }
  process.once('SIGINT', () => void removeCgroup().then(() => process.exit(130)))
  console.log(`Made ${dir} with a ${formatBytes(LIMIT)} limit.`)
  try {
    const [code, signal] = await new Promise((resolve) => child.on('exit', (c, s) => resolve([c, s])))
    if (code !== 0) {
      console.error(`the child ended with ${signal ?? code}`)
      process.exitCode = 1
    }
  } finally {
    await removeCgroup()
  }
}
