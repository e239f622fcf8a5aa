// How many V8 collections a shrink cycle runs with the default `gc: 'v8-major'`: the collection
// after the shrinkers is one when the collection before them already ran and one brings the level
// back to normal, two when it does not (what was dropped during V8's incremental marking stays
// until a second one), and two at once at critical. The process's `gc` is replaced by a counting
// stand-in before the first reduction (the engine uses `globalThis.gc` when there is one), so the
// simulated cgroup moves exactly when a collection runs.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { SimulatedBackend } from '../src/backends/simulated.js'
import { createMemoryMonitor } from '../src/monitor.js'
import { ManualClock } from '../src/policy/clock.js'
import type { ShrinkReport } from '../src/policy/shrinker.js'
import { Collector } from './helpers/collect.js'

const MiB = 2 ** 20
const own = (globalThis as { gc?: unknown }).gc
/** What the next calls of gc() free, one entry per call (missing: nothing). */
let frees: Array<() => void> = []
let calls = 0

beforeAll(() => {
  ;(globalThis as { gc?: unknown }).gc = () => {
    calls++
    frees.shift()?.()
  }
})
afterAll(() => {
  ;(globalThis as { gc?: unknown }).gc = own
})

/** A monitor on a 100 MiB simulated cgroup, default gc, no trim, no allocator reading. */
function setup(usage: number) {
  const sim = new SimulatedBackend({ limit: 100 * MiB, usage: 10 * MiB })
  const monitor = createMemoryMonitor({ backend: sim, levels: true, clock: new ManualClock(), allocatorFree: false, reduceHeap: { mallocTrim: false } })
  const shrink = new Collector<ShrinkReport>()
  monitor.on('shrink', shrink.push)
  calls = 0
  frees = []
  return { sim, monitor, shrink, start: () => sim.setUsage(usage) }
}

describe("shrink cycle with gc: 'v8-major'", () => {
  it('at moderate: two collections before the shrinkers, one after them when that frees what they dropped', async () => {
    const { sim, monitor, shrink, start } = setup(78 * MiB)
    // the cache drops 20 MiB; the memory leaves at the next collection
    monitor.register({ name: 'cache', shrink: () => void frees.push(() => sim.free(20 * MiB)) })
    start()
    const [report] = await shrink.count(1)
    expect(report).toMatchObject({ level: 'moderate', levelAfter: 'normal', heapRuns: 2, freedBytes: 20 * MiB, heap: { gc: 'v8-major' } })
    expect(calls).toBe(3) // 2 before, 1 after (4 before this change)
    await monitor.close()
  })

  it('at moderate: a second collection after the shrinkers when the first left the level where it was', async () => {
    const { sim, monitor, shrink, start } = setup(78 * MiB)
    // the first collection after the shrink lands in a marking that keeps the dropped entries alive
    monitor.register({ name: 'cache', shrink: () => void frees.push(() => {}, () => sim.free(20 * MiB)) })
    start()
    const [report] = await shrink.count(1)
    expect(report).toMatchObject({ level: 'moderate', levelAfter: 'normal', heapRuns: 2, freedBytes: 20 * MiB })
    expect(calls).toBe(4)
    await monitor.close()
  })

  it('at critical: two collections before and two after, whatever the first one freed', async () => {
    const { sim, monitor, shrink, start } = setup(97 * MiB)
    monitor.register({ name: 'cache', shrink: () => void frees.push(() => sim.free(60 * MiB)) })
    start()
    const [report] = await shrink.count(1)
    expect(report).toMatchObject({ level: 'critical', levelAfter: 'normal', heapRuns: 2, freedBytes: 60 * MiB })
    expect(calls).toBe(4)
    await monitor.close()
  })

  it('without shrinkers to ask, the collection before them is the only one (two calls)', async () => {
    const { sim, monitor, shrink, start } = setup(78 * MiB)
    frees.push(() => sim.free(20 * MiB))
    start()
    const [report] = await shrink.count(1)
    expect(report).toMatchObject({ level: 'moderate', levelAfter: 'normal', heapRuns: 1, collectedBytes: 20 * MiB })
    expect(calls).toBe(2)
    await monitor.close()
  })
})
