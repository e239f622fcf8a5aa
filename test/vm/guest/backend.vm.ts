// In the VM: the cgroup-v2 backend on a real kernel. Thresholds are emulated from three signals;
// each crossing must come in order and name the signal that saw it: polling where nothing else
// moves, memory.events when usage passes memory.high, PSI when an ancestor's memory.high stalls.

import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { CgroupV2Backend } from '../../../src/backends/cgroup-v2.js'
import type { PollClock } from '../../../src/backends/poll.js'
import type { Crossing, OomEvent } from '../../../src/backends/types.js'
import { Collector } from '../../helpers/collect.js'
import { type CgroupChild, type TestCgroup, spawnInCgroup } from '../../helpers/cgroup.js'
import { makeV2Cgroup, makeV2Nested, testParent } from './cgroup2.js'

const MiB = 2 ** 20
const allocator = fileURLToPath(new URL('../../helpers/allocator.mjs', import.meta.url))

const made: TestCgroup[] = []
const backends: CgroupV2Backend[] = []
afterEach(async () => {
  for (const b of backends.splice(0)) b.close()
  for (const cg of made.splice(0).reverse()) await cg.remove()
})

function cgroup(parent: string, limits: { max?: number; high?: number } = {}): TestCgroup {
  const cg = makeV2Cgroup(parent, limits)
  made.push(cg)
  return cg
}

function open(options: Parameters<typeof CgroupV2Backend.open>[0]): CgroupV2Backend {
  const b = CgroupV2Backend.open(options)
  backends.push(b)
  return b
}

/** Allocates in `step`s until `done()`; a child killed meanwhile ends the loop with its exit. */
async function climb(child: CgroupChild, step: number, done: () => boolean, maxSteps = 64) {
  const died = child.exited.then((e) => ({ died: e }))
  child.proc.stdin.on('error', () => {}) // EPIPE when the OOM killer got there first
  for (let i = 0; i < maxSteps && !done(); i++) {
    const r = await Promise.race([child.send(`alloc ${step}`).catch(() => died), died])
    if ('died' in r) return r.died
  }
  return null
}

const summary = (c: Crossing): [number, string, string] => [c.threshold, c.direction, c.signal]

/**
 * A poll clock whose timers run only when the test says so: with it, a crossing that no poll could
 * have seen must come from memory.events or PSI.
 */
class HeldPolls implements PollClock {
  #due = new Map<number, () => void>()
  #next = 0
  now = (): number => performance.now()
  setTimeout(fn: () => void): unknown {
    this.#due.set(++this.#next, fn)
    return this.#next
  }

  clearTimeout(handle: unknown): void {
    this.#due.delete(handle as number)
  }

  /** Runs the polls scheduled so far. */
  poll(): void {
    const due = [...this.#due.values()]
    this.#due.clear()
    for (const fn of due) fn()
  }
}

describe('the cgroup-v2 backend on a real kernel', () => {
  it('crossings come in order with their signal: polling below memory.high, memory.events at it', async () => {
    const cg = cgroup(testParent())
    const child = await spawnInCgroup(cg, allocator)
    const clock = new HeldPolls()
    const backend = open({ cgroup: cg.path, psi: false, clock })
    expect(backend.precision.signals).toEqual(['memory.events'])
    const base = backend.readUsage()
    const high = base + 32 * MiB
    fs.writeFileSync(path.join(cg.path, 'memory.high'), String(high))
    const got = new Collector<Crossing>()
    const t1 = base + 12 * MiB
    // Just below memory.high: the kernel reclaims page cache back to about memory.high when it is
    // crossed (measured: 128 KiB below it), so usage read at the wake-up may sit right under it.
    const t2 = high - 2 * MiB
    backend.watchThreshold(t1, got.push)
    backend.watchThreshold(t2, got.push)
    expect(await climb(child, 2 * MiB, () => backend.readUsage() >= t1 + MiB)).toBeNull()
    clock.poll()
    await got.count(1, 30_000)
    expect(await climb(child, 4 * MiB, () => got.items.length >= 2 || (backend.memoryEvents().get('high') ?? 0) > 0)).toBeNull()
    await got.count(2, 30_000)
    expect(got.items.map(summary)).toEqual([[t1, 'up', 'poll'], [t2, 'up', 'memory.events']])
    for (const c of got.items) expect(c.usage).toBeGreaterThanOrEqual(c.threshold)
    expect(backend.memoryEvents().get('high')).toBeGreaterThan(0)
  })

  it('an ancestor\'s memory.high stalls the child: the PSI trigger is the signal of the crossing', async () => {
    // memory.events counts the high event in the parent that holds memory.high, not in the child
    // (cgroup-v2.rst): on the child only PSI sees the stall.
    const { outer: parent, leaf: cg } = makeV2Nested(testParent())
    made.push(parent, cg)
    const child = await spawnInCgroup(cg, allocator)
    const backend = open({ cgroup: cg.path, psi: { stallUs: 50_000, windowUs: 1_000_000 }, clock: new HeldPolls() })
    expect(backend.precision.signals).toEqual(['memory.events', 'psi'])
    const high = backend.readUsage() + 16 * MiB
    fs.writeFileSync(path.join(parent.path, 'memory.high'), String(high))
    const got = new Collector<Crossing>()
    // Below memory.high, where usage is once the kernel has reclaimed back to it (see above).
    const t = high - 4 * MiB
    backend.watchThreshold(t, got.push)
    // The step that passes memory.high can stay throttled for tens of seconds (measured: 27 s for
    // 4 MiB under TCG); the crossing comes long before it returns, so do not wait for it.
    const climbing = climb(child, 4 * MiB, () => got.items.length >= 1, 24)
    await Promise.race([got.count(1, 60_000), climbing.then((died) => {
      if (died !== null) throw new Error(`the child died: ${JSON.stringify(died)}`)
    })])
    await got.count(1, 60_000)
    expect(got.items.map(summary)).toEqual([[t, 'up', 'psi']])
    expect(backend.memoryEvents().get('high')).toBe(0)
  })

  it('the OOM kill at memory.max is an \'oom\' event with the kill counted', async () => {
    const cg = cgroup(testParent())
    const child = await spawnInCgroup(cg, allocator)
    const backend = open({ cgroup: cg.path })
    fs.writeFileSync(path.join(cg.path, 'memory.max'), String(backend.readUsage() + 24 * MiB))
    const ooms = new Collector<OomEvent>()
    backend.on('oom', ooms.push)
    expect(await climb(child, 4 * MiB, () => false)).toEqual({ code: null, signal: 'SIGKILL' })
    await ooms.until((items) => items.some((e) => e.oomKill === 1), 30_000)
    expect(ooms.items.every((e) => e.source === 'memory.events')).toBe(true)
    expect(ooms.items.reduce((n, e) => n + (e.oomKill ?? 0), 0)).toBe(1)
    expect(backend.closed).toBe(false)
  })
})
