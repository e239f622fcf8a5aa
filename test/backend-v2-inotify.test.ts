// The cgroup v2 backend without the native addon: memory.events is watched through inotify
// (fs.watch) instead of POLLPRI, on a fake v2 tree whose files are rewritten in place as kernfs
// changes them. The real kernel's IN_MODIFY on memory.events is checked in the VM (inotify.vm.ts).

import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { CgroupV2Backend } from '../src/backends/cgroup-v2.js'
import type { BackendCloseReason, Crossing, OomEvent } from '../src/backends/types.js'
import { Collector } from './helpers/collect.js'

const MiB = 2 ** 20
const fixture = fileURLToPath(new URL('./fixtures/v2/k8s-pod', import.meta.url))
// Polling that cannot deliver within a test: only the inotify watch can.
const slow = { minIntervalMs: 600_000, maxIntervalMs: 600_000 }

let root: string | undefined
let backend: CgroupV2Backend | undefined
afterEach(() => {
  backend?.close()
  backend = undefined
  if (root !== undefined) fs.rmSync(root, { recursive: true, force: true })
  root = undefined
})

function open(): { container: string; backend: CgroupV2Backend } {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-v2-inotify-'))
  fs.cpSync(fixture, root, { recursive: true })
  const container = path.join(root, 'kubepods.slice', 'pod-a.slice', 'container')
  backend = CgroupV2Backend.open({ cgroup: container, root, native: null, poll: slow })
  return { container, backend }
}

const events = (oom: number, oomKill: number) => `low 0\nhigh 0\nmax 4\noom ${oom}\noom_kill ${oomKill}\noom_group_kill 0\n`

describe('CgroupV2Backend without the native addon (memory.events through inotify)', () => {
  it('names memory.events as a wake-up signal, and PSI not', () => {
    const { backend } = open()
    expect(backend.precision.kind).toBe('polled')
    expect(backend.precision.signals).toEqual(['memory.events'])
  })

  it("reports 'oom' when memory.events is modified, with no threshold and so no polling", async () => {
    const { container, backend } = open()
    const ooms = new Collector<OomEvent>()
    backend.on('oom', ooms.push)
    fs.writeFileSync(path.join(container, 'memory.events'), events(1, 1))
    await ooms.count(1)
    expect(ooms.items.map((e) => [e.source, e.oom, e.oomKill])).toEqual([['memory.events', 1, 1]])
    fs.writeFileSync(path.join(container, 'memory.events'), events(3, 2))
    await ooms.count(2)
    expect(ooms.items.map((e) => [e.oom, e.oomKill])).toEqual([[1, 1], [2, 1]])
  })

  it('reads usage at each change of memory.events and names that signal on the crossing', async () => {
    const { container, backend } = open()
    const got = new Collector<Crossing>()
    backend.watchThreshold(150 * MiB, got.push)
    fs.writeFileSync(path.join(container, 'memory.current'), `${160 * MiB}\n`)
    fs.writeFileSync(path.join(container, 'memory.events'), events(0, 0).replace('high 0', 'high 1'))
    await got.count(1)
    expect(got.items.map((c) => [c.direction, c.usage / MiB, c.signal])).toEqual([['up', 160, 'memory.events']])
  })

  it("closes with 'removed' when the cgroup directory goes away", async () => {
    const { container, backend } = open()
    const closes = new Collector<BackendCloseReason>()
    backend.on('close', closes.push)
    fs.rmSync(container, { recursive: true })
    await closes.count(1)
    expect(closes.items).toEqual(['removed'])
    expect(backend.closed).toBe(true)
  })

  it('stops watching on close: a later change reports nothing', async () => {
    const { container, backend } = open()
    const ooms = new Collector<OomEvent>()
    backend.on('oom', ooms.push)
    backend.close()
    fs.writeFileSync(path.join(container, 'memory.events'), events(1, 1))
    // A second watcher on the same file sees the write, so the backend's would have too.
    const seen = new Promise<void>((resolve) => {
      const w = fs.watch(path.join(container, 'memory.events'), () => {
        w.close()
        resolve()
      })
      fs.writeFileSync(path.join(container, 'memory.events'), events(2, 2))
    })
    await seen
    await new Promise((resolve) => setImmediate(resolve))
    expect(ooms.items).toEqual([])
  })
})
