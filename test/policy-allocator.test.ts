// Free memory of the C allocator counted as available (the `allocatorFree` option): what a
// collection gives back to malloc's free lists stays charged to the cgroup but is reused by the
// process's next allocations, so the levels take it off the basis, and malloc_trim (whose pages are
// faulted straight back in) runs only when the basis without that credit is at critical (or within
// 8 MiB of the limit, where critical is closer). Simulated backend, a hand-moved clock, and a
// stand-in reading of the allocator; the real reading (glibc mallinfo2 through the addon) is
// checked at the end against this process's own heap.

import { describe, expect, it } from 'vitest'
import { SimulatedBackend } from '../src/backends/simulated.js'
import { createMemoryMonitor } from '../src/monitor.js'
import { ManualClock } from '../src/policy/clock.js'
import type { PressureEvent } from '../src/policy/engine.js'
import { allocatorFreeBytes, mallocTrimCount, reduceHeap } from '../src/policy/heap.js'
import type { ShrinkReport, ShrinkRequest } from '../src/policy/shrinker.js'
import { MemoryPressureError } from '../src/errors.js'
import { tryLoadNative } from '../src/native.js'
import { Collector, turns } from './helpers/collect.js'
import { fakeRuntime } from './helpers/runtime.js'

const MiB = 2 ** 20
const native = tryLoadNative()
const glibc = !(native instanceof MemoryPressureError) && native.platformSupported && typeof native.mallocInfo === 'function' && Array.isArray(native.mallocInfo())

/** A monitor on a 100 MiB simulated cgroup whose allocator holds `state.free` bytes free. */
function setup(usage: number, state: { free: number | null }, gc: (sim: SimulatedBackend) => void = () => {}) {
  const sim = new SimulatedBackend({ limit: 100 * MiB, usage })
  const clock = new ManualClock()
  const runtime = fakeRuntime()
  const monitor = createMemoryMonitor({
    backend: sim,
    levels: true,
    clock,
    tuning: { allocatorFree: () => state.free, runtime },
    reduceHeap: { gc: () => gc(sim) }, // mallocTrim left at its default (true)
  })
  const pressure = new Collector<PressureEvent>()
  const shrink = new Collector<ShrinkReport>()
  monitor.on('pressure', pressure.push)
  monitor.on('shrink', shrink.push)
  return { sim, clock, monitor, pressure, shrink, runtime }
}

/** The thresholds currently watched on `sim` (added when armed, removed when closed). */
function recordArmed(sim: SimulatedBackend): Set<number> {
  const armed = new Set<number>()
  const watch = sim.watchThreshold.bind(sim)
  sim.watchThreshold = (bytes, cb) => {
    const w = watch(bytes, cb)
    armed.add(bytes)
    return { threshold: w.threshold, close: () => (armed.delete(bytes), w.close()) }
  }
  return armed
}

describe('allocatorFree: free allocator memory counted as available', () => {
  it('takes the free bytes off the basis: 75 MiB used with 20 MiB free is normal', async () => {
    const state = { free: 20 * MiB as number | null }
    const { monitor, pressure } = setup(75 * MiB, state)
    expect(monitor.level).toBe('normal')
    await turns()
    expect(pressure.items).toEqual([])
    await monitor.close()
    // control: the same cgroup without the credit is at moderate
    const sim = new SimulatedBackend({ limit: 100 * MiB, usage: 75 * MiB })
    const plain = createMemoryMonitor({ backend: sim, levels: true, clock: new ManualClock(), tuning: { allocatorFree: false, runtime: fakeRuntime() }, reduceHeap: false })
    expect(plain.level).toBe('moderate')
    await plain.close()
  })

  it('the free memory being reused moves no usage: the re-check finds the level', async () => {
    const state = { free: 20 * MiB as number | null }
    const { clock, monitor, pressure } = setup(75 * MiB, state)
    state.free = 0 // the process allocated into its free lists: usage unchanged, basis 55 → 75 MiB
    clock.advance(999)
    await turns()
    expect(pressure.items).toEqual([])
    clock.advance(1)
    const [event] = await pressure.count(1)
    expect(event).toMatchObject({ previous: 'normal', level: 'moderate', bytes: 75 * MiB, allocatorFreeBytes: 0 })
    await monitor.close()
  })

  it('a collection that frees into the allocator answers the cycle: no shrinker, no malloc_trim', async () => {
    const state = { free: 0 as number | null }
    const { sim, monitor, shrink } = setup(10 * MiB, state, () => {
      state.free = 20 * MiB // garbage collected: the bytes go to the free lists, usage stays
    })
    const asked: ShrinkRequest[] = []
    monitor.register({ name: 'cache', shrink: (r) => void asked.push(r) })
    sim.setUsage(75 * MiB)
    const [report] = await shrink.count(1)
    expect(report).toMatchObject({ level: 'moderate', levelAfter: 'normal', collectedBytes: 20 * MiB, freedBytes: 20 * MiB, heapRuns: 1, allocatorFreeBytes: 20 * MiB })
    expect(report?.shrinkers).toEqual([])
    expect(asked).toEqual([])
    expect(report?.heap?.mallocTrim).toBe('skipped')
    expect(report?.after.usage).toBe(75 * MiB)
    await monitor.close()
  })

  it('at critical without the credit, malloc_trim runs; without allocatorFree it runs at every level', async () => {
    const state = { free: 0 as number | null }
    const { sim, monitor, shrink } = setup(10 * MiB, state, () => {
      state.free = 50 * MiB
    })
    sim.setUsage(97 * MiB) // critical on the raw basis
    const [report] = await shrink.count(1)
    expect(report?.level).toBe('critical')
    expect(report?.heap?.mallocTrim).not.toBe('skipped')
    await monitor.close()

    const sim2 = new SimulatedBackend({ limit: 100 * MiB, usage: 10 * MiB })
    const off = createMemoryMonitor({ backend: sim2, levels: true, clock: new ManualClock(), tuning: { allocatorFree: false, runtime: fakeRuntime() }, reduceHeap: { gc: () => {} } })
    const reports = new Collector<ShrinkReport>()
    off.on('shrink', reports.push)
    sim2.setUsage(75 * MiB)
    const [moderate] = await reports.count(1)
    expect(moderate?.level).toBe('moderate')
    expect(moderate?.heap?.mallocTrim).not.toBe('skipped')
    await off.close()
  })

  it('a trim in the collection before the shrinkers shows in the report with the one after them', async () => {
    const state = { free: 0 as number | null }
    let calls = 0
    const { sim, monitor, shrink, runtime } = setup(10 * MiB, state, (s) => {
      // the first collection frees 13 MiB and trims (it starts at 93 MiB; the cut-off is 92)
      if (calls++ === 0) s.free(13 * MiB)
    })
    monitor.register({ name: 'cache', shrink: () => void sim.free(15 * MiB) })
    const trims = runtime.state.trims
    sim.setUsage(93 * MiB) // high; 80 MiB after the first collection: moderate, 15 MiB asked
    const [report] = await shrink.count(1)
    expect(report).toMatchObject({ level: 'high', heapRuns: 2, collectedBytes: 13 * MiB, requestedBytes: 15 * MiB })
    expect(calls).toBe(2)
    // the second collection (at 80 MiB, under the cut-off) did not trim; the first one did
    expect(runtime.state.trims).toBe(trims + 1)
    expect(report?.heap?.mallocTrim).not.toBe('skipped')
    await monitor.close()
  })

  it('with credit on top of usage, a watch one step above usage is armed (the level points fire early)', async () => {
    // 60 MiB of usage with 20 MiB free: 40 MiB credited, normal, and normal without the credit too
    const sim = new SimulatedBackend({ limit: 100 * MiB, usage: 60 * MiB })
    const armed = recordArmed(sim)
    const state = { free: 20 * MiB as number | null }
    const monitor = createMemoryMonitor({ backend: sim, levels: true, clock: new ManualClock(), tuning: { allocatorFree: () => state.free, runtime: fakeRuntime() }, reduceHeap: false })
    expect(monitor.level).toBe('normal')
    expect(armed.has(62.5 * MiB)).toBe(true) // usage + step (hysteresis 5 MiB / 2)
    expect(armed.has(61 * MiB)).toBe(false)
    await monitor.close()
  })

  it('where the credit holds the level down, the watch is 1 MiB above usage: usage rising at all means the free lists ran dry', async () => {
    const sim = new SimulatedBackend({ limit: 100 * MiB, usage: 70 * MiB })
    const armed = recordArmed(sim)
    const state = { free: 30 * MiB as number | null }
    const monitor = createMemoryMonitor({ backend: sim, levels: true, clock: new ManualClock(), tuning: { allocatorFree: () => state.free, runtime: fakeRuntime() }, reduceHeap: false })
    expect(monitor.level).toBe('normal') // 70 − 30 = 40 MiB; moderate (70) without the credit
    expect(armed.has(71 * MiB)).toBe(true)
    expect(armed.has(72.5 * MiB)).toBe(false) // not a whole step (hysteresis 5 MiB / 2)
    // the free lists drain without moving usage; then usage rises 1.5 MiB and the engine wakes
    state.free = 0
    sim.allocate(1.5 * MiB) // usage 71.5, basis 71.5 → moderate
    await turns(3)
    expect(monitor.level).toBe('moderate')
    await monitor.close()
    expect(armed.size).toBe(0)
  })

  it('on a backend that polls (precision 8 MiB), that watch sits 8 MiB above usage: a nearer one would only cost reads', async () => {
    const sim = new SimulatedBackend({ limit: 100 * MiB, usage: 70 * MiB })
    Object.defineProperty(sim, 'precision', { value: { kind: 'polled', bytes: 8 * MiB, intervalMs: { min: 10, max: 1000 } } })
    const armed = recordArmed(sim)
    const state = { free: 30 * MiB as number | null }
    const monitor = createMemoryMonitor({ backend: sim, levels: true, clock: new ManualClock(), tuning: { allocatorFree: () => state.free, runtime: fakeRuntime() }, reduceHeap: false })
    expect(monitor.level).toBe('normal')
    expect(armed.has(78 * MiB)).toBe(true)
    expect(armed.has(71 * MiB)).toBe(false)
    await monitor.close()
  })

  it('a credit under half a step that holds the level below the next one still arms a point: that level shifted by the credit', async () => {
    // 200 MiB limit (high 170, critical 190 and its exit 180, credit up to 184): usage 171 MiB with
    // 2 MiB free in the allocator is a basis of 169, moderate; without the credit it would be high.
    // Half a step is 2.5 MiB, and no level point lies between usage and 180.
    const sim = new SimulatedBackend({ limit: 200 * MiB, usage: 120 * MiB })
    const armed = recordArmed(sim)
    const monitor = createMemoryMonitor({ backend: sim, levels: true, clock: new ManualClock(), tuning: { allocatorFree: () => 2 * MiB, runtime: fakeRuntime() }, reduceHeap: false })
    sim.allocate(51 * MiB)
    await turns(3)
    expect(monitor.level).toBe('moderate')
    expect(armed.has(172 * MiB)).toBe(true) // high (170) + the credit (2)
    sim.allocate(1.5 * MiB) // usage 172.5, basis 170.5
    await turns(3)
    expect(monitor.level).toBe('high')
    await monitor.close()
  })

  it('near the limit the rise watch sits half-way to it, never at or past it', async () => {
    // 20 MiB of inactive page cache: usage 99.5 MiB, working set 79.5, with the credit 49.5
    // (normal), and a step (2.5 MiB, half the hysteresis) above usage would pass the limit
    const sim = new SimulatedBackend({ limit: 100 * MiB, usage: 99.5 * MiB, cache: 20 * MiB, inactiveFile: 20 * MiB })
    const armed: number[] = []
    const watch = sim.watchThreshold.bind(sim)
    sim.watchThreshold = (bytes, cb) => (armed.push(bytes), watch(bytes, cb))
    const monitor = createMemoryMonitor({
      backend: sim, levels: true, clock: new ManualClock(), tuning: { allocatorFree: () => 30 * MiB, runtime: fakeRuntime() }, reduceHeap: false,
    })
    expect(monitor.level).toBe('normal')
    expect(armed).toContain(99.75 * MiB) // half-way from 99.5 to 100
    expect(armed.every((b) => b < 100 * MiB)).toBe(true)
    await monitor.close()
  })

  it('a reading of null, a throw or a negative number counts nothing; a bad option is a TypeError', async () => {
    for (const read of [() => null, () => { throw new Error('no stats') }, () => -5]) {
      const sim = new SimulatedBackend({ limit: 100 * MiB, usage: 75 * MiB })
      const monitor = createMemoryMonitor({ backend: sim, levels: true, clock: new ManualClock(), tuning: { allocatorFree: read, runtime: fakeRuntime() }, reduceHeap: false })
      expect(monitor.level).toBe('moderate')
      await monitor.close()
    }
    const sim = new SimulatedBackend({ limit: 100 * MiB, usage: 10 * MiB })
    expect(() => createMemoryMonitor({ backend: sim, levels: true, tuning: { allocatorFree: 'yes' as never } })).toThrow(TypeError)
  })

  it('no credit at critical without it: free lists only help allocations they fit, so critical is critical', async () => {
    const state = { free: 30 * MiB as number | null }
    const log: string[] = []
    const { sim, monitor, pressure, shrink, runtime } = setup(10 * MiB, state, (s) => {
      log.push('gc')
      s.free(40 * MiB) // the collection (and its malloc_trim) gives 40 MiB back
    })
    monitor.register({ name: 'cache', shrink: () => void log.push('cache') })
    const trims = runtime.state.trims
    sim.setUsage(97 * MiB) // 97 MiB is critical; less the 30 MiB on the free lists it would be 67, normal
    const [event] = await pressure.count(1)
    expect(event).toMatchObject({ level: 'critical', bytes: 97 * MiB, allocatorFreeBytes: 0 })
    const [report] = await shrink.count(1)
    // the cycle collects and trims first; 57 MiB less the 30 MiB credit is normal: nobody is asked
    expect(report).toMatchObject({ level: 'critical', levelAfter: 'normal', heapRuns: 1, collectedBytes: 70 * MiB })
    expect(log).toEqual(['gc'])
    expect(runtime.state.trims).toBe(trims + 1)
    await monitor.close()
  })

  it('no credit within 8 MiB of the limit either: 93 MiB with 30 MiB free (of 100) is high, and the cycle trims', async () => {
    // critical 95 MiB leaves only 5 MiB of room: from 92 MiB of working set (100 − 8) the free
    // lists count for nothing
    const state = { free: 30 * MiB as number | null }
    const log: string[] = []
    const { sim, monitor, pressure, shrink, runtime } = setup(10 * MiB, state, (s) => {
      log.push('gc')
      s.free(35 * MiB) // the collection and its malloc_trim give the free lists' pages back
    })
    monitor.register({ name: 'cache', shrink: () => void log.push('cache') })
    const trims = runtime.state.trims
    sim.setUsage(93 * MiB) // credited it would be 63 MiB, normal
    const [event] = await pressure.count(1)
    expect(event).toMatchObject({ level: 'high', bytes: 93 * MiB, allocatorFreeBytes: 0 })
    const [report] = await shrink.count(1)
    expect(report).toMatchObject({ level: 'high', levelAfter: 'normal', heapRuns: 1 })
    expect(report?.heap?.mallocTrim).not.toBe('skipped')
    expect(log).toEqual(['gc'])
    expect(runtime.state.trims).toBe(trims + 1)
    await monitor.close()
    // just below it the credit still counts: 91 MiB with 30 MiB free is normal
    const below = setup(91 * MiB, { free: 30 * MiB })
    expect(below.monitor.level).toBe('normal')
    await below.monitor.close()
  })

  it('where critical leaves more than 8 MiB of room the credit counts up to critical: 480 MiB with 30 MiB free (of 512) is moderate', async () => {
    // default levels at 512 MiB: moderate 409.6, high 460.8, critical 486.4 MiB (25.6 MiB of room)
    const at = (usage: number) => createMemoryMonitor({
      backend: new SimulatedBackend({ limit: 512 * MiB, usage }), levels: true, clock: new ManualClock(), tuning: { allocatorFree: () => 30 * MiB, runtime: fakeRuntime() }, reduceHeap: false,
    })
    const credited = at(480 * MiB) // 450 MiB without what the free lists hold
    expect(credited.level).toBe('moderate')
    await credited.close()
    const uncredited = at(487 * MiB) // at critical the free lists count for nothing
    expect(uncredited.level).toBe('critical')
    await uncredited.close()
  })

  it('never credits more than the basis', async () => {
    const state = { free: 500 * MiB as number | null }
    const { monitor, pressure } = setup(30 * MiB, state)
    expect(monitor.level).toBe('normal')
    state.free = 0
    await monitor.close()
    expect(pressure.items).toEqual([])
  })
})


describe('allocatorFreeBytes (glibc mallinfo2 through the addon)', () => {
  it.skipIf(!glibc)(`sees Buffers freed by a collection on the free lists, and malloc_trim is counted${glibc ? '' : ' (skipped: no addon with glibc 2.33+ mallinfo2 here)'}`, async () => {
    let buffers: Buffer[] = []
    for (let i = 0; i < 512; i++) buffers.push(Buffer.alloc(64 * 1024, 1)) // 32 MiB below the mmap threshold
    // a live allocation above them, so that once freed they do not merge into the top of the heap
    // (which free() itself gives back to the kernel past M_TRIM_THRESHOLD)
    const fence = Buffer.alloc(64 * 1024, 2)
    // measured while they are live (earlier free chunks may have been reused for them)
    const before = allocatorFreeBytes()
    expect(before).not.toBeNull()
    buffers = []
    expect(buffers).toHaveLength(0)
    const trims = mallocTrimCount()
    await reduceHeap({ mallocTrim: false })
    expect(mallocTrimCount()).toBe(trims)
    // V8 frees array buffer memory on a background thread after the collection: wait for it (up to
    // 5 s; half-way, one more collection without a trim, for a sweep that had not reached them)
    let after = allocatorFreeBytes() ?? 0
    for (let i = 0; i < 250 && after - (before ?? 0) <= 16 * MiB; i++) {
      if (i === 125) await reduceHeap({ mallocTrim: false })
      await new Promise((resolve) => setTimeout(resolve, 20))
      after = allocatorFreeBytes() ?? 0
    }
    expect(after - (before ?? 0)).toBeGreaterThan(16 * MiB)
    await reduceHeap()
    expect(mallocTrimCount()).toBe(trims + 1)
    expect(fence[0]).toBe(2)
  })
})
