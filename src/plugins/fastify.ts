// The fastify plugin (`node-memory-pressure/fastify`): sheds load with 503 while memory is at a pressure
// level, decorates the instance with the level and a snapshot; option names follow @fastify/under-pressure.

import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest, RouteShorthandOptions } from 'fastify'
import fp from 'fastify-plugin'
import { MemoryPressureError } from '../errors.js'
import { type CloseEvent, MemoryMonitor, type MemoryMonitorOptions, type MonitorCloseReason } from '../monitor.js'
import type { MemorySnapshot } from '../backends/types.js'
import { PRESSURE_LEVELS, type PressureLevel, levelRank } from '../policy/levels.js'
import { checkKeys } from '../options.js'
import { describe } from '../size.js'

/** The `type` a {@link FastifyMemoryPressureOptions.pressureHandler} receives. */
export const TYPE_MEMORY_PRESSURE = 'memoryPressure'

/**
 * Called instead of the 503 reply when a request arrives while shedding (the signature of
 * `@fastify/under-pressure`'s `pressureHandler`). Return nothing (or a promise) to let the request
 * through, or a value to send it as the reply.
 */
export type PressureHandler = (
  request: FastifyRequest,
  reply: FastifyReply,
  type: typeof TYPE_MEMORY_PRESSURE,
  value: PressureLevel,
) => unknown

/** Options of the status route (see {@link FastifyMemoryPressureOptions.exposeStatusRoute}). */
export interface StatusRouteOptions {
  /** Path of the route. Default `'/status'`. */
  url?: string
  /** Extra fastify route options (`logLevel`, `config`, `onRequest` hooks...). */
  routeOpts?: RouteShorthandOptions
}

/** Per-route settings, under `config.memoryPressure` of a route's options. */
export interface RouteMemoryPressureConfig {
  /** This route's level to shed at, or `false` never to shed it (health checks, metrics). */
  shedAt?: PressureLevel | false
}

/** Options of the fastify plugin. */
export interface FastifyMemoryPressureOptions {
  /**
   * A monitor to use. It is left open when fastify closes (its creator owns it). Levels are
   * started on it (with its own thresholds, or the defaults) if they are off. Default: the plugin
   * creates one from {@link FastifyMemoryPressureOptions.monitorOptions} and closes it with fastify.
   */
  monitor?: MemoryMonitor
  /**
   * Options of the monitor the plugin creates (ignored with `monitor`). Default `{ levels: true }`:
   * the best backend here, levels at 70/85/95% of the effective limit. Without a memory limit the
   * plugin registers all the same: the cgroup's levels are off (one process warning `ERR_NO_LIMIT`)
   * and only V8's heap limit can raise the level and shed.
   */
  monitorOptions?: MemoryMonitorOptions
  /**
   * The level at and above which requests are refused with 503: `'moderate'`, `'high'` or
   * `'critical'`, or `false` never to shed (the decorators still work). Default `'critical'`.
   * A route can override it with `config: { memoryPressure: { shedAt } }`.
   */
  shedAt?: PressureLevel | false
  /** Seconds sent in the `Retry-After` header of a 503. Default 10 (as `@fastify/under-pressure`). */
  retryAfter?: number
  /** Message of the 503 error. Default `'Service Unavailable'`. */
  message?: string
  /**
   * An error class to throw instead of the default one (as `@fastify/under-pressure`'s
   * `customError`): constructed with no arguments; give it a `statusCode` for fastify's error handler.
   */
  customError?: new () => Error
  /** Replaces the 503 reply (see {@link PressureHandler}); a route's `config.pressureHandler` wins. */
  pressureHandler?: PressureHandler
  /**
   * Adds a `GET` route reporting `{ status: 'ok', level, usage, limit, workingSet, levels }` (bytes;
   * `limit` is `null` when there is none; `levels` has where `moderate`, `high` and `critical`
   * start, on the working set by default), or `{ status: 'degraded', reason }` once the monitor
   * is closed or memory cannot be read (see {@link StatusBody}): `true` for `/status`, a path, or
   * {@link StatusRouteOptions}. It sheds like any route unless its
   * `routeOpts.config.memoryPressure.shedAt` says otherwise, so a readiness probe sees 503 while
   * the service sheds. Default `false`.
   */
  exposeStatusRoute?: boolean | string | StatusRouteOptions
}

/** What `fastify.memoryPressure` offers. */
export interface MemoryPressureDecorator {
  /** The monitor in use. */
  readonly monitor: MemoryMonitor
  /** The current pressure level. */
  readonly level: PressureLevel
  /** The level requests are shed at by default, or `false`. */
  readonly shedAt: PressureLevel | false
  /** Reads usage, limit, working set and page cache now. */
  snapshot(): MemorySnapshot
}

declare module 'fastify' {
  interface FastifyInstance {
    /** node-memory-pressure's monitor, level and snapshot. */
    memoryPressure: MemoryPressureDecorator
    /**
     * True while the level is at or above `shedAt` (as `@fastify/under-pressure`'s; when that
     * plugin was registered first, its decorator is kept and this one is not added).
     */
    isUnderPressure(): boolean
  }
  interface FastifyContextConfig {
    /** node-memory-pressure settings of this route. */
    memoryPressure?: RouteMemoryPressureConfig
  }
}

/** The error a shed request fails with: status 503, code `ERR_UNDER_PRESSURE`. */
export class UnderPressureError extends MemoryPressureError {
  /** The HTTP status fastify replies with. */
  readonly statusCode = 503
  constructor(message = 'Service Unavailable') {
    super('ERR_UNDER_PRESSURE', message)
  }
}

/**
 * What the status route answers (HTTP 200 either way). `status: 'ok'`: the figures in bytes
 * (`limit` `null` when there is none; `levels` `null` while levels are off). `status: 'degraded'`:
 * nothing is watched or memory could not be read, and every figure is `null`; `reason` says why:
 * `'closed'` (the monitor was closed), `'removed'` (its cgroup was removed), `'error'` (its backend
 * failed), `'unreadable'` (a read failed while the monitor is still open: the cgroup is being
 * removed, or a transient failure). Nothing is shed while degraded, so a readiness probe on this
 * route keeps the service in rotation: it serves as if there were no monitor.
 */
export type StatusBody =
  | {
      status: 'ok'
      level: PressureLevel
      usage: number
      limit: number | null
      workingSet: number
      levels: { moderate: number; high: number; critical: number } | null
    }
  | {
      status: 'degraded'
      reason: MonitorCloseReason | 'unreadable'
      level: null
      usage: null
      limit: null
      workingSet: null
      levels: null
    }

function degraded(reason: MonitorCloseReason | 'unreadable'): StatusBody {
  return { status: 'degraded', reason, level: null, usage: null, limit: null, workingSet: null, levels: null }
}

const SHED_LEVELS = PRESSURE_LEVELS.filter((l) => l !== 'normal')

function checkShedAt(name: string, value: unknown): PressureLevel | false {
  if (value === false || (typeof value === 'string' && (SHED_LEVELS as readonly string[]).includes(value))) return value as PressureLevel | false
  throw new TypeError(`${name} must be ${SHED_LEVELS.map((l) => `'${l}'`).join(', ')} or false (received ${describe(value)})`)
}

function statusRoute(option: FastifyMemoryPressureOptions['exposeStatusRoute']): Required<Pick<StatusRouteOptions, 'url'>> & StatusRouteOptions | null {
  if (option === undefined || option === false) return null
  if (option === true) return { url: '/status' }
  if (typeof option === 'string') return { url: option }
  if (typeof option === 'object' && option !== null) return { ...option, url: option.url ?? '/status' }
  throw new TypeError(`exposeStatusRoute must be a boolean, a path or { url, routeOpts } (received ${describe(option)})`)
}

function validate(options: FastifyMemoryPressureOptions): void {
  // fastify passes its own registration options (prefix, logLevel, logSerializers) along.
  checkKeys(options, [
    'monitor', 'monitorOptions', 'shedAt', 'retryAfter', 'message', 'customError', 'pressureHandler', 'exposeStatusRoute',
    'prefix', 'logLevel', 'logSerializers',
  ])
  if (options.monitor !== undefined && !(options.monitor instanceof MemoryMonitor)) {
    throw new TypeError(`monitor must be a MemoryMonitor (received ${describe(options.monitor)})`)
  }
  if (options.monitorOptions !== undefined && (options.monitorOptions === null || typeof options.monitorOptions !== 'object')) {
    throw new TypeError(`monitorOptions must be an object (received ${describe(options.monitorOptions)})`)
  }
  if (options.retryAfter !== undefined && (typeof options.retryAfter !== 'number' || !Number.isInteger(options.retryAfter) || options.retryAfter < 0)) {
    throw new RangeError(`retryAfter must be a whole number of seconds, 0 or more (received ${describe(options.retryAfter)})`)
  }
  if (options.message !== undefined && typeof options.message !== 'string') {
    throw new TypeError(`message must be a string (received ${describe(options.message)})`)
  }
  if (options.customError !== undefined && typeof options.customError !== 'function') {
    throw new TypeError(`customError must be an error class (received ${describe(options.customError)})`)
  }
  if (options.pressureHandler !== undefined && typeof options.pressureHandler !== 'function') {
    throw new TypeError(`pressureHandler must be a function (received ${describe(options.pressureHandler)})`)
  }
}

const plugin: FastifyPluginAsync<FastifyMemoryPressureOptions> = async (fastify: FastifyInstance, options: FastifyMemoryPressureOptions) => {
  validate(options)
  const shedAt = checkShedAt('shedAt', options.shedAt ?? 'critical')
  const route = statusRoute(options.exposeStatusRoute)
  const retryAfter = options.retryAfter ?? 10
  const own = options.monitor === undefined
  const monitor = options.monitor ?? new MemoryMonitor({ levels: true, ...options.monitorOptions })
  try {
    // until() starts levels (with the monitor's own thresholds, or the defaults) when they are off,
    // and resolves at once: every level is at or below 'critical'.
    await monitor.until('critical')
  } catch (err) {
    if (own) await monitor.close()
    throw err
  }
  if (own) fastify.addHook('onClose', async () => monitor.close())

  const decorator: MemoryPressureDecorator = {
    monitor,
    get level() {
      return monitor.level
    },
    shedAt,
    snapshot: () => monitor.snapshot(),
  }
  const shedding = (at: PressureLevel | false): boolean => at !== false && levelRank(monitor.level) >= levelRank(at)
  fastify.decorate('memoryPressure', decorator)
  if (!fastify.hasDecorator('isUnderPressure')) fastify.decorate('isUnderPressure', () => shedding(shedAt))

  const makeError = (): Error => (options.customError !== undefined ? new options.customError() : new UnderPressureError(options.message))

  fastify.addHook('onRequest', (request, reply, done) => {
    const config = request.routeOptions.config as { memoryPressure?: RouteMemoryPressureConfig; pressureHandler?: unknown }
    const at = config.memoryPressure?.shedAt === undefined ? shedAt : config.memoryPressure.shedAt
    if (!shedding(at)) return done()
    const handler = typeof config.pressureHandler === 'function' ? (config.pressureHandler as PressureHandler) : options.pressureHandler
    if (handler !== undefined) {
      let result: unknown
      try {
        result = handler(request, reply, TYPE_MEMORY_PRESSURE, monitor.level)
      } catch (err) {
        return done(err as Error)
      }
      if (result instanceof Promise) {
        result.then(() => done(), (err: Error) => done(err))
      } else if (result === undefined || result === null) {
        done()
      } else {
        void reply.send(result)
      }
      return
    }
    void reply.code(503).header('Retry-After', String(retryAfter))
    done(makeError())
  })

  const levelsNow = (): { moderate: number; high: number; critical: number } | null => {
    const l = monitor.levels
    return l === null ? null : { moderate: l.moderate, high: l.high, critical: l.critical }
  }

  if (route !== null) {
    // Why the monitor ended, for the status route's degraded answer.
    let ended: MonitorCloseReason | null = null
    const onMonitorClose = (e: CloseEvent): void => {
      ended = e.reason
    }
    monitor.once('close', onMonitorClose)
    if (!own) fastify.addHook('onClose', async () => void monitor.off('close', onMonitorClose))
    fastify.get(route.url, route.routeOpts ?? {}, async (): Promise<StatusBody> => {
      // Never an error body: a failed read would carry the cgroup's path from the host.
      if (monitor.closed) return degraded(ended ?? 'closed')
      let s: MemorySnapshot
      try {
        s = monitor.snapshot()
      } catch {
        return degraded(monitor.closed ? (ended ?? 'closed') : 'unreadable')
      }
      return {
        status: 'ok',
        level: monitor.level,
        usage: s.usage,
        limit: Number.isFinite(s.limit) ? s.limit : null,
        workingSet: s.workingSet,
        levels: levelsNow(),
      }
    })
  }
}

/**
 * The fastify plugin. Register it at the root (it is not encapsulated: the hook applies to every
 * route, the decorators to every instance).
 *
 * @example
 * ```ts
 * import memoryPressure from 'node-memory-pressure/fastify'
 * await app.register(memoryPressure, { shedAt: 'critical', retryAfter: 5, exposeStatusRoute: true })
 * app.get('/healthz', { config: { memoryPressure: { shedAt: false } } }, () => 'ok')
 * ```
 */
export const fastifyMemoryPressure = fp(plugin, { fastify: '5.x', name: 'node-memory-pressure' })
export default fastifyMemoryPressure
