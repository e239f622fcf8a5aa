// The policy engine on the simulated backend with a hand-moved clock: levels and hysteresis, the
// working-set basis against page cache, shrink cycles (order, arithmetic, timeouts, errors,
// coalescing), relief, until(), heap reduction.

import v8 from 'node:v8'
import { describe, expect, it } from 'vitest'
import { SimulatedBackend } from '../src/backends/simulated.js'
import { MemoryPressureError } from '../src/errors.js'
import { type MonitorEvent, createMemoryMonitor } from '../src/monitor.js'
import { ManualClock } from '../src/policy/clock.js'
import type { PressureEvent, ReliefEvent } from '../src/policy/engine.js'
import { reduceHeap } from '../src/policy/heap.js'
import { DEFAULT_HYSTERESIS_MAX, type LevelThresholds, bytesToFree, levelFor, resolveLevels, watchPoints } from '../src/policy/levels.js'
import type { ShrinkReport, ShrinkRequest } from '../src/policy/shrinker.js'
import { Collector, turns } from './helpers/collect.js'
import { fakeRuntime } from './helpers/runtime.js'
import { freeing } from './helpers/shrinkers.js'

const MiB = 2 ** 20
const noHeap = { gc: 'none', mallocTrim: false } as const

function setup(options: { usage?: number; cache?: number; inactiveFile?: number; cooldownMs?: number; shrinkTimeoutMs?: number; recheckMs?: number } = {}) {
  const sim = new SimulatedBackend({ limit: 100 * MiB, usage: options.usage ?? 10 * MiB, cache: options.cache ?? 0, inactiveFile: options.inactiveFile ?? 0 })
  const clock = new ManualClock()
  const monitor = createMemoryMonitor({
    backend: sim,
    levels: true,
    clock,
    reduceHeap: noHeap,
    shrinkTimeoutMs: options.shrinkTimeoutMs ?? 5000,
    tuning: { cooldownMs: options.cooldownMs ?? 1000, recheckMs: options.recheckMs ?? 1000, runtime: fakeRuntime() },
  })
  const pressure = new Collector<PressureEvent>()
  const shrink = new Collector<ShrinkReport>()
  const relief = new Collector<ReliefEvent>()
  const errors = new Collector<MemoryPressureError>()
  monitor.on('pressure', pressure.push)
  monitor.on('shrink', shrink.push)
  monitor.on('relief', relief.push)
  monitor.on('error', errors.push)
  return { sim, clock, monitor, pressure, shrink, relief, errors }
}

function deferred<T = void>() {
  let resolve!: (v: T) => void
  const promise = new Promise<T>((r) => (resolve = r))
  return { promise, resolve }
}

describe('level arithmetic', () => {
  const levels = resolveLevels(true, undefined, undefined, 100 * MiB)

  it('resolves the defaults to 70/85/95% with 5% hysteresis', () => {
    expect(levels.enter).toEqual([0, 70 * MiB, 85 * MiB, 95 * MiB])
    expect(levels.hysteresis).toBe(5 * MiB)
    expect(levels.basis).toBe('workingSet')
  })

  it('raises the default moderate and high levels towards a fixed headroom above a 320 MiB limit, to 80/90% at most', () => {
    const at = (limitMib: number, given: LevelThresholds | true = true) =>
      resolveLevels(given, undefined, undefined, limitMib * MiB).enter.map((b) => b / MiB)
    // up to 320 MiB the percentages are the defaults
    expect(at(256)).toEqual([0, 256 * 0.7, 256 * 0.85, 256 * 0.95].map((x) => Math.floor(x * MiB) / MiB))
    expect(at(320)).toEqual([0, 224, 272, 304])
    // limit − 96 MiB and limit − 48 MiB while they are above 70% / 85% and below 80% / 90%
    expect(at(384)).toEqual([0, 288, 336, Math.floor(384 * 0.95 * MiB) / MiB])
    expect(at(512)).toEqual([0, Math.floor(512 * 0.8 * MiB) / MiB, Math.floor(512 * 0.9 * MiB) / MiB, Math.floor(512 * 0.95 * MiB) / MiB])
    expect(at(8192)).toEqual([0, 8192 * 0.8, 8192 * 0.9, 8192 * 0.95].map((x) => Math.floor(x * MiB) / MiB))
    // a level given explicitly is kept; the others are still raised while they stay in order
    expect(at(512, { moderate: '60%' })).toEqual([0, Math.floor(512 * 0.6 * MiB) / MiB, Math.floor(512 * 0.9 * MiB) / MiB, Math.floor(512 * 0.95 * MiB) / MiB])
    // a raised high (90%) would not stay below critical 88%: the defaults keep their percentages
    expect(at(512, { critical: '88%' })).toEqual([0, Math.floor(512 * 0.7 * MiB) / MiB, Math.floor(512 * 0.85 * MiB) / MiB, Math.floor(512 * 0.88 * MiB) / MiB])
  })

  it('caps the default hysteresis at 10 MiB (5% of 200 MiB); a hysteresis given explicitly is kept', () => {
    const h = (limitMib: number, given?: string) => resolveLevels(true, given, undefined, limitMib * MiB).hysteresis / MiB
    expect(h(128)).toBeCloseTo(6.4, 5)
    expect(h(200)).toBe(10)
    expect(h(256)).toBe(10)
    expect(h(512)).toBe(10)
    expect(h(512, '5%')).toBeCloseTo(25.6, 5)
    expect(h(512, '20MiB')).toBe(20)
    expect(DEFAULT_HYSTERESIS_MAX).toBe(10 * MiB)
    // without a limit too: 5% of the critical threshold, at most the cap
    expect(resolveLevels({ moderate: '1GiB', high: '2GiB', critical: '4GiB' }, undefined, undefined, Infinity).hysteresis).toBe(10 * MiB)
  })

  it('goes up at a threshold, down only below threshold − hysteresis, and jumps levels', () => {
    expect(levelFor(levels, 70 * MiB - 1, 'normal')).toBe('normal')
    expect(levelFor(levels, 70 * MiB, 'normal')).toBe('moderate')
    expect(levelFor(levels, 66 * MiB, 'moderate')).toBe('moderate')
    expect(levelFor(levels, 65 * MiB - 1, 'moderate')).toBe('normal')
    // at the exit point is out (a shrinker that frees exactly its target leaves the level)
    expect(levelFor(levels, 65 * MiB, 'moderate')).toBe('normal')
    expect(levelFor(levels, 96 * MiB, 'normal')).toBe('critical')
    expect(levelFor(levels, 82 * MiB, 'critical')).toBe('high')
    expect(levelFor(levels, 79 * MiB, 'critical')).toBe('moderate')
    expect(levelFor(levels, 10 * MiB, 'critical')).toBe('normal')
  })

  it('bytes to free go from the basis to the level threshold − hysteresis', () => {
    expect(bytesToFree(levels, 90 * MiB, 'high')).toBe(10 * MiB)
    expect(bytesToFree(levels, 72 * MiB, 'moderate')).toBe(7 * MiB)
    expect(bytesToFree(levels, 97 * MiB, 'critical')).toBe(7 * MiB)
    expect(bytesToFree(levels, 50 * MiB, 'normal')).toBe(0)
  })

  it('rejects levels that do not increase, a hysteresis as large as moderate, a bad basis, percentages without a limit', () => {
    expect(() => resolveLevels({ moderate: '80%', high: '70%' }, undefined, undefined, 100 * MiB)).toThrow(RangeError)
    expect(() => resolveLevels(true, '70%', undefined, 100 * MiB)).toThrow(RangeError)
    expect(() => resolveLevels(true, undefined, 'heap' as never, 100 * MiB)).toThrow(TypeError)
    let code = ''
    try {
      resolveLevels(true, undefined, undefined, Infinity)
    } catch (err) {
      code = (err as MemoryPressureError).code
    }
    expect(code).toBe('ERR_NO_LIMIT')
    expect(resolveLevels({ moderate: 10 * MiB, high: '20MiB', critical: 30 * MiB }, 0, 'usage', Infinity).enter).toEqual([0, 10 * MiB, 20 * MiB, 30 * MiB])
    // Without a limit the default hysteresis is 5% of the critical threshold.
    expect(resolveLevels({ moderate: 10 * MiB, high: 20 * MiB, critical: 40 * MiB }, undefined, undefined, Infinity).hysteresis).toBe(2 * MiB)
  })
})

describe('levels on the simulated backend', () => {
  it('at its default 512 MiB limit, the default levels are 80/90/95%: 75% of the limit is still normal', async () => {
    const sim = new SimulatedBackend({ usage: 10 * MiB })
    const monitor = createMemoryMonitor({ backend: sim, levels: true, clock: new ManualClock(), reduceHeap: noHeap })
    const pressure = new Collector<PressureEvent>()
    monitor.on('pressure', pressure.push)
    await turns()
    const limit = 512 * MiB
    expect(monitor.levels).toMatchObject({ moderate: Math.floor(limit * 0.8), high: Math.floor(limit * 0.9), critical: Math.floor(limit * 0.95) })
    sim.setUsage(Math.floor(limit * 0.75))
    await turns()
    expect(monitor.level).toBe('normal')
    sim.setUsage(Math.floor(limit * 0.8))
    await pressure.count(1)
    expect(pressure.items[0]).toMatchObject({ previous: 'normal', level: 'moderate' })
    await monitor.close()
  })

  it('emits pressure up at thresholds, holds inside the hysteresis band, then relief', async () => {
    const { sim, monitor, pressure, relief } = setup()
    expect(monitor.level).toBe('normal')
    expect(monitor.levels).toEqual({ moderate: 70 * MiB, high: 85 * MiB, critical: 95 * MiB, hysteresis: 5 * MiB, basis: 'workingSet' })
    sim.setUsage(72 * MiB)
    await pressure.count(1)
    sim.setUsage(68 * MiB)
    sim.setUsage(71 * MiB)
    sim.setUsage(66 * MiB)
    await turns()
    expect(monitor.level).toBe('moderate')
    sim.setUsage(64 * MiB)
    await relief.count(1)
    sim.setUsage(96 * MiB)
    await pressure.count(3)
    expect(pressure.items.map((e) => [e.previous, e.level])).toEqual([
      ['normal', 'moderate'],
      ['moderate', 'normal'],
      ['normal', 'critical'],
    ])
    expect(pressure.items[0]).toMatchObject({ basis: 'workingSet', bytes: 72 * MiB })
    expect(relief.items[0]).toMatchObject({ previous: 'moderate', bytes: 64 * MiB })
    expect(monitor.level).toBe('critical')
    await monitor.close()
  })

  it('a crossing made of page cache alone changes no level and starts no cycle', async () => {
    const { sim, monitor, pressure, shrink } = setup({ usage: 20 * MiB })
    const calls: ShrinkRequest[] = []
    monitor.register({ name: 'cache', shrink: (r) => void calls.push(r) })
    const usageCrossings = new Collector<number>()
    monitor.addThreshold('70%', { handler: (e) => usageCrossings.push(e.usage) })
    sim.setCache(75 * MiB) // usage 95 MiB, working set 20 MiB
    await usageCrossings.count(1)
    await turns()
    expect(monitor.level).toBe('normal')
    expect(pressure.items).toEqual([])
    expect(shrink.items).toEqual([])
    expect(calls).toEqual([])
    // The kernel reclaims the cache; anonymous memory then grows into the room it left: the
    // watches armed with the old cache offset would sit above the limit, the drift watch re-arms.
    sim.setCache(5 * MiB)
    await turns()
    sim.allocate(52 * MiB) // working set 72 MiB, usage 77 MiB
    await pressure.count(1)
    expect(pressure.items[0]).toMatchObject({ level: 'moderate', bytes: 72 * MiB })
    await shrink.count(1)
    expect(calls.map((c) => c.level)).toEqual(['moderate'])
    await monitor.close()
  })

  it('page cache turning active moves the working set with usage unchanged: the re-check finds it', async () => {
    const { sim, clock, monitor, pressure } = setup({ usage: 80 * MiB, cache: 60 * MiB, inactiveFile: 60 * MiB })
    expect(monitor.level).toBe('normal')
    sim.setCache(60 * MiB, 0) // working set 20 → 80 MiB, usage stays 80 MiB
    await turns()
    expect(pressure.items).toEqual([])
    clock.advance(999)
    await turns()
    expect(pressure.items).toEqual([])
    clock.advance(1)
    await pressure.count(1)
    expect(pressure.items[0]).toMatchObject({ previous: 'normal', level: 'moderate', bytes: 80 * MiB })
    await monitor.close()
  })

  it("basis 'usage' counts page cache and 'rss' ignores all of it", async () => {
    for (const [basis, expected] of [['usage', 'moderate'], ['rss', 'normal'], ['workingSet', 'normal']] as const) {
      const sim = new SimulatedBackend({ limit: 100 * MiB, usage: 20 * MiB })
      const monitor = createMemoryMonitor({ backend: sim, levels: true, basis, clock: new ManualClock(), reduceHeap: noHeap })
      sim.setCache(55 * MiB, 40 * MiB) // usage 75, working set 35, rss 20
      await turns()
      expect([basis, monitor.level]).toEqual([basis, expected])
      await monitor.close()
    }
  })

  it('keeps exactly its own watches armed: re-arming drops the old ones', async () => {
    const sim = new SimulatedBackend({ limit: 100 * MiB, usage: 30 * MiB, cache: 20 * MiB, inactiveFile: 20 * MiB })
    const open = new Map<object, number>()
    const watch = sim.watchThreshold.bind(sim)
    sim.watchThreshold = (bytes, cb) => {
      const w = watch(bytes, cb)
      const key = {}
      open.set(key, w.threshold)
      return { threshold: w.threshold, close: () => (open.delete(key), w.close()) }
    }
    const clock = new ManualClock()
    const monitor = createMemoryMonitor({ backend: sim, levels: true, clock, reduceHeap: noHeap })
    const armed = () => [...open.values()].sort((a, b) => a - b)
    const wanted = () => {
      const levels = resolveLevels(true, undefined, undefined, 100 * MiB)
      const points = watchPoints(levels, sim.snapshot(), 2.5 * MiB)
      return [...new Set([...points.all, ...(points.drift === null ? [] : [points.drift])])].sort((a, b) => a - b)
    }
    // Every point on top of the 20 MiB of cache of a level reachable within the limit (moderate in
    // at 90, out at 85; high, in at 105, is above the limit: neither of its points), and drift
    // 2.5 MiB below usage.
    expect(armed()).toEqual([27.5 * MiB, 85 * MiB, 90 * MiB])
    let most = 0
    for (let i = 0; i < 20; i++) {
      sim.setCache((i % 2) * 10 * MiB + 5 * MiB)
      await turns(2)
      clock.advance(1000)
      most = Math.max(most, open.size)
    }
    // Bounded: six level points and the drift point at most, and no watch left from an older offset.
    expect(most).toBeLessThanOrEqual(7)
    expect(armed()).toEqual(wanted())
    await monitor.close()
    expect(open.size).toBe(0)
    expect(clock.pending).toBe(0)
  })

  it('starts at the level the cgroup is already at, after listeners are attached', async () => {
    const { monitor, pressure, shrink } = setup({ usage: 90 * MiB })
    expect(monitor.level).toBe('high')
    await pressure.count(1)
    expect(pressure.items[0]).toMatchObject({ previous: 'normal', level: 'high' })
    await shrink.count(1)
    await monitor.close()
  })

  it('levels stay off until asked for: no watches, level normal', async () => {
    const sim = new SimulatedBackend({ limit: 100 * MiB, usage: 90 * MiB })
    const monitor = createMemoryMonitor({ backend: sim })
    const pressure = new Collector<PressureEvent>()
    monitor.on('pressure', pressure.push)
    await turns()
    expect(monitor.level).toBe('normal')
    expect(monitor.levels).toBeNull()
    expect(pressure.items).toEqual([])
    monitor.register({ name: 'x', shrink: () => 0 })
    expect(monitor.level).toBe('high')
    await pressure.count(1)
    await monitor.close()
  })
})

describe('shrink cycles', () => {
  it('asks for basis − (level threshold − hysteresis), in priority order, until the reports cover it', async () => {
    const { sim, monitor, shrink } = setup({ cooldownMs: 1000 })
    const log: string[] = []
    const a = freeing(sim, 'a', 10, 4 * MiB, log)
    const b = freeing(sim, 'b', 0, 4 * MiB, log)
    const c = freeing(sim, 'c', 5, 4 * MiB, log)
    monitor.register(a)
    monitor.register(b)
    monitor.register(c)
    sim.setUsage(90 * MiB) // high: free 90 − (85 − 5) = 10 MiB
    const [report] = await shrink.count(1)
    expect(log).toEqual(['b', 'c', 'a'])
    expect(b.requests[0]).toMatchObject({ level: 'high', targetBytes: 10 * MiB, fraction: 0.5, cycle: 1 })
    expect(c.requests[0]?.targetBytes).toBe(6 * MiB)
    expect(a.requests[0]?.targetBytes).toBe(2 * MiB)
    expect(report).toMatchObject({
      cycle: 1,
      level: 'high',
      levelAfter: 'moderate',
      basis: 'workingSet',
      requestedBytes: 10 * MiB,
      reportedBytes: 12 * MiB,
      freedBytes: 12 * MiB,
      heap: { gc: 'none', mallocTrim: 'skipped' },
      updates: 0,
    })
    expect(report?.shrinkers.map((s) => [s.name, s.priority, s.requestedBytes, s.reported])).toEqual([
      ['b', 0, 10 * MiB, 4 * MiB],
      ['c', 5, 6 * MiB, 4 * MiB],
      ['a', 10, 2 * MiB, 4 * MiB],
    ])
    expect(report?.before.usage).toBe(90 * MiB)
    expect(report?.after.usage).toBe(78 * MiB)
    expect(monitor.level).toBe('moderate')
    await monitor.close()
  })

  it('stops asking once covered; after the cool-down, still under pressure, asks the next priorities', async () => {
    const { sim, clock, monitor, shrink } = setup({ cooldownMs: 2000 })
    const log: string[] = []
    monitor.register(freeing(sim, 'first', 0, 1 * MiB, log))
    monitor.register({ name: 'liar', priority: 1, shrink: () => (log.push('liar'), 50 * MiB) })
    monitor.register(freeing(sim, 'third', 2, 1 * MiB, log))
    sim.setUsage(80 * MiB) // moderate: free 80 − 65 = 15 MiB
    await shrink.count(1)
    expect(log).toEqual(['first', 'liar'])
    expect(shrink.items[0]).toMatchObject({ requestedBytes: 15 * MiB, reportedBytes: 51 * MiB, freedBytes: 1 * MiB, levelAfter: 'moderate' })
    clock.advance(1999)
    await turns()
    expect(shrink.items.length).toBe(1)
    clock.advance(1)
    await shrink.count(2)
    expect(log).toEqual(['first', 'liar', 'third', 'first', 'liar'])
    expect(shrink.items[1]).toMatchObject({ cycle: 2, level: 'moderate', requestedBytes: 14 * MiB })
    await monitor.close()
  })

  it('the default cool-down is 2 s: still at moderate after a cycle, the next one waits 2000 ms', async () => {
    const sim = new SimulatedBackend({ limit: 100 * MiB, usage: 10 * MiB })
    const clock = new ManualClock()
    const monitor = createMemoryMonitor({ backend: sim, levels: true, clock, reduceHeap: noHeap })
    const shrink = new Collector<ShrinkReport>()
    monitor.on('shrink', shrink.push)
    monitor.register(freeing(sim, 'cache', 0, 1 * MiB, []))
    sim.setUsage(80 * MiB) // moderate; the shrinker frees 1 MiB: still moderate
    await shrink.count(1)
    expect(monitor.level).toBe('moderate')
    clock.advance(1999)
    await turns()
    expect(shrink.items.length).toBe(1)
    clock.advance(1)
    await shrink.count(2)
    expect(shrink.items[1]).toMatchObject({ cycle: 2, level: 'moderate' })
    await monitor.close()
  })

  it('with nothing freed, the cool-down doubles (up to 32×) until the level changes', async () => {
    const { sim, clock, monitor, shrink } = setup({ cooldownMs: 1000 })
    sim.setUsage(75 * MiB)
    await shrink.count(1)
    const waits: number[] = []
    for (let n = 2; n <= 4; n++) {
      const start = clock.now()
      while (shrink.items.length < n) {
        clock.advance(250)
        await turns(2)
      }
      waits.push(clock.now() - start)
    }
    expect(waits).toEqual([2000, 4000, 8000])
    expect(shrink.items.map((r) => r.freedBytes)).toEqual([0, 0, 0, 0])
    sim.setUsage(90 * MiB) // a level change resets it
    await shrink.count(5)
    const start = clock.now()
    while (shrink.items.length < 6) {
      clock.advance(10)
      await turns(2)
    }
    // At high the wait is 100 ms at most; reset to 1× by the change, doubled once by the fruitless
    // cycle at the new level (not 16×).
    expect(clock.now() - start).toBe(200)
    await monitor.close()
  })

  it('still at high or critical after a cycle that freed something, the next one follows within 100 ms, not a cool-down', async () => {
    const { sim, clock, monitor, shrink } = setup({ cooldownMs: 1000 })
    // frees 1 MiB a call, while the basis stays above high (85 MiB): allocation outruns it
    monitor.register(freeing(sim, 'cache', 0, 1 * MiB))
    sim.setUsage(96 * MiB) // critical
    await shrink.count(1)
    expect(shrink.items[0]).toMatchObject({ level: 'critical', freedBytes: 1 * MiB, levelAfter: 'critical' })
    clock.advance(99)
    await turns(2)
    expect(shrink.items.length).toBe(1)
    clock.advance(1)
    await shrink.count(2)
    expect(shrink.items[1]).toMatchObject({ cycle: 2, level: 'critical' })
    // at moderate the cool-down still applies
    sim.setUsage(75 * MiB)
    await turns(2)
    const n = shrink.items.length
    clock.advance(100)
    await turns(2)
    expect(monitor.level).toBe('moderate')
    expect(shrink.items.length).toBe(n)
    clock.advance(900) // the cool-down since the last cycle has run out
    await shrink.count(n + 1)
    expect(shrink.items[n]).toMatchObject({ level: 'moderate' })
    await monitor.close()
  })

  it('with cooldownMs 0 and nothing freed, cycles back off from 50 ms instead of spinning', async () => {
    const { sim, clock, monitor, shrink } = setup({ cooldownMs: 0 })
    sim.setUsage(75 * MiB)
    await shrink.count(1)
    const waits: number[] = []
    for (let n = 2; n <= 3; n++) {
      const start = clock.now()
      while (shrink.items.length < n) {
        clock.advance(10)
        await turns(2)
      }
      waits.push(clock.now() - start)
    }
    expect(waits).toEqual([100, 200])
    await monitor.close()
  })

  it('re-arming keeps the watches already at the right value (each v1 registration waits for the kernel)', async () => {
    const sim = new SimulatedBackend({ limit: 100 * MiB, usage: 40 * MiB, cache: 10 * MiB, inactiveFile: 10 * MiB })
    const registered: number[] = []
    const watch = sim.watchThreshold.bind(sim)
    sim.watchThreshold = (bytes, cb) => (registered.push(bytes), watch(bytes, cb))
    const monitor = createMemoryMonitor({ backend: sim, levels: true, clock: new ManualClock(), reduceHeap: noHeap })
    const up = 70 * MiB + 10 * MiB // moderate on the working set, plus the cache on top of it
    expect(registered).toContain(up)
    const before = registered.length
    // Anonymous memory freed: usage falls through the drift point below it, the engine wakes and
    // re-arms; the cache is unchanged, so the point for moderate stays where it is.
    sim.free(5 * MiB)
    await turns(3)
    expect(registered.length).toBeGreaterThan(before)
    expect(registered.filter((b) => b === up)).toHaveLength(1)
    await monitor.close()
  })

  it('the fraction asked of a shrinker with a size is its share of that size', async () => {
    const { sim, monitor, shrink } = setup()
    const requests: ShrinkRequest[] = []
    monitor.register({ name: 'sized', size: () => 40 * MiB, shrink: (r) => (requests.push(r), 0) })
    sim.setUsage(75 * MiB) // moderate: 75 − 65 = 10 MiB of 40
    await shrink.count(1)
    expect(requests[0]).toMatchObject({ targetBytes: 10 * MiB, fraction: 0.25 })
    await monitor.close()
  })

  it('at critical asks every shrinker even when the first covers the target', async () => {
    const { sim, monitor, shrink } = setup()
    const log: string[] = []
    monitor.register(freeing(sim, 'big', 0, 35 * MiB, log))
    monitor.register(freeing(sim, 'small', 1, 1 * MiB, log))
    sim.setUsage(97 * MiB)
    const [report] = await shrink.count(1)
    expect(log).toEqual(['big', 'small'])
    expect(report).toMatchObject({ level: 'critical', requestedBytes: 7 * MiB, freedBytes: 36 * MiB, levelAfter: 'normal' })
    await monitor.close()
  })

  it('a shrinker that throws is reported and skipped; the cycle goes on', async () => {
    const { sim, monitor, shrink, errors } = setup()
    const boom = new Error('boom')
    monitor.register({ name: 'broken', priority: 0, shrink: () => { throw boom } })
    monitor.register({ name: 'rejects', priority: 1, shrink: async () => Promise.reject(boom) })
    monitor.register(freeing(sim, 'works', 2, 10 * MiB))
    sim.setUsage(75 * MiB)
    const [report] = await shrink.count(1)
    expect(report?.shrinkers.map((s) => [s.name, s.reported, s.error])).toEqual([
      ['broken', null, boom],
      ['rejects', null, boom],
      ['works', 10 * MiB, undefined],
    ])
    expect(report?.freedBytes).toBe(10 * MiB)
    expect(errors.items).toEqual([])
    await monitor.close()
  })

  it('a shrinker still running at its timeout is aborted (ERR_TIMEOUT), reported, and the cycle goes on', async () => {
    const { sim, clock, monitor, shrink } = setup({ shrinkTimeoutMs: 300 })
    const started = new Collector<AbortSignal>()
    monitor.register({ name: 'hangs', priority: 0, shrink: (r) => (started.push(r.signal), new Promise(() => {})) })
    monitor.register(freeing(sim, 'next', 1, 12 * MiB))
    sim.setUsage(75 * MiB)
    const [signal] = await started.count(1)
    await turns()
    expect(shrink.items).toEqual([])
    clock.advance(300)
    const [report] = await shrink.count(1)
    expect(signal?.aborted).toBe(true)
    expect((signal?.reason as MemoryPressureError).code).toBe('ERR_TIMEOUT')
    expect(report?.shrinkers.map((s) => [s.name, s.timedOut, s.reported, s.ms])).toEqual([
      ['hangs', true, null, 300],
      ['next', undefined, 12 * MiB, 0],
    ])
    expect(report?.durationMs).toBe(300)
    await monitor.close()
  })

  it('notifications during a cycle raise its level and target instead of starting another', async () => {
    const { sim, monitor, shrink, pressure } = setup()
    const gate = deferred()
    const entered = new Collector<ShrinkRequest>()
    monitor.register({ name: 'slow', priority: 0, shrink: async (r) => (entered.push(r), await gate.promise, 0) })
    const later = freeing(sim, 'later', 1, 40 * MiB)
    monitor.register(later)
    sim.setUsage(72 * MiB) // moderate: 7 MiB
    await entered.count(1)
    sim.setUsage(88 * MiB) // high while the first shrinker runs
    await pressure.count(2)
    sim.setUsage(97 * MiB) // critical
    await pressure.count(3)
    await turns()
    expect(shrink.items).toEqual([])
    gate.resolve()
    const [report] = await shrink.count(1)
    await turns()
    expect(shrink.items.length).toBe(1)
    expect(entered.items[0]).toMatchObject({ level: 'moderate', targetBytes: 7 * MiB })
    // The target only grows: moderate 72 − 65 = 7, high 88 − 80 = 8, critical 97 − 90 = 7 MiB.
    expect(later.requests[0]).toMatchObject({ level: 'critical', targetBytes: 8 * MiB })
    expect(report).toMatchObject({ level: 'critical', requestedBytes: 8 * MiB, updates: 2 })
    // Measured from the snapshot at the start (72 MiB) to the end (97 − 40 = 57 MiB).
    expect(report?.freedBytes).toBe(15 * MiB)
    await monitor.close()
  })

  it('collects before the shrinkers and again after them, with the method given', async () => {
    const sim = new SimulatedBackend({ limit: 100 * MiB, usage: 10 * MiB })
    const log: string[] = []
    const monitor = createMemoryMonitor({
      backend: sim,
      levels: true,
      clock: new ManualClock(),
      reduceHeap: { gc: () => void log.push('gc'), mallocTrim: false },
    })
    const shrink = new Collector<ShrinkReport>()
    monitor.on('shrink', shrink.push)
    monitor.register(freeing(sim, 's', 0, 20 * MiB, log))
    sim.setUsage(75 * MiB)
    const [report] = await shrink.count(1)
    // the collection alone freed nothing (a custom gc on the simulated backend), so the shrinker is
    // asked, and the heap is reduced again after it
    expect(log).toEqual(['gc', 's', 'gc'])
    expect(report?.heap).toMatchObject({ gc: 'custom', mallocTrim: 'skipped' })
    expect(report).toMatchObject({ heapRuns: 2, collectedBytes: 0 })
    await monitor.close()
  })

  it('a failing heap reduction is reported in the cycle', async () => {
    const sim = new SimulatedBackend({ limit: 100 * MiB, usage: 10 * MiB })
    const boom = new Error('gc failed')
    const monitor = createMemoryMonitor({ backend: sim, levels: true, clock: new ManualClock(), reduceHeap: { gc: () => { throw boom }, mallocTrim: false } })
    const shrink = new Collector<ShrinkReport>()
    monitor.on('shrink', shrink.push)
    sim.setUsage(75 * MiB)
    const [report] = await shrink.count(1)
    expect(report?.heap).toBeNull()
    expect(report?.heapError).toBe(boom)
    await monitor.close()
  })

  it('closing during a cycle aborts the running shrinker (ERR_CLOSED) and reports nothing', async () => {
    const { sim, monitor, shrink } = setup()
    const started = new Collector<AbortSignal>()
    monitor.register({ name: 'hangs', shrink: (r) => (started.push(r.signal), new Promise(() => {})) })
    sim.setUsage(75 * MiB)
    const [signal] = await started.count(1)
    await monitor.close()
    await turns()
    expect((signal?.reason as MemoryPressureError).code).toBe('ERR_CLOSED')
    expect(shrink.items).toEqual([])
  })

  it('an unregistered shrinker is not asked', async () => {
    const { sim, monitor, shrink } = setup()
    const log: string[] = []
    const off = monitor.register(freeing(sim, 'gone', 0, 10 * MiB, log))
    monitor.register(freeing(sim, 'kept', 1, 10 * MiB, log))
    off()
    sim.setUsage(75 * MiB)
    await shrink.count(1)
    expect(log).toEqual(['kept'])
    await monitor.close()
  })
})

describe('until() and the iterator', () => {
  it('until resolves once the level is at or below the one asked for', async () => {
    const { sim, monitor, pressure } = setup()
    sim.setUsage(90 * MiB)
    await pressure.count(1)
    let resolved = ''
    void monitor.until('moderate').then(() => (resolved += 'moderate '))
    void monitor.until('normal').then(() => (resolved += 'normal'))
    await turns()
    expect(resolved).toBe('')
    sim.setUsage(78 * MiB)
    await pressure.count(2)
    await turns()
    expect(resolved).toBe('moderate ')
    sim.setUsage(60 * MiB)
    await pressure.count(3)
    await turns()
    expect(resolved).toBe('moderate normal')
    await monitor.until('normal')
    await monitor.close()
  })

  it('until rejects with the abort reason, with ERR_CLOSED on close, TypeError for a bad level', async () => {
    const { sim, monitor, pressure } = setup()
    sim.setUsage(90 * MiB)
    await pressure.count(1)
    const ac = new AbortController()
    const aborted = monitor.until('normal', { signal: ac.signal })
    const reason = new Error('stop')
    ac.abort(reason)
    await expect(aborted).rejects.toBe(reason)
    const pending = monitor.until('normal')
    await monitor.close()
    await expect(pending).rejects.toMatchObject({ code: 'ERR_CLOSED' })
    await expect(monitor.until('normal')).rejects.toMatchObject({ code: 'ERR_CLOSED' })
    const { monitor: other } = setup()
    await expect(other.until('extreme' as never)).rejects.toBeInstanceOf(TypeError)
    await other.close()
  })

  it('the async iterator yields pressure, shrink and relief in order', async () => {
    const { sim, monitor } = setup()
    monitor.register(freeing(sim, 's', 0, 20 * MiB))
    const seen: string[] = []
    const done = (async () => {
      for await (const e of monitor.events()) {
        seen.push(e.type === 'pressure' ? `pressure:${e.level}` : e.type)
        if (e.type === 'relief') break
      }
    })()
    sim.setUsage(75 * MiB)
    await done
    expect(seen).toEqual(['pressure:moderate', 'shrink', 'pressure:normal', 'relief'])
    const types: MonitorEvent['type'][] = ['pressure', 'shrink', 'relief']
    expect(types.length).toBe(3)
    await monitor.close()
  })
})

describe('validation', () => {
  function code(fn: () => unknown): string {
    try {
      fn()
    } catch (err) {
      if (err instanceof MemoryPressureError) return err.code
      return (err as Error).constructor.name
    }
    return 'no error'
  }

  it('names the bad option and leaves nothing open', () => {
    const sim = new SimulatedBackend({ limit: 100 * MiB })
    expect(code(() => createMemoryMonitor({ backend: sim, levels: { moderate: '90%', high: '80%' } }))).toBe('RangeError')
    expect(code(() => createMemoryMonitor({ backend: sim, levels: 'yes' as never }))).toBe('TypeError')
    expect(code(() => createMemoryMonitor({ backend: sim, levels: true, tuning: { cooldownMs: -1 } }))).toBe('RangeError')
    expect(code(() => createMemoryMonitor({ backend: sim, levels: true, clock: {} as never }))).toBe('TypeError')
    expect(code(() => createMemoryMonitor({ backend: sim, levels: true, reduceHeap: { gc: 'full' as never } }))).toBe('TypeError')
    expect(code(() => createMemoryMonitor({ backend: sim, levels: { moderate: '120%' } }))).toBe('ERR_INVALID_THRESHOLD')
    expect(code(() => createMemoryMonitor({ backend: 'simulated', simulated: { limit: Infinity }, levels: { moderate: '70%' }, heapLimit: false }))).toBe('ERR_NO_LIMIT')
    expect(code(() => createMemoryMonitor({ backend: sim, levels: true, heapLimit: 'yes' as never }))).toBe('TypeError')
    expect(code(() => createMemoryMonitor({ backend: sim, levels: true, tuning: { runtime: {} as never } }))).toBe('TypeError')
    expect(sim.listenerCount('close')).toBe(0)
    const monitor = createMemoryMonitor({ backend: sim })
    expect(code(() => monitor.register(null as never))).toBe('TypeError')
    expect(code(() => monitor.register({ name: '', shrink: () => 0 }))).toBe('TypeError')
    expect(code(() => monitor.register({ name: 'x', priority: Number.NaN, shrink: () => 0 }))).toBe('TypeError')
    expect(code(() => monitor.register({ name: 'x' } as never))).toBe('TypeError')
    expect(code(() => monitor.register({ name: 'x', shrink: () => 0, size: 5 } as never))).toBe('TypeError')
    void monitor.close()
    expect(code(() => monitor.register({ name: 'x', shrink: () => 0 }))).toBe('ERR_CLOSED')
    // Levels start with the first register(): without a cgroup limit the default percentages stay
    // off for the cgroup (one warning), and the heap's limit is watched unless heapLimit is false.
    const unlimited = createMemoryMonitor({ backend: 'simulated', simulated: { limit: Infinity }, heapLimit: false })
    expect(code(() => unlimited.register({ name: 'x', shrink: () => 0 }))).toBe('no error')
    expect([unlimited.level, unlimited.levels]).toEqual(['normal', null])
    void unlimited.close()
  })
})

describe('reduceHeap', () => {
  it('runs a full V8 collection without --expose-gc and malloc_trim through the addon', async () => {
    let target: object | null = { big: new Array(1000).fill(1) }
    const ref = new WeakRef(target)
    target = null
    await turns(1) // a WeakRef target stays alive until the end of the job that created it
    const r = await reduceHeap()
    expect(ref.deref()).toBeUndefined()
    expect(r.gc).toBe('v8-major')
    expect(['released', 'nothing']).toContain(r.mallocTrim)
    expect(r.gcMs).toBeGreaterThanOrEqual(0)
    expect(r.ms).toBeGreaterThanOrEqual(r.gcMs)
  })

  it('returns with the memory of the Buffers it collected freed and counted: V8 external memory falls by them', async () => {
    let held: Buffer[] | null = Array.from({ length: 32 }, (_, i) => Buffer.alloc(2 ** 20, i))
    await reduceHeap({ mallocTrim: false })
    const before = v8.getHeapStatistics().external_memory
    expect(held.length).toBe(32)
    held = null
    await turns(1)
    await reduceHeap({ mallocTrim: false })
    // After a full collection alone, V8 frees those Buffers on a helper thread and counts them at its next collection.
    expect(before - v8.getHeapStatistics().external_memory).toBeGreaterThanOrEqual(31 * 2 ** 20)
  })

  it('can skip both steps, and rejects bad options with TypeError', async () => {
    const r = await reduceHeap({ gc: 'none', mallocTrim: false })
    expect(r).toMatchObject({ gc: 'none', gcMs: 0, mallocTrim: 'skipped', mallocTrimMs: 0 })
    await expect(reduceHeap({ gc: 'fast' as never })).rejects.toBeInstanceOf(TypeError)
    await expect(reduceHeap({ mallocTrim: 1 as never })).rejects.toBeInstanceOf(TypeError)
  })
})
