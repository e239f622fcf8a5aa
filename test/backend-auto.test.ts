// Choosing a backend: 'auto' walks cgroup-v2, cgroup-v1, process and keeps why each was skipped; a
// named backend that cannot run throws with the reasons; the monitor exposes both and forwards 'oom'.

import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { CgroupV2Backend } from '../src/backends/cgroup-v2.js'
import { autoOrder, openBackend } from '../src/backends/index.js'
import type { OomEvent } from '../src/backends/types.js'
import { MemoryPressureError } from '../src/errors.js'
import { createMemoryMonitor, type MemoryMonitor } from '../src/monitor.js'
import { ownV1MemoryCgroup } from './helpers/cgroup.js'
import { Collector } from './helpers/collect.js'

/** Writes a fixture file as the kernel shows one: all at once (a reader never sees it half-written). */
function writeAtomic(file: string, text: string): void {
  fs.writeFileSync(`${file}.tmp`, text)
  fs.renameSync(`${file}.tmp`, file)
}

const own = ownV1MemoryCgroup()
const v1Skip = 'reason' in own ? own.reason : null
const fixture = fileURLToPath(new URL('./fixtures/v2/k8s-pod', import.meta.url))

function thrown(fn: () => unknown): MemoryPressureError {
  try {
    fn()
  } catch (err) {
    if (err instanceof MemoryPressureError) return err
    throw err
  }
  throw new Error('did not throw')
}

describe('openBackend', () => {
  const closers: Array<() => void> = []
  afterEach(() => {
    for (const c of closers.splice(0)) c()
  })

  it('tries cgroup-v2, cgroup-v1, process in that order', () => {
    expect(autoOrder).toEqual(['cgroup-v2', 'cgroup-v1', 'process'])
  })

  it.skipIf(v1Skip !== null)(`auto on this host (v1 memory, v2 without it): cgroup-v1, with why v2 was skipped first${v1Skip ? ` (skipped: ${v1Skip})` : ''}`, () => {
    const opened = openBackend('auto')
    closers.push(() => opened.backend.close())
    expect(opened.backend.name).toBe('cgroup-v1')
    expect(opened.reasons[0]?.startsWith('cgroup-v2: ')).toBe(true)
    expect(opened.reasons.some((r) => r.startsWith('cgroup-v1: '))).toBe(true)
  })

  it.skipIf(v1Skip !== null)(`a named cgroup-v2 that cannot run throws ERR_BACKEND_UNAVAILABLE with reasons${v1Skip ? ` (skipped: ${v1Skip})` : ''}`, () => {
    const err = thrown(() => openBackend('cgroup-v2'))
    expect(err.code).toBe('ERR_BACKEND_UNAVAILABLE')
    expect(err.reasons?.length).toBeGreaterThan(0)
    expect(err.reasons?.every((r) => r.startsWith('cgroup-v2: '))).toBe(true)
  })

  it('process runs anywhere, but does not stand in for a named cgroup', () => {
    const opened = openBackend('process')
    closers.push(() => opened.backend.close())
    expect(opened.backend.name).toBe('process')
    const s = opened.backend.snapshot()
    expect(s.usage).toBeGreaterThan(0)
    expect(s.usage).toBe(s.rss)
    if (v1Skip === null && 'dir' in own) {
      const err = thrown(() => openBackend('process', { cgroup: own.dir }))
      expect(err.code).toBe('ERR_BACKEND_UNAVAILABLE')
    }
    expect(() => openBackend('nope' as 'process')).toThrow(TypeError)
  })
})

describe('the monitor on the new backends', () => {
  let monitor: MemoryMonitor | undefined
  let tree: string | undefined
  afterEach(async () => {
    await monitor?.close()
    monitor = undefined
    if (tree !== undefined) fs.rmSync(tree, { recursive: true, force: true })
    tree = undefined
  })

  it("forwards 'oom' and reports the backend's notes and polled precision", async () => {
    tree = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-auto-v2-'))
    fs.cpSync(fixture, tree, { recursive: true })
    const container = path.join(tree, 'kubepods.slice', 'pod-a.slice', 'container')
    const backend = CgroupV2Backend.open({ cgroup: container, root: tree, poll: { minIntervalMs: 2, maxIntervalMs: 20 } })
    monitor = createMemoryMonitor({ backend, thresholds: ['90%'] })
    const ooms = new Collector<OomEvent>()
    monitor.on('oom', ooms.push)
    writeAtomic(path.join(container, 'memory.events'), 'low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\noom_group_kill 0\n')
    await ooms.count(1)
    expect(ooms.items.map((e) => [e.source, e.oom, e.oomKill])).toEqual([['memory.events', 1, 1]])
    expect(monitor.backend).toBe('cgroup-v2')
    expect(monitor.precision.kind).toBe('polled')
    expect(monitor.diagnostics().reasons.filter((r) => r.startsWith('cgroup-v2: ')).length).toBe(backend.notes.length)
    backend.close()
  })

  it.skipIf(v1Skip !== null)(`diagnostics() of an auto monitor name the backend and say why v2 was skipped${v1Skip ? ` (skipped: ${v1Skip})` : ''}`, async () => {
    monitor = createMemoryMonitor()
    const d = monitor.diagnostics()
    expect(d.backend).toBe('cgroup-v1')
    expect(d.reasons[0]?.startsWith('cgroup-v2: ')).toBe(true)
  })
})
