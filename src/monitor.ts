// The monitor: owns a backend, turns its crossings into typed events (emitter and async iterator),
// and is where levels and shrinking attach.

import { readFileSync } from 'node:fs'
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
import type { PollOptions } from './backends/poll.js'
import type { ProcessBackendOptions } from './backends/process.js'
import type { SimulatedBackendOptions } from './backends/simulated.js'
import type { EventEmitter } from 'eventemitter3'
import { findMemoryCgroup } from './cgroup/discover.js'
import { isWithin } from './cgroup/files.js'
import { announceMonitor, publishEvent } from './diagnostics.js'
import { type ErrorEvents, SafeEmitter, catchRejection, handlerError } from './emitter.js'
import { MemoryPressureError } from './errors.js'
import { THRESHOLD_OPTION_KEYS, argRangeError, argTypeError, checkKeys, checkOptionsObject, validateMonitorOptions } from './options.js'
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

/**
 * Why a monitor closed: `'closed'` (by `close()`), `'removed'` (the cgroup it opened was removed,
 * even if another was made at the same path), `'error'`, or `'moved'`: the monitor watched the
 * cgroup of its own process (no `cgroup` option) and the process is no longer in it (moved to
 * another cgroup, e.g. by a supervisor). A moved process's new memory is charged elsewhere, so the
 * monitor does not go on silently: it closes, `diagnostics()` says from where to where, and a new
 * monitor created then watches the new cgroup. Noticed at the next wake-up of the monitor (a
 * crossing, one of the watches it keeps around usage while levels or a percentage threshold are
 * on, an `'oom'`, a `snapshot()` call), since the kernel sends nothing.
 */
export type MonitorCloseReason = BackendCloseReason | 'moved'

/** Why a monitor closed. */
export interface CloseEvent {
  reason: MonitorCloseReason
}

/** Events of a {@link MemoryMonitor}. */
export interface MonitorEvents extends ErrorEvents {
  /** A threshold was crossed (or was already crossed at registration, `initial: true`). */
  threshold: (event: ThresholdEvent) => void
  /** The monitor closed: by `close()`, because its cgroup was removed, or its process moved (see {@link MonitorCloseReason}). Emitted once. */
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
  | DroppedEvent

/**
 * Yielded by {@link MemoryMonitor.events} in place of events dropped because the queue was full
 * (the consumer fell `maxQueued` events behind): `count` events, the oldest queued, are gone.
 */
export interface DroppedEvent {
  type: 'dropped'
  /** How many events were dropped since the iterator last yielded a value. */
  count: number
  /** `performance.now()` when this marker was yielded. */
  time: number
}

/** Options of {@link MemoryMonitor.events}. */
export interface EventsOptions {
  /** Ends the iteration when aborted. */
  signal?: AbortSignal
  /**
   * Most events held for a consumer that has not taken them yet (default 1024). Past it the
   * oldest is dropped and a {@link DroppedEvent} says how many, so an iterator nobody reads costs
   * bounded memory. Raise it when a consumer may fall behind in bursts and needs every crossing.
   */
  maxQueued?: number
}

const DEFAULT_MAX_QUEUED = 1024

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
  /**
   * Options of the `process` backend (its `budget` and polling) when it is the one chosen, by name
   * or by `'auto'` where no cgroup can be watched (macOS, Windows).
   */
  process?: Omit<ProcessBackendOptions, 'clock'>
  /**
   * How a backend that polls reads usage (cgroup v2, cgroup v1 where `cgroup.event_control` cannot
   * be written, the process backend): the interval bounds, and `idleIntervalMs`, how long the v2
   * timer sleeps while usage is steady (see {@link PollOptions}; docs/cgroup-v2.md says when to
   * lower it). No effect on the kernel's eventfd thresholds. `process.poll` wins for the process backend.
   */
  poll?: PollOptions
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
  /** The side of the threshold usage is on, as the crossings seen so far (all directions) leave it. */
  above: boolean
}

const MiB = 2 ** 20
/** Least time between two limit re-reads a polling backend's wake-ups cause, in milliseconds. */
const POLLED_LIMIT_READ_MS = 500

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
  #shrinkers = new Set<Shrinker>()
  #closed = false
  #policy: PolicyEngine
  #onBackendClose = (reason: BackendCloseReason): void => this.#finish(reason)
  #onBackendError = (error: MemoryPressureError): void => this.reportError(error)
  #onBackendOom = (event: OomEvent): void => {
    this.emit('oom', event)
    this.#woken()
  }
  #onBackendWakeup = (): void => {
    const now = performance.now()
    if (now - this.#lastPolledRead < POLLED_LIMIT_READ_MS || !this.#limitDependent()) return
    this.#lastPolledRead = now
    this.#woken()
  }
  /** Watches just above and below usage, so growth toward a limit lowered meanwhile wakes the monitor. */
  #sentinel: ThresholdWatch[] = []
  #sentinelAt = 0
  #sentinelQueued = false
  #lastPolledRead = Number.NEGATIVE_INFINITY
  /** The process's own memory cgroup when the monitor watches it (no `cgroup` option), and its /proc/self/cgroup text. */
  #own: { path: string; text: string } | null = null
  #moved: { from: string; to: string } | null = null
  #onBackendPressureLevel = (event: PressureLevelEvent): void => void this.emit('pressure-level', event)

  /** Use {@link createMemoryMonitor}. */
  constructor(options: MemoryMonitorOptions = {}) {
    super()
    validateMonitorOptions(options)
    const opened = openBackend(options.backend ?? 'auto', { cgroup: options.cgroup, simulated: options.simulated, process: options.process, poll: options.poll })
    this.#backend = opened.backend
    this.#owned = opened.owned
    this.#reasons = opened.reasons
    this.#backend.on('close', this.#onBackendClose)
    this.#backend.on('error', this.#onBackendError)
    this.#backend.on('oom', this.#onBackendOom)
    this.#backend.on('pressure-level', this.#onBackendPressureLevel)
    this.#backend.on('wakeup', this.#onBackendWakeup)
    if (options.cgroup === undefined && typeof options.backend !== 'object' && (this.#backend.name === 'cgroup-v1' || this.#backend.name === 'cgroup-v2')) {
      try {
        this.#own = { path: findMemoryCgroup().path, text: readFileSync('/proc/self/cgroup', 'latin1') }
      } catch {
        this.#own = null
      }
    }
    try {
      this.#policy = new PolicyEngine(this.#backend, options, {
        pressure: (e) => this.emit('pressure', e),
        shrink: (r) => this.emit('shrink', r),
        relief: (e) => this.emit('relief', e),
        error: (err) => this.reportError(err),
      })
      if (options.levels !== undefined && options.levels !== false) this.#policy.enable()
      for (const spec of options.thresholds ?? []) {
        if (typeof spec === 'object' && spec !== null) this.addThreshold(spec.threshold, { direction: spec.direction, handler: spec.handler })
        else this.addThreshold(spec)
      }
      this.#armSentinel(null)
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
   * noted since (e.g. a switch to polling when the kernel refused a threshold). `moved`: from which
   * cgroup to which the process moved, when that closed the monitor (see {@link MonitorCloseReason}).
   */
  diagnostics(): { backend: BackendName; cgroup: string; reasons: string[]; moved?: { from: string; to: string } } {
    const notes = (this.#backend as { notes?: readonly string[] }).notes ?? []
    const later = notes.map((n) => `${this.#backend.name}: ${n}`).filter((n) => !this.#reasons.includes(n))
    const out = { backend: this.#backend.name, cgroup: this.#backend.cgroup, reasons: [...this.#reasons, ...later] }
    if (this.#moved === null) return out
    const { from, to } = this.#moved
    out.reasons.push(`the process moved from ${from} to ${to}, outside the cgroup watched: the monitor closed (reason 'moved')`)
    return { ...out, moved: { from, to } }
  }

  /**
   * The pressure level: `'normal'`, `'moderate'`, `'high'` or `'critical'`, the higher of the
   * cgroup's (decided on the basis, working set by default) and the heap's (V8's old generation
   * against its limit, see `heapLimit`), each with hysteresis. Always `'normal'` while levels are
   * off and once the monitor is closed.
   */
  get level(): PressureLevel {
    // A closed monitor watches nothing: its last level would hold forever (a plugin shedding on it).
    return this.#closed ? 'normal' : this.#policy.level
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
   * The same shrinker object registered again while it is registered throws (`TypeError`
   * `ERR_INVALID_ARG_VALUE`): it would be asked twice in every cycle.
   *
   * @returns a function that unregisters the shrinker (and a `Disposable`)
   * @throws TypeError for a malformed shrinker or one already registered; `ERR_NO_LIMIT` when
   *   levels written in percent start without a cgroup limit and `heapLimit` is `false`
   */
  register(shrinker: Shrinker): Unsubscribe {
    this.#assertOpen()
    if (this.#shrinkers.has(shrinker)) {
      throw argTypeError(`shrinker ${describe(shrinker?.name)} is already registered on this monitor (unregister it first)`, 'ERR_INVALID_ARG_VALUE')
    }
    const off = this.#policy.register(shrinker)
    this.#shrinkers.add(shrinker)
    this.#armSentinel(null)
    const unregister = (): void => {
      off()
      this.#shrinkers.delete(shrinker)
    }
    return Object.assign(unregister, { [Symbol.dispose]: unregister })
  }

  /**
   * Resolves once the level is `level` or lower (at once if it already is): `await
   * monitor.until('normal')`. Rejects with the signal's reason when `signal` aborts and with
   * `ERR_CLOSED` when the monitor closes. Starts levels with the defaults if they are off.
   */
  until(level: PressureLevel, options: { signal?: AbortSignal } = {}): Promise<void> {
    if (this.#closed) return Promise.reject(new MemoryPressureError('ERR_CLOSED', 'the monitor is closed'))
    const waiting = this.#policy.until(level, options?.signal)
    this.#armSentinel(null)
    return waiting
  }

  /** Reads usage, limit, working set and page cache now (and moves percentage thresholds if the limit changed). */
  snapshot(): MemorySnapshot {
    this.#assertOpen()
    const snapshot = this.#backend.snapshot()
    this.#wakeup(snapshot)
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
    checkOptionsObject('options', options)
    checkKeys(options, THRESHOLD_OPTION_KEYS)
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
    const bytes = resolveThreshold(parsed, before.limit, 'threshold', this.#backend.cgroup)
    const entry: Entry = {
      threshold: bytes,
      parsed,
      limit: before.limit,
      direction,
      handler: options.handler,
      watch: this.#backend.watchThreshold(bytes, (crossing) => this.#deliver(entry, crossing)),
      above: before.usage >= bytes,
    }
    this.#entries.add(entry)
    const now = this.#backend.snapshot()
    entry.above = now.usage >= bytes
    if (parsed.kind === 'percent') this.#armSentinel(now.usage)
    if (direction !== 'down') {
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
      if (entry.parsed.kind === 'percent' && !this.#closed) this.#armSentinel(null)
    }
    return Object.assign(unsubscribe, { [Symbol.dispose]: unsubscribe })
  }

  /**
   * An async iterator over the monitor's events, ending when the monitor closes or `signal` aborts.
   * Events are queued from the moment this is called until they are consumed, at most
   * `maxQueued` of them (see {@link EventsOptions}): when the queue is full the oldest event is
   * dropped, and the next value the iterator yields is `{ type: 'dropped', count }`, counting the
   * events dropped since the last one it yielded.
   *
   * @throws RangeError (`ERR_OUT_OF_RANGE`) for a `maxQueued` that is not a whole number from 1 to 2^32−1
   */
  events(options: EventsOptions = {}): AsyncIterableIterator<MonitorEvent> {
    checkOptionsObject('options', options)
    checkKeys(options, ['signal', 'maxQueued'])
    const max = options.maxQueued ?? DEFAULT_MAX_QUEUED
    if (typeof max !== 'number' || !Number.isInteger(max) || max < 1 || max > 2 ** 32 - 1) {
      throw argRangeError(`maxQueued must be a whole number from 1 to 2^32-1 (received ${describe(max)})`)
    }
    if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) {
      throw argTypeError(`signal must be an AbortSignal (received ${describe(options.signal)})`)
    }
    const queue: MonitorEvent[] = []
    let dropped = 0
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
      // Drop the oldest: what a consumer that fell behind needs most is the present.
      if (queue.length >= max) {
        queue.shift()
        dropped++
      }
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
          if (dropped > 0) {
            const count = dropped
            dropped = 0
            return { value: { type: 'dropped', count, time: performance.now() }, done: false }
          }
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
        dropped = 0
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
   * Resolves once every fd the monitor opened is closed (see {@link MemoryMonitor.registered}).
   * Idempotent.
   */
  async close(): Promise<void> {
    this.#finish('closed')
    // v1 registrations are written off the loop; their fds close once the writes are back.
    await this.registered()
  }

  /**
   * Resolves once every threshold registration in progress has reached the kernel. On cgroup v1 a
   * registration waits in the kernel for an RCU grace period (tens of milliseconds), so it is
   * written off the event loop: a threshold is watched from the call that adds it (a crossing
   * while it is being registered is delivered once it is, with `signal: 'poll'`), and by the
   * kernel itself from when this resolves. Resolves at once on other backends.
   */
  async registered(): Promise<void> {
    await (this.#backend as { idle?: () => Promise<void> }).idle?.()
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }

  #deliver(entry: Entry, crossing: Crossing): void {
    if (!this.#entries.has(entry)) return
    const snapshot = this.#read()
    if (snapshot === null) return
    // The crossing's usage is the one read at the wake-up; the rest is read just after.
    snapshot.usage = crossing.usage
    const threshold = entry.threshold
    this.#wakeup(snapshot)
    // A limit changed since: the crossing was of bytes resolved against the old one, and the move
    // to the new bytes was compared with usage in #followLimit instead (no stale event).
    if (!this.#entries.has(entry) || entry.threshold !== threshold) return
    entry.above = crossing.direction === 'up'
    if (entry.direction !== 'both' && entry.direction !== crossing.direction) return
    this.#dispatch(entry, this.#event(entry.threshold, crossing.direction, snapshot, false, crossing.coalesced, crossing.signal, crossing.time))
  }

  /** A snapshot, or `null` (with the error reported unless the monitor or its backend closed). */
  #read(): MemorySnapshot | null {
    try {
      return this.#backend.snapshot()
    } catch (err) {
      if (!this.#backend.closed && !this.#closed) {
        this.reportError(err instanceof MemoryPressureError ? err : new MemoryPressureError('ERR_SYSCALL', String(err), { cause: err }))
      }
      return null
    }
  }

  /** A wake-up with nothing of its own to deliver: re-read, and act on what the kernel never announces. */
  #woken(): void {
    if (this.#closed) return
    const snapshot = this.#read()
    if (snapshot !== null) this.#wakeup(snapshot)
  }

  /**
   * At every wake-up: the process may have moved out of the cgroup watched, and the limit may
   * have changed (the kernel announces neither); then the watches around usage follow it.
   */
  #wakeup(snapshot: MemorySnapshot): void {
    if (this.#closed || this.#checkMoved()) return
    this.#followLimit(snapshot)
    this.#armSentinel(snapshot.usage)
  }

  /** True (and the monitor closed with reason `'moved'`) when its own process left the cgroup watched. */
  #checkMoved(): boolean {
    const own = this.#own
    if (own === null) return false
    let text: string
    try {
      text = readFileSync('/proc/self/cgroup', 'latin1')
      if (text === own.text) return false
      const now = findMemoryCgroup().path
      own.text = text
      if (now === own.path || isWithin(this.#backend.cgroup, now)) {
        own.path = now
        return false
      }
      this.#moved = { from: own.path, to: now }
    } catch {
      return false
    }
    this.#finish('moved')
    return true
  }

  /** Levels or a percentage threshold depend on the limit. */
  #limitDependent(): boolean {
    if (this.#policy?.enabled === true) return true
    for (const entry of this.#entries) if (entry.parsed.kind === 'percent') return true
    return false
  }

  /**
   * Keeps a watch a little above usage (and one below, so that it follows usage down) while
   * anything depends on the limit, on backends where a watch costs no polling: a limit lowered
   * toward usage has no notification, and the thresholds resolved against the old limit may all
   * lie beyond the new one. About 1/128 of usage (at least 1 MiB): wake-ups while memory grows,
   * none while it is steady. `usage`: where usage is, `null` to read it.
   */
  #armSentinel(usage: number | null): void {
    if (this.#closed || this.#backend.precision.kind !== 'kernel' || !this.#limitDependent()) {
      this.#closeSentinel()
      return
    }
    let at = usage
    if (at === null) {
      const snapshot = this.#read()
      if (snapshot === null) return
      at = snapshot.usage
    }
    const step = Math.max(MiB, Math.ceil(at / 128))
    if (this.#sentinel.length > 0 && Math.abs(at - this.#sentinelAt) < step / 2) return
    this.#closeSentinel()
    this.#sentinelAt = at
    const wake = (): void => {
      if (this.#sentinelQueued) return
      this.#sentinelQueued = true
      queueMicrotask(() => {
        this.#sentinelQueued = false
        this.#woken()
      })
    }
    try {
      this.#sentinel.push(this.#backend.watchThreshold(at + step, wake))
      if (at - 2 * step > 0) this.#sentinel.push(this.#backend.watchThreshold(at - 2 * step, wake))
    } catch (err) {
      if (!this.#backend.closed) this.reportError(err instanceof MemoryPressureError ? err : new MemoryPressureError('ERR_SYSCALL', String(err), { cause: err }))
    }
  }

  #closeSentinel(): void {
    for (const w of this.#sentinel) w.close()
    this.#sentinel = []
  }

  /** Re-resolves percentage thresholds whose limit differs from `snapshot.limit`; see `addThreshold`. */
  #followLimit(snapshot: MemorySnapshot): void {
    this.#policy?.noticeLimit(snapshot.limit)
    for (const entry of this.#entries) {
      if (entry.parsed.kind !== 'percent' || entry.limit === snapshot.limit) continue
      let bytes: number
      try {
        bytes = resolveThreshold(entry.parsed, snapshot.limit, 'threshold', this.#backend.cgroup)
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
      // Compared with the side the delivered crossings left usage on, not with the old bytes: a
      // crossing of the old bytes that was not delivered (see #deliver) moved nothing.
      const above = snapshot.usage >= bytes
      const direction: Direction | null = above === entry.above ? null : above ? 'up' : 'down'
      entry.above = above
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
        catchRejection(entry.handler(event), (err) => this.reportError(handlerError(err)))
      } catch (err) {
        this.reportError(handlerError(err))
      }
    }
    this.emit('threshold', event)
  }

  #finish(reason: MonitorCloseReason, emit = true): void {
    if (this.#closed) return
    this.#closed = true
    this.#closeSentinel()
    this.#policy?.close()
    for (const entry of this.#entries) entry.watch.close()
    this.#entries.clear()
    this.#backend.off('close', this.#onBackendClose)
    this.#backend.off('error', this.#onBackendError)
    this.#backend.off('oom', this.#onBackendOom)
    this.#backend.off('pressure-level', this.#onBackendPressureLevel)
    this.#backend.off('wakeup', this.#onBackendWakeup)
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
