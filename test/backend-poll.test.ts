// Adaptive polling with an injected clock: the interval follows distance and growth, crossings come
// out in order with the 'poll' signal, and no timer runs without a threshold. Following allocation,
// reads come after collections (simulated) and the timer sleeps while usage is steady.

import { describe, expect, it } from 'vitest'
import {
  FOLLOW, type GcSource, type PollClock, ThresholdPoller, followIntervalMs, nextIntervalMs, resolvePollOptions,
} from '../src/backends/poll.js'
import type { Crossing } from '../src/backends/types.js'

const MiB = 2 ** 20

/** A clock whose single pending timer the test fires by hand. */
class FakeClock implements PollClock {
  time = 0
  pending: { fn: () => void; ms: number } | null = null
  created = 0
  now = (): number => this.time
  setTimeout = (fn: () => void, ms: number): unknown => {
    this.created++
    this.pending = { fn, ms }
    return this.pending
  }
  clearTimeout = (handle: unknown): void => {
    if (this.pending === handle) this.pending = null
  }
  /** Advances to the pending timer and runs it; returns its delay. */
  fire(): number {
    const p = this.pending
    if (p === null) throw new Error('no timer pending')
    this.pending = null
    this.time += p.ms
    p.fn()
    return p.ms
  }
}

describe('nextIntervalMs', () => {
  const o = resolvePollOptions({ minIntervalMs: 10, maxIntervalMs: 1000, guardBytes: 8 * MiB })
  it('is null without thresholds, the minimum at a threshold, the maximum far from one', () => {
    expect(nextIntervalMs(null, 0, o)).toBeNull()
    expect(nextIntervalMs(0, 0, o)).toBe(10)
    expect(nextIntervalMs(4 * 1024 * MiB, 0, o)).toBe(1000)
  })
  it('shrinks as the distance shrinks and as growth speeds up', () => {
    const far = nextIntervalMs(12 * MiB, 0, o) as number
    const near = nextIntervalMs(4 * MiB, 0, o) as number
    const nearFast = nextIntervalMs(4 * MiB, (100 * MiB) / 1000, o) as number
    expect(far).toBeGreaterThan(near)
    expect(near).toBeGreaterThan(nearFast)
    // 4 MiB at the floor rate of 8 MiB per second: half of 500 ms.
    expect(near).toBe(250)
    // 4 MiB at 100 MiB/s: 40 ms to get there, poll at half of it.
    expect(nearFast).toBeCloseTo(20, 6)
  })
  it('rejects bad options naming the option', () => {
    expect(() => resolvePollOptions({ minIntervalMs: 0 })).toThrow(/minIntervalMs/)
    expect(() => resolvePollOptions({ minIntervalMs: 50, maxIntervalMs: 20 })).toThrow(/maxIntervalMs/)
    expect(() => resolvePollOptions({ guardBytes: Number.NaN })).toThrow(/guardBytes/)
  })
})

describe('ThresholdPoller', () => {
  const rig = () => {
    const clock = new FakeClock()
    let usage = 100 * MiB
    const errors: unknown[] = []
    const poller = new ThresholdPoller(() => {
      if (usage < 0) throw new Error('gone')
      return usage
    }, (e) => errors.push(e), { minIntervalMs: 10, maxIntervalMs: 1000, guardBytes: 8 * MiB }, clock)
    return { clock, poller, errors, set: (u: number) => (usage = u) }
  }

  it('runs no timer without thresholds, and stops when the last one closes', () => {
    const { clock, poller } = rig()
    expect(clock.pending).toBeNull()
    const w = poller.add(200 * MiB, 100 * MiB, () => {})
    expect(clock.pending).not.toBeNull()
    w.close()
    expect(clock.pending).toBeNull()
    expect(poller.intervalMs).toBeNull()
  })

  it('polls slowly far from a threshold and faster as usage grows toward it', () => {
    const { clock, poller, set } = rig()
    poller.add(500 * MiB, 100 * MiB, () => {})
    expect(clock.fire()).toBe(1000)
    const intervals: number[] = []
    for (let u = 100; u <= 480; u += 20) {
      set(u * MiB)
      intervals.push(clock.fire())
    }
    expect(intervals[0]).toBe(1000)
    // At 480 MiB, 20 MiB below, growing 20 MiB a second: there in 1 s, so read again in 500 ms.
    expect(clock.pending?.ms).toBe(500)
    set(499 * MiB)
    clock.fire()
    // 1 MiB left at 19 MiB per 500 ms: there in about 26 ms, read again in about 13.
    expect(clock.pending?.ms).toBeLessThan(20)
    expect(clock.pending?.ms).toBeGreaterThanOrEqual(10)
    // Monotone once growth has started: each step is closer to the threshold at a steady rate.
    for (let i = 2; i < intervals.length; i++) expect(intervals[i]).toBeLessThanOrEqual(intervals[i - 1] as number)
  })

  it('reports crossings in order with the poll signal and the usage read', () => {
    const { clock, poller, set } = rig()
    const got: Crossing[] = []
    poller.add(150 * MiB, 100 * MiB, (c) => got.push(c))
    poller.add(120 * MiB, 100 * MiB, (c) => got.push(c))
    set(160 * MiB)
    clock.fire()
    set(110 * MiB)
    clock.fire()
    set(111 * MiB)
    clock.fire()
    expect(got.map((c) => [c.threshold / MiB, c.direction, c.usage / MiB, c.signal])).toEqual([
      [120, 'up', 160, 'poll'],
      [150, 'up', 160, 'poll'],
      [150, 'down', 110, 'poll'],
      [120, 'down', 110, 'poll'],
    ])
  })

  it('check(signal) reads at once and names the signal that woke it', () => {
    const { poller, set } = rig()
    const got: Crossing[] = []
    poller.add(150 * MiB, 100 * MiB, (c) => got.push(c))
    set(151 * MiB)
    poller.check('memory.events')
    expect(got.map((c) => c.signal)).toEqual(['memory.events'])
  })

  it('a read failure goes to the error callback; polling goes on unless the callback closes the poller', () => {
    const { clock, poller, errors, set } = rig()
    poller.add(150 * MiB, 100 * MiB, () => {})
    set(-1)
    clock.fire()
    expect(errors.length).toBe(1)
    expect(clock.pending).not.toBeNull()
    set(100 * MiB)
    clock.fire()
    expect(errors.length).toBe(1)
    poller.close()
    const other = new FakeClock()
    const closing = new ThresholdPoller(() => {
      throw new Error('gone')
    }, () => closing.close(), {}, other)
    closing.add(MiB, 0, () => {})
    other.fire()
    expect(other.pending).toBeNull()
  })
})

/** Collections fired by hand. */
class FakeGc implements GcSource {
  listeners = new Set<() => void>()
  subscribe(fn: () => void): () => void {
    this.listeners.add(fn)
    return () => this.listeners.delete(fn)
  }

  collect(): void {
    for (const l of [...this.listeners]) l()
  }
}

describe('followIntervalMs', () => {
  const o = resolvePollOptions({ minIntervalMs: 10, maxIntervalMs: 1000, idleIntervalMs: 60_000 })
  it('sleeps for idleIntervalMs while steady, at most maxIntervalMs while growing, the minimum at a threshold', () => {
    expect(followIntervalMs(null, 0, false, o)).toBeNull()
    expect(followIntervalMs(50 * MiB, 0, false, o)).toBe(60_000)
    expect(followIntervalMs(50 * MiB, 0, true, o)).toBe(1000)
    expect(followIntervalMs(0, MiB / 1000, false, o)).toBe(10)
    // 20 MiB away at a planned 1 MiB/s: there in 20 s, read in 10.
    expect(followIntervalMs(20 * MiB, MiB / 1000, false, o)).toBeCloseTo(10_000, 6)
  })
  it('rejects an idleIntervalMs under maxIntervalMs, naming it', () => {
    expect(() => resolvePollOptions({ maxIntervalMs: 1000, idleIntervalMs: 500 })).toThrow(/idleIntervalMs/)
    expect(() => resolvePollOptions({ idleIntervalMs: -1 })).toThrow(/idleIntervalMs/)
    // A long maxIntervalMs alone is still accepted: the default follows it.
    expect(resolvePollOptions({ maxIntervalMs: 120_000 }).idleIntervalMs).toBe(120_000)
    expect(resolvePollOptions({}).idleIntervalMs).toBe(60_000)
  })
})

describe('ThresholdPoller following allocation', () => {
  const options = { minIntervalMs: 10, maxIntervalMs: 1000, guardBytes: 8 * MiB, idleIntervalMs: 60_000 }
  const rig = (follow = true) => {
    const clock = new FakeClock()
    const gc = new FakeGc()
    let usage = 100 * MiB
    const poller = new ThresholdPoller(() => usage, () => {}, options, clock, undefined, follow ? { gc } : undefined)
    const got: Crossing[] = []
    return { clock, gc, poller, got, set: (u: number) => (usage = u), get: () => usage }
  }
  /** Fires timers until `ms` of fake time have passed; returns how many fired. */
  const runFor = (clock: FakeClock, ms: number): number => {
    const end = clock.time + ms
    let n = 0
    while (clock.pending !== null && clock.time + clock.pending.ms <= end) {
      clock.fire()
      n++
    }
    clock.time = end
    return n
  }

  it('a steady service pays at most one timed read a minute once the start-up guess has decayed; the clock-driven poller pays 60', () => {
    const follow = rig(true)
    const legacy = rig(false)
    for (const r of [follow, legacy]) r.poller.add(150 * MiB, 100 * MiB, () => {})
    runFor(follow.clock, 5 * 60_000)
    runFor(legacy.clock, 5 * 60_000)
    const before = [follow.poller.timedReads, legacy.poller.timedReads]
    runFor(follow.clock, 10 * 60_000)
    runFor(legacy.clock, 10 * 60_000)
    expect(follow.poller.timedReads - (before[0] as number)).toBeLessThanOrEqual(10)
    expect(legacy.poller.timedReads - (before[1] as number)).toBeGreaterThanOrEqual(590)
    expect(follow.poller.intervalMs).toBe(60_000)
  })

  it('a JS allocation burst is seen after the collection it causes, with no timer firing', () => {
    const { clock, gc, poller, got, set } = rig()
    poller.add(120 * MiB, 100 * MiB, (c) => got.push(c))
    clock.time += 500
    set(130 * MiB)
    gc.collect()
    expect(got.map((c) => [c.threshold / MiB, c.direction, c.usage / MiB, c.signal])).toEqual([[120, 'up', 130, 'gc']])
    expect(poller.timedReads).toBe(0)
  })

  it('collections in a storm cost at most one read per gap; the last one is read at the end of the gap', () => {
    const { clock, gc, poller, got, set } = rig()
    poller.add(120 * MiB, 100 * MiB, (c) => got.push(c))
    clock.time += 5_000
    gc.collect()
    const gap = options.minIntervalMs * FOLLOW.GC_GAP_FACTOR
    for (let i = 0; i < 50; i++) {
      clock.time += 1
      gc.collect()
    }
    expect(poller.reads).toBe(1)
    set(125 * MiB)
    // The timer now due is the deferred read of those collections (armed by the first of them, 1 ms
    // after the read), named after them.
    expect(clock.pending?.ms).toBe(gap - 1)
    clock.fire()
    expect(poller.reads).toBe(2)
    expect(got.map((c) => c.signal)).toEqual(['gc'])
  })

  it('measured growth wakes the timer at once and it follows the rate; once growth stops it sleeps again', () => {
    const { clock, gc, poller, set, get } = rig()
    poller.add(400 * MiB, 100 * MiB, () => {})
    runFor(clock, 5 * 60_000)
    expect(poller.intervalMs).toBe(60_000)
    // 20 MiB/s seen between two collections 500 ms apart.
    gc.collect()
    clock.time += 500
    set(get() + 10 * MiB)
    gc.collect()
    expect(poller.intervalMs).toBeLessThanOrEqual(1000)
    const intervals: number[] = []
    while (get() < 380 * MiB) {
      set(get() + (20 * MiB * (clock.pending?.ms ?? 0)) / 1000)
      intervals.push(clock.fire())
    }
    expect(Math.max(...intervals)).toBeLessThanOrEqual(1000)
    expect(poller.intervalMs).toBeLessThan(1000)
    // Growth stops: the interval widens back to idleIntervalMs within a few minutes.
    runFor(clock, 4 * 60_000)
    expect(poller.intervalMs).toBe(60_000)
  })

  it('growth outside V8 (no collection) is first read within idleIntervalMs, then followed', () => {
    const { clock, poller, got, set, get } = rig()
    poller.add(300 * MiB, 100 * MiB, (c) => got.push(c))
    runFor(clock, 5 * 60_000)
    const start = clock.time
    // A native leak at 2 MiB/s from now on.
    const leak = (): void => void set(100 * MiB + ((clock.time - start) * 2 * MiB) / 1000)
    let firstRead: number | null = null
    while (got.length === 0 && clock.time - start < 200_000) {
      const p = clock.pending
      if (p === null) throw new Error('no timer pending')
      clock.pending = null
      clock.time += p.ms
      leak()
      p.fn()
      firstRead ??= clock.time - start
    }
    expect(firstRead).not.toBeNull()
    expect(firstRead).toBeLessThanOrEqual(60_000)
    // Crossed at 100 s; seen within the last interval, which growth had shortened to at most 1 s.
    expect(got[0]?.signal).toBe('poll')
    expect(clock.time - start - 100_000).toBeLessThanOrEqual(1000)
  })

  it('subscribes to collections only while a threshold is watched', () => {
    const { gc, poller } = rig()
    expect(gc.listeners.size).toBe(0)
    const a = poller.add(120 * MiB, 100 * MiB, () => {})
    const b = poller.add(130 * MiB, 100 * MiB, () => {})
    expect(gc.listeners.size).toBe(1)
    a.close()
    expect(gc.listeners.size).toBe(1)
    b.close()
    expect(gc.listeners.size).toBe(0)
    poller.add(120 * MiB, 100 * MiB, () => {})
    poller.close()
    expect(gc.listeners.size).toBe(0)
  })
})
