// The clock the policy reads time and sets timers with (cool-downs, shrinker timeouts, re-checks),
// injectable so that tests move time by hand instead of sleeping.

import { performance } from 'node:perf_hooks'

/** A handle returned by {@link Clock.setTimeout}; opaque to the policy. */
export type TimerHandle = unknown

/**
 * Time and timers for the policy engine. Times are milliseconds on a monotonic scale (the default
 * is `performance.now()`); only differences are used.
 */
export interface Clock {
  /** Current time in milliseconds. */
  now(): number
  /** Calls `fn` once after `ms` milliseconds. The default clock's timers do not keep the process alive. */
  setTimeout(fn: () => void, ms: number): TimerHandle
  /** Cancels a timer; a handle that already fired or was cancelled is ignored. */
  clearTimeout(handle: TimerHandle): void
}

/** `performance.now()` and unref'd Node timers. */
export const systemClock: Clock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
}

interface ManualTimer {
  at: number
  seq: number
  fn: () => void
}

/**
 * A clock that moves only when told to: for tests of code that uses the policy (a monitor with
 * `clock: new ManualClock()`), so that cool-downs and timeouts pass without waiting.
 *
 * @example
 * ```ts
 * const clock = new ManualClock()
 * const monitor = createMemoryMonitor({ backend: sim, levels: true, clock })
 * clock.advance(5_000) // every timer due by then runs, in order
 * ```
 */
export class ManualClock implements Clock {
  #now: number
  #seq = 0
  #timers = new Set<ManualTimer>()

  /** @param start - the initial time in milliseconds (default 0) */
  constructor(start = 0) {
    this.#now = start
  }

  now(): number {
    return this.#now
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    const timer: ManualTimer = { at: this.#now + Math.max(0, ms), seq: this.#seq++, fn }
    this.#timers.add(timer)
    return timer
  }

  clearTimeout(handle: TimerHandle): void {
    this.#timers.delete(handle as ManualTimer)
  }

  /** Number of timers not yet run. */
  get pending(): number {
    return this.#timers.size
  }

  /**
   * Moves time forward by `ms` milliseconds, running every timer that falls due on the way, earliest
   * first (timers they set are run too if due).
   */
  advance(ms: number): void {
    if (!(ms >= 0)) throw new RangeError(`ms must be a number of milliseconds of 0 or more (received ${String(ms)})`)
    const end = this.#now + ms
    for (;;) {
      let next: ManualTimer | undefined
      for (const t of this.#timers) {
        if (t.at <= end && (next === undefined || t.at < next.at || (t.at === next.at && t.seq < next.seq))) next = t
      }
      if (next === undefined) break
      this.#timers.delete(next)
      this.#now = Math.max(this.#now, next.at)
      next.fn()
    }
    this.#now = end
  }
}

/** Checks that `value` has the three functions of a {@link Clock}. */
export function isClock(value: unknown): value is Clock {
  if (value === null || typeof value !== 'object') return false
  const c = value as Record<string, unknown>
  return typeof c.now === 'function' && typeof c.setTimeout === 'function' && typeof c.clearTimeout === 'function'
}
