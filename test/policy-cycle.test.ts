// The policy engine's shrink cycle and re-arming as changed for garbage-first collection: a heap
// reduction before the shrinkers (collectFirst), room for garbage when cycles at high come back to
// back (garbageRoom), watches at every level point (a level change moves none), the cool-down on
// re-entry, and the shrinkers' levelChanged hook. Simulated backend and a
// hand-moved clock throughout; a custom gc function models garbage being collected.

import v8 from 'node:v8'
import { describe, expect, it } from 'vitest'
import { SimulatedBackend } from '../src/backends/simulated.js'
import type { MemoryPressureError } from '../src/errors.js'
import { createMemoryMonitor } from '../src/monitor.js'
import { ManualClock } from '../src/policy/clock.js'
import type { PressureEvent } from '../src/policy/engine.js'
import { type ReduceHeapOptions, reduceHeap } from '../src/policy/heap.js'
import type { PressureLevel } from '../src/policy/levels.js'
import type { ShrinkReport, Shrinker } from '../src/policy/shrinker.js'
import { Collector, turns } from './helpers/collect.js'
import { type FakeRuntime, fakeRuntime } from './helpers/runtime.js'
import { freeing } from './helpers/shrinkers.js'

const MiB = 2 ** 20
const noHeap = { gc: 'none', mallocTrim: false } as const

interface Setup {
  /** The simulated limit (default 100 MiB). */
  limit?: number
  usage?: number
  cache?: number
  cooldownMs?: number
  /** Heap reduction options, or a function of the simulated backend returning them. */
  reduceHeap?: ReduceHeapOptions | false | ((sim: SimulatedBackend) => ReduceHeapOptions)
  collectFirst?: boolean
  garbageRoom?: boolean
  runtime?: FakeRuntime
}

function setup(options: Setup = {}) {
  const sim = new SimulatedBackend({ limit: options.limit ?? 100 * MiB, usage: options.usage ?? 10 * MiB, cache: options.cache ?? 0, inactiveFile: options.cache ?? 0 })
  const clock = new ManualClock()
  const monitor = createMemoryMonitor({
    backend: sim,
    levels: true,
    clock,
    reduceHeap: typeof options.reduceHeap === 'function' ? options.reduceHeap(sim) : (options.reduceHeap ?? noHeap),
    tuning: {
      cooldownMs: options.cooldownMs ?? 1000,
      runtime: options.runtime ?? fakeRuntime(),
      ...(options.collectFirst === undefined ? {} : { collectFirst: options.collectFirst }),
      ...(options.garbageRoom === undefined ? {} : { garbageRoom: options.garbageRoom }),
    },
  })
  const pressure = new Collector<PressureEvent>()
  const shrink = new Collector<ShrinkReport>()
  const errors = new Collector<MemoryPressureError>()
  monitor.on('pressure', pressure.push)
  monitor.on('shrink', shrink.push)
  monitor.on('error', errors.push)
  return { sim, clock, monitor, pressure, shrink, errors }
}

/** A gc function that frees `garbage` bytes (once: garbage is collected once) and logs each call. */
function collecting(sim: SimulatedBackend, garbage: number, log: string[]): ReduceHeapOptions {
  let left = garbage
  return {
    gc: () => {
      log.push('gc')
      if (left > 0) sim.free(left)
      left = 0
    },
    mallocTrim: false,
  }
}

describe('collectFirst: garbage is collected before any shrinker is asked', () => {
  it('a rise made of garbage only: the collection frees it, no shrinker is asked, one heap run', async () => {
    const log: string[] = []
    const { sim, monitor, shrink } = setup({ reduceHeap: (sim) => collecting(sim, 20 * MiB, log) })
    const s = freeing(sim, 's', 0, 20 * MiB, log)
    monitor.register(s)
    sim.setUsage(75 * MiB) // moderate; 20 MiB of it garbage
    const [report] = await shrink.count(1)
    expect(log).toEqual(['gc'])
    expect(s.requests).toEqual([])
    expect(report).toMatchObject({
      level: 'moderate',
      levelAfter: 'normal',
      heapRuns: 1,
      collectedBytes: 20 * MiB,
      requestedBytes: 0,
      freedBytes: 20 * MiB,
      shrinkers: [],
      heap: { gc: 'custom' },
    })
    expect(monitor.level).toBe('normal')
    await monitor.close()
  })

  it('a partial collection: the shrinker is asked for the remainder only, then the heap is reduced again', async () => {
    const log: string[] = []
    const { sim, monitor, shrink } = setup({ reduceHeap: (sim) => collecting(sim, 5 * MiB, log) })
    const s = freeing(sim, 's', 0, 12 * MiB, log)
    monitor.register(s)
    sim.setUsage(80 * MiB) // moderate: 80 − 65 = 15 MiB, of which the collection frees 5
    const [report] = await shrink.count(1)
    expect(log).toEqual(['gc', 's', 'gc'])
    expect(s.requests).toHaveLength(1)
    expect(s.requests[0]).toMatchObject({ level: 'moderate', targetBytes: 10 * MiB })
    expect(report).toMatchObject({
      level: 'moderate',
      heapRuns: 2,
      collectedBytes: 5 * MiB,
      requestedBytes: 10 * MiB,
      reportedBytes: 12 * MiB,
      freedBytes: 17 * MiB,
      levelAfter: 'normal',
    })
    expect(report?.shrinkers.map((r) => [r.name, r.requestedBytes])).toEqual([['s', 10 * MiB]])
    await monitor.close()
  })

  it('a collection that brings high down to moderate: the shrinkers are asked at moderate', async () => {
    const log: string[] = []
    const { sim, monitor, shrink } = setup({ reduceHeap: (sim) => collecting(sim, 12 * MiB, log) })
    const s = freeing(sim, 's', 0, 14 * MiB, log)
    monitor.register(s)
    sim.setUsage(90 * MiB) // high (exit below 80); after the collection 78 MiB: moderate, 78 − 65 = 13 MiB
    const [report] = await shrink.count(1)
    expect(s.requests[0]).toMatchObject({ level: 'moderate', targetBytes: 13 * MiB, fraction: 0.25 })
    expect(report).toMatchObject({ level: 'high', collectedBytes: 12 * MiB, requestedBytes: 13 * MiB, heapRuns: 2, levelAfter: 'normal' })
    await monitor.close()
  })

  it('collectFirst: false keeps the old order: shrinkers first, then one heap reduction', async () => {
    const log: string[] = []
    const { sim, monitor, shrink } = setup({ collectFirst: false, reduceHeap: { gc: () => void log.push('gc'), mallocTrim: false } })
    const s = freeing(sim, 's', 0, 20 * MiB, log)
    monitor.register(s)
    sim.setUsage(90 * MiB)
    const [report] = await shrink.count(1)
    expect(log).toEqual(['s', 'gc'])
    expect(s.requests[0]).toMatchObject({ level: 'high', targetBytes: 10 * MiB })
    expect(report).toMatchObject({ heapRuns: 1, collectedBytes: 0, requestedBytes: 10 * MiB, heap: { gc: 'custom' } })
    await monitor.close()
  })

  it('collectFirst: false asks the shrinkers for garbage the collection afterwards frees anyway', async () => {
    const log: string[] = []
    const { sim, monitor, shrink } = setup({ collectFirst: false, reduceHeap: (sim) => collecting(sim, 20 * MiB, log) })
    const s = freeing(sim, 's', 0, 1 * MiB, log)
    monitor.register(s)
    sim.setUsage(75 * MiB)
    const [report] = await shrink.count(1)
    expect(log).toEqual(['s', 'gc'])
    expect(s.requests[0]).toMatchObject({ level: 'moderate', targetBytes: 10 * MiB })
    expect(report).toMatchObject({ heapRuns: 1, collectedBytes: 0 })
    await monitor.close()
  })

  it('reduceHeap: false runs no heap reduction at all (heapRuns 0, heap null), the shrinkers still are asked', async () => {
    const log: string[] = []
    const { sim, monitor, shrink } = setup({ reduceHeap: false })
    const s = freeing(sim, 's', 0, 20 * MiB, log)
    monitor.register(s)
    sim.setUsage(75 * MiB)
    const [report] = await shrink.count(1)
    expect(log).toEqual(['s'])
    expect(s.requests[0]).toMatchObject({ level: 'moderate', targetBytes: 10 * MiB })
    expect(report).toMatchObject({ heap: null, collectedBytes: 0, freedBytes: 20 * MiB })
    expect(report?.heapError).toBeUndefined()
    await monitor.close()
  })

  it('reduceHeap: false reports heapRuns 0', async () => {
    const { sim, monitor, shrink } = setup({ reduceHeap: false })
    monitor.register(freeing(sim, 's', 0, 20 * MiB))
    sim.setUsage(75 * MiB)
    const [report] = await shrink.count(1)
    await monitor.close()
    expect(report?.heapRuns).toBe(0)
  })

  it('a first collection that throws is reported (heapError), and the cycle goes on to the shrinkers', async () => {
    const boom = new Error('first gc failed')
    let calls = 0
    const { sim, monitor, shrink } = setup({
      reduceHeap: {
        gc: () => {
          if (calls++ === 0) throw boom
        },
        mallocTrim: false,
      },
    })
    const s = freeing(sim, 's', 0, 20 * MiB)
    monitor.register(s)
    sim.setUsage(75 * MiB)
    const [report] = await shrink.count(1)
    expect(s.requests).toHaveLength(1)
    expect(report).toMatchObject({ heapRuns: 2, heap: { gc: 'custom' } })
    expect(report?.heapError).toBe(boom)
    await monitor.close()
  })

  it('rejects a collectFirst that is not a boolean', () => {
    const sim = new SimulatedBackend({ limit: 100 * MiB })
    expect(() => createMemoryMonitor({ backend: sim, levels: true, tuning: { collectFirst: 'yes' as never } })).toThrow(TypeError)
    expect(() => createMemoryMonitor({ backend: sim, levels: true, tuning: { collectFirst: 1 as never } })).toThrow(/collectFirst/)
    expect(sim.listenerCount('close')).toBe(0)
  })
})

describe('garbageRoom: cycles at high back to back, and a cycle at moderate over Buffers, make room for garbage', () => {
  /** A gc that frees what the test put in `pending.bytes`: garbage the next collection frees. */
  function pendingGc(pending: { bytes: number }) {
    return (sim: SimulatedBackend): ReduceHeapOptions => ({
      gc: () => {
        sim.free(pending.bytes)
        pending.bytes = 0
      },
      mallocTrim: false,
    })
  }

  /** Two rises to high made of 35 MiB of garbage each, `gapMs` apart; returns both reports. */
  async function twoHighCycles(gapMs: number, garbageRoom?: boolean) {
    const pending = { bytes: 0 }
    const { sim, clock, monitor, shrink } = setup({ reduceHeap: pendingGc(pending), ...(garbageRoom === undefined ? {} : { garbageRoom }) })
    const cache = freeing(sim, 'cache', 0, 3 * MiB)
    monitor.register(cache)
    pending.bytes = 35 * MiB
    sim.setUsage(90 * MiB) // high; the collection alone brings it to 55 MiB, normal
    await shrink.count(1)
    await turns()
    expect(monitor.level).toBe('normal')
    clock.advance(gapMs)
    pending.bytes = 35 * MiB
    sim.setUsage(90 * MiB) // high again, garbage again
    const [first, second] = await shrink.count(2)
    await monitor.close()
    return { first: first as ShrinkReport, second: second as ShrinkReport, cache }
  }

  it('a second cycle at high within the cool-down asks the cache for half the hysteresis though the collection alone was enough', async () => {
    const { first, second, cache } = await twoHighCycles(300)
    // The first cycle at high: the collection alone; nothing asked.
    expect(first).toMatchObject({ level: 'high', collectedBytes: 35 * MiB, requestedBytes: 0, shrinkers: [] })
    // The second: the levels' hysteresis is 5% of 100 MiB; half of it is asked, at moderate. (At
    // 100 MiB V8's 64 MiB external step and 16 MiB more would leave under a quarter of the limit:
    // no room is asked for that.)
    expect(second).toMatchObject({ level: 'high', levelAfter: 'normal', collectedBytes: 35 * MiB, requestedBytes: 2.5 * MiB })
    expect(cache.requests).toHaveLength(1)
    expect(cache.requests[0]).toMatchObject({ level: 'moderate', targetBytes: 2.5 * MiB })
    expect(second.freedBytes).toBe(38 * MiB)
  })

  it('garbageRoom: false leaves the cache alone when the collection was enough', async () => {
    const { second, cache } = await twoHighCycles(300, false)
    expect(second).toMatchObject({ level: 'high', collectedBytes: 35 * MiB, requestedBytes: 0, shrinkers: [] })
    expect(cache.requests).toEqual([])
  })

  it('a cycle at high after the cool-down has passed asks nothing', async () => {
    const { second, cache } = await twoHighCycles(1000)
    expect(second).toMatchObject({ level: 'high', requestedBytes: 0, shrinkers: [] })
    expect(cache.requests).toEqual([])
  })

  it('a second cycle at high asks for enough that V8\'s external step and 16 MiB fit below the limit after the collection', async () => {
    // 200 MiB: high at 170, moderate at 140 (exit 130). V8 collects dead Buffers on its own only
    // 64 MiB above what it kept, so a level above 200 - 64 - 16 = 120 MiB after a collection leaves
    // every cycle at high to come in time.
    const pending = { bytes: 0 }
    const { sim, clock, monitor, shrink } = setup({ limit: 200 * MiB, reduceHeap: pendingGc(pending) })
    const cache = freeing(sim, 'cache', 0, 25 * MiB)
    monitor.register(cache)
    pending.bytes = 30 * MiB
    sim.setUsage(180 * MiB) // high; the collection brings it to 150 MiB, moderate; the cache to 125
    await shrink.count(1)
    await turns()
    expect(monitor.level).toBe('normal')
    clock.advance(300)
    pending.bytes = 30 * MiB
    sim.setUsage(180 * MiB) // high again within the cool-down: 150 MiB after the collection
    const [first, second] = (await shrink.count(2)) as ShrinkReport[]
    await monitor.close()
    // The first asks what is above moderate's exit point; the second, 150 - 120 = 30 MiB.
    expect(first).toMatchObject({ level: 'high', collectedBytes: 30 * MiB, requestedBytes: 20 * MiB })
    expect(second).toMatchObject({ level: 'high', collectedBytes: 30 * MiB, requestedBytes: 30 * MiB })
    expect(cache.requests.map((r) => r.targetBytes)).toEqual([20 * MiB, 30 * MiB])
  })

  /**
   * One rise to moderate with nothing to collect (a cache that filled), with V8's external memory
   * (Buffers) at `buffers` bytes: the first cycle's report and the cache's requests.
   */
  async function fillToModerate(limit: number, usage: number, buffers: number, garbageRoom?: boolean) {
    const runtime = fakeRuntime({ external: buffers })
    const { sim, monitor, shrink } = setup({ limit, runtime, reduceHeap: pendingGc({ bytes: 0 }), ...(garbageRoom === undefined ? {} : { garbageRoom }) })
    const cache = freeing(sim, 'cache', 0, 60 * MiB)
    monitor.register(cache)
    try {
      sim.setUsage(usage)
      const [report] = (await shrink.count(1)) as ShrinkReport[]
      return { report: report as ShrinkReport, cache, external: runtime.externalMemory() }
    } finally {
      await monitor.close()
    }
  }

  it('a cycle at moderate, its memory Buffers, asks as at high for enough that V8\'s external step and 16 MiB fit below the limit', async () => {
    // 200 MiB: moderate at 140 (exit 130); 200 - 64 - 16 = 120. A cache of Buffers that filled to
    // 145 MiB before there was garbage: the level alone asks 15 MiB at moderate, the floor 25 at high.
    const { report, cache, external } = await fillToModerate(200 * MiB, 145 * MiB, 40 * MiB)
    expect(external).toBeGreaterThanOrEqual(40 * MiB)
    expect(report).toMatchObject({ level: 'moderate', collectedBytes: 0, requestedBytes: 25 * MiB, levelAfter: 'normal' })
    expect(cache.requests).toHaveLength(1)
    expect(cache.requests[0]).toMatchObject({ level: 'high', targetBytes: 25 * MiB })
  })

  it('a cycle at moderate is asked only what the level needs without that much in Buffers, where moderate\'s exit leaves the room, or with garbageRoom: false', async () => {
    // Not Buffers (under 25 MiB of them): a cache V8 collects with its heap.
    const objects = await fillToModerate(200 * MiB, 145 * MiB, 0)
    expect(objects.external).toBeLessThan(25 * MiB)
    expect(objects.cache.requests[0]).toMatchObject({ level: 'moderate', targetBytes: 15 * MiB })
    // 300 MiB: moderate at 210 (exit 200: the hysteresis is at its 10 MiB cap), under
    // 300 - 80 = 220: the level's own request is more.
    const wide = await fillToModerate(300 * MiB, 215 * MiB, 40 * MiB)
    expect(wide.cache.requests[0]).toMatchObject({ level: 'moderate', targetBytes: 15 * MiB })
    const off = await fillToModerate(200 * MiB, 145 * MiB, 40 * MiB, false)
    expect(off.cache.requests[0]).toMatchObject({ level: 'moderate', targetBytes: 15 * MiB })
  })

  it('rejects a garbageRoom that is not a boolean', () => {
    const sim = new SimulatedBackend({ limit: 100 * MiB })
    expect(() => createMemoryMonitor({ backend: sim, levels: true, tuning: { garbageRoom: 'yes' as never } })).toThrow(TypeError)
    expect(() => createMemoryMonitor({ backend: sim, levels: true, tuning: { garbageRoom: 1 as never } })).toThrow(/garbageRoom/)
  })
})

describe('re-arming', () => {
  function counting(sim: SimulatedBackend) {
    const registered: number[] = []
    const watch = sim.watchThreshold.bind(sim)
    sim.watchThreshold = (bytes, cb) => (registered.push(bytes), watch(bytes, cb))
    return registered
  }

  it('a level change alone registers no new watch: every level point is armed from the start', async () => {
    const sim = new SimulatedBackend({ limit: 100 * MiB, usage: 10 * MiB })
    const registered = counting(sim)
    const monitor = createMemoryMonitor({ backend: sim, levels: true, clock: new ManualClock(), reduceHeap: noHeap })
    const pressure = new Collector<PressureEvent>()
    monitor.on('pressure', pressure.push)
    // no page cache: the points are the levels themselves, no drift point
    expect([...registered].sort((a, b) => a - b)).toEqual([65, 70, 80, 85, 90, 95].map((m) => m * MiB))
    const before = registered.length
    sim.setUsage(72 * MiB) // moderate
    await pressure.count(1)
    sim.setUsage(88 * MiB) // high
    await pressure.count(2)
    sim.setUsage(97 * MiB) // critical
    await pressure.count(3)
    sim.setUsage(60 * MiB) // normal, several levels at once
    await pressure.count(4)
    await turns()
    expect(pressure.items.map((e) => e.level)).toEqual(['moderate', 'high', 'critical', 'normal'])
    expect(registered.length).toBe(before)
    await monitor.close()
  })

  it('a watch within tolerance of a wanted point is not kept when usage is on its other side', async () => {
    // 2 MiB of page cache on top of the basis: moderate is armed at usage 72 MiB
    const sim = new SimulatedBackend({ limit: 100 * MiB, usage: 60 * MiB, cache: 2 * MiB, inactiveFile: 2 * MiB })
    const registered = counting(sim)
    const clock = new ManualClock()
    const monitor = createMemoryMonitor({ backend: sim, levels: true, clock, reduceHeap: noHeap })
    const pressure = new Collector<PressureEvent>()
    monitor.on('pressure', pressure.push)
    expect(registered).toContain(72 * MiB)
    expect(registered).toContain(67 * MiB)
    // Half a MiB more cache (no re-arm: below half a step), then anonymous memory takes usage to
    // 72.3 MiB, through the 72 MiB watch: the basis is 69.8 MiB, still normal. The wanted point for
    // moderate is now 72.5 MiB, within the tolerance of the 72 MiB watch but above usage, while
    // that watch is below it (crossed): it would never fire upwards again.
    sim.setCache(2.5 * MiB)
    sim.setUsage(72.3 * MiB)
    await turns(3)
    expect(monitor.level).toBe('normal')
    expect(registered).toContain(72.5 * MiB)
    // the exit point of moderate moved by the same half MiB but stayed below usage: kept
    expect(registered).not.toContain(67.5 * MiB)
    sim.allocate(0.4 * MiB) // basis 70.2 MiB: moderate, seen at once (no re-check: the clock stands still)
    await pressure.count(1)
    expect(pressure.items[0]).toMatchObject({ level: 'moderate', previous: 'normal' })
    await monitor.close()
  })
})

describe('cool-down on re-entry', () => {
  async function firstCycle(cooldownMs = 1000) {
    const s = setup({ cooldownMs })
    const log: string[] = []
    s.monitor.register(freeing(s.sim, 's', 0, 15 * MiB, log))
    s.sim.setUsage(75 * MiB) // moderate; the cycle frees 15 MiB: 60 MiB, normal
    await s.shrink.count(1)
    await turns()
    expect(s.monitor.level).toBe('normal')
    expect(s.clock.now()).toBe(0)
    return { ...s, log }
  }

  it('back at the same level within the cool-down: the next cycle waits for the rest of it', async () => {
    const { sim, clock, monitor, shrink, pressure } = await firstCycle(1000)
    clock.advance(100)
    sim.setUsage(75 * MiB) // moderate again at 100 ms
    await pressure.until((items) => items.filter((e) => e.level === 'moderate').length === 2)
    await turns()
    expect(monitor.level).toBe('moderate')
    expect(shrink.items).toHaveLength(1)
    clock.advance(899)
    await turns()
    expect(shrink.items).toHaveLength(1)
    clock.advance(1) // 1000 ms after the first cycle ended
    const [, second] = await shrink.count(2)
    expect(second).toMatchObject({ cycle: 2, level: 'moderate', time: 1000 })
    await monitor.close()
  })

  it('a higher level than the last cycle ran at starts a cycle at once', async () => {
    const { sim, clock, monitor, shrink } = await firstCycle(1000)
    clock.advance(100)
    sim.setUsage(90 * MiB) // high
    const [, second] = await shrink.count(2)
    expect(second).toMatchObject({ cycle: 2, level: 'high', time: 100 })
    await monitor.close()
  })

  it('only moderate waits: high again within the cool-down of a high cycle starts one at once', async () => {
    const s = setup({ cooldownMs: 1000 })
    s.monitor.register(freeing(s.sim, 's', 0, 35 * MiB))
    s.sim.setUsage(90 * MiB) // high; the cycle frees 35 MiB: 55 MiB, normal
    const [first] = await s.shrink.count(1)
    expect(first?.level).toBe('high')
    await turns()
    expect(s.monitor.level).toBe('normal')
    s.clock.advance(100)
    s.sim.setUsage(90 * MiB) // high again at 100 ms: waiting would let garbage run on to critical
    const [, second] = await s.shrink.count(2)
    expect(second).toMatchObject({ cycle: 2, level: 'high', time: 100 })
    await s.monitor.close()
  })

  it('after the cool-down has passed, the same level starts a cycle at once', async () => {
    const { sim, clock, monitor, shrink } = await firstCycle(1000)
    clock.advance(1000)
    sim.setUsage(75 * MiB)
    const [, second] = await shrink.count(2)
    expect(second).toMatchObject({ cycle: 2, level: 'moderate', time: 1000 })
    await monitor.close()
  })

  it('a level that falls back to normal while waiting runs no cycle when the cool-down ends', async () => {
    const { sim, clock, monitor, shrink } = await firstCycle(1000)
    clock.advance(100)
    sim.setUsage(75 * MiB)
    await turns()
    sim.setUsage(50 * MiB)
    await turns()
    expect(monitor.level).toBe('normal')
    clock.advance(5000)
    await turns()
    expect(shrink.items).toHaveLength(1)
    expect(clock.pending).toBe(0)
    await monitor.close()
  })
})

describe('Shrinker.levelChanged', () => {
  function hooked(name: string, log: string[], extra: Partial<Shrinker> = {}): Shrinker {
    return {
      name,
      shrink: () => 0,
      levelChanged: (level: PressureLevel, previous: PressureLevel) => void log.push(`${name}:${previous}->${level}`),
      ...extra,
    }
  }

  it('is called on every level change, after the pressure listeners and before relief, with (level, previous)', async () => {
    const { sim, monitor, pressure } = setup()
    const log: string[] = []
    monitor.on('pressure', (e) => log.push(`pressure:${e.previous}->${e.level}`))
    monitor.on('relief', () => log.push('relief'))
    monitor.register(hooked('a', log))
    monitor.register({ name: 'plain', shrink: () => 0 })
    monitor.register(hooked('b', log))
    sim.setUsage(88 * MiB)
    await pressure.count(1)
    sim.setUsage(60 * MiB)
    await pressure.count(2)
    expect(log).toEqual([
      'pressure:normal->high',
      'a:normal->high',
      'b:normal->high',
      'pressure:high->normal',
      'a:high->normal',
      'b:high->normal',
      'relief',
    ])
    await monitor.close()
  })

  it('is called for the initial level too', async () => {
    const { monitor, pressure } = setup({ usage: 90 * MiB })
    const log: string[] = []
    monitor.register(hooked('a', log))
    await pressure.count(1)
    expect(log).toEqual(['a:normal->high'])
    await monitor.close()
  })

  it('a hook that throws goes to the error event as ERR_HANDLER; the other hooks still run', async () => {
    const { sim, monitor, pressure, errors } = setup()
    const log: string[] = []
    const boom = new Error('hook failed')
    monitor.register(hooked('broken', log, { levelChanged: () => { throw boom } }))
    monitor.register(hooked('b', log))
    sim.setUsage(75 * MiB)
    await pressure.count(1)
    await errors.count(1)
    expect(log).toEqual(['b:normal->moderate'])
    expect(errors.items[0]).toMatchObject({ code: 'ERR_HANDLER', cause: boom })
    expect(errors.items[0]?.message).toContain('broken')
    await monitor.close()
  })

  it('register() rejects a levelChanged that is not a function', async () => {
    const { monitor } = setup()
    expect(() => monitor.register({ name: 'x', shrink: () => 0, levelChanged: 1 } as never)).toThrow(TypeError)
    expect(() => monitor.register({ name: 'x', shrink: () => 0, levelChanged: 1 } as never)).toThrow(/levelChanged/)
    await monitor.close()
  })
})
