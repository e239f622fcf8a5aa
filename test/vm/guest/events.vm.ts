// In the VM: what the cgroup v2 kernel tells through memory.events, seen through the native addon's
// POLLPRI watcher: memory.high crossings (counted and throttled) and the OOM kill at memory.max.

import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { POLL_PRIORITIZED, type PollWatcher, loadNative } from '../../../src/native.js'
import { Collector } from '../../helpers/collect.js'
import { type CgroupChild, type TestCgroup, spawnInCgroup } from '../../helpers/cgroup.js'
import { makeV2Cgroup, readEvents, testParent } from './cgroup2.js'

const MiB = 2 ** 20
const allocator = fileURLToPath(new URL('../../helpers/allocator.mjs', import.meta.url))
const native = loadNative()

interface Wake {
  status: number
  events: number
  /** memory.events as read through the watched fd right after the wake-up; null after an error. */
  counters: Record<string, number> | null
}

const made: TestCgroup[] = []
const watchers: PollWatcher[] = []
afterEach(async () => {
  for (const w of watchers.splice(0)) w.close()
  for (const cg of made.splice(0).reverse()) await cg.remove()
})

function cgroup(limits: { max?: number; high?: number } = {}): TestCgroup {
  const cg = makeV2Cgroup(testParent(), limits)
  made.push(cg)
  return cg
}

function current(cg: TestCgroup): number {
  return Number(fs.readFileSync(path.join(cg.path, 'memory.current'), 'utf8'))
}

/**
 * Watches `<cg>/memory.events` for POLLPRI. kernfs (fs/kernfs/file.c, kernfs_generic_poll) reports
 * a change until the same open file is read again, so each wake-up reads it through the fd.
 */
function watchEvents(cg: TestCgroup): Collector<Wake> {
  const fd = fs.openSync(path.join(cg.path, 'memory.events'), 'r')
  const buf = Buffer.alloc(512)
  const read = (): Record<string, number> => {
    const n = fs.readSync(fd, buf, 0, buf.length, 0)
    return Object.fromEntries(buf.toString('latin1', 0, n).trim().split('\n').map((l) => [l.split(' ')[0], Number(l.split(' ')[1])]))
  }
  read()
  const wakes = new Collector<Wake>()
  const w = native.watch(fd, 'priority', (status, events) => wakes.push({ status, events, counters: status === 0 ? read() : null }))
  if (typeof w === 'number') {
    fs.closeSync(fd)
    throw new Error(`watch(memory.events) failed: ${w}`)
  }
  watchers.push(w)
  return wakes
}

/** Allocates `step` bytes at a time until `done()` or the child dies; resolves with its exit, if any. */
async function allocateUntil(child: CgroupChild, step: number, maxSteps: number, done: () => boolean) {
  const died = child.exited.then((e) => ({ died: e }))
  // A child killed while a command is on its way makes the write fail with EPIPE: that is its death.
  child.proc.stdin.on('error', () => {})
  for (let i = 0; i < maxSteps && !done(); i++) {
    const r = await Promise.race([child.send(`alloc ${step}`).catch(() => died), died])
    if ('died' in r) return r.died
  }
  return null
}

describe('memory.events on a real cgroup v2 kernel', () => {
  it('crossing memory.high bumps `high`, wakes a POLLPRI watcher and throttles without an OOM kill', async () => {
    const cg = cgroup()
    const child = await spawnInCgroup(cg, allocator)
    const high = current(cg) + 16 * MiB
    fs.writeFileSync(path.join(cg.path, 'memory.high'), String(high))
    const wakes = watchEvents(cg)
    // Not awaited to the end: the step past memory.high can stay throttled for tens of seconds
    // (measured under TCG: 27 s for 4 MiB), long after the kernel counted the event.
    const climbing = allocateUntil(child, 4 * MiB, 16, () => (readEvents(cg.path).high ?? 0) > 0)
    const highSeen = (ws: Wake[]): boolean => ws.some((w) => (w.counters?.high ?? 0) > 0)
    const woken = await Promise.race([wakes.until(highSeen, 60_000), climbing.then(() => wakes.until(highSeen, 60_000))])
    const first = woken.find((w) => (w.counters?.high ?? 0) > 0)
    expect(first?.status).toBe(0)
    expect((first?.events ?? 0) & POLL_PRIORITIZED).toBe(POLL_PRIORITIZED)
    const events = readEvents(cg.path)
    expect(events.high).toBeGreaterThan(0)
    expect(readEvents(cg.path, 'memory.events.local').high).toBeGreaterThan(0)
    expect({ max: events.max, oom: events.oom, oom_kill: events.oom_kill }).toEqual({ max: 0, oom: 0, oom_kill: 0 })
    // cgroup-v2.rst: above memory.high the kernel reclaims and throttles, it never OOM-kills.
    expect(child.proc.exitCode).toBeNull()
  })

  it('at memory.max the OOM killer kills the child; `oom` and `oom_kill` count it, up the hierarchy too', async () => {
    const parent = testParent()
    const parentBefore = readEvents(parent)
    const parentLocalBefore = readEvents(parent, 'memory.events.local')
    const cg = cgroup()
    const child = await spawnInCgroup(cg, allocator)
    fs.writeFileSync(path.join(cg.path, 'memory.max'), String(current(cg) + 24 * MiB))
    const wakes = watchEvents(cg)
    const died = await allocateUntil(child, 4 * MiB, 64, () => false)
    expect(died).toEqual({ code: null, signal: 'SIGKILL' })
    await wakes.until((ws) => ws.some((w) => (w.counters?.oom_kill ?? 0) >= 1), 60_000)
    const events = readEvents(cg.path)
    expect(events.max).toBeGreaterThan(0)
    expect(events.oom).toBeGreaterThanOrEqual(1)
    expect(events.oom_kill).toBe(1)
    expect(wakes.items.every((w) => w.status === 0 && (w.events & POLL_PRIORITIZED) !== 0)).toBe(true)
    // memory.events is hierarchical, memory.events.local is not (cgroup-v2.rst).
    expect(readEvents(parent).oom_kill).toBe((parentBefore.oom_kill ?? 0) + 1)
    expect(readEvents(parent, 'memory.events.local').oom_kill).toBe(parentLocalBefore.oom_kill ?? 0)
  })
})
