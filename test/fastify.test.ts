// The fastify plugin through fastify's inject: shedding by level with 503 and Retry-After, per-route
// overrides, under-pressure's option names, the status route, and who closes the monitor.

import Fastify, { type FastifyInstance } from 'fastify'
import { afterEach, describe, expect, it } from 'vitest'
import { SimulatedBackend } from '../src/backends/simulated.js'
import { MemoryMonitor, createMemoryMonitor } from '../src/monitor.js'
import type { PressureLevel } from '../src/policy/levels.js'
import memoryPressure, { type FastifyMemoryPressureOptions, UnderPressureError } from '../src/plugins/fastify.js'

const MiB = 2 ** 20
const apps: FastifyInstance[] = []
const monitors: MemoryMonitor[] = []
afterEach(async () => {
  for (const app of apps.splice(0)) await app.close()
  for (const m of monitors.splice(0)) await m.close()
})

/** A monitor on a 100 MiB simulated cgroup, levels at 50/70/90%. */
function simulated(): { sim: SimulatedBackend; monitor: MemoryMonitor } {
  const sim = new SimulatedBackend({ limit: 100 * MiB })
  const monitor = createMemoryMonitor({
    backend: sim,
    levels: { moderate: '50%', high: '70%', critical: '90%' },
    reduceHeap: false,
  })
  monitors.push(monitor)
  return { sim, monitor }
}

/** Sets usage and resolves once the monitor's level is `level`. */
async function reach(sim: SimulatedBackend, monitor: MemoryMonitor, usage: number, level: PressureLevel): Promise<void> {
  const reached = new Promise<void>((resolve) => {
    if (monitor.level === level) return resolve()
    const on = (e: { level: PressureLevel }): void => {
      if (e.level !== level) return
      monitor.off('pressure', on)
      resolve()
    }
    monitor.on('pressure', on)
  })
  sim.setUsage(usage)
  await reached
  expect(monitor.level).toBe(level)
}

async function app(options: FastifyMemoryPressureOptions): Promise<FastifyInstance> {
  const a = Fastify()
  apps.push(a)
  await a.register(memoryPressure, options)
  a.get('/work', async () => ({ done: true }))
  a.get('/health', { config: { memoryPressure: { shedAt: false } } }, async () => 'ok')
  a.get('/fragile', { config: { memoryPressure: { shedAt: 'moderate' } } }, async () => 'ok')
  await a.ready()
  return a
}

describe('fastify plugin', () => {
  it('lets requests through below the shedding level and refuses them at it with 503, Retry-After and ERR_UNDER_PRESSURE', async () => {
    const { sim, monitor } = simulated()
    const a = await app({ monitor })
    expect((await a.inject('/work')).statusCode).toBe(200)
    expect(a.isUnderPressure()).toBe(false)

    await reach(sim, monitor, 75 * MiB, 'high')
    expect((await a.inject('/work')).statusCode).toBe(200)

    await reach(sim, monitor, 95 * MiB, 'critical')
    const shed = await a.inject('/work')
    expect(shed.statusCode).toBe(503)
    expect(shed.headers['retry-after']).toBe('10')
    expect(shed.json()).toMatchObject({ statusCode: 503, code: 'ERR_UNDER_PRESSURE' })
    expect(a.isUnderPressure()).toBe(true)
    expect(a.memoryPressure.level).toBe('critical')
    expect(a.memoryPressure.snapshot()).toMatchObject({ usage: 95 * MiB, limit: 100 * MiB })

    await reach(sim, monitor, 10 * MiB, 'normal')
    expect((await a.inject('/work')).statusCode).toBe(200)
    expect(a.isUnderPressure()).toBe(false)
  })

  it('routes override the level: shedAt false never sheds, a lower level sheds earlier', async () => {
    const { sim, monitor } = simulated()
    const a = await app({ monitor })
    await reach(sim, monitor, 55 * MiB, 'moderate')
    expect((await a.inject('/fragile')).statusCode).toBe(503)
    expect((await a.inject('/work')).statusCode).toBe(200)
    await reach(sim, monitor, 95 * MiB, 'critical')
    expect((await a.inject('/health')).statusCode).toBe(200)
    expect((await a.inject('/work')).statusCode).toBe(503)
  })

  it('takes shedAt, retryAfter and message', async () => {
    const { sim, monitor } = simulated()
    const a = await app({ monitor, shedAt: 'high', retryAfter: 3, message: 'busy' })
    expect(a.memoryPressure.shedAt).toBe('high')
    await reach(sim, monitor, 75 * MiB, 'high')
    const shed = await a.inject('/work')
    expect(shed.statusCode).toBe(503)
    expect(shed.headers['retry-after']).toBe('3')
    expect(shed.json()).toMatchObject({ code: 'ERR_UNDER_PRESSURE', message: 'busy' })
  })

  it('calls pressureHandler with (request, reply, type, level); a route config.pressureHandler wins', async () => {
    const { sim, monitor } = simulated()
    const seen: Array<[string, string, string]> = []
    const a = Fastify()
    apps.push(a)
    await a.register(memoryPressure, {
      monitor,
      pressureHandler: (req, _reply, type, level) => {
        seen.push([req.url, type, level])
        return { degraded: true }
      },
    })
    a.get('/work', async () => ({ done: true }))
    a.get('/through', { config: { pressureHandler: () => undefined } as object }, async () => ({ done: true }))
    a.get('/async', { config: { pressureHandler: async () => {} } as object }, async () => ({ done: true }))
    await a.ready()
    await reach(sim, monitor, 95 * MiB, 'critical')
    const degraded = await a.inject('/work')
    expect(degraded.statusCode).toBe(200)
    expect(degraded.json()).toEqual({ degraded: true })
    expect(seen).toEqual([['/work', 'memoryPressure', 'critical']])
    expect((await a.inject('/through')).json()).toEqual({ done: true })
    expect((await a.inject('/async')).json()).toEqual({ done: true })
  })

  it('throws customError when given', async () => {
    const { sim, monitor } = simulated()
    class Busy extends Error {
      statusCode = 503
      code = 'APP_BUSY'
    }
    const a = await app({ monitor, customError: Busy })
    await reach(sim, monitor, 95 * MiB, 'critical')
    const shed = await a.inject('/work')
    expect(shed.statusCode).toBe(503)
    expect(shed.json()).toMatchObject({ code: 'APP_BUSY' })
  })

  it('exposes a status route with the level and figures, which sheds like any route', async () => {
    const { sim, monitor } = simulated()
    const a = await app({ monitor, exposeStatusRoute: '/memory' })
    sim.setUsage(20 * MiB)
    expect((await a.inject('/memory')).json()).toEqual({
      status: 'ok',
      level: 'normal',
      usage: 20 * MiB,
      limit: 100 * MiB,
      workingSet: 20 * MiB,
      levels: { moderate: 50 * MiB, high: 70 * MiB, critical: 90 * MiB },
    })
    expect((await a.inject('/status')).statusCode).toBe(404)
    await reach(sim, monitor, 95 * MiB, 'critical')
    expect((await a.inject('/memory')).statusCode).toBe(503)
  })

  it('closes the monitor it created when fastify closes, and leaves a given one open', async () => {
    const made = await app({ monitorOptions: { backend: 'simulated' } })
    const own = made.memoryPressure.monitor
    expect(own.backend).toBe('simulated')
    expect(own.level).toBe('normal')
    await made.close()
    expect(own.closed).toBe(true)

    const { monitor } = simulated()
    const given = await app({ monitor })
    await given.close()
    expect(monitor.closed).toBe(false)
  })

  it('rejects bad options with TypeError/RangeError naming them, before opening anything', async () => {
    const cases: Array<[FastifyMemoryPressureOptions, ErrorConstructor]> = [
      [{ shedAt: 'normal' as PressureLevel, monitorOptions: { backend: 'simulated' } }, TypeError],
      [{ shedAt: 'nope' as PressureLevel, monitorOptions: { backend: 'simulated' } }, TypeError],
      [{ retryAfter: -1, monitorOptions: { backend: 'simulated' } }, RangeError],
      [{ retryAfter: 1.5, monitorOptions: { backend: 'simulated' } }, RangeError],
      [{ monitor: {} as MemoryMonitor }, TypeError],
      [{ pressureHandler: 'x' as never, monitorOptions: { backend: 'simulated' } }, TypeError],
      [{ exposeStatusRoute: 3 as never, monitorOptions: { backend: 'simulated' } }, TypeError],
      // A misspelled option is refused (ERR_UNKNOWN_OPTION), not ignored with its default used.
      [{ shedat: 'high', monitorOptions: { backend: 'simulated' } } as FastifyMemoryPressureOptions, TypeError],
      [{ monitorOptions: { backend: 'simulated', level: true } as never }, TypeError],
    ]
    for (const [options, kind] of cases) {
      const a = Fastify()
      const err = await a.register(memoryPressure, options).ready().then(() => null, (e: unknown) => e)
      expect(err, JSON.stringify(options)).toBeInstanceOf(kind)
      expect(a.hasDecorator('memoryPressure')).toBe(false)
      await a.close()
    }
    expect(new UnderPressureError()).toMatchObject({ code: 'ERR_UNDER_PRESSURE', statusCode: 503 })
  })

  it('keeps @fastify/under-pressure\'s isUnderPressure when that plugin came first, and both work', async () => {
    const { default: underPressure } = await import('@fastify/under-pressure')
    const { sim, monitor } = simulated()
    const a = Fastify()
    apps.push(a)
    await a.register(underPressure, { maxEventLoopDelay: 60_000 })
    await a.register(memoryPressure, { monitor })
    a.get('/work', async () => ({ done: true }))
    await a.ready()
    await reach(sim, monitor, 95 * MiB, 'critical')
    expect(a.isUnderPressure()).toBe(false)
    expect((await a.inject('/work')).statusCode).toBe(503)
  })
})
