// The monitor: owns a backend, turns its crossings into typed events (emitter and async iterator),
// and is where levels and shrinking attach.

import { performance } from 'node:perf_hooks'
import { type BackendChoice, openBackend } from './backends/index.js'
import type {
  BackendCloseReason,
  BackendName,
  Crossing,
  CrossingSignal,
  Direction,
  MemoryBackend,
  MemorySnapshot,
  OomEvent,
  PressureLevelEvent,
  ThresholdWatch,
} from './backends/types.js'
import type { SimulatedBackendOptions } from './backends/simulated.js'
import type { EventEmitter } from 'eventemitter3'
import { announceMonitor, publishEvent } from './diagnostics.js'
import { type ErrorEvents, SafeEmitter, handlerError } from './emitter.js'
import { MemoryPressureError } from './errors.js'
import { type HeapLevelBytes, type LevelBytes, PolicyEngine, type PolicyOptions, type PressureEvent, type ReliefEvent } from './policy/engine.js'
import type { PressureLevel } from './policy/levels.js'
import type { HeapReading, ShrinkReport, Shrinker } from './policy/shrinker.js'
import { type ParsedThreshold, type Threshold, describe, parseThreshold, resolveThreshold } from './size.js'

/** Which crossings a threshold subscription wants. */
export type DirectionFilter = Direction | 'both'

/** A threshold crossing, as handlers and `'threshold'` listeners receive it. Sizes in bytes. */
export interface ThresholdEvent {
  /** The threshold, resolved to bytes. */
  threshold: number
  /** Usage read after the wake-up (page cache included). */
  usage: number
  /** The effective limit; `Infinity` when there is none. */
  limit: number
  /** Usage minus inactive page cache. */
  workingSet: number
  /** Which way usage crossed. */
  direction: Direction
  /** True for the event sent at registration because usage was already above an `'up'` threshold. */
  initial: boolean
  /** True when the kernel reported this crossing together with others (see {@link Crossing.coalesced}). */
  coalesced: boolean
  /**
   * What delivered it; `'initial'` for the registration-time event; `'limit'` when a percentage
   * threshold moved across usage because the limit changed (see {@link MemoryMonitor.addThreshold}).
   */
  signal: CrossingSignal | 'initial' | 'limit'
  /** The backend that saw it. */
  backend: BackendName
  /** Filesystem path of the cgroup watched. */
  cgroup: string
  /** `performance.now()` at delivery. */
  time: number
}

/** Why a monitor closed. */
export interface CloseEvent {
  reason: BackendCloseReason
}

/** Events of a {@link MemoryMonitor}. */
export interface MonitorEvents extends ErrorEvents {
  /** A threshold was crossed (or was already crossed at registration, `initial: true`). */
  threshold: (event: ThresholdEvent) => void
  /** The monitor closed: by `close()`, or because its cgroup was removed. Emitted once. */
  close: (event: CloseEvent) => void
  /** A handler threw, or the backend reported a failure. The monitor goes on. */
  error: (error: MemoryPressureError) => void
  /** The kernel reported an OOM in the watched cgroup (cgroup v1 `memory.oom_control`, v2 `memory.events`). */
  oom: (event: OomEvent) => void
  /** A v1 `memory.pressure_level` notification (registered on the backend with `watchPressureLevel`). */
  'pressure-level': (event: PressureLevelEvent) => void
  /** The pressure level changed (levels on: see {@link MemoryMonitorOptions.levels}). */
  pressure: (event: PressureEvent) => void
  /** A shrink cycle finished: what each shrinker reported, heap reduction, bytes freed as measured. */
  shrink: (report: ShrinkReport) => void
  /** The basis fell below moderate − hysteresis: caches may grow again. Follows the `'pressure'` event to `'normal'`. */
  relief: (event: ReliefEvent) => void
}

/** What the async iterator of a monitor yields. */
export type MonitorEvent =
  | ({ type: 'threshold' } & ThresholdEvent)
  | ({ type: 'close' } & CloseEvent)
  | ({ type: 'pressure' } & PressureEvent)
  | ({ type: 'shrink' } & ShrinkReport)
  | ({ type: 'relief' } & ReliefEvent)

/** Options of one threshold subscription. */
export interface ThresholdOptions {
  /** Crossings to report: `'up'` (default), `'down'` or `'both'`. */
  direction?: DirectionFilter
  /** Called for this threshold's events only (in addition to the monitor's `'threshold'` event). */
  handler?: (event: ThresholdEvent) => void | Promise<void>
}

/** A threshold given in the monitor's options. */
export interface ThresholdSpec extends ThresholdOptions {
  threshold: Threshold
}

/** Options of {@link createMemoryMonitor}; levels and shrinking are in {@link PolicyOptions}. */
export interface MemoryMonitorOptions extends PolicyOptions {
  /**
   * Which backend: `'auto'` (default: the best one that can run here; throws
   * `ERR_BACKEND_UNAVAILABLE` with every reason when none can), a backend name, or a backend
   * object (left open when the monitor closes: its creator owns it).
   */
  backend?: BackendChoice
  /**
   * Filesystem path of the cgroup to watch. Default: the cgroup holding the effective limit of the
   * process's own memory cgroup (the container's or pod's limit), else the process's own.
   */
  cgroup?: string
  /** Thresholds to watch from the start. */
  thresholds?: ReadonlyArray<Threshold | ThresholdSpec>
  /** Options of the simulated backend when `backend` is `'simulated'`. */
  simulated?: SimulatedBackendOptions
}

/** Ends a subscription; idempotent. Also a `Disposable`, for `using`. */
export type Unsubscribe = (() => void) & Disposable

interface Entry {
  threshold: number
  parsed: ParsedThreshold
  /** The limit `threshold` was resolved against. */
  limit: number
  direction: DirectionFilter
  handler: ((event: ThresholdEvent) => void | Promise<void>) | undefined
  watch: ThresholdWatch
}

const directions: readonly DirectionFilter[] = ['up', 'down', 'both']

/**
 * Watches memory of one cgroup through one backend. Create it with {@link createMemoryMonitor}.
 *
 * @example
 * ```ts
 * const monitor = createMemoryMonitor({ thresholds: ['80%', { threshold: '90%', direction: 'both' }] })
 * monitor.on('threshold', (e) => console.log(e.direction, e.threshold, e.usage))
 * for await (const e of monitor.events()) { ... }
 * await monitor.close()
 * ```
 */
export class MemoryMonitor extends SafeEmitter<MonitorEvents> {
  #backend: MemoryBackend
  #owned: boolean
  #reasons: string[]
  #entries = new Set<Entry>()
  #closed = false
  #policy: PolicyEngine
  #onBackendClose = (reason: BackendCloseReason): void => this.#finish(reason)
  #onBackendError = (error: MemoryPressureError): void => this.reportError(error)
  #onBackendOom = (event: OomEvent): void => void this.emit('oom', event)
  #onBackendPressureLevel = (event: PressureLevelEvent): void => void this.emit('pressure-level', event)

  /** Use {@link createMemoryMonitor}. */
  constructor(options: MemoryMonitorOptions = {}) {
    super()
    if (options === null || typeof options !== 'object') {
      throw new TypeError(`options must be an object (received ${describe(options)})`)
    }
    if (options.thresholds !== undefined && !Array.isArray(options.thresholds)) {
      throw new TypeError(`thresholds must be an array (received ${describe(options.thresholds)})`)
    }
    const opened = openBackend(options.backend ?? 'auto', { cgroup: options.cgroup, simulated: options.simulated })
    this.#backend = opened.backend
    this.#owned = opened.owned
    this.#reasons = opened.reasons
    this.#backend.on('close', this.#onBackendClose)
    this.#backend.on('error', this.#onBackendError)
    this.#backend.on('oom', this.#onBackendOom)
    this.#backend.on('pressure-level', this.#onBackendPressureLevel)
    try {
      this.#policy = new PolicyEngine(this.#backend, options, {
        pressure: (e) => this.emit('pressure', e),
        shrink: (r) => this.emit('shrink', r),
        relief: (e) => this.emit('relief', e),
        error: (err) => this.reportError(err),
      })
      if (options.levels !== undefined && options.levels !== false) this.#policy.enable()
      for (const spec of options.thresholds ?? []) {
        if (typeof spec === 'object' && spec !== null) this.addThreshold(spec.threshold, spec)
        else this.addThreshold(spec)
      }
    } catch (err) {
      this.#finish('closed', false)
      throw err
    }
    announceMonitor(this)
  }

  /** Emits to the listeners, then publishes on the event's diagnostics channel (`diagnostics.ts`). */
  override emit<T extends EventEmitter.EventNames<MonitorEvents>>(event: T, ...args: EventEmitter.EventArgs<MonitorEvents, T>): boolean {
    const delivered = super.emit(event, ...args)
    publishEvent(this, event as string, args[0])
    return delivered
  }

  /** The backend in use. */
  get backend(): BackendName {
    return this.#backend.name
  }

  /** Filesystem path of the cgroup watched. */
  get cgroup(): string {
    return this.#backend.cgroup
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#closed
  }

  /** How precisely thresholds are delivered by the backend in use. */
  get precision(): MemoryBackend['precision'] {
    return this.#backend.precision
  }

  /**
   * Why the backend was chosen and why others were skipped (for `'auto'`), then what the backend
   * noted since (e.g. a switch to polling when the kernel refused a threshold).
   */
  diagnostics(): { backend: BackendName; cgroup: string; reasons: string[] } {
    const notes = (this.#backend as { notes?: readonly string[] }).notes ?? []
    const later = notes.map((n) => `${this.#backend.name}: ${n}`).filter((n) => !this.#reasons.includes(n))
    return { backend: this.#backend.name, cgroup: this.#backend.cgroup, reasons: [...this.#reasons, ...later] }
  }

  /**
   * The pressure level: `'normal'`, `'moderate'`, `'high'` or `'critical'`, the higher of the
   * cgroup's (decided on the basis, working set by default) and the heap's (V8's old generation
   * against its limit, see `heapLimit`), each with hysteresis. Always `'normal'` while levels are off.
   */
  get level(): PressureLevel {
    return this.#policy.level
  }

  /**
   * The cgroup's level thresholds in bytes (resolved when levels started), or `null` while levels
   * are off or there is no cgroup limit to resolve them against.
   */
  get levels(): LevelBytes | null {
    return this.#policy.thresholds
  }

  /** The heap's level thresholds in bytes, or `null` while levels are off or `heapLimit` is `false`. */
  get heapLevels(): HeapLevelBytes | null {
    return this.#policy.heapThresholds
  }

  /** V8's heap as last learned (live size after the last major collection, limit, level), or `null` as for `heapLevels`. */
  get heap(): HeapReading | null {
    return this.#policy.heapReading
  }

  /**
   * Registers memory that can be given back. Shrinkers are asked in priority order (lower first)
   * when the level rises to `'moderate'` or above, until what they report covers the bytes to free
   * (at `'critical'` all of them); then the heap is reduced and the result measured and reported in
   * a `'shrink'` event. Starts levels with the defaults if they are off.
   *
   * @returns a function that unregisters the shrinker (and a `Disposable`)
   * @throws TypeError for a malformed shrinker; `ERR_NO_LIMIT` when levels start without a cgroup limit and `heapLimit` is `false`
   */
  register(shrinker: Shrinker): Unsubscribe {
    this.#assertOpen()
    const off = this.#policy.register(shrinker)
    return Object.assign(() => off(), { [Symbol.dispose]: () => off() })
  }

  /**
   * Resolves once the level is `level` or lower (at once if it already is): `await
   * monitor.until('normal')`. Rejects with the signal's reason when `signal` aborts and with
   * `ERR_CLOSED` when the monitor closes. Starts levels with the defaults if they are off.
   */
  until(level: PressureLevel, options: { signal?: AbortSignal } = {}): Promise<void> {
    if (this.#closed) return Promise.reject(new MemoryPressureError('ERR_CLOSED', 'the monitor is closed'))
    return this.#policy.until(level, options?.signal)
  }

  /** Reads usage, limit, working set and page cache now (and moves percentage thresholds if the limit changed). */
  snapshot(): MemorySnapshot {
    this.#assertOpen()
    const snapshot = this.#backend.snapshot()
    this.#followLimit(snapshot)
    return snapshot
  }

  /**
   * Watches a threshold. `threshold` is bytes, a size string (`'512MiB'`) or a percentage of the
   * effective limit (`'80%'`, resolved now). When usage is already at or above it and `'up'`
   * crossings are wanted, an event with `initial: true` follows right after registration (the
   * kernel itself reports nothing at registration).
   *
   * A percentage follows the limit (so do levels given in percent): when a snapshot shows a
   * different limit (read at every crossing, every level wake-up and every `snapshot()` call; the
   * kernel sends no event for a limit change), the
   * threshold is resolved again and re-armed, and if it moved across usage the crossing is
   * delivered with `signal: 'limit'`. A limit that goes away leaves the last resolution in force
   * and reports `ERR_NO_LIMIT` on `'error'`.
   *
   * @returns a function that unsubscribes (and a `Disposable`)
   */
  addThreshold(threshold: Threshold, options: ThresholdOptions = {}): Unsubscribe {
    this.#assertOpen()
    if (options === null || typeof options !== 'object') {
      throw new TypeError(`options must be an object (received ${describe(options)})`)
    }
    const direction = options.direction ?? 'up'
    if (!directions.includes(direction)) {
      throw new TypeError(`direction must be 'up', 'down' or 'both' (received ${describe(direction)})`)
    }
    if (options.handler !== undefined && typeof options.handler !== 'function') {
      throw new TypeError(`handler must be a function (received ${describe(options.handler)})`)
    }
    const parsed = parseThreshold(threshold)
    const before = this.#backend.snapshot()
    this.#followLimit(before)
    const bytes = resolveThreshold(parsed, before.limit)
    const entry: Entry = {
      threshold: bytes,
      parsed,
      limit: before.limit,
      direction,
      handler: options.handler,
      watch: this.#backend.watchThreshold(bytes, (crossing) => this.#deliver(entry, crossing)),
    }
    this.#entries.add(entry)
    if (direction !== 'down') {
      const now = this.#backend.snapshot()
      if (now.usage >= bytes) {
        queueMicrotask(() => {
          if (!this.#entries.has(entry)) return
          this.#dispatch(entry, this.#event(entry.threshold, 'up', now, true, false, 'initial'))
        })
      }
    }
    const unsubscribe = (): void => {
      if (!this.#entries.delete(entry)) return
      entry.watch.close()
    }
    return Object.assign(unsubscribe, { [Symbol.dispose]: unsubscribe })
  }

  /**
   * An async iterator over the monitor's events, ending when the monitor closes or `signal` aborts.
   * Events are queued from the moment this is called until they are consumed.
   */
  events(options: { signal?: AbortSignal } = {}): AsyncIterableIterator<MonitorEvent> {
    const queue: MonitorEvent[] = []
    let wake: (() => void) | null = null
    let done = this.#closed
    const onThreshold = (e: ThresholdEvent): void => push({ type: 'threshold', ...e })
    const onPressure = (e: PressureEvent): void => push({ type: 'pressure', ...e })
    const onShrink = (r: ShrinkReport): void => push({ type: 'shrink', ...r })
    const onRelief = (e: ReliefEvent): void => push({ type: 'relief', ...e })
    const onClose = (e: CloseEvent): void => {
      push({ type: 'close', ...e })
      done = true
    }
    const push = (e: MonitorEvent): void => {
      queue.push(e)
      wake?.()
    }
    const stop = (): void => {
      done = true
      this.off('threshold', onThreshold)
      this.off('pressure', onPressure)
      this.off('shrink', onShrink)
      this.off('relief', onRelief)
      this.off('close', onClose)
      options.signal?.removeEventListener('abort', stop)
      wake?.()
    }
    if (!done) {
      this.on('threshold', onThreshold)
      this.on('pressure', onPressure)
      this.on('shrink', onShrink)
      this.on('relief', onRelief)
      this.on('close', onClose)
      if (options.signal?.aborted) stop()
      else options.signal?.addEventListener('abort', stop, { once: true })
    }
    const iterator: AsyncIterableIterator<MonitorEvent> = {
      next: async () => {
        for (;;) {
          const value = queue.shift()
          if (value !== undefined) return { value, done: false }
          if (done) {
            stop()
            return { value: undefined, done: true }
          }
          await new Promise<void>((resolve) => (wake = resolve))
          wake = null
        }
      },
      return: async () => {
        stop()
        queue.length = 0
        return { value: undefined, done: true }
      },
      [Symbol.asyncIterator]() {
        return iterator
      },
    }
    return iterator
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<MonitorEvent> {
    return this.events()
  }

  /**
   * Stops every threshold, closes the backend (unless the caller passed it in) and emits `'close'`.
   * Idempotent.
   */
  async close(): Promise<void> {
    this.#finish('closed')
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }

  #deliver(entry: Entry, crossing: Crossing): void {
    if (!this.#entries.has(entry)) return
    if (entry.direction !== 'both' && entry.direction !== crossing.direction) return
    let snapshot: MemorySnapshot
    try {
      snapshot = this.#backend.snapshot()
    } catch (err) {
      if (this.#backend.closed || this.#closed) return
      this.reportError(err instanceof MemoryPressureError ? err : new MemoryPressureError('ERR_SYSCALL', String(err), { cause: err }))
      return
    }
    // The crossing's usage is the one read at the wake-up; the rest is read just after.
    snapshot.usage = crossing.usage
    this.#dispatch(entry, this.#event(entry.threshold, crossing.direction, snapshot, false, crossing.coalesced, crossing.signal, crossing.time))
    this.#followLimit(snapshot)
  }

  /** Re-resolves percentage thresholds whose limit differs from `snapshot.limit`; see `addThreshold`. */
  #followLimit(snapshot: MemorySnapshot): void {
    this.#policy?.noticeLimit(snapshot.limit)
    for (const entry of this.#entries) {
      if (entry.parsed.kind !== 'percent' || entry.limit === snapshot.limit) continue
      let bytes: number
      try {
        bytes = resolveThreshold(entry.parsed, snapshot.limit)
      } catch (err) {
        entry.limit = snapshot.limit
        this.reportError(err instanceof MemoryPressureError ? err : new MemoryPressureError('ERR_INVALID_THRESHOLD', String(err), { cause: err }))
        continue
      }
      const old = entry.threshold
      entry.limit = snapshot.limit
      if (bytes === old) continue
      entry.watch.close()
      entry.threshold = bytes
      try {
        entry.watch = this.#backend.watchThreshold(bytes, (crossing) => this.#deliver(entry, crossing))
      } catch (err) {
        this.#entries.delete(entry)
        this.reportError(err instanceof MemoryPressureError ? err : new MemoryPressureError('ERR_SYSCALL', String(err), { cause: err }))
        continue
      }
      const direction: Direction | null = snapshot.usage >= bytes && snapshot.usage < old ? 'up' : snapshot.usage < bytes && snapshot.usage >= old ? 'down' : null
      if (direction !== null && (entry.direction === 'both' || entry.direction === direction)) {
        queueMicrotask(() => {
          if (this.#entries.has(entry)) this.#dispatch(entry, this.#event(bytes, direction, snapshot, false, false, 'limit'))
        })
      }
    }
  }

  #event(
    threshold: number,
    direction: Direction,
    s: MemorySnapshot,
    initial: boolean,
    coalesced: boolean,
    signal: ThresholdEvent['signal'],
    time = performance.now(),
  ): ThresholdEvent {
    return {
      threshold,
      usage: s.usage,
      limit: s.limit,
      workingSet: Math.min(s.workingSet, s.usage),
      direction,
      initial,
      coalesced,
      signal,
      backend: this.#backend.name,
      cgroup: this.#backend.cgroup,
      time,
    }
  }

  #dispatch(entry: Entry, event: ThresholdEvent): void {
    if (entry.handler !== undefined) {
      try {
        const result = entry.handler(event)
        if (result instanceof Promise) result.catch((err: unknown) => this.reportError(handlerError(err)))
      } catch (err) {
        this.reportError(handlerError(err))
      }
    }
    this.emit('threshold', event)
  }

  #finish(reason: BackendCloseReason, emit = true): void {
    if (this.#closed) return
    this.#closed = true
    this.#policy?.close()
    for (const entry of this.#entries) entry.watch.close()
    this.#entries.clear()
    this.#backend.off('close', this.#onBackendClose)
    this.#backend.off('error', this.#onBackendError)
    this.#backend.off('oom', this.#onBackendOom)
    this.#backend.off('pressure-level', this.#onBackendPressureLevel)
    if (this.#owned) this.#backend.close()
    if (emit) this.emit('close', { reason })
  }

  #assertOpen(): void {
    if (this.#closed) throw new MemoryPressureError('ERR_CLOSED', 'the monitor is closed')
  }
}

/**
 * Creates a monitor on the best backend available (or the one named).
 *
 * @throws `MemoryPressureError` `ERR_BACKEND_UNAVAILABLE` (with `.reasons`) when no backend can run,
 *   `ERR_NO_CGROUP` when `cgroup` does not name a memory cgroup, `ERR_INVALID_THRESHOLD` /
 *   `ERR_NO_LIMIT` for a threshold that cannot be watched.
 */
export function createMemoryMonitor(options: MemoryMonitorOptions = {}): MemoryMonitor {
  return new MemoryMonitor(options)
}
