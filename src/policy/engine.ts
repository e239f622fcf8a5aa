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
// on the clock reads memory.stat while there is cache on top of the basis, and only
// then; with no cache every basis rise is a usage rise and the watches alone are exact.

import type { MemoryBackend, MemorySnapshot, ThresholdWatch } from '../backends/types.js'
import { MemoryPressureError } from '../errors.js'
import { errorMessage } from '../emitter.js'
import { explicitPercentLevels, levelsInBytes, warnNoLimitOnce, withCgroup } from '../no-limit.js'
import { POLICY_TIMERS, checkTimerMs, policyTimer } from '../options.js'
import { describe } from '../size.js'
import { type Clock, isClock, systemClock } from './clock.js'
import { type HeapReduction, type ReduceHeapOptions, joinReductions, validateReduceHeapOptions } from './heap.js'
import {
  PRESSURE_LEVELS,
  type PressureLevel,
  type ResolvedLevels,
  basisOf,
  bytesToFree,
  exitPoint,
  higher,
  levelFor,
  levelRank,
  resolveHeapLevels,
  resolveLevels,
  watchPoints,
} from './levels.js'
import { type PolicyRuntime, isRuntime, processRuntime } from './runtime.js'
import {
  DEFAULT_FRACTIONS,
  type HeapReading,
  type LimitKind,
  type LimitPlan,
  type ShrinkPlan,
  type ShrinkReport,
  type Shrinker,
  type ShrinkerResult,
  validateShrinker,
} from './shrinker.js'

import { type HeapLevelBytes, type LevelBytes, type PolicyHost, type PolicyOptions, type PolicyTuning, type PressureEvent, type ReliefEvent } from './options.js'
import { MiB, URGENT_MS, backstopRoom, noCreditFrom } from './rules.js'

export type { HeapLevelBytes, LevelBytes, PolicyHost, PolicyOptions, PolicyTuning, PressureEvent, ReliefEvent }


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



/** Levels, shrinkers and shrink cycles for one backend. Used by `MemoryMonitor`. */
export class PolicyEngine {
  #backend: MemoryBackend
  #host: PolicyHost
  #options: PolicyOptions
  #clock: Clock
  #runtime: PolicyRuntime
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
  #enabled = false
  /** The cgroup's levels (`null` while off, or with no cgroup limit while the heap is watched). */
  #levels: ResolvedLevels | null = null
  /** The limit the levels were resolved against. */
  #limit = Number.POSITIVE_INFINITY
  /** The heap's levels, its live size as last learned, and the watch on V8's collections. */
  #heapWatch: boolean
  #heapLevels: ResolvedLevels | null = null
  #heapLive = 0
  /** True when `#heapLive` was read right after a major collection (V8's or a cycle's). */
  #heapMeasured = false
  /** A cycle of the heap alone asked shrinkers since `#heapLive` was measured: it is stale. */
  #heapStale = false
  /** The old generation's live size and V8's external memory at the last major collection seen. */
  #lastMajor: { live: number; external: number } | null = null
  /** The forced collections of the last minute: [clock time, gc ms]. */
  #forced: Array<[number, number]> = []
  #stopGcWatch: (() => void) | null = null
  /** The combined level (the higher of the two), and each limit's own. */
  #level: PressureLevel = 'normal'
  #cgroupLevel: PressureLevel = 'normal'
  #heapLevel: PressureLevel = 'normal'
  #lastDriver: LimitKind = 'cgroup'
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
    if (options.heapLimit !== undefined && typeof options.heapLimit !== 'boolean') {
      throw new TypeError(`heapLimit must be a boolean (received ${describe(options.heapLimit)})`)
    }
    const tuning = options.tuning ?? {}
    if (tuning === null || typeof tuning !== 'object') throw new TypeError(`tuning must be an object (received ${describe(tuning)})`)
    if (tuning.runtime !== undefined && !isRuntime(tuning.runtime)) {
      throw new TypeError(`tuning.runtime must be a policy runtime (received ${describe(tuning.runtime)})`)
    }
    this.#runtime = tuning.runtime ?? processRuntime
    this.#clock = options.clock ?? systemClock
    this.#heapWatch = options.heapLimit ?? true
    this.#cooldownMs = checkTimerMs('tuning.cooldownMs', tuning.cooldownMs, POLICY_TIMERS.cooldownMs.fallback, POLICY_TIMERS.cooldownMs.min)
    this.#timeoutMs = policyTimer('shrinkTimeoutMs', options.shrinkTimeoutMs)
    this.#recheckMs = checkTimerMs('tuning.recheckMs', tuning.recheckMs, POLICY_TIMERS.recheckMs.fallback, POLICY_TIMERS.recheckMs.min)
    if (options.reduceHeap !== undefined && options.reduceHeap !== false) validateReduceHeapOptions(options.reduceHeap)
    this.#heap = options.reduceHeap ?? {}
    if (tuning.collectFirst !== undefined && typeof tuning.collectFirst !== 'boolean') {
      throw new TypeError(`tuning.collectFirst must be a boolean (received ${describe(tuning.collectFirst)})`)
    }
    this.#collectFirst = tuning.collectFirst ?? true
    if (tuning.garbageRoom !== undefined && typeof tuning.garbageRoom !== 'boolean') {
      throw new TypeError(`tuning.garbageRoom must be a boolean (received ${describe(tuning.garbageRoom)})`)
    }
    this.#garbageRoom = tuning.garbageRoom ?? true
    const allocator = tuning.allocatorFree
    if (allocator !== undefined && typeof allocator !== 'boolean' && typeof allocator !== 'function') {
      throw new TypeError(`tuning.allocatorFree must be a boolean or a function (received ${describe(allocator)})`)
    }
    // Default: only where the watched cgroup holds this process (its own, as discovered): the free
    // lists are this process's, the cgroup's usage another's otherwise.
    const given = options as { cgroup?: unknown; backend?: unknown; process?: { pid?: unknown } }
    const own = allocator === undefined && (backend.name === 'cgroup-v1' || backend.name === 'cgroup-v2' || backend.name === 'process') &&
      given.cgroup === undefined && typeof given.backend !== 'object' && given.process?.pid === undefined
    const runtime = this.#runtime
    this.#allocator = typeof allocator === 'function' ? allocator : allocator === true || own ? () => runtime.allocatorFree() : null
  }

  /** True once levels are being tracked. */
  get enabled(): boolean {
    return this.#enabled
  }

  /** The current level (`'normal'` while levels are off): the higher of the cgroup's and the heap's. */
  get level(): PressureLevel {
    return this.#level
  }

  /** The cgroup's level thresholds in bytes, or `null` while they are off. */
  get thresholds(): LevelBytes | null {
    const l = this.#levels
    if (l === null) return null
    return { moderate: l.enter[1], high: l.enter[2], critical: l.enter[3], hysteresis: l.hysteresis, basis: l.basis }
  }

  /** The heap's level thresholds in bytes, or `null` while the heap is not watched. */
  get heapThresholds(): HeapLevelBytes | null {
    const l = this.#heapLevels
    if (l === null) return null
    return { limit: l.limit, moderate: l.enter[1], high: l.enter[2], critical: l.enter[3], hysteresis: l.hysteresis }
  }

  /** The heap as last learned, or `null` while it is not watched. */
  get heapReading(): HeapReading | null {
    const l = this.#heapLevels
    return l === null ? null : { liveBytes: this.#heapLive, limitBytes: l.limit, level: this.#heapLevel }
  }

  /**
   * Starts tracking levels: resolves them against the current limits, decides the initial level
   * and arms the watches. The initial `'pressure'` event (when above `'normal'`) and its shrink
   * cycle follow in a microtask, so listeners added right after construction see them.
   */
  enable(): void {
    if (this.#enabled || this.#closed) return
    const levels = this.#options.levels
    const snapshot = this.#backend.snapshot()
    this.#wanted = true
    // No limit: levels given in percent are refused unless the heap's limit can take them; the
    // defaults leave the cgroup's levels off (see no-limit.ts) and the heap's on.
    const noLimit = !Number.isFinite(snapshot.limit)
    if (noLimit && !levelsInBytes(levels)) {
      if (!this.#heapWatch && explicitPercentLevels(levels)) {
        throw withCgroup(new MemoryPressureError('ERR_NO_LIMIT', `levels in percent need a memory limit, and ${this.#backend.cgroup} has none`), this.#backend.cgroup)
      }
      warnNoLimitOnce(this.#backend.cgroup)
      if (!this.#heapWatch) return
      this.#levels = null
    } else {
      try {
        this.#levels = resolveLevels(typeof levels === 'object' ? levels : true, this.#options.hysteresis, this.#options.basis, snapshot.limit)
      } catch (err) {
        throw withCgroup(err, this.#backend.cgroup)
      }
    }
    if (this.#heapWatch) {
      const old = this.#runtime.oldGeneration()
      this.#heapLevels = resolveHeapLevels(levels, this.#options.hysteresis, old.limitBytes)
      // Until V8's first major collection the old generation's size is all that is known; it only
      // overstates the live size, and a collection comes before the limit is reached.
      this.#heapLive = old.usedBytes
      this.#stopGcWatch = this.#runtime.onMajorGc(() => this.#heapCollected())
    }
    this.#enabled = true
    this.#limit = snapshot.limit
    const bytes = this.#levels === null ? 0 : this.#measure(snapshot, this.#levels)
    this.#cgroupLevel = this.#levels === null ? 'normal' : levelFor(this.#levels, bytes, 'normal')
    this.#heapLevel = this.#heapLevels === null ? 'normal' : levelFor(this.#heapLevels, this.#heapLive, 'normal')
    const level = higher(this.#cgroupLevel, this.#heapLevel)
    const limit = this.#driver()
    const credit = this.#credit
    this.#level = level
    this.#arm(snapshot)
    if (level !== 'normal') {
      queueMicrotask(() => {
        if (this.#closed) return
        this.#host.pressure({ level, previous: 'normal', limit, basis: this.#options.basis ?? 'workingSet', bytes, allocatorFreeBytes: credit, heap: this.heapReading, snapshot, time: this.#clock.now() })
        this.#tellShrinkers(level, 'normal')
        this.#startCycle()
      })
    }
  }

  /** The limit whose level is higher; on a tie, the one named last (so a fall to normal names the limit that rose). */
  #driver(): LimitKind {
    const h = levelRank(this.#heapLevel)
    const c = levelRank(this.#cgroupLevel)
    if (h !== c) this.#lastDriver = h > c ? 'heap' : 'cgroup'
    return this.#lastDriver
  }

  /**
   * V8 finished a major collection: the old generation's size now is its live size (plus what was
   * allocated since the collection ended). Evaluates only when that moves the heap's level or a
   * cycle is waiting on it, so a service far from its heap limit pays one statistics read.
   */
  #heapCollected(): void {
    const heapLevels = this.#heapLevels
    if (heapLevels === null || this.#closed) return
    const old = this.#runtime.oldGeneration()
    this.#measured(old.usedBytes)
    if (levelFor(heapLevels, old.usedBytes, this.#heapLevel) !== this.#heapLevel || (this.#cycle !== null && levelRank(this.#heapLevel) > 0)) this.#evaluate(false)
  }

  /** A major collection just ended with `live` bytes in the old generation. */
  #measured(live: number): void {
    this.#heapLive = live
    this.#heapMeasured = true
    this.#heapStale = false
    this.#lastMajor = { live, external: this.#runtime.externalMemory() }
  }

  /**
   * What a forced V8 collection could find now: what V8 allocated since its last major collection
   * (the old generation's growth, and its external memory's: Buffers). Objects that were live then
   * and died since without anything new being allocated are missed; a cycle then asks its shrinkers
   * for more than needed, never less. Infinite when unknown (no collection seen, or a custom gc).
   */
  #collectable(): number {
    const last = this.#lastMajor
    if (last === null || typeof this.#heap !== 'object' || (this.#heap.gc ?? 'v8-major') !== 'v8-major') return Number.POSITIVE_INFINITY
    const grown = this.#runtime.oldGeneration().usedBytes - last.live
    return Math.max(0, grown) + Math.max(0, this.#runtime.externalMemory() - last.external)
  }

  /** The forced collections' time in the minute before `now`, ms. */
  #forcedPerMinute(now: number): number {
    this.#forced = this.#forced.filter(([t]) => t > now - 60_000)
    return this.#forced.reduce((sum, [, ms]) => sum + ms, 0)
  }

  /**
   * A snapshot read elsewhere (the monitor's) showed `limit`: when it differs from the one the
   * levels were resolved against, evaluate now rather than at the next wake-up, which a lower
   * limit may never bring (no armed point lies between usage and the new limit).
   */
  noticeLimit(limit: number): void {
    if (this.#closed) return
    if (this.#levels === null && this.#wanted && Number.isFinite(limit)) {
      // A limit appeared: the cgroup's levels start now (the heap's, if on, already run).
      try {
        if (!this.#enabled) return this.enable()
        const levels = this.#options.levels
        this.#levels = resolveLevels(typeof levels === 'object' ? levels : true, this.#options.hysteresis, this.#options.basis, limit)
      } catch (err) {
        this.#host.error(err instanceof MemoryPressureError ? err : new MemoryPressureError('ERR_INVALID_THRESHOLD', errorMessage(err), { cause: err }))
        return
      }
    }
    if (this.#enabled && limit !== this.#limit) this.#evaluate(true)
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
    this.#stopGcWatch?.()
    this.#stopGcWatch = null
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
    if (typeof this.#options.tuning?.allocatorFree !== 'function') {
      // After a trim the free lists keep their chunks without the pages: count only what was
      // freed since, never more than the lowest reading since the trim.
      const trims = this.#runtime.trimCount()
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
   * kernel (`synchronize_rcu()` in the threshold registration, tens of milliseconds), and the
   * event loop waits with it.
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
    // Free allocator memory counted as available: the level points above are placed without that
    // credit, so they fire early, and once usage is past them nothing would fire as it grows. A
    // point above usage does: one step above, or 1 MiB (about the kernel's check granularity) where
    // the credit is what holds the level below the next one, since allocations then drain the free
    // lists without moving usage, and usage rising at all says they ran dry.
    const rank = levelRank(this.#cgroupLevel)
    const heldBelow = this.#credit > 0 && rank < 3 && levelRank(levelFor(levels, basisOf(snapshot, levels.basis), this.#cgroupLevel)) > rank
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
    if (!this.#enabled || this.#closed) return
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
    const bytes = levels === null ? 0 : this.#measure(snapshot, levels)
    const previous = this.#level
    if (levels !== null) this.#cgroupLevel = levelFor(levels, bytes, this.#cgroupLevel)
    if (this.#heapLevels !== null) this.#heapLevel = levelFor(this.#heapLevels, this.#heapLive, this.#heapLevel)
    const level = higher(this.#cgroupLevel, this.#heapLevel)
    const rose = levelRank(level) > levelRank(previous)
    this.#level = level
    if (levels !== null) {
      // the page cache on top of the basis (what the armed points were placed with), and the credit
      const offset = Math.max(0, snapshot.usage - (bytes + this.#credit))
      const step = Math.max(levels.hysteresis / 2, MiB)
      if (crossed || level !== previous || Math.abs(offset - this.#armedOffset) >= step / 2) this.#arm(snapshot)
      else this.#scheduleRecheck(offset + this.#credit)
    }
    if (level !== previous) {
      this.#backoff = 1
      const time = this.#clock.now()
      this.#host.pressure({ level, previous, limit: this.#driver(), basis: this.#options.basis ?? 'workingSet', bytes, allocatorFreeBytes: this.#credit, heap: this.heapReading, snapshot, time })
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
      const need = this.#need(bytes, this.#heapLive, cycle.level)
      if (levelRank(level) > levelRank(cycle.level) || need > cycle.requested) {
        cycle.level = higher(level, cycle.level)
        cycle.requested = Math.max(cycle.requested, this.#need(bytes, this.#heapLive, cycle.level))
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

  /**
   * Bytes to free at `level`: the larger of what the cgroup's basis (`bytes`) and the heap's live
   * size (`heap`) exceed that level's exit point on their own limit by.
   */
  #need(bytes: number, heap: number, level: PressureLevel): number {
    const c = this.#levels === null ? 0 : bytesToFree(this.#levels, bytes, level)
    const h = this.#heapLevels === null ? 0 : bytesToFree(this.#heapLevels, heap, level)
    return Math.max(c, h)
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
   * allocator credit; with the credit counted, `malloc_trim` runs only from `noCreditFrom` on.
   */
  async #reduce(raw: number): Promise<{ heap: HeapReduction | null; error?: unknown }> {
    if (this.#heap === false) return { heap: null }
    const trim = this.#allocator === null || this.#levels === null || raw >= noCreditFrom(this.#levels)
    try {
      const heap = await this.#runtime.reduceHeap(trim ? this.#heap : { ...this.#heap, mallocTrim: false })
      if (heap.gc !== 'none') this.#forced.push([this.#clock.now(), heap.gcMs])
      // A full collection just ran: the old generation's size is its live size.
      if (this.#heapLevels !== null && heap.gc !== 'none') this.#measured(this.#runtime.oldGeneration().usedBytes)
      return { heap }
    } catch (err) {
      return { heap: null, error: err }
    }
  }

  /**
   * A heap reduction, and the cgroup's basis after it (`null` when no snapshot could be read; 0
   * without cgroup levels). `again` (the collection after the shrinkers, when one ran before them):
   * below critical, a second reduction when the cgroup's level is not back to normal after the
   * first, for the Buffers whose memory V8 frees on a helper thread after a full collection
   * returns (see `GcMethod`).
   */
  async #collect(raw: number, level: PressureLevel, again: boolean): Promise<{ result: { heap: HeapReduction | null; error?: unknown }; bytes: number | null }> {
    const levels = this.#levels
    let result = await this.#reduce(raw)
    if (this.#closed) return { result, bytes: null }
    let snapshot = this.#snapshot()
    if (levels === null) return { result, bytes: snapshot === null ? null : 0 }
    let bytes = snapshot === null ? null : this.#measure(snapshot, levels)
    // The second pass is for Buffers: without a band of V8 external memory it cannot help.
    if (again && raw < levels.enter[3] && bytes !== null && result.heap !== null && result.heap.gc === 'v8-major' && levelFor(levels, bytes, level) !== 'normal' &&
      this.#runtime.externalMemory() >= levels.hysteresis) {
      const second = await this.#reduce(bytes + this.#credit)
      result = second.heap === null ? { heap: result.heap, error: second.error } : { heap: joinReductions(result.heap, second.heap) }
      if (this.#closed) return { result, bytes: null }
      snapshot = this.#snapshot()
      bytes = snapshot === null ? null : this.#measure(snapshot, levels)
    }
    return { result, bytes }
  }

  /** What a limit's levels make of a basis at `level`: its target and reserve (see `LimitPlan`). */
  #limitPlan(levels: ResolvedLevels, before: number, measured: number, level: PressureLevel): LimitPlan {
    const rank = levelRank(level)
    const threshold = levels.enter[rank as 0 | 1 | 2 | 3]
    const target = rank === 0 ? null : exitPoint(levels, rank)
    return {
      limit: levels.limit,
      before,
      measured,
      threshold: rank === 0 ? null : threshold,
      hysteresis: levels.hysteresis,
      target,
      reserve: target === null ? null : levels.limit - target,
      excess: bytesToFree(levels, measured, level),
    }
  }

  async #runCycle(): Promise<void> {
    const levels = this.#levels
    const heapLevels = this.#heapLevels
    const before = this.#snapshot()
    if (!this.#enabled || before === null) return
    const n = ++this.#cycles
    const startBytes = levels === null ? 0 : this.#measure(before, levels)
    const heapStart = this.#heapLive
    const heapBefore = this.heapReading
    let rawNow = startBytes + this.#credit
    const cgroupStart = levels === null ? 'normal' : levelFor(levels, startBytes, this.#cgroupLevel)
    const heapStartLevel = heapLevels === null ? 'normal' : levelFor(heapLevels, heapStart, this.#heapLevel)
    const heapDriven = levelRank(heapStartLevel) > levelRank(cgroupStart)
    // The cycle's level: the current one, or the one just measured if it is higher.
    const level = higher(this.#level, higher(cgroupStart, heapStartLevel))
    const cycle: Cycle = { n, level, requested: this.#need(startBytes, heapStart, level), reported: 0, updates: 0, abort: null }
    this.#cycle = cycle
    const start = this.#clock.now()
    // Garbage first: what a collection gives back needs no eviction. The shrinkers are then asked
    // at the level the collection left, for what is still above its exit point.
    let first: { heap: HeapReduction | null; error?: unknown } | null = null
    let collectedBytes = 0
    let shrinkLevel = cycle.level
    let midBytes = startBytes
    let floor: ShrinkPlan['floor'] = null
    // A forced collection marks the whole heap on the main thread, V8's own mostly on helper
    // threads: collect first only for what V8 has not measured. For the heap alone (the cgroup at
    // normal), when its live size is stale; for the cgroup, when V8 allocated a band or more since
    // its last major collection (see #collectable).
    const heapOnly = heapDriven && cgroupStart === 'normal'
    const collectable = heapOnly ? null : this.#collectable()
    const stale = collectable === null ? !this.#heapMeasured || this.#heapStale : collectable >= (levels?.hysteresis ?? 0)
    if (this.#collectFirst && this.#heap !== false && stale) {
      const c = await this.#collect(rawNow, cycle.level, false)
      if (this.#closed) return
      first = c.result
      if (c.bytes !== null) {
        midBytes = c.bytes
        rawNow = midBytes + this.#credit
        collectedBytes = startBytes - midBytes
        // Notifications during the collection may have raised the cycle's level: keep the higher.
        const afterCollect = higher(
          levels === null ? 'normal' : levelFor(levels, midBytes, cycle.level),
          heapLevels === null ? 'normal' : levelFor(heapLevels, this.#heapLive, cycle.level),
        )
        shrinkLevel = cycle.updates > 0 && levelRank(cycle.level) > levelRank(afterCollect) ? cycle.level : afterCollect
        cycle.requested = this.#need(midBytes, this.#heapLive, shrinkLevel)
        // The garbage floor (cgroup only): V8 collects dead Buffers on its own only after its
        // external memory grew 64 MiB, so the cache is asked to leave that much room below the
        // limit when garbage is seen to come back fast (a cycle at high back to back with one), or
        // at moderate when the memory is Buffers (a cache that filled before there was garbage).
        if (this.#garbageRoom && levels !== null && !heapDriven) {
          const backToBack = levelRank(cycle.level) >= 2 && this.#lastCycleRank >= 2 && start - this.#lastCycleEnd < this.#cooldownMs
          let room = 0
          let external: number | undefined
          if (backToBack) room = Math.max(Math.ceil(levels.hysteresis / 2), backstopRoom(levels, midBytes))
          else if (cycle.level === 'moderate') {
            const r = backstopRoom(levels, midBytes)
            external = r > 0 ? this.#runtime.externalMemory() : undefined
            room = r > 0 && external !== undefined && external >= r ? r : 0
          }
          if (cycle.requested < room) {
            cycle.requested = room
            floor = { rule: backToBack ? 'back-to-back' : 'buffers-at-moderate', bytes: room }
            if (external !== undefined) floor.externalBytes = external
            const at: PressureLevel = backToBack ? 'moderate' : 'high'
            if (levelRank(shrinkLevel) < levelRank(at)) shrinkLevel = at
          }
        }
      }
    }
    const cgroupPlan = levels === null ? null : this.#limitPlan(levels, startBytes, midBytes, shrinkLevel)
    const heapPlan = heapLevels === null ? null : this.#limitPlan(heapLevels, heapStart, this.#heapLive, shrinkLevel)
    const cExcess = cgroupPlan?.excess ?? 0
    const hExcess = heapPlan?.excess ?? 0
    const limit: LimitKind = hExcess !== cExcess ? (hExcess > cExcess ? 'heap' : 'cgroup') : heapDriven ? 'heap' : 'cgroup'
    const plan: ShrinkPlan = {
      level: shrinkLevel, collected: first !== null, collectable: collectable === null || !Number.isFinite(collectable) ? null : collectable,
      cgroup: cgroupPlan, heap: heapPlan, floor, requestedBytes: cycle.requested,
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
      const result = await this.#ask(entry, cycle, shrinkLevel, limit)
      results.push(result)
      if (result.reported !== null) cycle.reported += result.reported
      if (levelRank(cycle.level) > levelRank(shrinkLevel)) shrinkLevel = cycle.level
    }
    if (this.#closed) return
    // Next cycle at this level goes on with the next priorities; a critical one asked everyone.
    this.#cursor = shrinkLevel === 'critical' || ordered.length === 0 ? 0 : (from + asked) % ordered.length
    // Collect again only when shrinkers dropped something (or when nothing collected yet). Not for
    // the heap alone: V8 collects all garbage before it gives up (its last-resort collections), so
    // forcing one would only bring the reading earlier; V8's next major collection measures what
    // the shrinkers freed, and a cycle that comes before it collects first (the reading is stale).
    if (heapOnly && asked > 0) this.#heapStale = true
    const second = this.#heap !== false && !heapOnly && (first === null || asked > 0) ? (await this.#collect(rawNow, shrinkLevel, first !== null)).result : null
    if (this.#closed) return
    // Both reductions as one: a trim in the first (the basis was at the cut-off) is the cycle's too.
    const [h1, h2] = [first?.heap ?? null, second?.heap ?? null]
    const final = h1 !== null && h2 !== null ? { heap: joinReductions(h1, h2) } : (second ?? first ?? { heap: null })
    const after = this.#snapshot()
    if (after === null) {
      this.#cycle = null
      return
    }
    const afterBytes = levels === null ? 0 : this.#measure(after, levels)
    const levelAfter = higher(
      levels === null ? 'normal' : levelFor(levels, afterBytes, this.#cgroupLevel),
      heapLevels === null ? 'normal' : levelFor(heapLevels, this.#heapLive, this.#heapLevel),
    )
    const heapAfter = heapLevels === null ? null : { liveBytes: this.#heapLive, limitBytes: heapLevels.limit, level: levelFor(heapLevels, this.#heapLive, this.#heapLevel) }
    const report: ShrinkReport = {
      cycle: n,
      level: cycle.level,
      levelAfter,
      limit,
      basis: this.#options.basis ?? 'workingSet',
      requestedBytes: cycle.requested,
      reportedBytes: cycle.reported,
      freedBytes: startBytes - afterBytes,
      collectedBytes,
      allocatorFreeBytes: this.#credit,
      plan,
      shrinkers: results,
      heap: final.heap,
      heapRuns: (first === null ? 0 : 1) + (second === null ? 0 : 1),
      heapBefore,
      heapAfter,
      before,
      after,
      updates: cycle.updates,
      time: start,
      durationMs: this.#clock.now() - start,
      forcedGcMsPerMinute: this.#forcedPerMinute(this.#clock.now()),
    }
    const heapError = second?.error ?? first?.error
    if (heapError !== undefined) report.heapError = heapError
    // A cycle that freed nothing measurable (on either limit) backs off: full collections every
    // few seconds with nothing left to give back would only cost CPU.
    const freed = report.freedBytes > 0 || (heapBefore !== null && heapAfter !== null && heapAfter.liveBytes < heapBefore.liveBytes)
    this.#backoff = freed || this.#heapStale ? 1 : Math.min(this.#backoff * 2, 32)
    this.#cycle = null
    this.#lastCycleEnd = this.#clock.now()
    this.#lastCycleRank = levelRank(cycle.level)
    this.#host.shrink(report)
    // The level as the fresh snapshot says (may emit 'pressure' down and 'relief').
    this.#evaluate(true)
    if (!this.#closed && levelRank(this.#level) > 0 && this.#cycle === null) {
      // Still under pressure: at moderate the next cycle waits for the cool-down, at high and
      // critical for URGENT_MS at most. A cycle that freed nothing backs off from at least 50 ms.
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

  async #ask(entry: Registered, cycle: Cycle, level: PressureLevel, limit: LimitKind): Promise<ShrinkerResult> {
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
    const result: ShrinkerResult = { name: shrinker.name, priority, requestedBytes: remaining, size: size ?? null, fraction, reported: null, ms: 0 }
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
        (async () => shrinker.shrink({ level, limit, targetBytes: remaining, fraction, signal: abort.signal, cycle: cycle.n }))(),
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
