// The policy engine behind a monitor's levels: it decides each limit's level after every wake-up
// (kernel watches, V8's major collections, timers), emits the changes, and runs shrink cycles one
// at a time by the rule of docs/how-it-works.md. The watches live in arming.ts, the allocator's
// credit in credit.ts, asking one shrinker in ask.ts.

import type { MemoryBackend, MemorySnapshot } from '../backends/types.js'
import { MemoryPressureError } from '../errors.js'
import { errorMessage } from '../emitter.js'
import { explicitPercentLevels, levelsInBytes, warnNoLimitOnce, withCgroup } from '../no-limit.js'
import { describe } from '../size.js'
import { Arming } from './arming.js'
import { askShrinker } from './ask.js'
import type { Clock } from './clock.js'
import { type EngineConfig, engineConfig } from './config.js'
import { AllocatorCredit } from './credit.js'
import { HeapBasis } from './heap-basis.js'
import { type HeapReduction, joinReductions } from './heap.js'
import {
  PRESSURE_LEVELS,
  type PressureLevel,
  type ResolvedLevels,
  basisOf,
  bytesToFree,
  higher,
  levelFor,
  levelRank,
  limitPlan,
  resolveHeapLevels,
  resolveLevels,
} from './levels.js'
import type { PolicyRuntime } from './runtime.js'
import { type HeapReading, type LimitKind, type LimitPlan, type ShrinkPlan, type ShrinkReport, type Shrinker, type ShrinkerResult, validateShrinker } from './shrinker.js'
import { LevelWaiters } from './waiters.js'

import { type HeapLevelBytes, type LevelBytes, type PolicyHost, type PolicyOptions, type PolicyTuning, type PressureEvent, type ReliefEvent } from './options.js'
import { MiB, URGENT_MS, garbageFloor, noCreditFrom } from './rules.js'

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

/** Levels, shrinkers and shrink cycles for one backend. Used by `MemoryMonitor`. */
export class PolicyEngine {
  #backend: MemoryBackend
  #host: PolicyHost
  #options: PolicyOptions
  #c: EngineConfig
  #clock: Clock
  #runtime: PolicyRuntime
  #credit: AllocatorCredit
  #arming: Arming
  #enabled = false
  /** The cgroup's levels (`null` while off, or with no cgroup limit while the heap is watched). */
  #levels: ResolvedLevels | null = null
  /** The limit the levels were resolved against. */
  #limit = Number.POSITIVE_INFINITY
  /** V8's heap as the second basis (`null` while it is not watched). */
  #heap: HeapBasis | null = null
  /** The forced collections of the last minute: [clock time, gc ms]. */
  #forced: Array<[number, number]> = []
  /** The combined level (the higher of the two), and each limit's own. */
  #level: PressureLevel = 'normal'
  #cgroupLevel: PressureLevel = 'normal'
  #lastDriver: LimitKind = 'cgroup'
  #cooldownTimer: unknown = null
  #shrinkers = new Set<Registered>()
  #seq = 0
  #cursor = 0
  #cycles = 0
  #backoff = 1
  /** Clock time the last cycle ended, and the rank of the level it ran at. */
  #lastCycleEnd = Number.NEGATIVE_INFINITY
  #lastCycleRank = 0
  #cycle: Cycle | null = null
  #waiters = new LevelWaiters()
  #closed = false
  /** Levels were asked for (`enable()`) but are off for lack of a limit. */
  #wanted = false

  constructor(backend: MemoryBackend, options: PolicyOptions, host: PolicyHost) {
    this.#backend = backend
    this.#host = host
    this.#options = options
    this.#c = engineConfig(backend, options)
    this.#clock = this.#c.clock
    this.#runtime = this.#c.runtime
    this.#credit = new AllocatorCredit(this.#c.allocator, this.#c.heapFree, this.#runtime, this.#c.customAllocator)
    this.#arming = new Arming(backend, this.#clock, this.#c.recheckMs, (crossed) => this.#evaluate(crossed), (err) => this.#host.error(err))
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
    const l = this.#heap?.levels
    if (l === undefined) return null
    return { limit: l.limit, moderate: l.enter[1], high: l.enter[2], critical: l.enter[3], hysteresis: l.hysteresis }
  }

  /** The heap as last learned, or `null` while it is not watched. */
  get heapReading(): HeapReading | null {
    return this.#heap?.reading() ?? null
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
      if (!this.#c.heapWatch && explicitPercentLevels(levels)) {
        throw withCgroup(new MemoryPressureError('ERR_NO_LIMIT', `levels in percent need a memory limit, and ${this.#backend.cgroup} has none`), this.#backend.cgroup)
      }
      warnNoLimitOnce(this.#backend.cgroup)
      if (!this.#c.heapWatch) return
      this.#levels = null
    } else {
      try {
        this.#levels = resolveLevels(typeof levels === 'object' ? levels : true, this.#options.hysteresis, this.#options.basis, snapshot.limit)
      } catch (err) {
        throw withCgroup(err, this.#backend.cgroup)
      }
    }
    if (this.#c.heapWatch) {
      const heapLevels = resolveHeapLevels(levels, this.#options.hysteresis, this.#runtime.oldGeneration().limitBytes)
      this.#heap = new HeapBasis(this.#runtime, heapLevels, () => this.#heapCollected())
    }
    this.#enabled = true
    this.#limit = snapshot.limit
    const bytes = this.#levels === null ? 0 : this.#measure(snapshot, this.#levels)
    this.#cgroupLevel = this.#levels === null ? 'normal' : levelFor(this.#levels, bytes, 'normal')
    if (this.#heap !== null) this.#heap.level = this.#heap.levelFrom('normal')
    const level = higher(this.#cgroupLevel, this.#heapLevel())
    const limit = this.#driver()
    const credit = this.#credit.bytes
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
    const h = levelRank(this.#heapLevel())
    const c = levelRank(this.#cgroupLevel)
    if (h !== c) this.#lastDriver = h > c ? 'heap' : 'cgroup'
    return this.#lastDriver
  }

  /** The heap's own level (`'normal'` while it is not watched). */
  #heapLevel(): PressureLevel {
    return this.#heap?.level ?? 'normal'
  }

  /**
   * V8 finished a major collection (the heap's live size is measured): evaluates only when that
   * moves the heap's level or a cycle is waiting on it, so a service far from its heap limit pays
   * one statistics read.
   */
  #heapCollected(): void {
    const heap = this.#heap
    if (heap === null || this.#closed) return
    if (heap.levelFrom(heap.level) !== heap.level || (this.#cycle !== null && levelRank(heap.level) > 0)) this.#evaluate(false)
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
    return this.#waiters.wait(rank, signal)
  }

  /** Stops watches and timers, aborts a running shrinker, rejects `until()` waiters. Idempotent. */
  close(): void {
    if (this.#closed) return
    this.#closed = true
    this.#heap?.close()
    this.#arming.close()
    if (this.#cooldownTimer !== null) this.#clock.clearTimeout(this.#cooldownTimer)
    this.#cooldownTimer = null
    this.#cycle?.abort?.abort(new MemoryPressureError('ERR_CLOSED', 'the monitor closed during a shrink cycle'))
    const closed = new MemoryPressureError('ERR_CLOSED', 'the monitor closed')
    this.#waiters.rejectAll(closed)
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

  /** The basis of `snapshot` less the allocator's credit (reads the allocator: once per decision). */
  #measure(snapshot: MemorySnapshot, levels: ResolvedLevels): number {
    return this.#credit.apply(basisOf(snapshot, levels.basis), levels)
  }

  /** Arms the kernel watches for the cgroup's level now. */
  #arm(snapshot: MemorySnapshot): void {
    if (this.#levels !== null && !this.#closed) this.#arming.arm(snapshot, this.#levels, this.#cgroupLevel, this.#credit.bytes)
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
    if (this.#heap !== null) this.#heap.level = this.#heap.levelFrom(this.#heap.level)
    const level = higher(this.#cgroupLevel, this.#heapLevel())
    const rose = levelRank(level) > levelRank(previous)
    this.#level = level
    if (levels !== null) {
      // the page cache on top of the basis (what the armed points were placed with), and the credit
      const offset = Math.max(0, snapshot.usage - (bytes + this.#credit.bytes))
      const step = Math.max(levels.hysteresis / 2, MiB)
      if (crossed || level !== previous || Math.abs(offset - this.#arming.offset) >= step / 2) this.#arm(snapshot)
      else this.#arming.recheck(offset, levels, Arming.holding(snapshot, levels, this.#cgroupLevel, this.#credit.bytes))
    }
    if (level !== previous) {
      this.#backoff = 1
      const time = this.#clock.now()
      this.#host.pressure({ level, previous, limit: this.#driver(), basis: this.#options.basis ?? 'workingSet', bytes, allocatorFreeBytes: this.#credit.bytes, heap: this.heapReading, snapshot, time })
      if (this.#closed) return // a listener closed the monitor
      this.#tellShrinkers(level, previous)
      if (level === 'normal') this.#host.relief({ previous, bytes, snapshot, time })
      this.#waiters.settle(level)
    }
    const cycle = this.#cycle
    if (cycle !== null && levelRank(level) > 0) {
      const need = this.#need(bytes, cycle.level)
      if (levelRank(level) > levelRank(cycle.level) || need > cycle.requested) {
        cycle.level = higher(level, cycle.level)
        cycle.requested = Math.max(cycle.requested, this.#need(bytes, cycle.level))
        cycle.updates++
      }
    } else if (rose && levelRank(level) > 0) {
      // Back at moderate within the cool-down of the last cycle (garbage building up again since,
      // typically): wait for the cool-down. High and critical start a cycle at once: waiting there
      // lets the garbage run up to critical, where the cycle also trims the heap.
      const since = this.#clock.now() - this.#lastCycleEnd
      if (since < this.#c.cooldownMs && level === 'moderate' && this.#lastCycleRank >= 1) {
        if (this.#cooldownTimer === null) this.#cycleAfter(this.#c.cooldownMs - since)
      } else {
        this.#startCycle()
      }
    }
  }

  /**
   * Bytes to free at `level`: the larger of what the cgroup's basis (`bytes`) and the heap's live
   * size exceed that level's exit point on their own limit by.
   */
  #need(bytes: number, level: PressureLevel): number {
    const c = this.#levels === null ? 0 : bytesToFree(this.#levels, bytes, level)
    const h = this.#heap === null ? 0 : bytesToFree(this.#heap.levels, this.#heap.live, level)
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
    if (this.#c.heap === false) return { heap: null }
    const trim = !this.#credit.counted || this.#levels === null || raw >= noCreditFrom(this.#levels)
    try {
      const heap = await this.#runtime.reduceHeap(trim ? this.#c.heap : { ...this.#c.heap, mallocTrim: false })
      if (heap.gc !== 'none') this.#forced.push([this.#clock.now(), heap.gcMs])
      // A full collection just ran: the old generation's size is its live size.
      if (heap.gc !== 'none') this.#heap?.measure()
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
      const second = await this.#reduce(bytes + this.#credit.bytes)
      result = second.heap === null ? { heap: result.heap, error: second.error } : { heap: joinReductions(result.heap, second.heap) }
      if (this.#closed) return { result, bytes: null }
      snapshot = this.#snapshot()
      bytes = snapshot === null ? null : this.#measure(snapshot, levels)
    }
    return { result, bytes }
  }

  async #runCycle(): Promise<void> {
    const levels = this.#levels
    const heap = this.#heap
    const before = this.#snapshot()
    if (!this.#enabled || before === null) return
    const n = ++this.#cycles
    const startBytes = levels === null ? 0 : this.#measure(before, levels)
    const heapStart = heap?.live ?? 0
    const heapBefore = this.heapReading
    let rawNow = startBytes + this.#credit.bytes
    const cgroupStart = levels === null ? 'normal' : levelFor(levels, startBytes, this.#cgroupLevel)
    const heapStartLevel = heap === null ? 'normal' : heap.levelFrom(heap.level)
    const heapDriven = levelRank(heapStartLevel) > levelRank(cgroupStart)
    // The cycle's level: the current one, or the one just measured if it is higher.
    const level = higher(this.#level, higher(cgroupStart, heapStartLevel))
    const cycle: Cycle = { n, level, requested: this.#need(startBytes, level), reported: 0, updates: 0, abort: null }
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
    // its last major collection (HeapBasis.collectable; unknown without the heap watched, or with a
    // gc of the user's own).
    const heapOnly = heapDriven && cgroupStart === 'normal'
    const v8Gc = typeof this.#c.heap === 'object' && (this.#c.heap.gc ?? 'v8-major') === 'v8-major'
    const collectable = heapOnly ? null : heap !== null && v8Gc ? heap.collectable() : Number.POSITIVE_INFINITY
    const stale = collectable === null ? heap?.stale === true : collectable >= (levels?.hysteresis ?? 0)
    if (this.#c.collectFirst && this.#c.heap !== false && stale) {
      const c = await this.#collect(rawNow, cycle.level, false)
      if (this.#closed) return
      first = c.result
      if (c.bytes !== null) {
        midBytes = c.bytes
        rawNow = midBytes + this.#credit.bytes
        collectedBytes = startBytes - midBytes
        // Notifications during the collection may have raised the cycle's level: keep the higher.
        const afterCollect = higher(
          levels === null ? 'normal' : levelFor(levels, midBytes, cycle.level),
          heap === null ? 'normal' : heap.levelFrom(cycle.level),
        )
        shrinkLevel = cycle.updates > 0 && levelRank(cycle.level) > levelRank(afterCollect) ? cycle.level : afterCollect
        cycle.requested = this.#need(midBytes, shrinkLevel)
        // The garbage floor (cgroup only; see rules.ts)
        if (this.#c.garbageRoom && levels !== null && !heapDriven) {
          const backToBack = levelRank(cycle.level) >= 2 && this.#lastCycleRank >= 2 && start - this.#lastCycleEnd < this.#c.cooldownMs
          floor = garbageFloor(levels, cycle.level, midBytes, backToBack, () => this.#runtime.externalMemory())
          if (floor !== null && cycle.requested < floor.bytes) {
            cycle.requested = floor.bytes
            const at: PressureLevel = backToBack ? 'moderate' : 'high'
            if (levelRank(shrinkLevel) < levelRank(at)) shrinkLevel = at
          } else floor = null
        }
      }
    }
    const cgroupPlan = levels === null ? null : limitPlan(levels, startBytes, midBytes, shrinkLevel)
    const heapPlan = heap === null ? null : limitPlan(heap.levels, heapStart, heap.live, shrinkLevel)
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
      const result = await askShrinker(entry.shrinker, entry.priority, {
        bytes: Math.max(0, cycle.requested - cycle.reported), level: shrinkLevel, limit, cycle: n, timeoutMs: this.#c.timeoutMs, clock: this.#clock,
        running: (abort) => void (cycle.abort = abort),
      })
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
    // (a shrinker that reported 0 dropped nothing; one that said nothing may have)
    if (heapOnly && results.some((r) => r.reported !== 0)) heap?.asked()
    const second = this.#c.heap !== false && !heapOnly && (first === null || asked > 0) ? (await this.#collect(rawNow, shrinkLevel, first !== null)).result : null
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
    const heapAfter = heap === null ? null : heap.reading(heap.levelFrom(heap.level))
    const levelAfter = higher(levels === null ? 'normal' : levelFor(levels, afterBytes, this.#cgroupLevel), heapAfter?.level ?? 'normal')
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
      allocatorFreeBytes: this.#credit.bytes,
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
    // (A cycle of the heap alone that collected nothing has no measurement yet: V8's next says.)
    this.#backoff = freed || (heapOnly && first === null && heap?.pending === true) ? 1 : Math.min(this.#backoff * 2, 32)
    this.#cycle = null
    this.#lastCycleEnd = this.#clock.now()
    this.#lastCycleRank = levelRank(cycle.level)
    this.#host.shrink(report)
    // The level as the fresh snapshot says (may emit 'pressure' down and 'relief').
    this.#evaluate(true)
    if (!this.#closed && levelRank(this.#level) > 0 && this.#cycle === null) {
      // Still under pressure: at moderate the next cycle waits for the cool-down, at high and
      // critical for URGENT_MS at most. A cycle that freed nothing backs off from at least 50 ms.
      const wait = levelRank(this.#level) >= 2 ? Math.min(this.#c.cooldownMs, URGENT_MS) : this.#c.cooldownMs
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
      const rest = this.#c.cooldownMs - (this.#clock.now() - this.#lastCycleEnd)
      if (levelRank(this.#level) === 1 && rest > 0) this.#cycleAfter(rest)
      else this.#startCycle()
    }, ms)
  }


}
