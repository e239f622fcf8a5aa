// The policy's options and the events it emits: what a user of the monitor chooses and receives.

import type { MemoryPressureError } from '../errors.js'
import type { MemorySnapshot } from '../backends/types.js'
import type { Threshold } from '../size.js'
import type { Clock } from './clock.js'
import type { ReduceHeapOptions } from './heap.js'
import type { LevelThresholds, PressureBasis, PressureLevel } from './levels.js'
import type { PolicyRuntime } from './runtime.js'
import type { HeapReading, LimitKind, ShrinkReport } from './shrinker.js'

/** Options of a monitor's levels and shrink cycles (part of `MemoryMonitorOptions`). */
export interface PolicyOptions {
  /**
   * Turns pressure levels on: `true` for the defaults (`moderate` 70%, `high` 85%, `critical` 95%
   * of the effective limit up to 320 MiB; above it `moderate` and `high` rise towards limit − 96 MiB
   * and limit − 48 MiB, to 80% and 90% at most) or thresholds per level (bytes, `'512MiB'`,
   * `'80%'`; a level left out gets its default), resolved against the limit when levels start.
   * Default: off until the first `register()` or `until()`, which start them with the defaults.
   * Without a cgroup memory limit the cgroup's levels are off (one process warning `ERR_NO_LIMIT`
   * naming the cgroup) until a limit appears, and the heap's (see `heapLimit`) still run; with
   * `heapLimit: false`, levels written in percent then throw `ERR_NO_LIMIT`. Levels written in bytes
   * need no limit.
   */
  levels?: LevelThresholds | boolean
  /**
   * How far below a level's threshold the basis must fall before the level is left, so usage
   * hovering at a threshold does not flap: bytes, a size string or a percentage of the limit.
   * Default 5% of the limit, at most 10 MiB; `0` for none. Applies to both limits.
   */
  hysteresis?: Threshold
  /** What cgroup levels are decided on. Default `'workingSet'` (usage minus inactive page cache). */
  basis?: PressureBasis
  /**
   * Also watch V8's heap limit (default `true`): the level is the higher of the cgroup's and the
   * heap's, where the heap's compares the old generation's live size, as V8's own major
   * collections leave it, with its limit (`--max-old-space-size`), at the percentages of `levels`
   * (their defaults where a level is given in bytes), without the headroom rule above 320 MiB. V8
   * kills the process with "JavaScript heap out of memory" at its limit whatever the cgroup has
   * left, and the two are sized independently. It costs a statistics read after each major
   * collection V8 runs and nothing while nothing is allocated. In a worker thread the heap watched
   * is the worker's own isolate's. `false`: the cgroup alone.
   */
  heapLimit?: boolean
  /** Milliseconds a shrinker may take before its signal aborts and the cycle goes on. Default 5000; 1 to 2^31−1 (`RangeError` `ERR_OUT_OF_RANGE` otherwise). */
  shrinkTimeoutMs?: number
  /**
   * The heap reduction of each cycle: options of `reduceHeap()` (default
   * `{ gc: 'v8-major', mallocTrim: true }`), or `false` for none. It runs before the shrinkers when
   * a collection could find garbage V8 has not measured (so that garbage is not paid for with live
   * entries), and after them when they were asked (not in a cycle of the heap alone, which V8's own
   * next collection measures): docs/how-it-works.md.
   */
  reduceHeap?: ReduceHeapOptions | false
  /** Time and timers (cool-down, timeouts, re-checks). Default: `performance.now()` and unref'd timers. */
  clock?: Clock
  /**
   * The engine's tuning and the process readings it uses, for tests and benchmarks.
   * @internal
   */
  tuning?: PolicyTuning
}

/**
 * Algorithm internals, not part of the public options: tests and benchmarks set them.
 * @internal
 */
export interface PolicyTuning {
  /** Wait after a cycle before the next one at moderate (ms). Default 2000. */
  cooldownMs?: number
  /** Re-read memory.stat this often while page cache sits on top of the basis (ms). Default 1000. */
  recheckMs?: number
  /** Collect before asking the shrinkers. Default true. */
  collectFirst?: boolean
  /** The floors of the request for garbage (see `garbageFloor`). Default true. */
  garbageRoom?: boolean
  /**
   * Count the allocators' free bytes (glibc's free lists, V8's unused committed heap) as available:
   * default where the cgroup is the process's own. A function replaces both readings.
   */
  allocatorFree?: boolean | (() => number | null)
  /** The process readings (default: this process's). */
  runtime?: PolicyRuntime
}

/** Level thresholds as resolved against the cgroup's limit when levels started. Bytes. */
export interface LevelBytes {
  moderate: number
  high: number
  critical: number
  hysteresis: number
  /** What they apply to. */
  basis: PressureBasis
}

/** Level thresholds on V8's old generation (see `heapLimit`). Bytes. */
export interface HeapLevelBytes {
  /** The old generation's limit they were resolved against. */
  limit: number
  moderate: number
  high: number
  critical: number
  hysteresis: number
}

/** A level change (the `'pressure'` event). */
export interface PressureEvent {
  /** The new level. */
  level: PressureLevel
  /** The level before. */
  previous: PressureLevel
  /** The limit whose level is the higher one now, the one that drove the change (on a tie, as a fall to normal, the one named before). */
  limit: LimitKind
  /** What the cgroup's level is decided on. */
  basis: PressureBasis
  /** The basis in bytes at the change (less `allocatorFreeBytes`). */
  bytes: number
  /**
   * Free allocator memory counted as available at the change: glibc's free lists and V8's
   * committed but unused heap (0 when not counted).
   */
  allocatorFreeBytes: number
  /** The heap as last learned, or `null` when the heap is not watched. */
  heap: HeapReading | null
  /** The snapshot the decision was made on. */
  snapshot: MemorySnapshot
  /** Clock time of the change (milliseconds). */
  time: number
}

/** Memory came back (the `'relief'` event): the basis fell below moderate − hysteresis. */
export interface ReliefEvent {
  /** The level left. */
  previous: PressureLevel
  /** The basis in bytes. */
  bytes: number
  /** The snapshot the decision was made on. */
  snapshot: MemorySnapshot
  /** Clock time (milliseconds). */
  time: number
}

/** Where the engine sends what it observes (the monitor). */
export interface PolicyHost {
  pressure(event: PressureEvent): void
  shrink(report: ShrinkReport): void
  relief(event: ReliefEvent): void
  error(error: MemoryPressureError): void
}
