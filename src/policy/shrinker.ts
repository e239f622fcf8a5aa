// Shrinkers: the application's memory that is cheap to give back (caches, pools, indexes), asked in
// priority order by the shrink cycle, and the report each cycle produces.

import type { MemorySnapshot } from '../backends/types.js'
import { describe } from '../size.js'
import type { HeapReduction } from './heap.js'
import type { PressureBasis, PressureLevel } from './levels.js'

/** What a shrinker is asked to give back. Sizes in bytes. */
export interface ShrinkRequest {
  /** The level of the cycle (it can rise while the cycle runs; later shrinkers see the new one). */
  level: PressureLevel
  /**
   * This shrinker's share of what must be freed: the bytes still uncovered by the shrinkers asked
   * before it in this cycle. At `'critical'` every shrinker is asked, even with a share of 0.
   */
  targetBytes: number
  /**
   * The share of its own size to give back, from 0 to 1: `targetBytes / size()` when the shrinker
   * has a `size()`, otherwise a default by level (`'moderate'` 0.25, `'high'` 0.5, `'critical'` 0.9).
   */
  fraction: number
  /** Aborts when the shrinker's time is up (reason: `MemoryPressureError` `ERR_TIMEOUT`) or the monitor closes (`ERR_CLOSED`). */
  signal: AbortSignal
  /** Number of the cycle, from 1. */
  cycle: number
}

/** Memory an application can give back on request. */
export interface Shrinker {
  /** Shown in reports. */
  name: string
  /** Lower runs first: the cheapest memory to give back. Default 0. */
  priority?: number
  /** Bytes this shrinker holds now, if it knows; `undefined` when it does not. */
  size?(): number | undefined
  /**
   * Frees memory and returns (or resolves to) the bytes it believes it freed; a non-number counts
   * as unknown. It should drop references only: the cycle runs the garbage collector afterwards.
   */
  shrink(request: ShrinkRequest): number | undefined | void | Promise<number | undefined | void>
  /**
   * Called when the monitor's level changes, after the `'pressure'` listeners: lets a shrinker
   * hold what it gave back while pressure lasts and grow again when it ends (the lru-cache
   * plugin's `hold`). Must not throw (what it throws goes to the monitor's `'error'`).
   */
  levelChanged?(level: PressureLevel, previous: PressureLevel): void
}

/** What one shrinker did in one cycle. */
export interface ShrinkerResult {
  name: string
  priority: number
  /** `targetBytes` of its request. */
  requestedBytes: number
  /** What it returned, or `null` when it returned no number, threw or timed out. */
  reported: number | null
  /** What it threw or rejected with (the cycle went on). */
  error?: unknown
  /** True when it had not finished at its timeout (the cycle went on without it). */
  timedOut?: true
  /** Time it took, in milliseconds of the monitor's clock (up to the timeout). */
  ms: number
}

/** The report of one shrink cycle (the `'shrink'` event). Sizes in bytes, times in milliseconds. */
export interface ShrinkReport {
  /** Number of the cycle, from 1. */
  cycle: number
  /**
   * The level the cycle started at (or the highest seen while it ran). The shrinkers were asked at
   * the level the first collection left (see `collectFirst`), which their requests show.
   */
  level: PressureLevel
  /** The level after the cycle, from the snapshot taken after heap reduction. */
  levelAfter: PressureLevel
  /** What levels are decided on. */
  basis: PressureBasis
  /** Bytes the cycle set out to free (raised by notifications that arrived while it ran). */
  requestedBytes: number
  /** Sum of what the shrinkers reported. */
  reportedBytes: number
  /** Measured: the basis before minus the basis after (negative when memory grew meanwhile). */
  freedBytes: number
  /**
   * Measured: what the collection before the shrinkers gave back (basis before minus basis after
   * it); 0 when `collectFirst` or heap reduction is off.
   */
  collectedBytes: number
  /**
   * Free allocator memory counted as available in `after` (see `allocatorFree`; 0 when not
   * counted). `freedBytes` and `collectedBytes` include what went to the allocator's free lists.
   */
  allocatorFreeBytes: number
  /** Every shrinker asked, in order. */
  shrinkers: ShrinkerResult[]
  /**
   * The cycle's heap reduction: when it ran two (before and after the shrinkers), both as one
   * (times added, `mallocTrim` the later result unless that one was `'skipped'`, `…Before` of the
   * first and `…After` of the second); `null` when turned off or when the last one failed (see
   * `heapError`).
   */
  heap: HeapReduction | null
  /** How many heap reductions the cycle ran: 0 (off), 1, or 2 (before and after the shrinkers). */
  heapRuns: number
  /** What a heap reduction threw, if one did (the later one when both did). */
  heapError?: unknown
  /** Snapshots before the first shrinker and after heap reduction. */
  before: MemorySnapshot
  after: MemorySnapshot
  /** Notifications that arrived while the cycle ran and updated its level or target. */
  updates: number
  /** Clock time at the start, and the cycle's duration. */
  time: number
  durationMs: number
}

/** Checks a shrinker given to `register()`; throws `TypeError`/`RangeError` naming the field. */
export function validateShrinker(shrinker: unknown): asserts shrinker is Shrinker {
  if (shrinker === null || typeof shrinker !== 'object') {
    throw new TypeError(`shrinker must be an object { name, priority, shrink } (received ${describe(shrinker)})`)
  }
  const s = shrinker as Record<string, unknown>
  if (typeof s.name !== 'string' || s.name === '') {
    throw new TypeError(`shrinker.name must be a non-empty string (received ${describe(s.name)})`)
  }
  if (s.priority !== undefined && (typeof s.priority !== 'number' || !Number.isFinite(s.priority))) {
    throw new TypeError(`shrinker.priority must be a finite number (received ${describe(s.priority)})`)
  }
  if (typeof s.shrink !== 'function') {
    throw new TypeError(`shrinker.shrink must be a function (received ${describe(s.shrink)})`)
  }
  if (s.size !== undefined && typeof s.size !== 'function') {
    throw new TypeError(`shrinker.size must be a function (received ${describe(s.size)})`)
  }
  if (s.levelChanged !== undefined && typeof s.levelChanged !== 'function') {
    throw new TypeError(`shrinker.levelChanged must be a function (received ${describe(s.levelChanged)})`)
  }
}

/** Default share of its own size a shrinker without `size()` is asked for, by level. */
export const DEFAULT_FRACTIONS: Readonly<Record<PressureLevel, number>> = { normal: 0, moderate: 0.25, high: 0.5, critical: 0.9 }
