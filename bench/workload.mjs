// The CRAMM-style workload child: a request loop over a zipf-skewed key space whose values cost CPU
// to compute (PBKDF2) and memory to cache (a touched Buffer each), with one cache strategy a user
// could pick. Prints `progress ...` lines while it runs and `result <json>` at the end.
//
//   node bench/workload.mjs --strategy unbounded|fixed|poll|node-memory-pressure [options]
//   fixed: lru-cache with maxSize --cache-mib; poll: @fastify/under-pressure style, rss read every
//   second against a fixed --poll-rss-mib, trimming the cache to 75% above it; node-memory-pressure: an
//   unbounded lru-cache shrunk by the SDK's policy and lru-cache plugin (--attach-mp adds the same
//   monitor to any strategy, for the overhead bench; --mp-options '<json>' is passed to
//   createMemoryMonitor, --shrinker-options '<json>' to lruCacheShrinker; --gc-first registers a
//   shrinker before the cache's that only collects garbage).
//   --values objects: values are plain JavaScript objects (rows of small objects) of lognormal size
//   (median --value-kib, --sigma), counted by lru-cache's sizeCalculation, instead of Buffers; with
//   NODE_OPTIONS=--max-old-space-size=N below the cgroup's limit, V8's heap is the nearer limit.
//   --phase-at <s>: that many seconds into the measured window the hot set moves (keys shift by
//   half the key space) and --transient-mib of touched Buffers are held for --transient-s seconds.
//   --caches 2: two caches (odd keys and even keys), the second's misses costing 4 times as much;
//   fixed sizes split --cache-mib in two, the SDK asks the cheap one first (priority 0, then 1).
//   --no-cache: a service without a cache whose memory grows and shrinks: every response is kept
//   for a while in a window whose size follows a wave (0 to --window-mib, period --period-s), so
//   only collection and trim can help (strategy fixed: no SDK; node-memory-pressure: a monitor
//   with levels and no shrinker).

import { pbkdf2Sync } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { PerformanceObserver, constants as perfConstants, createHistogram, performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import { LRUCache } from 'lru-cache'

const { values: o } = parseArgs({
  options: {
    strategy: { type: 'string', default: 'fixed' },
    'cache-mib': { type: 'string', default: '64' },
    seconds: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '5' },
    keys: { type: 'string', default: '16384' },
    zipf: { type: 'string', default: '0.8' },
    'value-kib': { type: 'string', default: '64' },
    cost: { type: 'string', default: '2000' },
    'report-ms': { type: 'string', default: '500' },
    seed: { type: 'string', default: '1' },
    'poll-rss-mib': { type: 'string', default: '256' },
    'attach-mp': { type: 'boolean', default: false },
    'mp-options': { type: 'string', default: '{}' },
    'shrinker-options': { type: 'string', default: '{}' },
    'gc-first': { type: 'boolean', default: false },
    // one 'pressure' line per level change (time, level, basis, credit, usage), for finding out why a run died
    trace: { type: 'boolean', default: false },
    // every shrink report in full (without its snapshots), one JSON a line, to this file
    reports: { type: 'string' },
    values: { type: 'string', default: 'buffers' },
    sigma: { type: 'string', default: '1' },
    'phase-at': { type: 'string' },
    'transient-mib': { type: 'string', default: '0' },
    'transient-s': { type: 'string', default: '2' },
    caches: { type: 'string', default: '1' },
    'no-cache': { type: 'boolean', default: false },
    'window-mib': { type: 'string', default: '64' },
    'period-s': { type: 'string', default: '8' },
  },
})
const MiB = 2 ** 20
const strategy = o.strategy
const valueBytes = Number(o['value-kib']) * 1024
const keys = Number(o.keys)
const cost = Number(o.cost)

// xorshift32: the same key sequence in every run with the same seed
let state = Number(o.seed) >>> 0 || 1
const random = () => {
  state ^= state << 13
  state >>>= 0
  state ^= state >>> 17
  state ^= state << 5
  state >>>= 0
  return state / 4294967296
}
const cdf = new Float64Array(keys)
{
  let sum = 0
  for (let i = 0; i < keys; i++) cdf[i] = sum += 1 / (i + 1) ** Number(o.zipf)
  for (let i = 0; i < keys; i++) cdf[i] /= sum
}
const nextKey = () => {
  const u = random()
  let lo = 0
  let hi = keys - 1
  while (lo < hi) {
    const mid = (lo + hi) >> 1
    if (cdf[mid] < u) lo = mid + 1
    else hi = mid
  }
  return lo
}

// A value: the CPU part (PBKDF2: hashing only, no memory) and the memory part (a touched Buffer)
const derive = (key) => pbkdf2Sync(`key-${key}`, 'salt', costOf(key), 32, 'sha256')
if (o.values !== 'buffers' && o.values !== 'objects') throw new RangeError(`--values: buffers or objects (received ${JSON.stringify(o.values)})`)
const objects = o.values === 'objects'
// A key's object size: lognormal around --value-kib, the same for a key in every run (two uniforms
// from an integer hash of the key, Box-Muller).
const sigma = Number(o.sigma)
const unit = (x) => {
  x = Math.imul(x ^ (x >>> 16), 0x45d9f3b)
  x = Math.imul(x ^ (x >>> 16), 0x45d9f3b)
  return (((x ^ (x >>> 16)) >>> 0) + 0.5) / 4294967296
}
const ROW_BYTES = 48 // a row { i, v, s } with its slot in the array, as V8 lays it out on 64 bits
const objectBytes = (key) => {
  const z = Math.sqrt(-2 * Math.log(unit(key * 2 + 1))) * Math.cos(2 * Math.PI * unit(key * 2 + 2))
  return Math.max(ROW_BYTES, Math.min(valueBytes * 64, Math.round(valueBytes * Math.exp(sigma * z))))
}
const materialize = objects
  ? (hash, key) => {
      const n = Math.ceil(objectBytes(key) / ROW_BYTES)
      const rows = new Array(n)
      for (let i = 0; i < n; i++) rows[i] = { i, v: hash[i & 31] * i, s: null }
      return { bytes: n * ROW_BYTES, rows }
    }
  : (hash) => Buffer.alloc(valueBytes, hash)
const bytesOf = objects ? (v) => v.bytes : (v) => v.length
let mapBytes = 0

const nCaches = Number(o.caches)
if (nCaches !== 1 && nCaches !== 2) throw new RangeError(`--caches: 1 or 2 (received ${JSON.stringify(o.caches)})`)
const makeCache = () => {
  if (strategy === 'unbounded') return new Map()
  if (strategy === 'fixed') return new LRUCache({ maxSize: (Number(o['cache-mib']) * MiB) / nCaches, sizeCalculation: bytesOf })
  if (strategy === 'poll' || strategy === 'node-memory-pressure') return new LRUCache({ maxSize: 2 ** 40, sizeCalculation: bytesOf })
  throw new RangeError(`--strategy: unknown ${JSON.stringify(strategy)}`)
}
const caches = Array.from({ length: nCaches }, makeCache)
const cache = caches[0]
const cacheOf = (key) => caches[key % nCaches]
// the second cache's values cost this many times the first's to compute
const costOf = (key) => (nCaches === 2 && key % 2 === 1 ? cost * 4 : cost)
const sizeOf = () => caches.reduce((n, c) => n + (c instanceof Map ? 0 : c.calculatedSize), cache instanceof Map ? mapBytes : 0)
const entriesOf = () => caches.reduce((n, c) => n + c.size, 0)

let shrinks = 0
const trimTo = (bytes) => {
  for (const c of caches) while (c.calculatedSize > bytes / nCaches && c.size > 0) c.pop()
}
if (strategy === 'poll') {
  // what a user of @fastify/under-pressure-style polling does: a fixed number, checked once a second
  const limit = Number(o['poll-rss-mib']) * MiB
  setInterval(() => {
    if (process.memoryUsage.rss() > limit) {
      shrinks++
      trimTo(sizeOf() * 0.75)
    }
  }, 1000).unref()
}
let monitorInfo = null
const shrinkLog = []
if (strategy === 'node-memory-pressure' || o['attach-mp']) {
  // the SDK as its README shows it: a monitor with the default levels (70/85/95% of the limit) and
  // the lru-cache plugin; shrinking frees the cache, then a full GC and malloc_trim
  // MP_BUILD_DIR: another build's dist/ (an old engine kept for A/B runs, see ab.mjs)
  const build = process.env.MP_BUILD_DIR
  const { createMemoryMonitor, reduceHeap } = await import(build ? pathToFileURL(path.join(build, 'index.js')).href : 'node-memory-pressure')
  const { lruCacheShrinker } = await import(build ? pathToFileURL(path.join(build, 'plugins', 'lru-cache.js')).href : 'node-memory-pressure/lru-cache')
  const monitor = createMemoryMonitor(JSON.parse(o['mp-options']))
  monitor.on('error', (e) => process.stdout.write(`error ${e.code}\n`))
  if (o['gc-first']) {
    // Garbage first: evicted values only leave the process after a GC, so when usage rose because of
    // them, a collection alone answers the request and the cache keeps its entries.
    monitor.register({
      name: 'garbage', priority: -1,
      shrink: async () => {
        const r = await reduceHeap()
        return Math.max(0, r.rssBefore - r.rssAfter)
      },
    })
  }
  if (o['no-cache']) monitor.until('normal').catch(() => {}) // levels on, nothing to shrink
  else caches.forEach((c, i) => monitor.register(lruCacheShrinker(c, { ...JSON.parse(o['shrinker-options']), ...(nCaches > 1 ? { name: `cache-${i}`, priority: i } : {}) })))
  monitor.on('shrink', (r) => {
    shrinks++
    shrinkLog.push({ level: r.level, limit: r.limit, requestedBytes: r.requestedBytes, reportedBytes: r.reportedBytes, freedBytes: r.freedBytes, durationMs: r.durationMs, gcMs: r.heap?.gcMs ?? null, mallocTrimMs: r.heap?.mallocTrimMs ?? null, heapMs: r.heap?.ms ?? null, levelAfter: r.levelAfter, collectedBytes: r.collectedBytes, heapRuns: r.heapRuns, t: Math.round(performance.now() - start) })
    process.stdout.write(`shrink ${JSON.stringify(shrinkLog.at(-1))}\n`)
    if (o.reports) {
      const { before, after, heap, ...rest } = r
      fs.appendFileSync(o.reports, `${JSON.stringify({ ...rest, limitBytes: before.limit })}\n`)
    }
  })
  if (o.trace) {
    monitor.on('pressure', (e) => {
      const line = { t: Math.round(performance.now() - start), level: e.level, previous: e.previous, bytes: e.bytes, allocatorFreeBytes: e.allocatorFreeBytes, usage: e.snapshot.usage, workingSet: e.snapshot.workingSet }
      process.stdout.write(`pressure ${JSON.stringify(line)}\n`)
    })
  }
  monitorInfo = { backend: monitor.backend, options: JSON.parse(o['mp-options']), shrinker: JSON.parse(o['shrinker-options']) }
  process.on('exit', () => void monitor.close())
}

const hist = createHistogram()
// every garbage collection V8 ran in the measured window (its own and the SDK's), by kind: what a
// strategy costs in GC shows here, whoever started the collection
const gcStats = { major: 0, minor: 0, incremental: 0, weak: 0, ms: 0, majorMs: 0 }
const gcKinds = { [perfConstants.NODE_PERFORMANCE_GC_MAJOR]: 'major', [perfConstants.NODE_PERFORMANCE_GC_MINOR]: 'minor', [perfConstants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental', [perfConstants.NODE_PERFORMANCE_GC_WEAKCB]: 'weak' }
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    if (e.startTime < warmupEnd) continue
    const kind = gcKinds[e.detail?.kind]
    if (kind) gcStats[kind]++
    gcStats.ms += e.duration
    if (kind === 'major') gcStats.majorMs += e.duration
  }
}).observe({ entryTypes: ['gc'] })
// how long one miss's computation takes in this run (`computeP50Ms` in the result, wall time)
const computeHist = createHistogram()
// The mean CPU time of the hashing part of a computation (`computeCpuMs`): how fast the core this
// process ran on was. On this machine one of the two cores is at times half again as slow as the
// other, and a side-by-side pair's ratio per CPU second then says which core each cell ran on;
// multiplied by this mean, the throughput is in units of the machine's speed at the time
// (bench/README.md, "How to read the numbers"). Only the hashing: filling the value's Buffer
// faults pages in when the C allocator has none free (after a malloc_trim, say), and timing that
// too would take a strategy's page faults for a slow core and correct them away. Every 4th
// computation of the measured window, between two readings of process.cpuUsage() (2 µs each):
// precise, but of all threads, so a helper thread running during a computation counts too;
// `mainThreadShare` (this thread's CPU time over the window, from /proc/thread-self/schedstat,
// against the process's) says how much there is of that.
let computeCpuUs = 0
let computeCpuN = 0
let computeSeq = 0
const mainThreadNs = () => {
  try {
    return Number(fs.readFileSync('/proc/thread-self/schedstat', 'latin1').split(' ')[0])
  } catch {
    return null
  }
}
let mainAtWarm = null
const start = performance.now()
const warmupEnd = start + Number(o.warmup) * 1000
const end = warmupEnd + Number(o.seconds) * 1000
const warmupNs = process.hrtime.bigint() + BigInt(Number(o.warmup) * 1e9)
// --no-cache: responses kept in a window whose size in bytes follows a wave
const windowValues = []
let windowBytes = 0
const keep = (v) => {
  windowValues.push(v)
  windowBytes += bytesOf(v)
  const t = (performance.now() - start) / 1000
  const cap = Number(o['window-mib']) * MiB * (1 - Math.cos((2 * Math.PI * t) / Number(o['period-s']))) / 2
  while (windowBytes > cap && windowValues.length > 0) windowBytes -= bytesOf(windowValues.shift())
}
// the phase change: the hot set moves and a transient allocation comes and goes
let keyShift = 0
let transient = null
if (o['phase-at'] !== undefined) {
  setTimeout(() => {
    keyShift = Math.floor(keys / 2)
    const mib = Number(o['transient-mib'])
    if (mib > 0) {
      transient = []
      for (let i = 0; i < mib; i++) transient.push(Buffer.alloc(MiB, 1))
      setTimeout(() => (transient = null), Number(o['transient-s']) * 1000)
    }
  }, Number(o.warmup) * 1000 + Number(o['phase-at']) * 1000)
}
let requests = 0
let hits = 0
let wRequests = 0
let wHits = 0
let peakCache = 0
let cpuAtWarm = null
let ruAtWarm = null
const report = () => {
  const size = sizeOf()
  if (size > peakCache) peakCache = size
  const cpu = process.cpuUsage()
  process.stdout.write(`progress ${Math.round(performance.now() - start)} ${requests} ${hits} ${size} ${entriesOf()} ${process.memoryUsage.rss()} ${shrinks} ${cpu.user + cpu.system}\n`)
}
const timer = setInterval(report, Number(o['report-ms']))

const slice = () => {
  const sliceEnd = performance.now() + 5
  let now
  do {
    const t = process.hrtime.bigint()
    const key = (nextKey() + keyShift) % keys
    let v = o['no-cache'] ? undefined : cacheOf(key).get(key)
    const hit = v !== undefined
    if (!hit) {
      const c0 = process.hrtime.bigint()
      const u0 = c0 >= warmupNs && (++computeSeq & 3) === 0 ? process.cpuUsage() : null
      const hash = derive(key)
      if (u0 !== null) {
        const u = process.cpuUsage(u0)
        computeCpuUs += u.user + u.system
        computeCpuN++
      }
      v = materialize(hash, key)
      if (c0 >= warmupNs) computeHist.record(Number(process.hrtime.bigint() - c0) || 1)
      if (o['no-cache']) keep(v)
      else {
        cacheOf(key).set(key, v)
        if (cache instanceof Map) mapBytes += bytesOf(v)
      }
    }
    if ((objects ? v.rows[0] : v[0]) === undefined) throw new Error('empty value')
    requests++
    if (hit) hits++
    now = performance.now()
    if (now >= warmupEnd) {
      if (wRequests === 0) {
        cpuAtWarm = process.cpuUsage()
        ruAtWarm = process.resourceUsage()
        mainAtWarm = mainThreadNs()
      }
      wRequests++
      if (hit) wHits++
      hist.record(Number(process.hrtime.bigint() - t) || 1)
    }
  } while (now < sliceEnd)
  if (now < end) setImmediate(slice)
  else finish()
}
const finish = () => {
  clearInterval(timer)
  report()
  const seconds = Number(o.seconds)
  // CPU time of the whole process (all threads: GC helpers, reclaim in the kernel on our behalf)
  // during the measured window: requests per CPU second does not depend on what else the machine runs
  const cpu = process.cpuUsage(cpuAtWarm)
  const cpuSeconds = (cpu.user + cpu.system) / 1e6
  const mainNow = mainThreadNs()
  const mainThreadShare = mainAtWarm !== null && mainNow !== null ? (mainNow - mainAtWarm) / 1e9 / cpuSeconds : null
  // where the CPU went, for finding why a strategy is slower: kernel time, page faults, blocking
  const ru = process.resourceUsage()
  const usage = ruAtWarm && {
    userMs: (ru.userCPUTime - ruAtWarm.userCPUTime) / 1000, systemMs: (ru.systemCPUTime - ruAtWarm.systemCPUTime) / 1000,
    minorFaults: ru.minorPageFault - ruAtWarm.minorPageFault, majorFaults: ru.majorPageFault - ruAtWarm.majorPageFault,
    voluntarySwitches: ru.voluntaryContextSwitches - ruAtWarm.voluntaryContextSwitches,
  }
  process.stdout.write(`result ${JSON.stringify({
    strategy, requests: wRequests, throughput: wRequests / seconds, cpuSeconds, perCpuSecond: wRequests / cpuSeconds, hitRatio: wHits / wRequests,
    p50Ms: hist.percentile(50) / 1e6, p99Ms: hist.percentile(99) / 1e6, computeP50Ms: computeHist.count ? computeHist.percentile(50) / 1e6 : null, computeCpuMs: computeCpuN > 0 ? computeCpuUs / computeCpuN / 1e3 : null, mainThreadShare, cacheBytes: sizeOf(), peakCacheBytes: peakCache, shrinks, monitor: monitorInfo, shrinkLog, resources: usage, gc: gcStats,
  })}\n`)
  process.exit(0)
}
process.stdout.write('ready\n')
setImmediate(slice)
