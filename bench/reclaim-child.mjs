// The child of the reclaim-speed bench: fills an lru-cache of 64 KiB Buffers to --fill-mib, then grows
// it slowly until the monitor reports pressure, and prints what the first shrink cycle took.
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import { LRUCache } from 'lru-cache'
import { createMemoryMonitor } from 'node-memory-pressure'
import { lruCacheShrinker } from 'node-memory-pressure/lru-cache'

const { values } = parseArgs({ options: { 'fill-mib': { type: 'string' } } })
const MiB = 2 ** 20
const cache = new LRUCache({ maxSize: 2 ** 40, sizeCalculation: (v) => v.length })
let key = 0
const add = () => cache.set(key++, Buffer.alloc(64 * 1024, key & 255))
while (cache.calculatedSize < Number(values['fill-mib']) * MiB * 0.9) add()

const monitor = createMemoryMonitor()
let pressureAt = null
let cacheAtPressure = 0
monitor.on('pressure', (e) => {
  if (pressureAt === null && e.level !== 'normal') {
    pressureAt = performance.now()
    cacheAtPressure = cache.calculatedSize
  }
})
monitor.on('shrink', (r) => {
  if (pressureAt === null) return
  const done = performance.now()
  const shrinkerMs = r.shrinkers.reduce((a, s) => a + s.ms, 0)
  // the cycle aims at the level's threshold minus the hysteresis (a cycle's level is never 'normal')
  const levels = monitor.levels
  const target = levels[r.level] - levels.hysteresis
  // what the levels decide on: the working set less the malloc free bytes counted as available
  // (the allocator credit): memory a collection freed stays charged to the cgroup until malloc reuses it
  const basisAfter = r.after.workingSet - r.allocatorFreeBytes
  process.stdout.write(`result ${JSON.stringify({
    level: r.level, cacheBytesAtPressure: cacheAtPressure, toTargetMs: done - pressureAt, cycleMs: r.durationMs, shrinkerMs,
    gcMs: r.heap?.gcMs ?? null, mallocTrimMs: r.heap?.mallocTrimMs ?? null, freedBytes: r.freedBytes, requestedBytes: r.requestedBytes,
    basisAfter, workingSetAfter: r.after.workingSet, allocatorFreeBytes: r.allocatorFreeBytes, target, underTarget: basisAfter <= target, levelAfter: r.levelAfter,
  })}\n`)
  clearInterval(timer)
  void monitor.close().then(() => process.exit(0))
})
monitor.register(lruCacheShrinker(cache))
const timer = setInterval(add, 2)
