// The cgroup v2 backend on fake v2 trees (test/fixtures/v2): limits over ancestors, memory.events,
// polled thresholds and removal. The real v2 kernel runs live in the VM tests.

import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { CgroupV2Backend, parseMemoryEvents } from '../src/backends/cgroup-v2.js'
import type { BackendCloseReason, Crossing, OomEvent } from '../src/backends/types.js'
import { MemoryPressureError } from '../src/errors.js'
import { type NativeBinding, tryLoadNative } from '../src/native.js'
import { type ThresholdEvent, createMemoryMonitor } from '../src/monitor.js'
import { Collector, turns } from './helpers/collect.js'

/** Writes a fixture file as the kernel shows one: all at once (a reader never sees it half-written). */
function writeAtomic(file: string, text: string): void {
  fs.writeFileSync(`${file}.tmp`, text)
  fs.renameSync(`${file}.tmp`, file)
}

const MiB = 2 ** 20
const fixture = fileURLToPath(new URL('./fixtures/v2/k8s-pod', import.meta.url))

/** A copy of the k8s-pod tree in a temp dir; `container` is the cgroup to watch. */
export function copyV2Tree(): { root: string; pod: string; container: string; remove(): void } {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-v2-'))
  fs.cpSync(fixture, root, { recursive: true })
  const pod = path.join(root, 'kubepods.slice', 'pod-a.slice')
  return { root, pod, container: path.join(pod, 'container'), remove: () => fs.rmSync(root, { recursive: true, force: true }) }
}

const fast = { minIntervalMs: 2, maxIntervalMs: 20 }

describe('parseMemoryEvents', () => {
  it('reads counters by name', () => {
    const e = parseMemoryEvents('low 0\nhigh 12\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n')
    expect([e.get('high'), e.get('max'), e.get('oom'), e.get('oom_kill')]).toEqual([12, 3, 1, 1])
  })
  it('rejects a malformed line with ERR_PARSE and the path', () => {
    let err: unknown
    try {
      parseMemoryEvents('high twelve\n', '/cg/memory.events')
    } catch (e) {
      err = e
    }
    expect((err as MemoryPressureError).code).toBe('ERR_PARSE')
    expect((err as MemoryPressureError).path).toBe('/cg/memory.events')
  })
})

describe('CgroupV2Backend on a fake tree', () => {
  let tree: ReturnType<typeof copyV2Tree> | undefined
  let backend: CgroupV2Backend | undefined
  afterEach(() => {
    backend?.close()
    backend = undefined
    tree?.remove()
    tree = undefined
  })
  const open = () => {
    tree = copyV2Tree()
    backend = CgroupV2Backend.open({ cgroup: tree.container, root: tree.root, poll: fast })
    return { tree, backend }
  }
  const setCurrent = (dir: string, bytes: number) => writeAtomic(path.join(dir, 'memory.current'), `${bytes}\n`)

  it('reads usage, working set and cache; the effective limit is the pod memory.high', () => {
    const { tree, backend } = open()
    const s = backend.snapshot()
    expect([s.usage, s.rss, s.cache, s.inactiveFile, s.workingSet]).toEqual([100 * MiB, 64 * MiB, 32 * MiB, 16 * MiB, 84 * MiB])
    expect(s.limit).toBe(240 * MiB)
    expect(s.limitHolder).toBe(fs.realpathSync(tree.pod))
  })

  it('says how thresholds are delivered: polled, with the bounds, and why memory.events and PSI are not watched', () => {
    const { backend } = open()
    expect(backend.precision.kind).toBe('polled')
    expect(backend.precision.intervalMs).toEqual({ min: 2, max: 20 })
    // Regular files cannot be watched by epoll (EPERM): neither signal is available on a fake tree.
    expect(backend.precision.signals).toEqual([])
    // Not the test process's cgroup: nothing but the clock, at most maxIntervalMs late.
    expect(backend.precision.delays).toEqual([{ signal: 'poll', sees: 'any', worstMs: 20 }])
    expect(backend.notes.some((n) => n.includes('memory.events') && n.includes('EPERM'))).toBe(true)
    expect(backend.notes.some((n) => n.includes('PSI'))).toBe(true)
  })

  it('delivers crossings up and down in order, each from a poll', async () => {
    const { tree, backend } = open()
    const got = new Collector<Crossing>()
    backend.watchThreshold(150 * MiB, got.push)
    backend.watchThreshold(200 * MiB, got.push)
    setCurrent(tree.container, 210 * MiB)
    await got.count(2)
    setCurrent(tree.container, 120 * MiB)
    await got.count(4)
    await turns()
    expect(got.items.map((c) => [c.threshold / MiB, c.direction, c.usage / MiB, c.signal])).toEqual([
      [150, 'up', 210, 'poll'],
      [200, 'up', 210, 'poll'],
      [200, 'down', 120, 'poll'],
      [150, 'down', 120, 'poll'],
    ])
  })

  it('a limit lowered under a percentage threshold is followed at the next timed read: the threshold is crossed with signal limit', async () => {
    const { tree, backend } = open()
    const monitor = createMemoryMonitor({ backend })
    try {
      const got = new Collector<ThresholdEvent>()
      monitor.addThreshold('80%', { handler: got.push })
      // 80% of the pod's 240 MiB is 192 MiB, above the 100 MiB used; at 120 MiB it is 96 MiB, below.
      writeAtomic(path.join(tree.pod, 'memory.high'), `${120 * MiB}\n`)
      await got.count(1)
      expect(got.items.map((e) => [e.threshold / MiB, e.direction, e.signal])).toEqual([[96, 'up', 'limit']])
    } finally {
      await monitor.close()
    }
  })

  it("reports 'oom' when memory.events counts an OOM kill", async () => {
    const { tree, backend } = open()
    const ooms = new Collector<OomEvent>()
    backend.on('oom', ooms.push)
    backend.watchThreshold(200 * MiB, () => {})
    writeAtomic(path.join(tree.container, 'memory.events'), 'low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n')
    await ooms.count(1)
    expect(ooms.items.map((e) => [e.source, e.oom, e.oomKill])).toEqual([['memory.events', 1, 1]])
    expect(backend.memoryEvents().get('max')).toBe(4)
  })

  it("closes with 'removed' when the cgroup directory goes away, reporting no crossing", async () => {
    const { tree, backend } = open()
    const got = new Collector<Crossing>()
    const closes = new Collector<BackendCloseReason>()
    backend.on('close', closes.push)
    backend.watchThreshold(50 * MiB, got.push)
    fs.rmSync(tree.container, { recursive: true })
    await closes.count(1)
    expect(closes.items).toEqual(['removed'])
    expect(got.items).toEqual([])
    expect(backend.closed).toBe(true)
  })

  it('walks the limit up to root and not beyond: the pod tree without limits is unlimited', () => {
    tree = copyV2Tree()
    for (const dir of [tree.pod, path.dirname(tree.pod)]) {
      fs.writeFileSync(path.join(dir, 'memory.max'), 'max\n')
      fs.writeFileSync(path.join(dir, 'memory.high'), 'max\n')
    }
    backend = CgroupV2Backend.open({ cgroup: tree.container, root: tree.root, poll: fast, psi: false })
    const s = backend.snapshot()
    expect([s.limit, s.limitHolder]).toEqual([Infinity, null])
  })

  it('refuses bad options and cgroups outside root with typed errors', () => {
    tree = copyV2Tree()
    expect(() => CgroupV2Backend.open({ root: tree?.root })).toThrow(TypeError)
    expect(() => CgroupV2Backend.open({ cgroup: tree?.container, root: tree?.root, poll: { minIntervalMs: -1 } })).toThrow(/minIntervalMs/)
    expect(() => CgroupV2Backend.open({ cgroup: 7 as unknown as string })).toThrow(/cgroup/)
    let err: unknown
    try {
      CgroupV2Backend.open({ cgroup: os.tmpdir(), root: tree.root })
    } catch (e) {
      err = e
    }
    expect((err as MemoryPressureError).code).toBe('ERR_BACKEND_UNAVAILABLE')
    expect((err as MemoryPressureError).reasons?.length).toBe(1)
    const probe = CgroupV2Backend.probe({ cgroup: tree.root, root: tree.root })
    // The root of a v2 hierarchy has no memory.current: nothing to watch there.
    expect(probe.available).toBe(false)
  })

  it('after close(), watching throws ERR_CLOSED', () => {
    const { backend } = open()
    backend.close()
    expect(() => backend.watchThreshold(MiB, () => {})).toThrow(expect.objectContaining({ code: 'ERR_CLOSED' }))
  })
})

describe('CgroupV2Backend wake-ups from memory.events and PSI (a stand-in poll on a fake tree)', () => {
  it('reads usage when memory.events changes or PSI reports a stall, naming the signal; a PSI wake-up without stall growth is dropped', async () => {
    const tree = copyV2Tree()
    const real = tryLoadNative()
    const watched: Array<{ fd: number; cb: (status: number, events: number) => void }> = []
    const fake = {
      ...(real instanceof MemoryPressureError ? {} : real),
      platformSupported: true,
      watch: (fd: number, _mode: string, cb: (status: number, events: number) => void) => {
        watched.push({ fd, cb })
        return { fd, closed: false, ref() {}, unref() {}, hasRef: () => false, close: () => fs.closeSync(fd) }
      },
    } as unknown as NativeBinding
    // A long poll interval: only the wake-ups can deliver within the test.
    const backend = CgroupV2Backend.open({ cgroup: tree.container, root: tree.root, native: fake, poll: { minIntervalMs: 60_000, maxIntervalMs: 60_000 } })
    try {
      const psiFile = path.join(tree.container, 'memory.pressure')
      const psi = (total: number) => fs.writeFileSync(psiFile, `some avg10=0.00 avg60=0.00 avg300=0.00 total=${total}\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n`)
      psi(0)
      expect(backend.precision.signals).toEqual(['memory.events', 'psi'])
      expect(watched.length).toBe(2)
      const [events, trigger] = watched as [typeof watched[0], typeof watched[0]]
      const got = new Collector<Crossing>()
      backend.watchThreshold(150 * MiB, got.push)
      writeAtomic(path.join(tree.container, 'memory.current'), `${160 * MiB}\n`)
      events.cb(0, 8)
      writeAtomic(path.join(tree.container, 'memory.current'), `${140 * MiB}\n`)
      trigger.cb(0, 8)
      expect(got.items).toEqual([expect.objectContaining({ direction: 'up', signal: 'memory.events' })])
      psi(150_000)
      trigger.cb(0, 8)
      expect(got.items.map((c) => [c.direction, c.usage / MiB, c.signal])).toEqual([
        ['up', 160, 'memory.events'],
        ['down', 140, 'psi'],
      ])
    } finally {
      backend.close()
      tree.remove()
    }
  })
})

describe('CgroupV2Backend following allocation (stand-in collections on a fake tree)', () => {
  it("reads usage after a collection, names the 'gc' signal, and says the timer's longest sleep", () => {
    const tree = copyV2Tree()
    const listeners = new Set<() => void>()
    const gc = { subscribe: (fn: () => void) => (listeners.add(fn), () => void listeners.delete(fn)) }
    const timers: Array<{ fn: () => void; ms: number }> = []
    let now = 0
    const clock = { now: () => now, setTimeout: (fn: () => void, ms: number) => timers.push({ fn, ms }), clearTimeout: () => {} }
    const backend = CgroupV2Backend.open({ cgroup: tree.container, root: tree.root, gc, clock, poll: { minIntervalMs: 1, idleIntervalMs: 120_000 } })
    try {
      expect(backend.precision.signals).toEqual(['gc'])
      expect(backend.precision.intervalMs).toEqual({ min: 1, max: 120_000 })
      expect(backend.precision.delays?.map((d) => [d.signal, d.sees, d.worstMs])).toEqual([['poll', 'any', 120_000], ['gc', 'v8', 10]])
      const got = new Collector<Crossing>()
      backend.watchThreshold(150 * MiB, got.push)
      expect(listeners.size).toBe(1)
      writeAtomic(path.join(tree.container, 'memory.current'), `${160 * MiB}\n`)
      now += 1000
      for (const l of listeners) l()
      expect(got.items.map((c) => [c.direction, c.usage / MiB, c.signal])).toEqual([['up', 160, 'gc']])
      expect(backend.timedReads).toBe(0)
      backend.close()
      expect(listeners.size).toBe(0)
    } finally {
      backend.close()
      tree.remove()
    }
  })
})
