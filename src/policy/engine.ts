// The policy engine behind a monitor's levels: it keeps kernel thresholds armed where the basis
// would change level, decides the level after each wake-up, and runs shrink cycles one at a time.
//
// Why the thresholds move. Levels are decided on the basis (working set by default), read from
// memory.stat after a wake-up, but the kernel compares thresholds with usage, page cache included
// (memory.usage_in_bytes, cgroup-v1/memory.rst §5.5 and §9). A fixed kernel threshold at a level's
// byte value would fire for page cache alone and, worse, stay crossed while cache holds usage above
// it, so the basis reaching the level later would never wake anyone. After every wake-up the
// engine therefore drops its watches and registers new ones at usage = point + (usage − basis) for
// the two points that matter from the current level (the next level's threshold, and the current
// level's exit point, threshold − hysteresis), plus a drift point a little below usage that fires
// when page cache is dropped (which moves both points down). When cache is reclaimed to make room
// (usage pinned at the limit, basis rising underneath), no usage threshold moves: a slow re-check
// on the clock (`recheckMs`) reads memory.stat while there is cache on top of the basis, and only
// then; with no cache every basis rise is a usage rise and the watches alone are exact.

import v8 from 'node:v8'
import type { MemoryBackend, MemorySnapshot, ThresholdWatch } from '../backends/types.js'
import { MemoryPressureError } from '../errors.js'
import { errorMessage } from '../emitter.js'
import { explicitPercentLevels, levelsInBytes, warnNoLimitOnce, withCgroup } from '../no-limit.js'
import { policyTimer } from '../options.js'
import { type Threshold, describe } from '../size.js'
import { type Clock, isClock, systemClock } from './clock.js'
import { type HeapReduction, type ReduceHeapOptions, allocatorFreeBytes, joinReductions, mallocTrimCount, reduceHeapChecked, validateReduceHeapOptions } from './heap.js'
import {
  type LevelThresholds,
  PRESSURE_LEVELS,
  type PressureBasis,
  type PressureLevel,
  type ResolvedLevels,
  basisOf,
  bytesToFree,
  levelFor,
  levelRank,
  resolveLevels,
  watchPoints,
} from './levels.js'
import {
  DEFAULT_FRACTIONS,
  type ShrinkReport,
  type Shrinker,
  type ShrinkerResult,
  validateShrinker,
} from './shrinker.js'

/** Options of a monitor's levels and shrink cycles (part of `MemoryMonitorOptions`). */
export interface PolicyOptions {
  /**
   * Turns pressure levels on: `true` for the defaults (`moderate` 70%, `high` 85%, `critical` 95%
   * of the effective limit up to 320 MiB; above it `moderate` and `high` rise towards limit − 96 MiB
   * and limit − 48 MiB, to 80% and 90% at most: see `DEFAULT_LEVEL_HEADROOM`) or thresholds per
   * level (bytes, `'512MiB'`, `'80%'`; a level left out gets its default), resolved against
   * the limit when levels start. Default: off until the first `register()` or `until()`, which
   * start them with the defaults. Without a memory limit the defaults leave levels off (level
   * `'normal'`, one process warning `ERR_NO_LIMIT` naming the cgroup) until a limit appears;
   * levels written in percent throw `ERR_NO_LIMIT`, and all three written in bytes work.
   */
  levels?: LevelThresholds | boolean
  /**
   * How far below a level's threshold the basis must fall before the level is left, so usage
   * hovering at a threshold does not flap: bytes, a size string or a percentage of the limit.
   * Default 5% of the limit, at most 10 MiB (`DEFAULT_HYSTERESIS_MAX`); `0` for none.
   */
  hysteresis?: Threshold
  /** What levels are decided on. Default `'workingSet'` (usage minus inactive page cache). */
  basis?: PressureBasis
  /**
   * Milliseconds after a shrink cycle before the next one, when the level is still `'moderate'`
   * or is back at `'moderate'` (a rise to `'high'` or `'critical'` starts one at once; still at
   * `'high'` or `'critical'` after a cycle, the next one follows within 100 ms). Default 2000:
   * at moderate the garbage V8 has not collected yet (it collects on its own after some tens of
   * MiB) brings the level back within a second, and each cycle forces a collection V8 would have
   * run concurrently. In issue 4's CRAMM runs, side by side with 1 s: at 384 MiB 7 to 9 cycles a
   * run instead of 12 to 13, 29 to 34 major GCs instead of 36 to 43, 1.05 times the requests per
   * CPU second (1.06 at 512 MiB), with a hit ratio as high. After a cycle that measured nothing
   * freed the wait doubles, up to 32 times this, until the level changes: with nothing left to
   * give back, full collections every few seconds would only cost CPU. From 0 to 2^31−1
   * (`RangeError` `ERR_OUT_OF_RANGE` otherwise).
   */
  cooldownMs?: number
  /** Milliseconds a shrinker may take before its signal aborts and the cycle goes on. Default 5000; 1 to 2^31−1. */
  shrinkTimeoutMs?: number
  /**
   * Milliseconds between re-reads of memory.stat while page cache sits on top of the basis (see
   * the file header: cache reclaimed at the limit moves no usage threshold). Default 1000; 100
   * to 2^31−1.
   */
  recheckMs?: number
  /**
   * The heap reduction of each cycle: options of `reduceHeap()` (default
   * `{ gc: 'v8-major', mallocTrim: true }`), or `false` for none. It runs before the shrinkers
   * (see `collectFirst`) and again after them when they were asked; below `'critical'` that second
   * one is a single V8 collection when one ran just before the shrinkers, with another only if the
   * level is not back to normal after it.
   */
  reduceHeap?: ReduceHeapOptions | false
  /**
   * Collect garbage before asking any shrinker (default `true`). Usage that rose because of garbage
   * (values a cache already dropped, buffers V8 has not collected yet) is given back by the
   * collection alone, and the shrinkers are asked only for what is still over the level after it,
   * measured, at the level the collection left. Without it, live entries are evicted to make up
   * for garbage and the collection after them frees both. No effect with `reduceHeap: false`.
   */
  collectFirst?: boolean
  /**
   * Make room for garbage when cycles at `'high'` come back to back (default `true`). A cycle at
   * `'high'` or `'critical'` that starts within `cooldownMs` of the end of one at `'high'` or above
   * asks the shrinkers for at least half the hysteresis, even when its collection alone brought the
   * level down: V8's garbage refilled the room below `'high'` within a cool-down, so the cache
   * gives some of it back until V8's own collections keep the level below `'high'`. Without it a
   * cache can settle where every cycle's collection alone ends at normal, cycles come every few
   * hundred milliseconds, and the limit is reached whenever one comes late (issue 4: OOM kills at
   * a 128 MiB limit, the cache held at 66 to 68 MiB, where a fixed 64 MiB cache is killed too).
   * With it, in issue 4's CRAMM runs side by side, the cache there settles at 27 to 33 MiB (the
   * best fixed size's) with about a third of the major GCs and about the same requests per CPU
   * second. Such a cycle also asks for enough that the level after its collection is 80 MiB below
   * the limit (at limits from about 107 MiB): V8 collects dead Buffers on its own only once its
   * external memory has grown 64 MiB since its last collection, so above that level nothing but
   * these cycles keeps Buffers a cache dropped from reaching the limit, and one late cycle is an
   * OOM kill. In issue 4's runs at 128 MiB a cache that filled to 66 MiB before the first cycle is
   * at 32 to 39 MiB 2.5 s in instead of 56 to 63 MiB, and outlives the monitor closing there by
   * seconds instead of under half of one. A cycle at `'moderate'` asks for that much too, and as at
   * `'high'` (a shrinker gives up more of itself there), at limits below about 229 MiB, where
   * moderate's exit point lies above it, while this process's V8 external memory (Buffers) is at
   * least what it asks: the first cycle typically meets a cache that filled before there was any
   * garbage, and held at that size it leaves the limit to the cycles at high alone (issue 4:
   * OOM-killed 1.2 s into a run at 128 MiB, the cache held at 69 MiB after one cycle at moderate;
   * with the floor, 38 to 45 MiB after that cycle instead of 68 to 70). A cache of JavaScript
   * objects, which V8 collects with its heap, is asked at moderate only what the level needs.
   * Needs `collectFirst`; no effect with `reduceHeap: false`.
   */
  garbageRoom?: boolean
  /**
   * Count memory the C allocator holds free for this process's next allocations as available, not
   * used. Memory a collection frees (dropped Buffers, evicted values) goes back to glibc's free
   * lists, where it stays charged to the cgroup but is reused by the next allocations without the
   * kernel. Counted (default where it applies: the monitor watches the cgroup of its own process,
   * glibc 2.33 or later, the addon loaded), the levels see what a collection freed without
   * `malloc_trim`, which then runs only when the basis without that credit is at `critical`, or
   * within 8 MiB of the limit where critical is closer to it: pages trimmed at every cycle are
   * faulted in again by the next allocations (measured: 5 to 8% of the CPU in the kernel, issue 4's
   * CRAMM runs). Only free memory seen since the last trim counts (trimmed chunks stay on the free
   * lists without their pages), and none from that point (free lists help only allocations they
   * fit; V8's own heap and the rest need room below the limit). `false`: not counted, and every
   * cycle trims; a function: your own reading, in bytes (`null` for unknown), for another
   * allocator.
   */
  allocatorFree?: boolean | (() => number | null)
  /** Time and timers (cool-down, timeouts, re-checks). Default: `performance.now()` and unref'd timers. */
  clock?: Clock
}

/** Level thresholds as resolved against the limit when levels started. Bytes. */
export interface LevelBytes {
  moderate: number
  high: number
  critical: number
  hysteresis: number
  /** What they apply to. */
  basis: PressureBasis
}

/** A level change (the `'pressure'` event). */
export interface PressureEvent {
  /** The new level. */
  level: PressureLevel
  /** The level before. */
  previous: PressureLevel
  /** What the level is decided on. */
  basis: PressureBasis
  /** The basis in bytes at the change (less `allocatorFreeBytes`). */
  bytes: number
  /** Free allocator memory counted as available at the change (0 unless `allocatorFree`). */
  allocatorFreeBytes: number
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

interface Registered {
  shrinker: Shrinker
  priority: number
  seq: number
}

interface Cycle {
  n: number
  level: PressureLevel
  requested: number
  reported: number
  updates: number
  abort: AbortController | null
}

interface Waiter {
  rank: number
  resolve: () => void
  reject: (err: unknown) => void
}

const MiB = 2 ** 20

/**
 * The least room below the limit the allocator's credit leaves (see {@link noCreditFrom}).
 */
const CREDIT_ROOM = 8 * MiB

/** The room {@link backstopRoom} keeps below the limit beyond V8's external step. */
const BACKSTOP_ROOM = 16 * MiB

/**
 * The basis without the allocator's credit from which the credit is no longer given and cycles
 * trim: critical, or less where critical leaves under {@link CREDIT_ROOM} below the limit
 * (`min(critical, limit − 8 MiB)`). What the credit counts as room serves only allocations that
 * fit the free lists; everything else (V8's own heap pages, allocations the free chunks do not fit)
 * needs room below the limit, and that need does not scale with the limit. Issue 4: a 128 MiB cell
 * (critical 121.6 MiB, 6.4 MiB of room) with 40 MiB on the free lists sat at 121.5 MiB of working
 * set for 0.8 s: credited, its level was normal; the page cache above it was reclaimed with usage
 * pinned at the limit (no threshold moves then), and 6 MiB of new pages in 60 ms brought the OOM
 * kill (1 of 70 runs; at 128 MiB the credit now stops at 120 MiB, 1.5 MiB below where that run
 * sat). The room was 16 MiB after that, until the trims it brought were measured as the larger
 * cost: at 192 MiB the credit stopped at 176 MiB, where V8's own peaks of garbage reach, and each
 * trim gave 50 to 70 MiB of free pages back that the next allocations faulted in again (4 to 5% of
 * the CPU in the kernel). With 8 MiB (critical itself from 160 MiB up) issue 4's runs side by side
 * (2026-12-04, 6 pairs each) gave 1.037 times the requests at equal speed at 192 MiB and 1.013 at
 * 128 MiB, without an OOM kill. Three later CRAMM sweeps had a 128 MiB run killed in its first
 * seconds with the 16 MiB room, one with `allocatorFree: false` too, so that kill is not clearly the
 * credit's (bench/HISTORY.md); the backstop ({@link backstopRoom}) keeps its 16 MiB.
 */
function noCreditFrom(levels: ResolvedLevels): number {
  return Math.min(levels.enter[3], levels.limit - CREDIT_ROOM)
}

/**
 * How far V8's external memory (the backing stores of Buffers and ArrayBuffers) grows past its
 * size at the last collection before V8 collects on its own: `kExternalAllocationSoftLimit` in V8's
 * public `v8-internal.h`, 64 MiB in Node 20 to 24.
 */
const V8_EXTERNAL_STEP = 64 * MiB

/**
 * What `garbageRoom` asks for at least, at a cycle at high back to back with one (beyond half the
 * hysteresis) and at a cycle at moderate: enough that the level after a collection is V8's
 * external step, and {@link BACKSTOP_ROOM} more, below the limit. Above that, dead Buffers
 * run into the limit before V8 collects them on its own, and every one of the cycles at high has
 * to come in time: at a 128 MiB limit a cache of 50 to 69 MiB in the first seconds was OOM-killed
 * when one came late (issue 4), and within half a second of the monitor closing.
 * Nothing where that level would be under a quarter of the limit (limits under about 107 MiB):
 * there no cache size brings V8's own collection below the limit, a Node process needs about that
 * much by itself.
 */
function backstopRoom(levels: ResolvedLevels, bytes: number): number {
  const below = levels.limit - V8_EXTERNAL_STEP - BACKSTOP_ROOM
  return below < levels.limit / 4 ? 0 : Math.ceil(bytes - below)
}

/**
 * {@link backstopRoom} for a cycle at moderate, where nothing shows yet that garbage comes back
 * fast: only while this process's V8 external memory (Buffers' backing stores, what V8's step
 * counts) is at least that room, so that the memory is Buffers a cache holds, whose evictions are
 * external garbage. A cache of JavaScript objects is collected with V8's heap, which V8 watches
 * itself, and keeps what the level alone asks for.
 */
function moderateRoom(levels: ResolvedLevels, bytes: number): number {
  const room = backstopRoom(levels, bytes)
  return room > 0 && v8.getHeapStatistics().external_memory >= room ? room : 0
}

/**
 * The longest a cycle that ended at `high` or `critical` waits before the next one. A whole
 * cool-down there lets an allocation burst run up to the limit (the level cannot rise any further
 * to start a cycle): issue 4's runs without `hold` were OOM-killed a second after a cycle that
 * left them at critical.
 */
const URGENT_MS = 100

/** Levels, shrinkers and shrink cycles for one backend. Used by `MemoryMonitor`. */
export class PolicyEngine {
  #backend: MemoryBackend
  #host: PolicyHost
  #options: PolicyOptions
  #clock: Clock
  #cooldownMs: number
  #timeoutMs: number
  #recheckMs: number
  #heap: ReduceHeapOptions | false
  #collectFirst: boolean
  #garbageRoom: boolean
  /** Reads the allocator's free bytes, or null when not counted. */
  #allocator: (() => number | null) | null
  /** With the built-in reading: the trim count seen, and the free bytes not known to be resident. */
  #trimsSeen = -1
  #freeFloor = 0
  /** The credit applied at the last reading. */
  #credit = 0
  #levels: ResolvedLevels | null = null
  /** The limit the levels were resolved against. */
  #limit = Number.POSITIVE_INFINITY
  #level: PressureLevel = 'normal'
  #watches: ThresholdWatch[] = []
  #armedOffset = 0
  #recheckTimer: unknown = null
  #cooldownTimer: unknown = null
  #evaluateQueued = false
  #shrinkers = new Set<Registered>()
  #seq = 0
  #cursor = 0
  #cycles = 0
  #backoff = 1
  /** Clock time the last cycle ended, and the rank of the level it ran at. */
  #lastCycleEnd = Number.NEGATIVE_INFINITY
  #lastCycleRank = 0
  #cycle: Cycle | null = null
  #waiters = new Set<Waiter>()
  #closed = false
  /** Levels were asked for (`enable()`) but are off for lack of a limit. */
  #wanted = false

  constructor(backend: MemoryBackend, options: PolicyOptions, host: PolicyHost) {
    this.#backend = backend
    this.#host = host
    this.#options = options
    if (options.levels !== undefined && typeof options.levels !== 'boolean' && (options.levels === null || typeof options.levels !== 'object')) {
      throw new TypeError(`levels must be a boolean or an object { moderate, high, critical } (received ${describe(options.levels)})`)
    }
    if (options.clock !== undefined && !isClock(options.clock)) {
      throw new TypeError(`clock must be an object with now(), setTimeout() and clearTimeout() (received ${describe(options.clock)})`)
    }
    this.#clock = options.clock ?? systemClock
    this.#cooldownMs = policyTimer('cooldownMs', options.cooldownMs)
    this.#timeoutMs = policyTimer('shrinkTimeoutMs', options.shrinkTimeoutMs)
    this.#recheckMs = policyTimer('recheckMs', options.recheckMs)
    if (options.reduceHeap !== undefined && options.reduceHeap !== false) validateReduceHeapOptions(options.reduceHeap)
    this.#heap = options.reduceHeap ?? {}
    if (options.collectFirst !== undefined && typeof options.collectFirst !== 'boolean') {
      throw new TypeError(`collectFirst must be a boolean (received ${describe(options.collectFirst)})`)
    }
    this.#collectFirst = options.collectFirst ?? true
    if (options.garbageRoom !== undefined && typeof options.garbageRoom !== 'boolean') {
      throw new TypeError(`garbageRoom must be a boolean (received ${describe(options.garbageRoom)})`)
    }
    this.#garbageRoom = options.garbageRoom ?? true
    const allocator = options.allocatorFree
    if (allocator !== undefined && typeof allocator !== 'boolean' && typeof allocator !== 'function') {
      throw new TypeError(`allocatorFree must be a boolean or a function (received ${describe(allocator)})`)
    }
    // Default: only where the watched cgroup holds this process (its own, as discovered).
    const own = allocator === undefined && (backend.name === 'cgroup-v1' || backend.name === 'cgroup-v2' || backend.name === 'process') &&
      (options as { cgroup?: unknown }).cgroup === undefined
    this.#allocator = typeof allocator === 'function' ? allocator : allocator === true || own ? allocatorFreeBytes : null
  }

  /** True once levels are being tracked. */
  get enabled(): boolean {
    return this.#levels !== null
  }

  /** The current level (`'normal'` while levels are off). */
  get level(): PressureLevel {
    return this.#level
  }

  /** The level thresholds in bytes, or `null` while levels are off. */
  get thresholds(): LevelBytes | null {
    const l = this.#levels
    if (l === null) return null
    return { moderate: l.enter[1], high: l.enter[2], critical: l.enter[3], hysteresis: l.hysteresis, basis: l.basis }
  }

  /**
   * Starts tracking levels: resolves them against the current limit, decides the initial level
   * and arms the watches. The initial `'pressure'` event (when above `'normal'`) and its shrink
   * cycle follow in a microtask, so listeners added right after construction see them.
   */
  enable(): void {
    if (this.#levels !== null || this.#closed) return
    const levels = this.#options.levels
    const snapshot = this.#backend.snapshot()
    this.#wanted = true
    // No limit: levels given in percent are refused; the defaults leave levels off (see no-limit.ts).
    if (!Number.isFinite(snapshot.limit) && !explicitPercentLevels(levels) && !levelsInBytes(levels)) {
      warnNoLimitOnce(this.#backend.cgroup)
      return
    }
    try {
      this.#levels = resolveLevels(
        typeof levels === 'object' ? levels : true,
        this.#options.hysteresis,
        this.#options.basis,
        snapshot.limit,
      )
    } catch (err) {
      throw withCgroup(err, this.#backend.cgroup)
    }
    this.#limit = snapshot.limit
    const bytes = this.#measure(snapshot, this.#levels)
    const level = levelFor(this.#levels, bytes, 'normal')
    const credit = this.#credit
    this.#level = level
    this.#arm(snapshot)
    if (level !== 'normal') {
      queueMicrotask(() => {
        if (this.#closed) return
        this.#host.pressure({ level, previous: 'normal', basis: this.#levels?.basis ?? 'workingSet', bytes, allocatorFreeBytes: credit, snapshot, time: this.#clock.now() })
        this.#tellShrinkers(level, 'normal')
        this.#startCycle()
      })
    }
  }

  /**
   * A snapshot read elsewhere (the monitor's) showed `limit`: when it differs from the one the
   * levels were resolved against, evaluate now rather than at the next wake-up, which a lower
   * limit may never bring (no armed point lies between usage and the new limit).
   */
  noticeLimit(limit: number): void {
    if (this.#levels === null && this.#wanted && Number.isFinite(limit) && !this.#closed) {
      try {
        this.enable()
      } catch (err) {
        this.#host.error(err instanceof MemoryPressureError ? err : new MemoryPressureError('ERR_INVALID_THRESHOLD', errorMessage(err), { cause: err }))
      }
    }
    else if (this.#levels !== null && !this.#closed && limit !== this.#limit) this.#evaluate(true)
  }

  /** See `MemoryMonitor.register`. */
  register(shrinker: Shrinker): () => void {
    validateShrinker(shrinker)
    this.enable()
    const entry: Registered = { shrinker, priority: shrinker.priority ?? 0, seq: this.#seq++ }
    this.#shrinkers.add(entry)
    return () => {
      this.#shrinkers.delete(entry)
    }
  }

  /** See `MemoryMonitor.until`. */
  until(level: PressureLevel, signal?: AbortSignal): Promise<void> {
    if (!PRESSURE_LEVELS.includes(level)) {
      return Promise.reject(new TypeError(`level must be one of ${PRESSURE_LEVELS.join(', ')} (received ${describe(level)})`))
    }
    if (signal !== undefined && !(signal instanceof AbortSignal)) {
      return Promise.reject(new TypeError(`signal must be an AbortSignal (received ${describe(signal)})`))
    }
    if (this.#closed) return Promise.reject(new MemoryPressureError('ERR_CLOSED', 'the monitor is closed'))
    if (signal?.aborted) return Promise.reject(signal.reason)
    try {
      this.enable()
    } catch (err) {
      return Promise.reject(err)
    }
    const rank = levelRank(level)
    if (levelRank(this.#level) <= rank) return Promise.resolve()
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        this.#waiters.delete(waiter)
        reject(signal?.reason)
      }
      const waiter: Waiter = {
        rank,
        resolve: () => {
          signal?.removeEventListener('abort', onAbort)
          resolve()
        },
        reject: (err) => {
          signal?.removeEventListener('abort', onAbort)
          reject(err)
        },
      }
      this.#waiters.add(waiter)
      signal?.addEventListener('abort', onAbort, { once: true })
    })
  }

  /** Stops watches and timers, aborts a running shrinker, rejects `until()` waiters. Idempotent. */
  close(): void {
    if (this.#closed) return
    this.#closed = true
    this.#disarm()
    if (this.#cooldownTimer !== null) this.#clock.clearTimeout(this.#cooldownTimer)
    this.#cooldownTimer = null
    this.#cycle?.abort?.abort(new MemoryPressureError('ERR_CLOSED', 'the monitor closed during a shrink cycle'))
    const closed = new MemoryPressureError('ERR_CLOSED', 'the monitor closed')
    for (const w of this.#waiters) w.reject(closed)
    this.#waiters.clear()
  }

  #snapshot(): MemorySnapshot | null {
    try {
      return this.#backend.snapshot()
    } catch (err) {
      if (!this.#closed && !this.#backend.closed) {
        this.#host.error(err instanceof MemoryPressureError ? err : new MemoryPressureError('ERR_SYSCALL', String(err), { cause: err }))
      }
      return null
    }
  }

  /**
   * The basis of `snapshot` less the allocator's free bytes when they are counted (see
   * `allocatorFree`). Reads the allocator each time: call once per decision.
   */
  #measure(snapshot: MemorySnapshot, levels: ResolvedLevels): number {
    const raw = basisOf(snapshot, levels.basis)
    this.#credit = 0
    const read = this.#allocator
    if (read === null) return raw
    let free: number | null
    try {
      free = read()
    } catch {
      free = null
    }
    if (free === null || !Number.isFinite(free) || free < 0) return raw
    if (read === allocatorFreeBytes) {
      // After a trim the free lists keep their chunks without the pages: count only what was
      // freed since, never more than the lowest reading since the trim.
      const trims = mallocTrimCount()
      if (trims !== this.#trimsSeen) {
        this.#trimsSeen = trims
        this.#freeFloor = free
      }
      if (free < this.#freeFloor) this.#freeFloor = free
      free -= this.#freeFloor
    }
    // From noCreditFrom on (critical, or 8 MiB below the limit where critical is closer) the
    // credit is not given: free lists only help allocations they fit (and those of the same arena;
    // V8's own heap not at all), and the cycle that starts gives them back with malloc_trim.
    if (raw >= noCreditFrom(levels)) return raw
    this.#credit = Math.min(free, raw)
    return raw - this.#credit
  }

  #disarm(): void {
    for (const w of this.#watches) w.close()
    this.#watches = []
    if (this.#recheckTimer !== null) this.#clock.clearTimeout(this.#recheckTimer)
    this.#recheckTimer = null
  }

  /**
   * Registers the watches that matter from `snapshot` at the current level, keeping those already
   * at the right value: on cgroup v1 every registration waits for an RCU grace period in the
   * kernel (`synchronize_rcu()` in the threshold registration, measured 23 ms median on a loaded
   * machine), and the event loop waits with it.
   */
  #arm(snapshot: MemorySnapshot): void {
    const levels = this.#levels
    if (levels === null || this.#closed) return
    const step = Math.max(levels.hysteresis / 2, MiB)
    const points = watchPoints(levels, snapshot, step)
    this.#armedOffset = points.offset
    // Every level's entry and exit point, not only the two next to the current level: a level
    // change then moves no watch (only a change of the page cache on top of the basis does).
    const values = new Set<number>()
    for (const v of [...points.all, points.drift]) if (v !== null && v > 0) values.add(v)
    // Free allocator memory counted as available (allocatorFree): the level points above are
    // placed without that credit, so they fire early, and once usage is past them nothing would
    // fire as it grows: a point one step above usage does (or half-way to the limit, if nearer).
    // Even a credit under half a step needs it when it is what holds the level below the next
    // one (usage past that level's point): then no closer point is on the way up, and with the
    // point there, shifted by the credit, the next level is seen where the credit lets it begin
    // (issue 4: at 128 MiB, 0.6 MiB of credit left high to be seen only at critical's exit point,
    // 6.8 MiB later, in about one run in five).
    // Where the credit is what holds the level down, the point is 1 MiB above usage (about the
    // kernel's own check granularity) instead of a step: allocations drain the free lists without
    // moving usage, so usage rising at all says they ran dry, and the basis is then past the next
    // level. With a step, each cycle started that much above the last one (the free lists a
    // collection refills stay resident), until the basis without the credit reached the point
    // where cycles trim (issue 4, 192 MiB: cycles 3 to 5 MiB apart, a trim every 4 or 5 of them,
    // its pages faulted straight back in; with 1 MiB, 1.06 times the requests at equal speed, 8
    // pairs side by side, the hit ratio higher in every pair; at 384 and 512 MiB, where trims were
    // rare already, 0.98 to 0.99 times, 8 to 10 pairs, when the step there was 9.6 and 12.8 MiB,
    // before the default hysteresis was capped at 10 MiB: bench/HISTORY.md, build 931a77d).
    const rank = levelRank(this.#level)
    const heldBelow = this.#credit > 0 && rank < 3 && levelRank(levelFor(levels, basisOf(snapshot, levels.basis), this.#level)) > rank
    if (this.#credit >= step / 2 || heldBelow) {
      const next = heldBelow ? Math.ceil((levels.enter[rank + 1] ?? Infinity) + points.offset + this.#credit) : Infinity
      const rise = Math.ceil(Math.min(snapshot.usage + (heldBelow ? MiB : step), (snapshot.usage + snapshot.limit) / 2, next))
      if (rise > snapshot.usage && rise < snapshot.limit) values.add(rise)
    }
    // A watch within a small tolerance of a wanted point stays, if it is on the same side of usage
    // (a crossed watch would not fire again the same way): the points move with every small
    // change of the page cache, and the kernel's own check is coarser (memcg looks at usage every
    // 128 page events per CPU, about 1 MiB on two CPUs).
    const tolerance = Math.max(MiB / 2, step / 4)
    const usage = snapshot.usage
    const kept: ThresholdWatch[] = []
    for (const w of this.#watches) {
      let match: number | null = null
      for (const v of values) {
        if (Math.abs(v - w.threshold) <= tolerance && (v > usage) === (w.threshold > usage)) {
          match = v
          break
        }
      }
      if (match !== null) {
        values.delete(match)
        kept.push(w)
      } else w.close()
    }
    this.#watches = kept
    if (this.#recheckTimer !== null) this.#clock.clearTimeout(this.#recheckTimer)
    this.#recheckTimer = null
    try {
      for (const v of values) this.#watches.push(this.#backend.watchThreshold(v, () => this.#wake()))
    } catch (err) {
      if (!this.#backend.closed) this.#host.error(err instanceof MemoryPressureError ? err : new MemoryPressureError('ERR_SYSCALL', String(err), { cause: err }))
    }
    this.#scheduleRecheck(points.offset + this.#credit)
  }

  // Only page cache on top of the basis, or allocator memory counted free, can move the basis
  // without moving usage the same way.
  #scheduleRecheck(offset: number): void {
    if (this.#recheckTimer !== null || offset <= 0 || (this.#levels?.basis === 'usage' && this.#credit === 0) || this.#closed) return
    this.#recheckTimer = this.#clock.setTimeout(() => {
      this.#recheckTimer = null
      this.#evaluate(false)
    }, this.#recheckMs)
  }

  /** A kernel threshold fired: several in one turn of the loop are one evaluation. */
  #wake(): void {
    if (this.#evaluateQueued || this.#closed) return
    this.#evaluateQueued = true
    queueMicrotask(() => {
      this.#evaluateQueued = false
      this.#evaluate(true)
    })
  }

  /**
   * Reads the snapshot, moves the level, emits, feeds a running cycle or starts one, re-arms.
   * `crossed`: a watch fired (usage passed a point, so every point must move).
   */
  #evaluate(crossed: boolean): void {
    if (this.#levels === null || this.#closed) return
    const snapshot = this.#snapshot()
    if (snapshot === null) return
    // Percentages follow the limit: the kernel sends nothing when it changes, so it is noticed here,
    // at the next wake-up or re-check. A limit that went away keeps the last levels (ERR_NO_LIMIT).
    if (snapshot.limit !== this.#limit) {
      this.#limit = snapshot.limit
      try {
        const levels = this.#options.levels
        this.#levels = resolveLevels(typeof levels === 'object' ? levels : true, this.#options.hysteresis, this.#options.basis, snapshot.limit)
        crossed = true
      } catch (err) {
        const named = withCgroup(err, this.#backend.cgroup)
        this.#host.error(named instanceof MemoryPressureError ? named : new MemoryPressureError('ERR_NO_LIMIT', errorMessage(err), { cause: err }))
      }
    }
    const levels = this.#levels
    const bytes = this.#measure(snapshot, levels)
    const previous = this.#level
    const level = levelFor(levels, bytes, previous)
    const rose = levelRank(level) > levelRank(previous)
    this.#level = level
    // the page cache on top of the basis (what the armed points were placed with), and the credit
    const offset = Math.max(0, snapshot.usage - (bytes + this.#credit))
    const step = Math.max(levels.hysteresis / 2, MiB)
    if (crossed || level !== previous || Math.abs(offset - this.#armedOffset) >= step / 2) this.#arm(snapshot)
    else this.#scheduleRecheck(offset + this.#credit)
    if (level !== previous) {
      this.#backoff = 1
      const time = this.#clock.now()
      this.#host.pressure({ level, previous, basis: levels.basis, bytes, allocatorFreeBytes: this.#credit, snapshot, time })
      if (this.#closed) return // a listener closed the monitor
      this.#tellShrinkers(level, previous)
      if (level === 'normal') this.#host.relief({ previous, bytes, snapshot, time })
      for (const w of this.#waiters) {
        if (levelRank(level) <= w.rank) {
          this.#waiters.delete(w)
          w.resolve()
        }
      }
    }
    const cycle = this.#cycle
    if (cycle !== null && levelRank(level) > 0) {
      if (levelRank(level) > levelRank(cycle.level) || bytesToFree(levels, bytes, level) > cycle.requested) {
        cycle.level = levelRank(level) > levelRank(cycle.level) ? level : cycle.level
        cycle.requested = Math.max(cycle.requested, bytesToFree(levels, bytes, cycle.level))
        cycle.updates++
      }
    } else if (rose && levelRank(level) > 0) {
      // Back at moderate within the cool-down of the last cycle (garbage building up again since,
      // typically): wait for the cool-down. High and critical start a cycle at once: waiting there
      // lets the garbage run up to critical, where the cycle also trims the heap.
      const since = this.#clock.now() - this.#lastCycleEnd
      if (since < this.#cooldownMs && level === 'moderate' && this.#lastCycleRank >= 1) {
        if (this.#cooldownTimer === null) this.#cycleAfter(this.#cooldownMs - since)
      } else {
        this.#startCycle()
      }
    }
  }

  /** Calls each shrinker's `levelChanged` (a hook that throws goes to 'error'). */
  #tellShrinkers(level: PressureLevel, previous: PressureLevel): void {
    for (const { shrinker } of this.#shrinkers) {
      if (shrinker.levelChanged === undefined) continue
      try {
        shrinker.levelChanged(level, previous)
      } catch (err) {
        this.#host.error(new MemoryPressureError('ERR_HANDLER', `shrinker ${JSON.stringify(shrinker.name)} threw in levelChanged: ${errorMessage(err)}`, { cause: err }))
      }
    }
  }

  #ordered(): Registered[] {
    return [...this.#shrinkers].sort((a, b) => a.priority - b.priority || a.seq - b.seq)
  }

  #startCycle(): void {
    if (this.#cycle !== null || this.#closed || levelRank(this.#level) === 0) return
    if (this.#cooldownTimer !== null) this.#clock.clearTimeout(this.#cooldownTimer)
    this.#cooldownTimer = null
    void this.#runCycle().catch((err: unknown) => {
      this.#cycle = null
      this.#host.error(err instanceof MemoryPressureError ? err : new MemoryPressureError('ERR_HANDLER', `the shrink cycle failed: ${errorMessage(err)}`, { cause: err }))
    })
  }

  /**
   * One heap reduction, or `null` and the error when it threw. `raw`: the basis without the
   * allocator credit; with the credit counted, `malloc_trim` runs only when that is at critical
   * (or 8 MiB from the limit where critical is closer: see `noCreditFrom`).
   */
  async #reduce(raw: number): Promise<{ heap: HeapReduction | null; error?: unknown }> {
    if (this.#heap === false) return { heap: null }
    const trim = this.#allocator === null || this.#levels === null || raw >= noCreditFrom(this.#levels)
    try {
      return { heap: await reduceHeapChecked(trim ? this.#heap : { ...this.#heap, mallocTrim: false }) }
    } catch (err) {
      return { heap: null, error: err }
    }
  }

  /**
   * A heap reduction, and the measure after it (`null` when no snapshot could be read). `again`
   * (the collection after the shrinkers, when one ran before them): below critical, a second
   * reduction when the level (from `level`, with its hysteresis) is not back to normal after the
   * first. That second one dates from when the engine's reduction after the shrinkers was a single
   * full collection with no minor one (so `malloc_trim` and the measure could run before V8 had
   * freed the Buffers it found dead: see `GcMethod`); it is kept because taking it out did not
   * measure better (side by side at a 192 MiB limit, 6 pairs: 0.98 [0.91–1.03] of the throughput
   * per CPU second). How often it runs now was not counted.
   */
  async #collect(raw: number, levels: ResolvedLevels, level: PressureLevel, again: boolean): Promise<{ result: { heap: HeapReduction | null; error?: unknown }; bytes: number | null }> {
    let result = await this.#reduce(raw)
    if (this.#closed) return { result, bytes: null }
    let snapshot = this.#snapshot()
    let bytes = snapshot === null ? null : this.#measure(snapshot, levels)
    if (again && raw < levels.enter[3] && bytes !== null && result.heap !== null && result.heap.gc === 'v8-major' && levelFor(levels, bytes, level) !== 'normal') {
      const second = await this.#reduce(bytes + this.#credit)
      result = second.heap === null ? { heap: result.heap, error: second.error } : { heap: joinReductions(result.heap, second.heap) }
      if (this.#closed) return { result, bytes: null }
      snapshot = this.#snapshot()
      bytes = snapshot === null ? null : this.#measure(snapshot, levels)
    }
    return { result, bytes }
  }

  async #runCycle(): Promise<void> {
    const levels = this.#levels
    const before = this.#snapshot()
    if (levels === null || before === null) return
    const n = ++this.#cycles
    const startBytes = this.#measure(before, levels)
    let rawNow = startBytes + this.#credit
    // The cycle's level: the current one, or the one the snapshot just read says if it is higher.
    const level = levelRank(levelFor(levels, startBytes, this.#level)) > levelRank(this.#level) ? levelFor(levels, startBytes, this.#level) : this.#level
    const cycle: Cycle = { n, level, requested: bytesToFree(levels, startBytes, level), reported: 0, updates: 0, abort: null }
    this.#cycle = cycle
    const start = this.#clock.now()
    // Garbage first: what a collection gives back needs no eviction. The shrinkers are then asked
    // at the level the collection left, for what is still above its exit point.
    let first: { heap: HeapReduction | null; error?: unknown } | null = null
    let collectedBytes = 0
    let shrinkLevel = cycle.level
    if (this.#collectFirst && this.#heap !== false) {
      const c = await this.#collect(rawNow, levels, cycle.level, false)
      if (this.#closed) return
      first = c.result
      if (c.bytes !== null) {
        const midBytes = c.bytes
        rawNow = midBytes + this.#credit
        collectedBytes = startBytes - midBytes
        // Notifications during the collection may have raised the cycle's level: keep the higher.
        const afterCollect = levelFor(levels, midBytes, cycle.level)
        shrinkLevel = cycle.updates > 0 && levelRank(cycle.level) > levelRank(afterCollect) ? cycle.level : afterCollect
        cycle.requested = bytesToFree(levels, midBytes, shrinkLevel)
        // Back at high within a cool-down of the last cycle there: V8's garbage refilled the room
        // below high that quickly. The cache gives some of it back even when the collection alone
        // brought the level down, so that the next allocations do not run into the limit before
        // the next cycle; and at least down to where V8's own collection of dead Buffers comes
        // before the limit (backstopRoom). A cycle at moderate asks for that floor too, as at
        // high (a shrinker keeps more of itself at moderate), when the memory is Buffers
        // (moderateRoom): typically a cache that filled before there was any garbage, whose size,
        // held from now on, would leave the limit to the cycles at high alone.
        if (this.#garbageRoom) {
          const backToBack = levelRank(cycle.level) >= 2 && this.#lastCycleRank >= 2 && start - this.#lastCycleEnd < this.#cooldownMs
          const room = backToBack ? Math.max(Math.ceil(levels.hysteresis / 2), backstopRoom(levels, midBytes)) : cycle.level === 'moderate' ? moderateRoom(levels, midBytes) : 0
          if (cycle.requested < room) {
            cycle.requested = room
            const at: PressureLevel = backToBack ? 'moderate' : 'high'
            if (levelRank(shrinkLevel) < levelRank(at)) shrinkLevel = at
          }
        }
      }
    }
    const ordered = this.#ordered()
    const from = ordered.length === 0 ? 0 : this.#cursor % ordered.length
    const order = [...ordered.slice(from), ...ordered.slice(0, from)]
    const results: ShrinkerResult[] = []
    let asked = 0
    for (const entry of order) {
      if (this.#closed) return
      if (levelRank(shrinkLevel) === 0) break
      if (shrinkLevel !== 'critical' && cycle.reported >= cycle.requested) break
      if (!this.#shrinkers.has(entry)) continue
      asked++
      const result = await this.#ask(entry, cycle, shrinkLevel)
      results.push(result)
      if (result.reported !== null) cycle.reported += result.reported
      if (levelRank(cycle.level) > levelRank(shrinkLevel)) shrinkLevel = cycle.level
    }
    if (this.#closed) return
    // Next cycle at this level goes on with the next priorities; a critical one asked everyone.
    this.#cursor = shrinkLevel === 'critical' || ordered.length === 0 ? 0 : (from + asked) % ordered.length
    // Collect again only when shrinkers dropped something (or when nothing collected yet).
    const second = this.#heap !== false && (first === null || asked > 0) ? (await this.#collect(rawNow, levels, shrinkLevel, first !== null)).result : null
    if (this.#closed) return
    // Both reductions as one: a trim in the first (the basis was at the cut-off) is the cycle's too.
    const [h1, h2] = [first?.heap ?? null, second?.heap ?? null]
    const final = h1 !== null && h2 !== null ? { heap: joinReductions(h1, h2) } : (second ?? first ?? { heap: null })
    const after = this.#snapshot()
    if (after === null) {
      this.#cycle = null
      return
    }
    const afterBytes = this.#measure(after, levels)
    const levelAfter = levelFor(levels, afterBytes, this.#level)
    const report: ShrinkReport = {
      cycle: n,
      level: cycle.level,
      levelAfter,
      basis: levels.basis,
      requestedBytes: cycle.requested,
      reportedBytes: cycle.reported,
      freedBytes: startBytes - afterBytes,
      collectedBytes,
      allocatorFreeBytes: this.#credit,
      shrinkers: results,
      heap: final.heap,
      heapRuns: (first === null ? 0 : 1) + (second === null ? 0 : 1),
      before,
      after,
      updates: cycle.updates,
      time: start,
      durationMs: this.#clock.now() - start,
    }
    const heapError = second?.error ?? first?.error
    if (heapError !== undefined) report.heapError = heapError
    this.#backoff = report.freedBytes > 0 ? 1 : Math.min(this.#backoff * 2, 32)
    this.#cycle = null
    this.#lastCycleEnd = this.#clock.now()
    this.#lastCycleRank = levelRank(cycle.level)
    this.#host.shrink(report)
    // The level as the fresh snapshot says (may emit 'pressure' down and 'relief').
    this.#evaluate(true)
    if (!this.#closed && levelRank(this.#level) > 0 && this.#cycle === null) {
      // Still under pressure: at moderate the next cycle waits for the cool-down, at high and
      // critical for URGENT_MS at most. A cycle that freed nothing backs off from at least 50 ms,
      // even with cooldownMs 0.
      const wait = levelRank(this.#level) >= 2 ? Math.min(this.#cooldownMs, URGENT_MS) : this.#cooldownMs
      this.#cycleAfter(this.#backoff > 1 ? Math.max(wait, 50) * this.#backoff : wait)
    }
  }

  /**
   * The next cycle in `ms`, if the level is still above normal then. At moderate a cycle waits
   * for the whole cool-down since the last one (a short wait of high that ran out with the level
   * back at moderate waits for the rest).
   */
  #cycleAfter(ms: number): void {
    if (this.#cooldownTimer !== null) this.#clock.clearTimeout(this.#cooldownTimer)
    this.#cooldownTimer = this.#clock.setTimeout(() => {
      this.#cooldownTimer = null
      this.#evaluate(false)
      if (levelRank(this.#level) === 0 || this.#closed) return
      const rest = this.#cooldownMs - (this.#clock.now() - this.#lastCycleEnd)
      if (levelRank(this.#level) === 1 && rest > 0) this.#cycleAfter(rest)
      else this.#startCycle()
    }, ms)
  }

  async #ask(entry: Registered, cycle: Cycle, level: PressureLevel): Promise<ShrinkerResult> {
    const { shrinker, priority } = entry
    const remaining = Math.max(0, cycle.requested - cycle.reported)
    let size: number | undefined
    try {
      const s = shrinker.size?.()
      if (typeof s === 'number' && Number.isFinite(s) && s >= 0) size = s
    } catch {
      size = undefined
    }
    const fraction = size !== undefined && size > 0 ? Math.min(1, remaining / size) : DEFAULT_FRACTIONS[level]
    const abort = new AbortController()
    cycle.abort = abort
    const t0 = this.#clock.now()
    const result: ShrinkerResult = { name: shrinker.name, priority, requestedBytes: remaining, reported: null, ms: 0 }
    const timer = this.#clock.setTimeout(() => {
      abort.abort(new MemoryPressureError('ERR_TIMEOUT', `shrinker ${JSON.stringify(shrinker.name)} did not finish within ${this.#timeoutMs} ms`))
    }, this.#timeoutMs)
    let onAbort: (() => void) | undefined
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => reject(abort.signal.reason)
      abort.signal.addEventListener('abort', onAbort, { once: true })
    })
    try {
      const value = await Promise.race([
        (async () => shrinker.shrink({ level, targetBytes: remaining, fraction, signal: abort.signal, cycle: cycle.n }))(),
        aborted,
      ])
      if (typeof value === 'number' && Number.isFinite(value)) result.reported = Math.max(0, value)
    } catch (err) {
      if (abort.signal.aborted && err === abort.signal.reason) {
        if (err instanceof MemoryPressureError && err.code === 'ERR_TIMEOUT') result.timedOut = true
        else result.error = err
      } else {
        result.error = err
      }
    } finally {
      this.#clock.clearTimeout(timer)
      if (onAbort !== undefined) abort.signal.removeEventListener('abort', onAbort)
      aborted.catch(() => undefined)
      cycle.abort = null
    }
    result.ms = this.#clock.now() - t0
    return result
  }
}
