// Which V8 collections a shrink cycle runs with the default `gc: 'v8-major'`: each reduction is one
// full collection and then one minor collection (which waits for V8 to free the Buffers the full one
// found dead), one reduction before the shrinkers and one after them, and below critical a second
// one after them when the first did not bring the level back to normal. The process's `gc` is
// replaced by a recording stand-in before the first reduction (the engine uses `globalThis.gc` when
// there is one), so the simulated cgroup moves exactly when a full collection runs.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { SimulatedBackend } from '../src/backends/simulated.js'
import { createMemoryMonitor } from '../src/monitor.js'
import { ManualClock } from '../src/policy/clock.js'
import { type PolicyRuntime, processRuntime } from '../src/policy/runtime.js'
import type { ShrinkReport } from '../src/policy/shrinker.js'
import { Collector } from './helpers/collect.js'

const MiB = 2 ** 20
const own = (globalThis as { gc?: unknown }).gc
/** What the next full collections free, one entry per collection (missing: nothing). */
let frees: Array<() => void> = []
/** The collections run, in order. */
let calls: Array<'full' | 'minor'> = []

beforeAll(() => {
  ;(globalThis as { gc?: unknown }).gc = (options?: { type?: string }) => {
    if (options?.type === 'minor') calls.push('minor')
    else {
      calls.push('full')
      frees.shift()?.()
    }
  }
})
afterAll(() => {
  ;(globalThis as { gc?: unknown }).gc = own
})

/**
 * A monitor on a 100 MiB simulated cgroup, default gc, no trim, no allocator reading; V8's readings
 * are `external` bytes of external memory and no old generation to speak of (the real collections,
 * replaced above, run through the process's own reduction).
 */
function setup(usage: number, external = 20 * MiB) {
  const sim = new SimulatedBackend({ limit: 100 * MiB, usage: 10 * MiB })
  const runtime: PolicyRuntime = {
    ...processRuntime,
    externalMemory: () => external,
    oldGeneration: () => ({ usedBytes: MiB, limitBytes: 4096 * MiB }),
    onMajorGc: () => () => undefined,
  }
  const monitor = createMemoryMonitor({ backend: sim, levels: true, clock: new ManualClock(), tuning: { allocatorFree: false, runtime }, reduceHeap: { mallocTrim: false } })
  const shrink = new Collector<ShrinkReport>()
  monitor.on('shrink', shrink.push)
  calls = []
  frees = []
  return { sim, monitor, shrink, start: () => sim.setUsage(usage) }
}

describe("shrink cycle with gc: 'v8-major'", () => {
  it('at moderate: one reduction (full, then minor) before the shrinkers, one after them when that frees what they dropped', async () => {
    const { sim, monitor, shrink, start } = setup(78 * MiB)
    // the cache drops 20 MiB; the memory leaves at the next collection
    monitor.register({ name: 'cache', shrink: () => void frees.push(() => sim.free(20 * MiB)) })
    start()
    const [report] = await shrink.count(1)
    expect(report).toMatchObject({ level: 'moderate', levelAfter: 'normal', heapRuns: 2, freedBytes: 20 * MiB, heap: { gc: 'v8-major' } })
    expect(calls).toEqual(['full', 'minor', 'full', 'minor'])
    await monitor.close()
  })

  it('at moderate: a second reduction after the shrinkers when the first left the level where it was', async () => {
    const { sim, monitor, shrink, start } = setup(78 * MiB)
    // the first collection after the shrink frees nothing (the entries are still referenced somewhere)
    monitor.register({ name: 'cache', shrink: () => void frees.push(() => {}, () => sim.free(20 * MiB)) })
    start()
    const [report] = await shrink.count(1)
    expect(report).toMatchObject({ level: 'moderate', levelAfter: 'normal', heapRuns: 2, freedBytes: 20 * MiB })
    expect(calls).toEqual(['full', 'minor', 'full', 'minor', 'full', 'minor'])
    await monitor.close()
  })

  it('at moderate: no second reduction with less than a band of external memory (no Buffers to wait for)', async () => {
    const { sim, monitor, shrink, start } = setup(78 * MiB, 4 * MiB)
    monitor.register({ name: 'cache', shrink: () => void frees.push(() => {}, () => sim.free(20 * MiB)) })
    start()
    const [report] = await shrink.count(1)
    expect(report).toMatchObject({ level: 'moderate', levelAfter: 'moderate', heapRuns: 2 })
    expect(calls).toEqual(['full', 'minor', 'full', 'minor'])
    await monitor.close()
  })

  it('at critical: one reduction before the shrinkers and one after, with no second one', async () => {
    const { sim, monitor, shrink, start } = setup(97 * MiB)
    monitor.register({ name: 'cache', shrink: () => void frees.push(() => sim.free(60 * MiB)) })
    start()
    const [report] = await shrink.count(1)
    expect(report).toMatchObject({ level: 'critical', levelAfter: 'normal', heapRuns: 2, freedBytes: 60 * MiB })
    expect(calls).toEqual(['full', 'minor', 'full', 'minor'])
    await monitor.close()
  })

  it('without shrinkers to ask, the reduction before them is the only one', async () => {
    const { sim, monitor, shrink, start } = setup(78 * MiB)
    frees.push(() => sim.free(20 * MiB))
    start()
    const [report] = await shrink.count(1)
    expect(report).toMatchObject({ level: 'moderate', levelAfter: 'normal', heapRuns: 1, collectedBytes: 20 * MiB })
    expect(calls).toEqual(['full', 'minor'])
    await monitor.close()
  })
})
