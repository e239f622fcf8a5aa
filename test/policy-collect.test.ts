// When a shrink cycle forces a collection (docs/how-it-works.md, step 1): for the cgroup, only when
// V8 allocated a band or more since its last major collection (what a collection could find), and
// what forced collections cost, per minute, in every report. Simulated backend, hand-moved clock,
// a stand-in runtime whose readings the test sets.

import { describe, expect, it } from 'vitest'
import { SimulatedBackend } from '../src/backends/simulated.js'
import { createMemoryMonitor } from '../src/monitor.js'
import { ManualClock } from '../src/policy/clock.js'
import type { ShrinkReport } from '../src/policy/shrinker.js'
import { Collector } from './helpers/collect.js'
import { fakeRuntime } from './helpers/runtime.js'

const MiB = 2 ** 20

/** A 100 MiB cgroup (moderate 70, hysteresis 5 MiB), a heap far from its limit, V8's own gc. */
function setup() {
  const runtime = fakeRuntime({ used: 10 * MiB, limit: 1000 * MiB, gcMs: 40 })
  const sim = new SimulatedBackend({ limit: 100 * MiB, usage: 20 * MiB })
  const clock = new ManualClock()
  const monitor = createMemoryMonitor({ backend: sim, levels: true, clock, reduceHeap: { mallocTrim: false }, tuning: { runtime, allocatorFree: false } })
  const shrink = new Collector<ShrinkReport>()
  monitor.on('shrink', shrink.push)
  monitor.register({ name: 'cache', size: () => 50 * MiB, shrink: (req) => (sim.free(req.targetBytes), req.targetBytes) })
  return { runtime, sim, clock, monitor, shrink }
}

describe('a cycle collects first only for what V8 has not measured', () => {
  it('with less than a band allocated since V8\'s last major collection, the shrinkers are asked at once; one collection, after them', async () => {
    const { runtime, sim, monitor, shrink } = setup()
    runtime.majorGc(10 * MiB)
    runtime.state.used = 12 * MiB // 2 MiB of the old generation allocated since
    runtime.state.external = MiB
    sim.setUsage(78 * MiB)
    const [report] = await shrink.count(1)
    expect(report?.plan).toMatchObject({ collected: false, collectable: 3 * MiB, cgroup: { before: 78 * MiB, measured: 78 * MiB, excess: 13 * MiB } })
    expect(report).toMatchObject({ heapRuns: 1, requestedBytes: 13 * MiB, levelAfter: 'normal' })
    expect(runtime.state.gcs).toBe(1)
    await monitor.close()
  })

  it('with a band or more allocated since (Buffers count too), it collects first', async () => {
    const { runtime, sim, monitor, shrink } = setup()
    runtime.majorGc(10 * MiB)
    runtime.state.used = 12 * MiB
    runtime.state.external = 3 * MiB // 2 + 3 MiB: the band
    sim.setUsage(78 * MiB)
    const [report] = await shrink.count(1)
    expect(report?.plan).toMatchObject({ collected: true, collectable: 5 * MiB })
    expect(report?.heapRuns).toBe(2)
    expect(runtime.state.gcs).toBe(2)
    await monitor.close()
  })

  it('before V8\'s first major collection nothing is known: it collects first (collectable null)', async () => {
    const { runtime, sim, monitor, shrink } = setup()
    sim.setUsage(78 * MiB)
    const [report] = await shrink.count(1)
    expect(report?.plan).toMatchObject({ collected: true, collectable: null })
    expect(runtime.state.gcs).toBe(2)
    await monitor.close()
  })

  it('a custom gc is not V8\'s to estimate: it always runs first', async () => {
    const runtime = fakeRuntime({ used: 10 * MiB, limit: 1000 * MiB })
    const sim = new SimulatedBackend({ limit: 100 * MiB, usage: 20 * MiB })
    let gcs = 0
    const monitor = createMemoryMonitor({ backend: sim, levels: true, clock: new ManualClock(), reduceHeap: { gc: () => void gcs++, mallocTrim: false }, tuning: { runtime, allocatorFree: false } })
    const shrink = new Collector<ShrinkReport>()
    monitor.on('shrink', shrink.push)
    runtime.majorGc(10 * MiB)
    sim.setUsage(78 * MiB)
    const [report] = await shrink.count(1)
    expect(report?.plan).toMatchObject({ collected: true, collectable: null })
    expect(gcs).toBe(1)
    await monitor.close()
  })
})

describe('forcedGcMsPerMinute', () => {
  it('adds the forced collections of the last minute of the monitor\'s clock, and forgets older ones', async () => {
    const { runtime, sim, clock, monitor, shrink } = setup()
    sim.setUsage(78 * MiB) // nothing known: collect, shrink, collect (40 ms each)
    const [first] = await shrink.count(1)
    expect(first?.forcedGcMsPerMinute).toBe(80)
    clock.advance(30_000)
    runtime.state.used = 30 * MiB // well over a band allocated since the last collection
    sim.setUsage(78 * MiB)
    const [, second] = await shrink.count(2)
    expect(second?.forcedGcMsPerMinute).toBe(160)
    clock.advance(40_000) // the first cycle's collections are more than a minute old now
    runtime.state.used = 50 * MiB
    sim.setUsage(78 * MiB)
    const [, , third] = await shrink.count(3)
    expect(third?.forcedGcMsPerMinute).toBe(160)
    await monitor.close()
  })
})
