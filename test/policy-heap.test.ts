// V8's heap limit as a second basis: the heap's level from the old generation's live size after
// V8's major collections, the level the higher of the cgroup's and the heap's, cycles asking for
// heap bytes when the heap is the nearer limit, and no timer for any of it. Simulated backend,
// hand-moved clock, and a stand-in runtime whose collections happen when the test says.

import { once } from 'node:events'
import fs from 'node:fs'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { Worker } from 'node:worker_threads'
import { describe, expect, it } from 'vitest'
import { SimulatedBackend } from '../src/backends/simulated.js'
import { createMemoryMonitor } from '../src/monitor.js'
import { ManualClock } from '../src/policy/clock.js'
import type { PressureEvent } from '../src/policy/engine.js'
import { oldGenerationLimit } from '../src/policy/runtime.js'
import type { ShrinkReport, ShrinkRequest, Shrinker } from '../src/policy/shrinker.js'
import { Collector } from './helpers/collect.js'
import { fakeRuntime } from './helpers/runtime.js'

const MiB = 2 ** 20

/** A cache of JavaScript objects: what it drops leaves the old generation at the next collection. */
function jsCache(runtime: ReturnType<typeof fakeRuntime>, bytes: number): Shrinker & { requests: ShrinkRequest[]; size: () => number } {
  let held = bytes
  const requests: ShrinkRequest[] = []
  return {
    name: 'objects',
    requests,
    size: () => held,
    shrink(req) {
      requests.push(req)
      const drop = Math.min(held, req.targetBytes)
      held -= drop
      runtime.state.used -= drop // garbage now; the cycle's collection finds it
      return drop
    },
  }
}

/** No cgroup limit, a 100 MiB old generation, a gc that counts its calls, a hand-moved clock. */
function heapAlone() {
  const runtime = fakeRuntime({ used: 10 * MiB, limit: 100 * MiB })
  const sim = new SimulatedBackend({ limit: Number.POSITIVE_INFINITY, usage: 20 * MiB })
  const clock = new ManualClock()
  let gcs = 0
  const monitor = createMemoryMonitor({ backend: sim, levels: true, clock, tuning: { runtime }, reduceHeap: { gc: () => void gcs++, mallocTrim: false } })
  const shrink = new Collector<ShrinkReport>()
  monitor.on('shrink', shrink.push)
  return { runtime, clock, monitor, shrink, collections: () => gcs }
}

function setup(limit = Number.POSITIVE_INFINITY, heap = { used: 10 * MiB, limit: 100 * MiB }) {
  const runtime = fakeRuntime({ used: heap.used, limit: heap.limit })
  const sim = new SimulatedBackend({ limit, usage: 20 * MiB })
  const clock = new ManualClock()
  const monitor = createMemoryMonitor({ backend: sim, levels: true, clock, reduceHeap: { mallocTrim: false }, tuning: { runtime } })
  const pressure = new Collector<PressureEvent>()
  const shrink = new Collector<ShrinkReport>()
  monitor.on('pressure', pressure.push)
  monitor.on('shrink', shrink.push)
  return { runtime, sim, clock, monitor, pressure, shrink }
}

describe('the heap as a second basis', () => {
  it('without a cgroup limit, the heap\'s levels still protect: a major collection at 80% of the old generation is moderate, named the heap', async () => {
    const { runtime, monitor, pressure, shrink } = setup()
    const cache = jsCache(runtime, 60 * MiB)
    monitor.register(cache)
    expect(monitor.levels).toBeNull() // no cgroup limit to resolve percentages against
    expect(monitor.heapLevels).toMatchObject({ limit: 100 * MiB, moderate: 70 * MiB, high: 85 * MiB, critical: 95 * MiB, hysteresis: 5 * MiB })
    expect(runtime.listeners).toBe(1)
    runtime.majorGc(80 * MiB)
    const [event] = await pressure.count(1)
    expect(event).toMatchObject({ level: 'moderate', previous: 'normal', limit: 'heap', heap: { liveBytes: 80 * MiB, limitBytes: 100 * MiB, level: 'moderate' } })
    const [report] = await shrink.count(1)
    // moderate's exit point on the heap is 70 - 5 = 65 MiB: 15 MiB of heap asked, of the JS cache
    // no collection (the reading is V8's own, and V8 collects before it gives up): the level
    // stays until V8's next major collection measures what the cache dropped
    expect(report).toMatchObject({ limit: 'heap', level: 'moderate', requestedBytes: 15 * MiB, levelAfter: 'moderate', heapRuns: 0 })
    expect(report?.plan.heap).toMatchObject({ limit: 100 * MiB, before: 80 * MiB, measured: 80 * MiB, threshold: 70 * MiB, hysteresis: 5 * MiB, target: 65 * MiB, reserve: 35 * MiB, excess: 15 * MiB })
    expect(report?.plan).toMatchObject({ collected: false, collectable: null })
    expect(report?.plan.cgroup).toBeNull()
    expect(cache.requests).toHaveLength(1)
    expect(cache.requests[0]).toMatchObject({ limit: 'heap', level: 'moderate', targetBytes: 15 * MiB })
    expect(report?.heapBefore?.liveBytes).toBe(80 * MiB)
    expect(runtime.state.gcs).toBe(0)
    runtime.majorGc() // V8's own: 65 MiB live
    // the fall to normal names the limit that rose
    const [, down] = await pressure.count(2)
    expect(monitor.level).toBe('normal')
    expect(down).toMatchObject({ level: 'normal', previous: 'moderate', limit: 'heap' })
    await monitor.close()
    expect(runtime.listeners).toBe(0)
  })

  it('the level is the higher of the two, and each event names the limit that drove it', async () => {
    const { runtime, sim, monitor, pressure } = setup(1000 * MiB)
    monitor.register({ name: 'none', shrink: () => 0 })
    sim.setUsage(820 * MiB) // the cgroup at moderate (800 MiB at a 1000 MiB limit: 80%)
    const [first] = await pressure.count(1)
    expect(first).toMatchObject({ level: 'moderate', limit: 'cgroup', heap: { level: 'normal' } })
    runtime.majorGc(96 * MiB) // the heap at critical
    const [, second] = await pressure.count(2)
    expect(second).toMatchObject({ level: 'critical', previous: 'moderate', limit: 'heap', heap: { liveBytes: 96 * MiB, level: 'critical' } })
    await monitor.close()
  })

  it('a cycle of the heap alone, its live size from V8\'s own major collection, forces no collection: V8\'s next one measures what the cache freed', async () => {
    const runtime = fakeRuntime({ used: 10 * MiB, limit: 100 * MiB })
    const sim = new SimulatedBackend({ limit: Number.POSITIVE_INFINITY, usage: 20 * MiB })
    let gcs = 0
    const monitor = createMemoryMonitor({ backend: sim, levels: true, clock: new ManualClock(), tuning: { runtime }, reduceHeap: { gc: () => void gcs++, mallocTrim: false } })
    const shrink = new Collector<ShrinkReport>()
    monitor.on('shrink', shrink.push)
    const cache = jsCache(runtime, 40 * MiB)
    monitor.register(cache)
    runtime.majorGc(90 * MiB) // high: its exit point is 85 - 5 = 80 MiB
    const [report] = await shrink.count(1)
    expect(report).toMatchObject({ level: 'high', limit: 'heap', requestedBytes: 10 * MiB, heapRuns: 0, collectedBytes: 0, levelAfter: 'high', heapAfter: { liveBytes: 90 * MiB } })
    expect(report?.plan).toMatchObject({ level: 'high', collected: false, heap: { before: 90 * MiB, measured: 90 * MiB, target: 80 * MiB, excess: 10 * MiB } })
    expect(gcs).toBe(0)
    expect(cache.requests).toHaveLength(1)
    runtime.majorGc() // V8 measures 80 MiB: high's exit point, moderate
    await Promise.resolve()
    expect(monitor.level).toBe('moderate')
    expect(gcs).toBe(0)
    await monitor.close()
  })

  it('a cycle of the heap alone whose reading is stale (its shrinkers asked, no major collection since) collects first', async () => {
    const { runtime, clock, monitor, shrink, collections } = heapAlone()
    // a shrinker that reports what it was asked for and frees nothing of the heap
    monitor.register({ name: 'liar', size: () => 50 * MiB, shrink: (req) => req.targetBytes })
    runtime.majorGc(90 * MiB)
    const [first] = await shrink.count(1)
    expect(first).toMatchObject({ heapRuns: 0, plan: { collected: false } })
    clock.advance(100) // high: the next cycle within 100 ms, and V8 has not collected since
    const [, second] = await shrink.count(2)
    expect(second).toMatchObject({ heapRuns: 1, plan: { collected: true, heap: { measured: 90 * MiB, excess: 10 * MiB } } })
    expect(collections()).toBe(1)
    await monitor.close()
  })

  it('with the cgroup above normal too, or the live size not from a collection, the cycle collects first: garbage there asks nothing of the caches', async () => {
    // the cycle's own collection finds 30 MiB of garbage in the old generation
    const runtime = fakeRuntime({ used: 10 * MiB, limit: 100 * MiB })
    const sim = new SimulatedBackend({ limit: 1000 * MiB, usage: 20 * MiB })
    const monitor = createMemoryMonitor({ backend: sim, levels: true, clock: new ManualClock(), tuning: { runtime }, reduceHeap: { gc: () => void (runtime.state.used = 60 * MiB), mallocTrim: false } })
    const shrink = new Collector<ShrinkReport>()
    monitor.on('shrink', shrink.push)
    const cache = jsCache(runtime, 40 * MiB)
    monitor.register(cache)
    sim.setUsage(820 * MiB) // the cgroup at moderate (800 MiB)
    await shrink.count(1)
    runtime.majorGc(90 * MiB) // the heap at high, the cgroup still at moderate
    const [, report] = await shrink.count(2)
    // collected first: the heap is at 60 MiB after it, nothing to ask; the cgroup's own excess over
    // moderate's exit point (820 - 790) is what the cycle asks for
    expect(report).toMatchObject({ level: 'high', limit: 'cgroup', requestedBytes: 30 * MiB })
    expect(report?.plan).toMatchObject({ level: 'moderate', collected: true, heap: { before: 90 * MiB, measured: 60 * MiB, excess: 0 }, cgroup: { excess: 30 * MiB } })
    expect(cache.requests.filter((r) => r.limit === 'heap')).toHaveLength(0)
    await monitor.close()

    // the live size known only from start-up (no collection yet): collected first
    const cold = fakeRuntime({ used: 90 * MiB, limit: 100 * MiB })
    const sim2 = new SimulatedBackend({ limit: Number.POSITIVE_INFINITY, usage: 20 * MiB })
    const m2 = createMemoryMonitor({ backend: sim2, levels: true, clock: new ManualClock(), tuning: { runtime: cold }, reduceHeap: { gc: () => void (cold.state.used = 60 * MiB), mallocTrim: false } })
    const shrink2 = new Collector<ShrinkReport>()
    m2.on('shrink', shrink2.push)
    m2.register(jsCache(cold, 40 * MiB))
    const [first] = await shrink2.count(1)
    expect(first?.plan).toMatchObject({ collected: true, heap: { before: 90 * MiB, measured: 60 * MiB, excess: 0 } })
    await m2.close()
  })

  it('a Buffer cache that reports more than the heap it freed: the next cycle asks again, the next shrinker first', async () => {
    const { runtime, clock, monitor, shrink } = setup()
    // priority 0: a cache of Buffers, whose bytes are outside V8's heap (the heap loses 1% of them)
    const buffers: Shrinker & { requests: ShrinkRequest[] } = {
      name: 'buffers', priority: 0, requests: [],
      shrink(req) {
        this.requests.push(req)
        runtime.state.used -= Math.floor(req.targetBytes / 100)
        return req.targetBytes
      },
    }
    const objects = jsCache(runtime, 50 * MiB)
    objects.priority = 1
    monitor.register(buffers)
    monitor.register(objects)
    runtime.majorGc(90 * MiB) // high: exit point 85 - 5 = 80, 10 MiB asked
    const [first] = await shrink.count(1)
    expect(first?.shrinkers.map((s) => [s.name, s.requestedBytes])).toEqual([['buffers', 10 * MiB]])
    expect(first?.levelAfter).toBe('high')
    const left = runtime.state.used // 89.9 MiB of heap left
    clock.advance(100) // high: the next cycle within 100 ms; its reading is stale, so it collects first
    const [, second] = await shrink.count(2)
    expect(second?.plan).toMatchObject({ collected: true, heap: { measured: left } })
    expect(second?.shrinkers[0]).toMatchObject({ name: 'objects', requestedBytes: Math.ceil(left) - 80 * MiB })
    runtime.majorGc() // V8 measures what the objects dropped: high's exit point, moderate now
    await Promise.resolve()
    expect(monitor.level).toBe('moderate')
    await monitor.close()
  })

  it('a level given in bytes names a cgroup\'s memory: the heap keeps the default percentage for it', async () => {
    const runtime = fakeRuntime({ used: 10 * MiB, limit: 200 * MiB })
    const sim = new SimulatedBackend({ limit: 1000 * MiB, usage: 20 * MiB })
    const monitor = createMemoryMonitor({ backend: sim, levels: { moderate: '50%', high: '900MiB' }, clock: new ManualClock(), tuning: { runtime } })
    expect(monitor.heapLevels).toMatchObject({ moderate: 100 * MiB, high: 170 * MiB, critical: 190 * MiB })
    await monitor.close()
  })

  it('heapLimit: false watches the cgroup alone: no collection listener, no heap levels', async () => {
    const runtime = fakeRuntime({ used: 99 * MiB, limit: 100 * MiB })
    const sim = new SimulatedBackend({ limit: 1000 * MiB, usage: 20 * MiB })
    const monitor = createMemoryMonitor({ backend: sim, levels: true, heapLimit: false, clock: new ManualClock(), tuning: { runtime } })
    expect(monitor.heapLevels).toBeNull()
    expect(monitor.heap).toBeNull()
    expect(runtime.listeners).toBe(0)
    expect(monitor.level).toBe('normal')
    await monitor.close()
  })

  it('while idle the heap watch arms no timer: nothing runs until V8 collects', async () => {
    const { runtime, clock, monitor } = setup()
    monitor.register({ name: 'none', shrink: () => 0 })
    expect(clock.pending).toBe(0)
    runtime.majorGc(20 * MiB) // a collection far from the limit: one reading, nothing armed
    expect(clock.pending).toBe(0)
    expect(monitor.level).toBe('normal')
    await monitor.close()
  })
})

describe('the old generation\'s limit', () => {
  it('is --max-old-space-size when given (the last one wins), else heap_size_limit less V8\'s young generation', () => {
    expect(oldGenerationLimit(112 * MiB, ['--max-old-space-size=64'])).toBe(64 * MiB)
    expect(oldGenerationLimit(67 * MiB, ['--max-old-space-size=32', '--max_old_space_size=64'])).toBe(64 * MiB)
    // V8's defaults: three semi-spaces of 1/256 of the old generation, at most 16 MiB each
    expect(oldGenerationLimit(259 * MiB, [])).toBe(256 * MiB)
    expect(oldGenerationLimit(4144 * MiB, [])).toBe(4096 * MiB)
    expect(oldGenerationLimit(8240 * MiB, ['--stack-size=984'])).toBe(8192 * MiB)
    // in a worker thread its young generation is known: what is left is the old one
    expect(oldGenerationLimit(80 * MiB, [], 48)).toBe(32 * MiB)
    expect(oldGenerationLimit(112 * MiB, ['--max-old-space-size=64'], 48)).toBe(64 * MiB)
    // the size as the next argument, and the percentage of the memory available (Node 22.21+, 24)
    expect(oldGenerationLimit(112 * MiB, ['--max-old-space-size', '64'])).toBe(64 * MiB)
    expect(oldGenerationLimit(550 * MiB, ['--max-old-space-size-percentage=70'], undefined, 512 * MiB)).toBe(358 * MiB)
    expect(oldGenerationLimit(550 * MiB, ['--max-old-space-size-percentage=70', '--max-old-space-size=100'], undefined, 512 * MiB)).toBe(100 * MiB)
  })
})

const distEntry = fileURLToPath(new URL('../dist/index.js', import.meta.url))
const noDist = fs.existsSync(distEntry) ? null : 'dist/ not built (npm run build)'

describe('the process runtime', () => {
  it.skipIf(noDist !== null)(`a monitor in a worker thread watches that worker's own heap: its old generation's limit is the worker's${noDist === null ? '' : ` (skipped: ${noDist})`}`, async () => {
    const source = `
      const { parentPort } = require('node:worker_threads')
      import(${JSON.stringify(pathToFileURL(distEntry).href)}).then(({ createMemoryMonitor }) => {
        const monitor = createMemoryMonitor({ backend: 'simulated', simulated: { limit: 1024 * 2 ** 20 }, levels: true })
        parentPort.postMessage(monitor.heapLevels)
        return monitor.close()
      })`
    const worker = new Worker(source, { eval: true, resourceLimits: { maxOldGenerationSizeMb: 32 } })
    const [levels] = (await once(worker, 'message')) as [{ limit: number; moderate: number }]
    await worker.terminate()
    expect(levels.limit).toBe(32 * MiB)
    expect(levels.moderate).toBe(Math.floor(32 * MiB * 0.7))
    // this thread's own heap is another one
    const here = createMemoryMonitor({ backend: new SimulatedBackend({ limit: 1024 * MiB }), levels: true })
    expect(here.heapLevels?.limit).not.toBe(32 * MiB)
    await here.close()
  })

  it('a monitor watching the heap holds no handle and arms no timer while idle', async () => {
    const sim = new SimulatedBackend({ limit: 1000 * MiB, usage: 20 * MiB })
    const before = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length
    const monitor = createMemoryMonitor({ backend: sim, levels: true })
    expect(monitor.heap).not.toBeNull()
    expect(process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length).toBe(before)
    await monitor.close()
  })
})

describe('cycles of the heap alone that free nothing', () => {
  it('back off: a shrinker that reports 0 leaves the reading fresh (no forced collection), and the cycles space out', async () => {
    const { runtime, clock, monitor, shrink, collections } = heapAlone()
    monitor.register({ name: 'empty', size: () => 0, shrink: () => 0 })
    runtime.majorGc(90 * MiB) // high, and nothing anyone can give
    await shrink.count(1)
    for (let t = 0; t < 3000; t += 10) {
      clock.advance(10)
      await Promise.resolve()
    }
    // at high a cycle follows within 100 ms; without the back-off that is 30 cycles in 3 s
    expect(shrink.items.length).toBeLessThan(10)
    expect(collections()).toBe(0)
    await monitor.close()
  })

  it('back off when the shrinkers say they freed heap that the next measurement does not find', async () => {
    const { runtime, clock, monitor, shrink, collections } = heapAlone()
    monitor.register({ name: 'liar', size: () => 50 * MiB, shrink: (req) => req.targetBytes })
    runtime.majorGc(90 * MiB)
    await shrink.count(1)
    for (let t = 0; t < 3000; t += 10) {
      clock.advance(10)
      await Promise.resolve()
    }
    expect(shrink.items.length).toBeLessThan(10)
    // every cycle after the first found the reading stale and collected once, before its shrinker
    expect(collections()).toBe(shrink.items.length - 1)
    await monitor.close()
  })
})
