// The MemoryBackend contract, run once per backend available here; a backend that cannot run here
// is skipped with the reason in the test's name.

import { afterEach, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { CgroupV2Backend } from '../src/backends/cgroup-v2.js'
import { ProcessBackend } from '../src/backends/process.js'
import { CgroupV1Backend, type CgroupV1Options } from '../src/backends/cgroup-v1.js'
import { SimulatedBackend } from '../src/backends/simulated.js'
import type { Crossing, MemoryBackend, BackendCloseReason } from '../src/backends/types.js'
import { MemoryPressureError } from '../src/errors.js'
import { Collector, turns } from './helpers/collect.js'
import { type CgroupChild, type TestCgroup, createTestCgroup, ownV1MemoryCgroup, spawnInCgroup } from './helpers/cgroup.js'
import { makeV2Cgroup, v2TestParent } from './vm/guest/cgroup2.js'

/** Writes a fixture file as the kernel shows one: all at once (a reader never sees it half-written). */
function writeAtomic(file: string, text: string): void {
  fs.writeFileSync(`${file}.tmp`, text)
  fs.renameSync(`${file}.tmp`, file)
}

const MiB = 2 ** 20
const allocator = fileURLToPath(new URL('./helpers/allocator.mjs', import.meta.url))

/** Drives one backend's memory up and down. */
interface Rig {
  backend: MemoryBackend
  usage(): number
  /** Moves usage to at least `bytes` (and a margin past it, for the kernel's check granularity). */
  raiseAbove(bytes: number): Promise<void>
  /** Moves usage below `bytes` (with the same margin). */
  lowerBelow(bytes: number): Promise<void>
  /** Removes the (virtual) cgroup while it is watched. */
  removeCgroup(): Promise<void>
  teardown(): Promise<void>
}

interface Driver {
  name: string
  skip: string | null
  rig(): Promise<Rig>
}

const simulated: Driver = {
  name: 'simulated',
  skip: null,
  async rig() {
    const backend = new SimulatedBackend({ limit: 256 * MiB, usage: 40 * MiB })
    return {
      backend,
      usage: () => backend.usage,
      raiseAbove: async (bytes) => backend.setUsage(Math.max(backend.usage, bytes + MiB)),
      lowerBelow: async (bytes) => backend.setUsage(Math.min(backend.usage, bytes - MiB)),
      removeCgroup: async () => backend.remove(),
      teardown: async () => backend.close(),
    }
  },
}

const own = ownV1MemoryCgroup()
const v1Skip = 'reason' in own ? own.reason : CgroupV1Backend.probe().available ? null : CgroupV1Backend.probe().reasons.join('; ')

/**
 * cgroup v1 on a real child cgroup. `margin`: how far past a threshold usage is driven, since the
 * kernel checks thresholds every 128 page events per CPU (eventfd); polling needs no margin.
 */
function v1Driver(name: string, options: CgroupV1Options, margin: number): Driver {
  return {
    name,
    skip: v1Skip,
    async rig() {
      if (!('dir' in own)) throw new Error('unreachable')
      const cg: TestCgroup = createTestCgroup(own.dir, { limit: 256 * MiB })
      let child: CgroupChild | undefined
      let backend: CgroupV1Backend | undefined
      try {
        child = await spawnInCgroup(cg, allocator)
        backend = CgroupV1Backend.open({ ...options, cgroup: cg.path })
      } catch (err) {
        backend?.close()
        await cg.remove()
        throw err
      }
      const b = backend
      const c = child
      if (b.polling !== (options.thresholds === 'poll')) throw new Error(`${name}: expected polling ${options.thresholds === 'poll'}`)
      return {
        backend: b,
        usage: () => b.readUsage(),
        raiseAbove: async (bytes) => {
          while (b.readUsage() < bytes + margin) await c.send(`alloc ${MiB}`)
        },
        lowerBelow: async (bytes) => {
          while (b.readUsage() > bytes - margin) {
            const { held } = await c.send('free')
            if (held === 0) throw new Error(`cannot go below ${bytes}: nothing left to free at usage ${b.readUsage()}`)
          }
        },
        removeCgroup: async () => cg.remove(),
        teardown: async () => {
          b.close()
          await cg.remove()
        },
      }
    },
  }
}

const cgroupV1 = v1Driver('cgroup-v1', {}, 4 * MiB)
const cgroupV1Polled = v1Driver('cgroup-v1 (polled)', { thresholds: 'poll', poll: { minIntervalMs: 2, maxIntervalMs: 50 } }, MiB)

const v2Fixture = fileURLToPath(new URL('./fixtures/v2/k8s-pod', import.meta.url))

/** cgroup v2 on a copy of a fake tree: usage is what the test writes to memory.current. */
const cgroupV2Tree: Driver = {
  name: 'cgroup-v2 (fake tree, polled)',
  skip: null,
  async rig() {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-v2-contract-'))
    fs.cpSync(v2Fixture, root, { recursive: true })
    const pod = path.join(root, 'kubepods.slice', 'pod-a.slice')
    const dir = path.join(pod, 'container')
    for (const f of ['memory.max', 'memory.high']) fs.writeFileSync(path.join(pod, f), 'max\n')
    fs.writeFileSync(path.join(dir, 'memory.max'), `${256 * MiB}\n`)
    const backend = CgroupV2Backend.open({ cgroup: dir, root, poll: { minIntervalMs: 2, maxIntervalMs: 50 } })
    let usage = backend.readUsage()
    const set = (bytes: number): void => {
      usage = bytes
      writeAtomic(path.join(dir, 'memory.current'), `${bytes}\n`)
    }
    return {
      backend,
      usage: () => usage,
      raiseAbove: async (bytes) => set(Math.max(usage, bytes + MiB)),
      lowerBelow: async (bytes) => set(Math.min(usage, bytes - MiB)),
      removeCgroup: async () => fs.rmSync(dir, { recursive: true }),
      teardown: async () => {
        backend.close()
        fs.rmSync(root, { recursive: true, force: true })
      },
    }
  },
}

/** The process backend watching a child's RSS by pid (the child is 'removed' when it exits). */
const processRss: Driver = {
  name: 'process (a child by pid, polled)',
  skip: process.platform === 'linux' ? null : `reading another process's RSS needs /proc (${process.platform})`,
  async rig() {
    // The child only needs a `cgroup.procs` file to write its pid into: a plain temp file will do.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-proc-contract-'))
    const fake: TestCgroup = {
      path: dir,
      pids: new Set(),
      remove: async () => {
        for (const pid of fake.pids) process.kill(pid, 'SIGKILL')
        await child.exited
      },
    }
    const child = await spawnInCgroup(fake, allocator)
    const pid = child.proc.pid as number
    const backend = ProcessBackend.open({ pid, budget: 256 * MiB, poll: { minIntervalMs: 2, maxIntervalMs: 50 } })
    return {
      backend,
      usage: () => backend.readUsage(),
      raiseAbove: async (bytes) => {
        while (backend.readUsage() < bytes + MiB) await child.send(`alloc ${MiB}`)
      },
      lowerBelow: async (bytes) => {
        while (backend.readUsage() > bytes - MiB) {
          const { held } = await child.send('free')
          if (held === 0) throw new Error(`cannot go below ${bytes}: nothing left to free at RSS ${backend.readUsage()}`)
        }
      },
      removeCgroup: async () => fake.remove(),
      teardown: async () => {
        backend.close()
        if (child.proc.exitCode === null && child.proc.signalCode === null) child.proc.kill('SIGKILL')
        await child.exited
        fs.rmSync(dir, { recursive: true, force: true })
      },
    }
  },
}

const v2Parent = v2TestParent()

/** cgroup v2 on a real kernel (the VM of test/vm-v2.test.ts): a child allocating under memory.max. */
const cgroupV2Kernel: Driver = {
  name: 'cgroup-v2 (real kernel)',
  skip: 'reason' in v2Parent ? `${v2Parent.reason}; test/vm-v2.test.ts runs it in a VM` : null,
  async rig() {
    if (!('dir' in v2Parent)) throw new Error('unreachable')
    const cg = makeV2Cgroup(v2Parent.dir, { max: 256 * MiB })
    let backend: CgroupV2Backend | undefined
    try {
      const child = await spawnInCgroup(cg, allocator)
      const b = CgroupV2Backend.open({ cgroup: cg.path, poll: { minIntervalMs: 5, maxIntervalMs: 100 } })
      backend = b
      /** Sends `command` until `done()`; usage is read from memory.current, exact to the page. */
      const drive = async (command: string, done: () => boolean): Promise<void> => {
        while (!done()) {
          const { held } = await child.send(command)
          if (command === 'free' && held === 0 && !done()) throw new Error(`nothing left to free at usage ${b.readUsage()}`)
        }
      }
      return {
        backend: b,
        usage: () => b.readUsage(),
        raiseAbove: (bytes) => drive(`alloc ${MiB}`, () => b.readUsage() >= bytes + MiB),
        lowerBelow: (bytes) => drive('free', () => b.readUsage() < bytes - MiB),
        removeCgroup: () => cg.remove(),
        teardown: async () => {
          b.close()
          await cg.remove()
        },
      }
    } catch (err) {
      backend?.close()
      await cg.remove()
      throw err
    }
  },
}

describe.each([simulated, cgroupV1, cgroupV1Polled, cgroupV2Tree, cgroupV2Kernel, processRss])('MemoryBackend contract: $name', (driver) => {
  const test = driver.skip === null ? it : it.skip
  const suffix = driver.skip === null ? '' : ` (skipped: ${driver.skip})`
  let rig: Rig | undefined
  afterEach(async () => {
    await rig?.teardown()
    rig = undefined
  })

  test(`snapshot reports usage, a finite limit and working set no larger than usage${suffix}`, async () => {
    rig = await driver.rig()
    const s = rig.backend.snapshot()
    expect(s.usage).toBeGreaterThan(0)
    expect(s.limit).toBe(256 * MiB)
    expect(s.limitHolder).toBe(rig.backend.cgroup)
    expect(s.workingSet).toBeLessThanOrEqual(s.usage)
    expect(s.rss).toBeLessThanOrEqual(s.usage)
    expect(rig.backend.precision.bytes).toBeGreaterThanOrEqual(0)
  })

  test(`thresholds fire up and down, in order, with usage on the right side${suffix}`, async () => {
    rig = await driver.rig()
    const base = rig.usage()
    const t1 = base + 24 * MiB
    const t2 = base + 48 * MiB
    const got = new Collector<Crossing>()
    const seen = (t: number, d: string) => (items: Crossing[]) => items.some((c) => c.threshold === t && c.direction === d)
    rig.backend.watchThreshold(t1, got.push)
    rig.backend.watchThreshold(t2, got.push)
    await rig.raiseAbove(t1)
    await got.until(seen(t1, 'up'))
    await rig.raiseAbove(t2)
    await got.until(seen(t2, 'up'))
    await rig.lowerBelow(t2)
    await got.until(seen(t2, 'down'))
    await rig.lowerBelow(t1)
    await got.until(seen(t1, 'down'))
    await turns()
    // Usage left next to a threshold may wiggle across it again (seen on the real v2 kernel in the
    // VM at t1 and with the v1 poller at t2): such crossings are genuine, but each threshold's must
    // alternate from 'up', and the first of each come in the order usage moved.
    for (const t of [t1, t2]) {
      const directions = got.items.filter((c) => c.threshold === t).map((c) => c.direction)
      directions.forEach((d, i) => expect(d).toBe(i % 2 === 0 ? 'up' : 'down'))
    }
    const first = (t: number, d: string) => got.items.findIndex((c) => c.threshold === t && c.direction === d)
    expect(first(t1, 'up')).toBe(0)
    expect(first(t2, 'up')).toBeGreaterThan(first(t1, 'up'))
    expect(first(t2, 'down')).toBeGreaterThan(first(t2, 'up'))
    expect(first(t1, 'down')).toBeGreaterThan(first(t2, 'down'))
    for (const c of got.items) {
      if (c.direction === 'up') expect(c.usage).toBeGreaterThanOrEqual(c.threshold)
      else expect(c.usage).toBeLessThan(c.threshold)
    }
  })

  test(`registration does not fire for a threshold already crossed${suffix}`, async () => {
    rig = await driver.rig()
    const got = new Collector<Crossing>()
    rig.backend.watchThreshold(Math.floor(rig.usage() / 2), got.push)
    const probe = rig.usage() + 16 * MiB
    const other = new Collector<Crossing>()
    rig.backend.watchThreshold(probe, other.push)
    await rig.raiseAbove(probe)
    await other.count(1)
    await turns()
    expect(got.items).toEqual([])
  })

  test(`a closed watch reports nothing more; close is idempotent${suffix}`, async () => {
    rig = await driver.rig()
    const base = rig.usage()
    const closedOne = new Collector<Crossing>()
    const control = new Collector<Crossing>()
    const w = rig.backend.watchThreshold(base + 16 * MiB, closedOne.push)
    rig.backend.watchThreshold(base + 20 * MiB, control.push)
    w.close()
    w.close()
    await rig.raiseAbove(base + 20 * MiB)
    await control.count(1)
    await turns()
    expect(closedOne.items).toEqual([])
  })

  test(`removing the cgroup closes the backend with 'removed' and reports no crossing${suffix}`, async () => {
    rig = await driver.rig()
    const got = new Collector<Crossing>()
    const closes = new Collector<BackendCloseReason>()
    // Only thresholds above usage: removing the cgroup frees memory, which is a genuine crossing of
    // any threshold below usage; the kernel's removal signal must not show up as one either way.
    rig.backend.watchThreshold(rig.usage() + 64 * MiB, got.push)
    rig.backend.watchThreshold(rig.usage() + 96 * MiB, got.push)
    rig.backend.on('close', closes.push)
    await rig.removeCgroup()
    await closes.count(1)
    await turns()
    expect(closes.items).toEqual(['removed'])
    expect(got.items).toEqual([])
    expect(rig.backend.closed).toBe(true)
  })

  test(`after close(), watching throws ERR_CLOSED and close emits 'closed' once${suffix}`, async () => {
    rig = await driver.rig()
    const closes = new Collector<BackendCloseReason>()
    rig.backend.on('close', closes.push)
    rig.backend.close()
    rig.backend.close()
    await closes.count(1)
    await turns()
    expect(closes.items).toEqual(['closed'])
    let err: unknown
    try {
      rig.backend.watchThreshold(MiB, () => {})
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(MemoryPressureError)
    expect((err as MemoryPressureError).code).toBe('ERR_CLOSED')
  })
})

