// Adaptive polling of a usage figure against byte thresholds: the fallback every backend shares when
// the kernel cannot compare usage itself (cgroup v2, a read-only v1 cgroupfs, a process's RSS).

import { performance } from 'node:perf_hooks'
import { checkTimerMs } from '../options.js'
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
}

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
  return { minIntervalMs, maxIntervalMs, guardBytes: num('guardBytes', 8 * 2 ** 20, 1) }
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

interface PolledWatch {
  threshold: number
  above: boolean
  onCrossing: (crossing: Crossing) => void
  closed: boolean
}

/**
 * Thresholds compared against a usage figure read on a timer whose interval adapts (see
 * {@link nextIntervalMs}) and whenever {@link ThresholdPoller.check} is called (a kernel wake-up).
 * The timer runs only while at least one threshold is watched, and never keeps the process alive.
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
  #last: { usage: number; time: number } | null = null
  #rate = 0
  #interval: number | null = null
  #closed = false
  #reads = 0

  /**
   * @param read returns usage in bytes; may throw: `onReadError` gets the error, and polling goes on
   *   unless it closes the poller
   * @param onReadError called with whatever `read` threw
   * @param onTick called before each timed read (for backends that poll other files alongside)
   */
  constructor(read: () => number, onReadError: (err: unknown) => void, options: PollOptions = {}, clock: PollClock = realClock,
    onTick?: () => void) {
    this.options = resolvePollOptions(options)
    this.#read = read
    this.#onReadError = onReadError
    this.#clock = clock
    this.#onTick = onTick
  }

  /** The interval of the next timed read in milliseconds, `null` when no timer runs. */
  get intervalMs(): number | null {
    return this.#interval
  }

  /** Usage reads done so far (timed and on demand). */
  get reads(): number {
    return this.#reads
  }

  /** Recent rate of change of usage in bytes per millisecond (an exponential average). */
  get rate(): number {
    return this.#rate
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
    this.#watches.add(watch)
    this.#schedule()
    return {
      threshold,
      close: () => {
        if (watch.closed) return
        watch.closed = true
        this.#watches.delete(watch)
        if (this.#watches.size === 0) this.#stopTimer()
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
    this.#stopTimer()
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
    const interval = nextIntervalMs(this.#nearest(), this.#rate, this.options)
    this.#interval = interval
    if (interval === null) return
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = null
      this.#onTick?.()
      this.check('poll')
    }, interval)
  }

  #stopTimer(): void {
    if (this.#timer !== null) this.#clock.clearTimeout(this.#timer)
    this.#timer = null
    this.#interval = null
  }
}
