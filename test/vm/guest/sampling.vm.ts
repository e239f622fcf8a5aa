// In the VM: the cgroup-v2 backend on the test process's own cgroup follows allocation. A burst of
// JavaScript allocation is seen after V8's collection with the timer held, and with memory steady
// the timer does not wake where the clock-driven poller wakes every second.

import { afterEach, describe, expect, it } from 'vitest'
import { CgroupV2Backend } from '../../../src/backends/cgroup-v2.js'
import type { PollClock } from '../../../src/backends/poll.js'
import type { Crossing } from '../../../src/backends/types.js'
import { Collector } from '../../helpers/collect.js'
import { own } from './cgroup2.js'

const MiB = 2 ** 20

const backends: CgroupV2Backend[] = []
afterEach(() => {
  for (const b of backends.splice(0)) b.close()
})

function open(options: Parameters<typeof CgroupV2Backend.open>[0]): CgroupV2Backend {
  const b = CgroupV2Backend.open(options)
  backends.push(b)
  return b
}

/** Real time; timers that never run: whatever is delivered did not come from the timer. */
const heldTimers: PollClock = { now: () => performance.now(), setTimeout: () => ({}), clearTimeout: () => {} }

describe('sampling that follows allocation, on a real cgroup v2 kernel', () => {
  it("a burst of JavaScript allocation is delivered after V8's collection, with the timer held", async () => {
    const backend = open({ cgroup: own().path, psi: false, clock: heldTimers })
    expect(backend.precision.signals).toContain('gc')
    const threshold = backend.readUsage() + 16 * MiB
    const got = new Collector<Crossing>()
    backend.watchThreshold(threshold, got.push)
    // The first collection after the registration's read is read at once only past the gap
    // (10 × minIntervalMs); later ones within it would wait for the (held) timer.
    await new Promise((r) => setTimeout(r, 200))
    const kept: unknown[] = []
    for (let i = 0; i < 64 && backend.readUsage() < threshold + 4 * MiB; i++) {
      kept.push(Array.from({ length: 16_384 }, (_, j) => ({ i, j, s: `v${i}.${j}` })))
      // Yield so that the collections' entries are delivered between the steps, as in a service.
      await new Promise((r) => setImmediate(r))
    }
    // A service goes on allocating short-lived objects: each later collection past the gap is read.
    for (let i = 0; i < 100 && got.items.length === 0; i++) {
      Array.from({ length: 65_536 }, (_, j) => ({ j }))
      await new Promise((r) => setTimeout(r, 150))
    }
    expect(got.items.map((c) => [c.threshold, c.direction, c.signal])).toEqual([[threshold, 'up', 'gc']])
    expect(got.items[0]?.usage).toBeGreaterThanOrEqual(threshold)
    expect(backend.timedReads).toBe(0)
    expect(kept.length).toBeGreaterThan(0)
  })

  it('with memory steady the timer does not wake, where the clock-driven poller wakes every second', async () => {
    // A small guard: the start-up growth guess is 64 KiB/s, so the first sleep is already the longest.
    const poll = { guardBytes: 64 * 1024, maxIntervalMs: 1000, idleIntervalMs: 60_000 }
    const following = open({ cgroup: own().path, psi: false, poll })
    const clockDriven = open({ cgroup: own().path, psi: false, poll, gc: null })
    expect(following.precision.signals).toContain('gc')
    expect(clockDriven.precision.signals).not.toContain('gc')
    const threshold = following.readUsage() + 128 * MiB
    following.watchThreshold(threshold, () => {})
    clockDriven.watchThreshold(threshold, () => {})
    // The measurement is the window itself: wake-ups counted over 8 s of steady memory.
    await new Promise((r) => setTimeout(r, 8_000))
    expect(clockDriven.timedReads).toBeGreaterThanOrEqual(4)
    expect(following.timedReads).toBe(0)
  })
})
