// Adaptive polling of a usage figure against byte thresholds: the fallback every backend shares when
// the kernel cannot compare usage itself (cgroup v2, a read-only v1 cgroupfs, a process's RSS).
// A poller may also follow allocation: read after V8's collections and let its timer sleep while
// usage is steady, so that a steady service pays almost no wake-ups.

import { performance } from 'node:perf_hooks'
import { onGc } from '../gc-observer.js'
import { POLL_OPTION_KEYS, checkKeys, checkTimerMs } from '../options.js'
import { describe } from '../size.js'
import type { Crossing, CrossingSignal, Direction, ThresholdWatch } from './types.js'

/** Options of adaptive polling. */
export interface PollOptions {
  /** Shortest interval between two reads, in milliseconds, used right at a threshold. Default 10. */
  minIntervalMs?: number
  /** Longest interval between two reads, in milliseconds, used far from every threshold. Default 1000. */
  maxIntervalMs?: number
  /**
   * Bytes usage is assumed able to grow in one `maxIntervalMs` even when it was seen flat: the
   * floor under the measured growth rate, so that a threshold a few MiB away is read often even
   * after a quiet spell. Default 8 MiB.
   */
  guardBytes?: number
  /**
   * When usage is read after V8's collections (cgroup v2, when the process is inside the watched
   * cgroup): the longest interval between two timed reads while usage is steady, in milliseconds.
   * It is the worst-case delay before memory that grows without V8 collecting (a native library,
   * another process in the cgroup) is first seen when no `memory.high` or PSI stall reports it;
   * once growth is seen, reads follow it at `minIntervalMs` to `maxIntervalMs`. Lower it when
   * such growth is likely and the cgroup has no `memory.high`; each period costs one wake-up.
   * Default 60000 (one wake-up a minute), or `maxIntervalMs` if that is longer.
   */
  idleIntervalMs?: number
}

/** Timers and clock, injectable so that tests can drive polling without waiting. */
export interface PollClock {
  /** Milliseconds, monotonic. Default `performance.now()`. */
  now(): number
  /** Schedules `fn` after `ms`; the handle must not keep the process alive. Default: an unref'd `setTimeout`. */
  setTimeout(fn: () => void, ms: number): unknown
  clearTimeout(handle: unknown): void
}

/** The options with their defaults applied. */
export interface ResolvedPollOptions {
  minIntervalMs: number
  maxIntervalMs: number
  guardBytes: number
  idleIntervalMs: number
}

/** A source of V8 collections: `subscribe` calls `fn` after collections and returns an unsubscribe. */
export interface GcSource {
  subscribe(fn: () => void): () => void
}

/**
 * V8's collections in this thread, from one shared `PerformanceObserver` of `'gc'` entries (Node
 * delivers them in batches after the collection, on the event loop). The observer exists only
 * while something subscribes.
 */
export const v8Collections: GcSource = {
  subscribe: (fn) => onGc(() => fn()),
}

/**
 * How a poller that follows allocation samples: after each V8 collection at most once per
 * `minIntervalMs × GC_GAP_FACTOR` (a collection storm costs at most ten reads a second at the
 * default), its growth estimate decays by half every `PEAK_HALF_LIFE_MS` of no growth, and a change
 * below `NOISE_BYTES` between reads is not growth (memcg charges in per-CPU batches of 64 pages,
 * `MEMCG_CHARGE_BATCH` in memcontrol.h, so usage jitters by that much with nothing allocated).
 */
export const FOLLOW = { GC_GAP_FACTOR: 10, PEAK_HALF_LIFE_MS: 15_000, NOISE_BYTES: 2 ** 20 } as const

const realClock: PollClock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
}

/** Validates the arguments of `watchThreshold` (every backend's): bytes above zero, a callback. */
export function checkWatchArgs(bytes: unknown, onCrossing: unknown): void {
  if (typeof bytes !== 'number' || !Number.isSafeInteger(bytes) || bytes <= 0) {
    throw new RangeError(`threshold must be a whole number of bytes above zero (received ${describe(bytes)})`)
  }
  if (typeof onCrossing !== 'function') throw new TypeError(`onCrossing must be a function (received ${describe(onCrossing)})`)
}

/** Validates poll options (naming the option and the value in errors) and applies defaults. */
export function resolvePollOptions(options: PollOptions = {}): ResolvedPollOptions {
  if (options === null || typeof options !== 'object') {
    throw new TypeError(`poll must be an object (received ${describe(options)})`)
  }
  checkKeys(options, POLL_OPTION_KEYS, 'poll.')
  const num = (name: keyof PollOptions, fallback: number, min: number): number => {
    const value = options[name] ?? fallback
    if (name !== 'guardBytes') return checkTimerMs(`poll.${name}`, value, fallback, min)
    if (typeof value !== 'number' || !Number.isFinite(value) || value < min) {
      throw new RangeError(`poll.${name} must be a finite number of at least ${min} (received ${describe(value)})`)
    }
    return value
  }
  const minIntervalMs = num('minIntervalMs', 10, 1)
  const maxIntervalMs = num('maxIntervalMs', 1000, 1)
  if (maxIntervalMs < minIntervalMs) {
    throw new RangeError(`poll.maxIntervalMs (${maxIntervalMs}) must be at least poll.minIntervalMs (${minIntervalMs})`)
  }
  // The default never undercuts a longer maxIntervalMs chosen on its own.
  const idleIntervalMs = num('idleIntervalMs', Math.max(60_000, maxIntervalMs), 1)
  if (idleIntervalMs < maxIntervalMs) {
    throw new RangeError(`poll.idleIntervalMs (${idleIntervalMs}) must be at least poll.maxIntervalMs (${maxIntervalMs})`)
  }
  return { minIntervalMs, maxIntervalMs, guardBytes: num('guardBytes', 8 * 2 ** 20, 1), idleIntervalMs }
}

/**
 * The next polling interval in milliseconds: half the time usage needs to reach the nearest
 * threshold at the recent growth rate (never below `guardBytes` per `maxIntervalMs`), bounded to
 * `[minIntervalMs, maxIntervalMs]`. With no threshold, `null`: nothing to poll for.
 *
 * @param distance bytes between usage and the nearest threshold (either side)
 * @param rate recent rate of change of usage, bytes per millisecond (absolute value)
 */
export function nextIntervalMs(distance: number | null, rate: number, options: ResolvedPollOptions): number | null {
  if (distance === null) return null
  const floor = options.guardBytes / options.maxIntervalMs
  const eta = Math.max(0, distance) / Math.max(rate, floor)
  return Math.min(options.maxIntervalMs, Math.max(options.minIntervalMs, eta / 2))
}

/**
 * The next interval of a poller that follows allocation: half the time usage needs to reach the
 * nearest threshold at `rate`, at least `minIntervalMs`, at most `maxIntervalMs` while usage is
 * growing and `idleIntervalMs` while it is steady (V8's collections and the kernel's wake-ups
 * stand in for the timer then). `null` without a threshold.
 *
 * @param distance bytes between usage and the nearest threshold (either side)
 * @param rate the growth rate to plan for, bytes per millisecond: the largest seen lately, decayed
 * @param growing whether the latest reads showed usage moving
 */
export function followIntervalMs(distance: number | null, rate: number, growing: boolean, options: ResolvedPollOptions): number | null {
  if (distance === null) return null
  const cap = growing ? options.maxIntervalMs : options.idleIntervalMs
  const eta = rate > 0 ? Math.max(0, distance) / rate : Infinity
  return Math.min(cap, Math.max(options.minIntervalMs, eta / 2))
}

interface PolledWatch {
  threshold: number
  above: boolean
  onCrossing: (crossing: Crossing) => void
  closed: boolean
}

/** @internal How a poller follows allocation: the collections it reads after. */
export interface FollowAllocation {
  /** V8's collections ({@link v8Collections}), or a stand-in in tests. */
  gc: GcSource
}

/**
 * Thresholds compared against a usage figure read on a timer whose interval adapts (see
 * {@link nextIntervalMs}) and whenever {@link ThresholdPoller.check} is called (a kernel wake-up).
 * The timer runs only while at least one threshold is watched, and never keeps the process alive.
 *
 * Following allocation (`follow`), usage is also read after V8's collections, and the timer plans
 * for the largest growth rate seen lately instead of an assumed one (see {@link followIntervalMs}):
 * while usage is steady it wakes once per `idleIntervalMs`.
 *
 * A crossing is reported when a read finds usage on the other side of a threshold than the
 * previous read did: a rise and fall between two reads is not seen (the precision the backend
 * reports says how far usage can move between reads).
 */
export class ThresholdPoller {
  readonly options: ResolvedPollOptions
  #read: () => number
  #onReadError: (err: unknown) => void
  #onTick: (() => void) | undefined
  #clock: PollClock
  #watches = new Set<PolledWatch>()
  #timer: unknown = null
  #timerDue = Infinity
  #timerSignal: CrossingSignal = 'poll'
  #last: { usage: number; time: number } | null = null
  #rate = 0
  #interval: number | null = null
  #closed = false
  #reads = 0
  #timedReads = 0
  #follow: FollowAllocation | undefined
  #unsubscribeGc: (() => void) | null = null
  /** Where growth is measured from: the last read that moved usage by NOISE_BYTES, or a quiet spell. */
  #anchor: { usage: number; time: number } | null = null
  #peak: { rate: number; time: number }
  #growing = false

  /**
   * @param read returns usage in bytes; may throw: `onReadError` gets the error, and polling goes on
   *   unless it closes the poller
   * @param onReadError called with whatever `read` threw
   * @param onTick called before each timed read (for backends that poll other files alongside)
   * @param follow read after V8's collections and let the timer sleep while usage is steady
   */
  constructor(read: () => number, onReadError: (err: unknown) => void, options: PollOptions = {}, clock: PollClock = realClock,
    onTick?: () => void, follow?: FollowAllocation) {
    this.options = resolvePollOptions(options)
    this.#read = read
    this.#onReadError = onReadError
    this.#clock = clock
    this.#onTick = onTick
    this.#follow = follow
    // Until growth is measured, plan for the guard rate; it decays like any measured peak.
    this.#peak = { rate: this.options.guardBytes / this.options.maxIntervalMs, time: clock.now() }
  }

  /** The interval of the next timed read in milliseconds, `null` when no timer runs. */
  get intervalMs(): number | null {
    return this.#interval
  }

  /** Usage reads done so far (timed and on demand). */
  get reads(): number {
    return this.#reads
  }

  /** Reads done because the timer fired (the poller's own wake-ups). */
  get timedReads(): number {
    return this.#timedReads
  }

  /** Recent rate of change of usage in bytes per millisecond (an exponential average). */
  get rate(): number {
    return this.#rate
  }

  /** Whether usage is read after V8's collections. */
  get followsAllocation(): boolean {
    return this.#follow !== undefined
  }

  /** Number of thresholds watched. */
  get size(): number {
    return this.#watches.size
  }

  /**
   * Watches `threshold` bytes. `usage` is usage now, read by the caller (so that a read failure
   * surfaces at registration); nothing is reported for the side it is on.
   */
  add(threshold: number, usage: number, onCrossing: (crossing: Crossing) => void): ThresholdWatch {
    const watch: PolledWatch = { threshold, above: usage >= threshold, onCrossing, closed: false }
    this.#last ??= { usage, time: this.#clock.now() }
    this.#anchor ??= this.#last
    this.#watches.add(watch)
    if (this.#follow !== undefined && this.#unsubscribeGc === null) this.#unsubscribeGc = this.#follow.gc.subscribe(() => this.#collected())
    this.#schedule()
    return {
      threshold,
      close: () => {
        if (watch.closed) return
        watch.closed = true
        this.#watches.delete(watch)
        if (this.#watches.size === 0) this.#idle()
      },
    }
  }

  /** Reads usage now and reports crossings as delivered by `signal`; reschedules the timer. */
  check(signal: CrossingSignal): void {
    if (this.#closed) return
    let usage: number
    try {
      usage = this.#read()
    } catch (err) {
      this.#stopTimer()
      this.#onReadError(err)
      // The backend closes the poller when the error is fatal; otherwise polling goes on.
      this.#schedule()
      return
    }
    this.#reads++
    const time = this.#clock.now()
    if (this.#last !== null && time > this.#last.time) {
      const instant = Math.abs(usage - this.#last.usage) / (time - this.#last.time)
      // Weighted toward the latest interval so that a burst shortens the next one at once.
      this.#rate = instant >= this.#rate ? instant : this.#rate * 0.5 + instant * 0.5
    }
    this.#last = { usage, time }
    if (this.#follow !== undefined) this.#measureGrowth(usage, time)
    const ups: PolledWatch[] = []
    const downs: PolledWatch[] = []
    for (const w of this.#watches) {
      const above = usage >= w.threshold
      if (above === w.above) continue
      w.above = above
      ;(above ? ups : downs).push(w)
    }
    // Rising usage passes lower thresholds first; falling usage passes higher ones first.
    ups.sort((a, b) => a.threshold - b.threshold)
    downs.sort((a, b) => b.threshold - a.threshold)
    const deliver = (w: PolledWatch, direction: Direction): void => {
      if (w.closed || this.#closed) return
      w.onCrossing({ threshold: w.threshold, direction, usage, coalesced: false, signal, time: performance.now() })
    }
    for (const w of ups) deliver(w, 'up')
    for (const w of downs) deliver(w, 'down')
    this.#schedule()
  }

  /** Stops the timer and forgets every threshold. Idempotent. */
  close(): void {
    if (this.#closed) return
    this.#closed = true
    for (const w of this.#watches) w.closed = true
    this.#watches.clear()
    this.#idle()
  }

  #idle(): void {
    this.#stopTimer()
    this.#unsubscribeGc?.()
    this.#unsubscribeGc = null
  }

  /** The growth rate to plan for: the largest measured lately, halved every PEAK_HALF_LIFE_MS. */
  #plannedRate(now: number): number {
    return this.#peak.rate * 2 ** (-Math.max(0, now - this.#peak.time) / FOLLOW.PEAK_HALF_LIFE_MS)
  }

  // Rates are taken over a movement of at least NOISE_BYTES, or over maxIntervalMs of stillness,
  // never between two reads a few milliseconds apart (a collection right after a timed read).
  #measureGrowth(usage: number, time: number): void {
    const anchor = this.#anchor ?? { usage, time }
    const moved = Math.abs(usage - anchor.usage)
    const elapsed = time - anchor.time
    if (moved >= FOLLOW.NOISE_BYTES && elapsed > 0) {
      const rate = moved / elapsed
      if (rate >= this.#plannedRate(time)) this.#peak = { rate, time }
      this.#growing = true
      this.#anchor = { usage, time }
    } else if (elapsed >= this.options.maxIntervalMs) {
      this.#growing = false
      this.#anchor = { usage, time }
    }
  }

  /** A V8 collection finished: read now, or at the end of the gap since the last read. */
  #collected(): void {
    if (this.#closed || this.#watches.size === 0) return
    const now = this.#clock.now()
    const gap = this.options.minIntervalMs * FOLLOW.GC_GAP_FACTOR
    const since = this.#last === null ? Infinity : now - this.#last.time
    if (since >= gap) {
      this.check('gc')
      return
    }
    const due = now + (gap - since)
    if (due < this.#timerDue) this.#arm(due - now, 'gc')
  }

  #nearest(): number | null {
    if (this.#watches.size === 0) return null
    if (this.#last === null) return 0
    let best = Infinity
    for (const w of this.#watches) best = Math.min(best, Math.abs(this.#last.usage - w.threshold))
    return best
  }

  #schedule(): void {
    this.#stopTimer()
    if (this.#closed) return
    const interval = this.#follow === undefined
      ? nextIntervalMs(this.#nearest(), this.#rate, this.options)
      : followIntervalMs(this.#nearest(), this.#plannedRate(this.#clock.now()), this.#growing, this.options)
    if (interval === null) return
    this.#arm(interval, 'poll')
  }

  #arm(ms: number, signal: CrossingSignal): void {
    this.#stopTimer()
    this.#interval = ms
    this.#timerSignal = signal
    this.#timerDue = this.#clock.now() + ms
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = null
      this.#timerDue = Infinity
      this.#timedReads++
      this.#onTick?.()
      this.check(this.#timerSignal)
    }, ms)
  }

  #stopTimer(): void {
    if (this.#timer !== null) this.#clock.clearTimeout(this.#timer)
    this.#timer = null
    this.#timerDue = Infinity
    this.#interval = null
  }
}
