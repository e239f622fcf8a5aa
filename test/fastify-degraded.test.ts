// The fastify plugin when its monitor is gone or cannot read memory: nothing sheds, the status route
// gives a defined degraded answer with no path or internals, and no memory limit is not a crash.

import Fastify, { type FastifyInstance } from 'fastify'
import { afterEach, describe, expect, it } from 'vitest'
import { SimulatedBackend } from '../src/backends/simulated.js'
import type { MemorySnapshot } from '../src/backends/types.js'
import { MemoryPressureError, syscallError } from '../src/errors.js'
import { type MemoryMonitor, createMemoryMonitor } from '../src/monitor.js'
import type { PressureLevel } from '../src/policy/levels.js'
import memoryPressure, { type FastifyMemoryPressureOptions } from '../src/plugins/fastify.js'
import { Collector, turns } from './helpers/collect.js'

const MiB = 2 ** 20
const HOST_PATH = '/sys/fs/cgroup/memory/kubepods/burstable/pod-secret-1234'
const apps: FastifyInstance[] = []
const cleanup: Array<() => unknown> = []
afterEach(async () => {
  for (const app of apps.splice(0)) await app.close()
  for (const f of cleanup.splice(0).reverse()) await f()
})

/** A simulated cgroup at a host-looking path whose reads can be made to fail as a removed cgroup's do. */
class FlakyBackend extends SimulatedBackend {
  failing = false
  override snapshot(): MemorySnapshot {
    if (this.failing) throw syscallError(-19, 'read', `${HOST_PATH}/memory.stat`)
    return super.snapshot()
  }
}

function simulated(): { sim: FlakyBackend; monitor: MemoryMonitor } {
  const sim = new FlakyBackend({ limit: 100 * MiB, cgroup: HOST_PATH })
  const monitor = createMemoryMonitor({ backend: sim, levels: { moderate: '50%', high: '70%', critical: '90%' }, reduceHeap: false })
  cleanup.push(() => monitor.close())
  return { sim, monitor }
}

async function reach(sim: SimulatedBackend, monitor: MemoryMonitor, usage: number, level: PressureLevel): Promise<void> {
  const got = new Collector<{ level: PressureLevel }>()
  monitor.on('pressure', got.push)
  sim.setUsage(usage)
  await got.until((items) => items.some((e) => e.level === level))
  monitor.off('pressure', got.push)
}

async function app(options: FastifyMemoryPressureOptions): Promise<FastifyInstance> {
  const a = Fastify()
  apps.push(a)
  await a.register(memoryPressure, { exposeStatusRoute: true, ...options })
  a.get('/work', async () => ({ done: true }))
  await a.ready()
  return a
}

describe('fastify plugin: a monitor that is gone', () => {
  it('a monitor closed at critical sheds nothing afterwards, and /status says it is closed (200, no figures)', async () => {
    const { sim, monitor } = simulated()
    const a = await app({ monitor })
    await reach(sim, monitor, 95 * MiB, 'critical')
    expect((await a.inject('/work')).statusCode).toBe(503)
    await monitor.close()
    expect(monitor.level).toBe('normal')
    expect(a.isUnderPressure()).toBe(false)
    expect((await a.inject('/work')).statusCode).toBe(200)
    const status = await a.inject('/status')
    expect(status.statusCode).toBe(200)
    expect(status.json()).toEqual({ status: 'degraded', reason: 'closed', level: null, usage: null, limit: null, workingSet: null, levels: null })
  })

  it('a removed cgroup: /status says removed, requests pass', async () => {
    const { sim, monitor } = simulated()
    const a = await app({ monitor })
    await reach(sim, monitor, 95 * MiB, 'critical')
    const closed = new Collector<unknown>()
    monitor.on('close', closed.push)
    sim.remove()
    await closed.count(1)
    expect((await a.inject('/work')).statusCode).toBe(200)
    expect((await a.inject('/status')).json()).toMatchObject({ status: 'degraded', reason: 'removed' })
  })

  it('a read failing while the cgroup is being removed: /status is a degraded 200 without the host path or the error', async () => {
    const { sim, monitor } = simulated()
    const a = await app({ monitor })
    sim.failing = true
    const status = await a.inject('/status')
    expect(status.statusCode).toBe(200)
    expect(status.json()).toMatchObject({ status: 'degraded', reason: 'unreadable', usage: null })
    expect(status.body).not.toContain('/sys/fs')
    expect(status.body).not.toContain('pod-secret')
    expect(status.body).not.toContain('ENODEV')
    sim.failing = false
    expect((await a.inject('/status')).json()).toMatchObject({ status: 'ok', usage: 0 })
  })
})

describe('fastify plugin: no memory limit', () => {
  it('registers (levels off, nothing shed, /status ok with null limit and levels) instead of failing startup', async () => {
    const warnings = new Collector<Error>()
    process.on('warning', warnings.push)
    cleanup.push(() => process.off('warning', warnings.push))
    const sim = new SimulatedBackend({ limit: Number.POSITIVE_INFINITY, usage: 50 * MiB, cgroup: '/no-limit' })
    const a = await app({ monitorOptions: { backend: sim } })
    expect(a.memoryPressure.level).toBe('normal')
    expect(a.memoryPressure.monitor.levels).toBe(null)
    expect((await a.inject('/work')).statusCode).toBe(200)
    expect((await a.inject('/status')).json()).toEqual({ status: 'ok', level: 'normal', usage: 50 * MiB, limit: null, workingSet: 50 * MiB, levels: null })
    await turns()
    // One warning per process at most (an earlier test file in this process may have had it).
    const noLimit = warnings.items.filter((w) => (w as MemoryPressureError).code === 'ERR_NO_LIMIT')
    expect(noLimit.length).toBeLessThanOrEqual(1)
    for (const w of noLimit) expect(w).toMatchObject({ code: 'ERR_NO_LIMIT', path: '/no-limit' })
  })

  it('levels written in percent with the heap not watched still refuse to start without a limit: ERR_NO_LIMIT naming the cgroup', async () => {
    const sim = new SimulatedBackend({ limit: Number.POSITIVE_INFINITY, cgroup: '/no-limit' })
    const a = Fastify()
    const err = await a.register(memoryPressure, { monitorOptions: { backend: sim, levels: { moderate: '70%' }, heapLimit: false } }).ready().then(() => null, (e: unknown) => e)
    await a.close()
    expect(err).toBeInstanceOf(MemoryPressureError)
    expect(err).toMatchObject({ code: 'ERR_NO_LIMIT', path: '/no-limit' })
  })
})
