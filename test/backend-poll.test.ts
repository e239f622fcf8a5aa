// Adaptive polling with an injected clock: the interval follows distance and growth, crossings come
// out in order with the 'poll' signal, and no timer runs without a threshold.

import { describe, expect, it } from 'vitest'
import { type PollClock, ThresholdPoller, nextIntervalMs, resolvePollOptions } from '../src/backends/poll.js'
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
