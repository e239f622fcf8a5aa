// V8's free heap in the credit (docs/how-it-works.md, the bases): committed heap that holds no
// object is resident memory the next JavaScript allocations reuse, so a cache of objects that was
// shrunk brings the level down although usage stays; and the credit re-reads on the clock only
// while it is what holds the level down. Simulated backend, hand-moved clock, stand-in runtime.

import { describe, expect, it } from 'vitest'
import { SimulatedBackend } from '../src/backends/simulated.js'
import { createMemoryMonitor } from '../src/monitor.js'
import { ManualClock } from '../src/policy/clock.js'
import type { ShrinkReport } from '../src/policy/shrinker.js'
import { Collector, turns } from './helpers/collect.js'
import { fakeRuntime } from './helpers/runtime.js'

const MiB = 2 ** 20

describe("V8's free heap is credit", () => {
  it('a cache of objects shrunk at moderate: usage stays, the freed heap is credited, the level is normal again', async () => {
    const runtime = fakeRuntime({ used: 10 * MiB, limit: 4096 * MiB, free: 0 })
    const sim = new SimulatedBackend({ limit: 100 * MiB, usage: 20 * MiB })
    const monitor = createMemoryMonitor({ backend: sim, levels: true, clock: new ManualClock(), reduceHeap: { mallocTrim: false }, tuning: { runtime, allocatorFree: true } })
    const shrink = new Collector<ShrinkReport>()
    monitor.on('shrink', shrink.push)
    // the cache drops objects; V8 keeps their pages committed: usage does not move
    monitor.register({ name: 'objects', size: () => 40 * MiB, shrink: (req) => void (runtime.state.heapFree += req.targetBytes) })
    sim.setUsage(78 * MiB)
    const [report] = await shrink.count(1)
    expect(report).toMatchObject({ level: 'moderate', requestedBytes: 13 * MiB, levelAfter: 'normal', allocatorFreeBytes: 13 * MiB })
    expect(sim.snapshot().usage).toBe(78 * MiB)
    expect(monitor.level).toBe('normal')
    await monitor.close()
  })

  it('without the credit (allocatorFree: false) the same cycle leaves the level at moderate', async () => {
    const runtime = fakeRuntime({ used: 10 * MiB, limit: 4096 * MiB, free: 0 })
    const sim = new SimulatedBackend({ limit: 100 * MiB, usage: 20 * MiB })
    const monitor = createMemoryMonitor({ backend: sim, levels: true, clock: new ManualClock(), reduceHeap: { mallocTrim: false }, tuning: { runtime, allocatorFree: false } })
    const shrink = new Collector<ShrinkReport>()
    monitor.on('shrink', shrink.push)
    monitor.register({ name: 'objects', size: () => 40 * MiB, shrink: (req) => void (runtime.state.heapFree += req.targetBytes) })
    sim.setUsage(78 * MiB)
    const [report] = await shrink.count(1)
    expect(report).toMatchObject({ levelAfter: 'moderate', allocatorFreeBytes: 0 })
    await monitor.close()
  })

  it('a credit far from any level sets no timer (an idle service wakes for nothing); one that holds the level down re-reads on the clock', async () => {
    const runtime = fakeRuntime({ used: 10 * MiB, limit: 4096 * MiB, free: 0, heapFree: 6 * MiB })
    const sim = new SimulatedBackend({ limit: 100 * MiB, usage: 30 * MiB })
    const clock = new ManualClock()
    const monitor = createMemoryMonitor({ backend: sim, levels: true, clock, reduceHeap: false, tuning: { runtime, allocatorFree: true } })
    monitor.register({ name: 'none', shrink: () => 0 })
    expect(monitor.level).toBe('normal')
    expect(clock.pending).toBe(0)
    // 72 MiB of usage, 6 MiB of it free heap: 66, normal; moderate (70) without the credit
    sim.setUsage(72 * MiB)
    await turns(3)
    expect(monitor.level).toBe('normal')
    expect(clock.pending).toBe(1)
    runtime.state.heapFree = 0 // JavaScript allocations reuse the free heap; usage does not move
    clock.advance(1000)
    await turns(3)
    expect(monitor.level).toBe('moderate')
    await monitor.close()
  })
})
