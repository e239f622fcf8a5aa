// No memory limit (a laptop, a CI runner): levels are off with one process warning, register() and
// until() work, percentages written by the user still fail with ERR_NO_LIMIT naming the cgroup; and
// a limit far above the machine's memory counts as the machine's memory.

import os from 'node:os'
import { afterEach, describe, expect, it } from 'vitest'
import { SimulatedBackend } from '../../src/backends/simulated.js'
import { effectiveLimit } from '../../src/cgroup/limit.js'
import { resolveCgroupPath } from '../../src/cgroup/discover.js'
import { MemoryPressureError } from '../../src/errors.js'
import { createMemoryMonitor, type ThresholdEvent } from '../../src/monitor.js'
import type { PressureEvent } from '../../src/policy/engine.js'
import { onMemoryThreshold } from '../../src/threshold.js'
import { Collector, turns } from '../helpers/collect.js'
import { createTestCgroup, ownV1MemoryCgroup, type TestCgroup } from '../helpers/cgroup.js'

const MiB = 2 ** 20
const own = ownV1MemoryCgroup()
const v1 = 'dir' in own
const skipV1 = v1 ? '' : ` (skipped: ${(own as { reason: string }).reason})`
const WARNED = Symbol.for('node-memory-pressure.no-limit-warned')

const cleanup: Array<() => unknown> = []
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f()
})

/** Collects process warnings, with the once-per-process flag cleared so this test sees its own. */
function warnings(): Collector<Error> {
  delete (globalThis as { [WARNED]?: boolean })[WARNED]
  const got = new Collector<Error>()
  process.on('warning', got.push)
  cleanup.push(() => process.off('warning', got.push))
  return got
}

function caught(fn: () => unknown): unknown {
  try {
    fn()
  } catch (err) {
    return err
  }
  return null
}

describe('no memory limit', () => {
  it('register() and until() work with levels off, level normal, and one ERR_NO_LIMIT warning per process naming the cgroup', async () => {
    const got = warnings()
    const make = (): ReturnType<typeof createMemoryMonitor> => {
      const m = createMemoryMonitor({ backend: new SimulatedBackend({ limit: Number.POSITIVE_INFINITY, usage: 900 * MiB, cgroup: '/laptop' }) })
      cleanup.push(() => m.close())
      return m
    }
    const a = make()
    const off = a.register({ name: 'cache', shrink: () => 0 })
    await a.until('normal')
    await a.until('moderate')
    expect([a.level, a.levels]).toEqual(['normal', null])
    const b = make()
    b.register({ name: 'cache', shrink: () => 0 })
    await b.until('normal')
    off()
    await turns()
    const noLimit = got.items.filter((w) => (w as MemoryPressureError).code === 'ERR_NO_LIMIT')
    expect(noLimit.map((w) => [w instanceof MemoryPressureError, (w as MemoryPressureError).path])).toEqual([[true, '/laptop']])
  })

  it('levels: true without a limit is cgroup levels off too; levels written in percent (heap not watched) and a percentage threshold throw ERR_NO_LIMIT with .path', () => {
    warnings()
    const sim = (): SimulatedBackend => new SimulatedBackend({ limit: Number.POSITIVE_INFINITY, cgroup: '/laptop' })
    const m = createMemoryMonitor({ backend: sim(), levels: true })
    cleanup.push(() => m.close())
    expect(m.levels).toBe(null)
    for (const err of [
      caught(() => createMemoryMonitor({ backend: sim(), levels: { moderate: '70%', high: '80MiB', critical: '90MiB' }, heapLimit: false })),
      caught(() => onMemoryThreshold('80%', () => {}, { backend: sim() })),
      caught(() => m.addThreshold('80%')),
    ]) {
      expect(err).toBeInstanceOf(MemoryPressureError)
      expect(err).toMatchObject({ code: 'ERR_NO_LIMIT', path: '/laptop' })
    }
    // With V8's heap watched (the default) levels in percent apply to the heap's limit alone.
    const h = createMemoryMonitor({ backend: sim(), levels: { moderate: '70%' } })
    cleanup.push(() => h.close())
    expect([h.levels, h.heapLevels === null]).toEqual([null, false])
  })

  it('levels given in bytes for all three work without a limit', async () => {
    warnings()
    const backend = new SimulatedBackend({ limit: Number.POSITIVE_INFINITY, cgroup: '/laptop' })
    const m = createMemoryMonitor({ backend, levels: { moderate: '100MiB', high: '200MiB', critical: '300MiB' }, reduceHeap: false })
    cleanup.push(() => m.close())
    const got = new Collector<PressureEvent>()
    m.on('pressure', got.push)
    backend.setUsage(150 * MiB)
    await got.count(1)
    expect(m.level).toBe('moderate')
  })

  it('a limit that appears later starts the levels the defaults asked for', async () => {
    warnings()
    const backend = new SimulatedBackend({ limit: Number.POSITIVE_INFINITY, usage: 95 * MiB, cgroup: '/laptop' })
    const m = createMemoryMonitor({ backend, reduceHeap: false })
    cleanup.push(() => m.close())
    m.register({ name: 'cache', shrink: () => 0 })
    expect(m.levels).toBe(null)
    const got = new Collector<PressureEvent>()
    m.on('pressure', got.push)
    backend.setLimit(100 * MiB)
    m.snapshot()
    await got.count(1)
    expect([m.levels?.critical, m.level]).toEqual([95 * MiB, 'critical'])
  })
})

describe('a limit that goes away while running', () => {
  it('keeps the last levels and thresholds and reports ERR_NO_LIMIT naming the cgroup, from both', async () => {
    const backend = new SimulatedBackend({ limit: 100 * MiB, usage: 10 * MiB, cgroup: '/was-limited' })
    const m = createMemoryMonitor({ backend, levels: true, reduceHeap: false })
    cleanup.push(() => m.close())
    m.addThreshold('50%')
    const errors = new Collector<MemoryPressureError>()
    m.on('error', errors.push)
    backend.setLimit(Number.POSITIVE_INFINITY)
    m.snapshot()
    await errors.count(2)
    expect(errors.items.map((e) => [e instanceof MemoryPressureError, e.code, e.path])).toEqual([
      [true, 'ERR_NO_LIMIT', '/was-limited'],
      [true, 'ERR_NO_LIMIT', '/was-limited'],
    ])
    expect(m.levels?.critical).toBe(95 * MiB)
  })
})

describe('a limit far above the machine\'s memory', () => {
  it.skipIf(!v1)(`memory.limit_in_bytes = 2^62 on a real v1 cgroup is the machine's memory, and '80%' works${skipV1}`, async () => {
    const cg: TestCgroup = createTestCgroup((own as { dir: string }).dir, { limit: 2 ** 62 })
    cleanup.push(() => cg.remove())
    const limit = effectiveLimit(resolveCgroupPath(cg.path))
    expect(limit).toMatchObject({ limit: os.totalmem(), holder: cg.path, source: 'memory.limit_in_bytes' })
    const got = new Collector<ThresholdEvent>()
    const errors = new Collector<MemoryPressureError>()
    const stop = onMemoryThreshold('80%', got.push, { backend: 'cgroup-v1', cgroup: cg.path, onError: errors.push })
    cleanup.push(stop)
    const m = createMemoryMonitor({ backend: 'cgroup-v1', cgroup: cg.path })
    cleanup.push(() => m.close())
    const off = m.addThreshold('80%')
    off()
    expect(m.snapshot().limit).toBe(os.totalmem())
    await turns()
    expect([got.items.length, errors.items.length]).toEqual([0, 0])
  })
})
