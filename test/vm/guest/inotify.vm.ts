// In the VM: the cgroup v2 backend as it runs without the native addon, where memory.events is
// watched through inotify (fs.watch): kernfs_notify() (fs/kernfs/file.c) raises IN_MODIFY on the
// file along with POLLPRI. Polling is set so slow that only the inotify watch can deliver here.

import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { CgroupV2Backend } from '../../../src/backends/cgroup-v2.js'
import type { Crossing, OomEvent } from '../../../src/backends/types.js'
import { Collector } from '../../helpers/collect.js'
import { type CgroupChild, type TestCgroup, spawnInCgroup } from '../../helpers/cgroup.js'
import { makeV2Cgroup, testParent } from './cgroup2.js'

const MiB = 2 ** 20
const allocator = fileURLToPath(new URL('../../helpers/allocator.mjs', import.meta.url))
const slow = { minIntervalMs: 600_000, maxIntervalMs: 600_000 }

const made: TestCgroup[] = []
const backends: CgroupV2Backend[] = []
afterEach(async () => {
  for (const b of backends.splice(0)) b.close()
  for (const cg of made.splice(0).reverse()) await cg.remove()
})

function open(cg: TestCgroup): CgroupV2Backend {
  const backend = CgroupV2Backend.open({ cgroup: cg.path, native: null, poll: slow })
  backends.push(backend)
  return backend
}

const current = (cg: TestCgroup): number => Number(fs.readFileSync(path.join(cg.path, 'memory.current'), 'utf8'))

async function allocate(child: CgroupChild, step: number, steps: number): Promise<void> {
  child.proc.stdin.on('error', () => {})
  const died = child.exited.then(() => undefined)
  for (let i = 0; i < steps && child.proc.exitCode === null; i++) await Promise.race([child.send(`alloc ${step}`).catch(() => undefined), died])
}

describe('memory.events through inotify on a real cgroup v2 kernel (no native addon)', () => {
  it("an OOM kill at memory.max is reported as 'oom', with no threshold and so no polling", async () => {
    const cg = makeV2Cgroup(testParent())
    made.push(cg)
    const child = await spawnInCgroup(cg, allocator)
    fs.writeFileSync(path.join(cg.path, 'memory.max'), String(current(cg) + 24 * MiB))
    const backend = open(cg)
    expect(backend.precision.signals).toEqual(['memory.events'])
    const ooms = new Collector<OomEvent>()
    backend.on('oom', ooms.push)
    await allocate(child, 4 * MiB, 64)
    await ooms.until((items) => items.some((e) => (e.oomKill ?? 0) >= 1), 60_000)
    expect(ooms.items.every((e) => e.source === 'memory.events')).toBe(true)
  })

  it('a memory.high crossing wakes the backend, which reads usage and reports the threshold crossed', async () => {
    const cg = makeV2Cgroup(testParent())
    made.push(cg)
    const child = await spawnInCgroup(cg, allocator)
    const base = current(cg)
    fs.writeFileSync(path.join(cg.path, 'memory.high'), String(base + 16 * MiB))
    const backend = open(cg)
    const got = new Collector<Crossing>()
    backend.watchThreshold(base + 8 * MiB, got.push)
    // Not awaited to the end: past memory.high the child is throttled for seconds.
    void allocate(child, 4 * MiB, 8)
    await got.count(1, 120_000)
    expect(got.items[0]).toMatchObject({ direction: 'up', signal: 'memory.events' })
  })
})
