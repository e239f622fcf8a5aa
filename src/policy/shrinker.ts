// Shrinkers: the application's memory that is cheap to give back (caches, pools, indexes), asked in
// priority order by the shrink cycle, and the report each cycle produces.

import type { MemorySnapshot } from '../backends/types.js'
import { describe } from '../size.js'
import type { HeapReduction } from './heap.js'
import type { PressureBasis, PressureLevel } from './levels.js'

/** Which limit a request, a level or a cycle is about: the cgroup's, or V8's heap's. */
export type LimitKind = 'cgroup' | 'heap'

/** The heap as last learned: after V8's last major collection, or the cycle's own. Bytes. */
export interface HeapReading {
  /** The old generation's size after that collection (its live objects). */
  liveBytes: number
  /** The old generation's limit. */
  limitBytes: number
  /** The heap's own level. */
  level: PressureLevel
}

/** What a shrinker is asked to give back. Sizes in bytes. */
export interface ShrinkRequest {
  /** The level of the cycle (it can rise while the cycle runs; later shrinkers see the new one). */
  level: PressureLevel
  /**
   * The limit the request is for: `'heap'` when V8's heap is the nearer one, and `targetBytes` is
   * then bytes of JavaScript heap. A cache of Buffers frees mostly memory outside the heap, and can
   * give back less (or nothing) when asked for heap bytes.
   */
  limit: LimitKind
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
  /** What its `size()` said before the request (`null`: no `size()`, or not a number). */
  size: number | null
  /** `fraction` of its request. */
  fraction: number
  /** What it returned, or `null` when it returned no number, threw or timed out. */
  reported: number | null
  /** What it threw or rejected with (the cycle went on). */
  error?: unknown
  /** True when it had not finished at its timeout (the cycle went on without it). */
  timedOut?: true
  /** Time it took, in milliseconds of the monitor's clock (up to the timeout). */
  ms: number
}

/**
 * One limit's side of a cycle's request (see docs/how-it-works.md): the target the basis is held
 * at, the reserve that leaves below the limit, and what the basis exceeded the target by. Bytes.
 */
export interface LimitPlan {
  /** The limit (the cgroup's effective limit, or the old generation's). */
  limit: number
  /** The basis when the cycle started (cgroup: less the allocator's credit; heap: the live size as last learned). */
  before: number
  /** The basis the request was computed from: after the collection before the shrinkers, else `before`. */
  measured: number
  /** The threshold of the level the shrinkers were asked at, on this limit (`null` at `'normal'`). */
  threshold: number | null
  /** The hysteresis on this limit. */
  hysteresis: number
  /** The target T = threshold − hysteresis (`null` at `'normal'`: nothing to reach). */
  target: number | null
  /** The reserve = limit − T: the room above the threshold (limit − threshold) plus the hysteresis. */
  reserve: number | null
  /** What the basis exceeded the target by: `max(0, ceil(measured − target))`; 0 at `'normal'`. */
  excess: number
}

/** How a cycle made its request: the rule of docs/how-it-works.md, with its inputs. */
export interface ShrinkPlan {
  /** The level the shrinkers were asked at: the level the collection left (or the cycle's own). */
  level: PressureLevel
  /**
   * True when a collection ran before the shrinkers (and `measured` is after it). It runs only for
   * what V8 has not measured: for the cgroup, when `collectable` is at least its hysteresis (or
   * unknown); for the heap alone, when its live size is stale (no major collection since the
   * shrinkers were last asked for heap bytes, or none yet).
   */
  collected: boolean
  /**
   * What a forced collection could find, estimated from V8's statistics: the old generation's
   * growth since V8's last major collection plus its external memory's. `null` for a cycle of the
   * heap alone, or when unknown (no major collection seen yet, `heapLimit: false`, a custom `gc`).
   */
  collectable: number | null
  /** The cgroup's side (`null` without cgroup levels). */
  cgroup: LimitPlan | null
  /** The heap's side (`null` when the heap is not watched). */
  heap: LimitPlan | null
  /**
   * The garbage floor, when it raised the request above both excesses: `'back-to-back'` (a cycle
   * at high within a cool-down of another at high) or `'buffers-at-moderate'` (at moderate, with
   * `externalBytes` of V8 external memory, at least the floor); `bytes`: the request it set.
   */
  floor: { rule: 'back-to-back' | 'buffers-at-moderate'; bytes: number; externalBytes?: number } | null
  /**
   * What the shrinkers were asked for in all: the larger excess, or the floor. Shrinker i is asked
   * for this less what those before it reported, in priority order (from where the last cycle at
   * this level stopped), until it is covered (at `'critical'`, everyone).
   */
  requestedBytes: number
}

/** The report of one shrink cycle (the `'shrink'` event). Sizes in bytes, times in milliseconds. */
export interface ShrinkReport {
  /** Number of the cycle, from 1. */
  cycle: number
  /**
   * The level the cycle started at (or the highest seen while it ran). The shrinkers were asked at
   * the level the first collection left (`plan.level`).
   */
  level: PressureLevel
  /** The level after the cycle, from the snapshot taken after heap reduction. */
  levelAfter: PressureLevel
  /**
   * The limit that drove the request: the one whose basis exceeded its target by more (on a tie,
   * the one whose level was higher at the start, the cgroup's when equal).
   */
  limit: LimitKind
  /** What the cgroup's levels are decided on. */
  basis: PressureBasis
  /** Bytes the cycle set out to free (raised by notifications that arrived while it ran). */
  requestedBytes: number
  /** Sum of what the shrinkers reported. */
  reportedBytes: number
  /** Measured: the basis before minus the basis after (negative when memory grew meanwhile). */
  freedBytes: number
  /**
   * Measured: what the collection before the shrinkers gave back (basis before minus basis after
   * it); 0 when heap reduction is off.
   */
  collectedBytes: number
  /**
   * Free allocator memory counted as available in `after`: glibc's free lists and V8's committed
   * but unused heap (0 when not counted). `freedBytes` and `collectedBytes` include what went there.
   */
  allocatorFreeBytes: number
  /** How the request was made: each limit's target, reserve and excess, and the floor. */
  plan: ShrinkPlan
  /** Every shrinker asked, in order. */
  shrinkers: ShrinkerResult[]
  /**
   * The cycle's heap reduction: when it ran two (before and after the shrinkers), both as one
   * (times added, `mallocTrim` the later result unless that one was `'skipped'`, `…Before` of the
   * first and `…After` of the second); `null` when turned off or when the last one failed (see
   * `heapError`).
   */
  heap: HeapReduction | null
  /**
   * How many heap reductions the cycle ran: 0 (off, or nothing V8 had not measured), 1, or 2
   * (before and after the shrinkers). A cycle of the heap alone runs at most the first.
   */
  heapRuns: number
  /** What a heap reduction threw, if one did (the later one when both did). */
  heapError?: unknown
  /** The heap before the cycle and after its last collection (`null` when the heap is not watched). */
  heapBefore: HeapReading | null
  heapAfter: HeapReading | null
  /** Snapshots before the first shrinker and after heap reduction. */
  before: MemorySnapshot
  after: MemorySnapshot
  /** Notifications that arrived while the cycle ran and updated its level or target. */
  updates: number
  /** Clock time at the start, and the cycle's duration. */
  time: number
  durationMs: number
  /**
   * Time spent in forced collections (every cycle's `heap.gcMs`) in the minute up to the end of
   * this cycle, ms: the cost of collecting on V8's behalf.
   */
  forcedGcMsPerMinute: number
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
