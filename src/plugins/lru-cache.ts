// The lru-cache shrinker (`node-memory-pressure/lru-cache`): under pressure, stale entries go first, then
// the least recently used, down to a share of the cache kept per level, through lru-cache's public API.

import { performance } from 'node:perf_hooks'
import type { PressureLevel } from '../policy/levels.js'
import type { ShrinkRequest, Shrinker } from '../policy/shrinker.js'
import { describe } from '../size.js'

/**
 * The part of an lru-cache (`LRUCache` of lru-cache 10 or 11) the shrinker uses: public members
 * only. `max` and `maxSize` cannot change after construction, so shrinking is `purgeStale()` then
 * `pop()` (least recently used first; `dispose`/`disposeAfter` run as usual, reason `'evict'`).
 */
export interface LruCacheLike {
  /** Number of entries. */
  readonly size: number
  /** Sum of entry sizes when the cache tracks sizes (`maxSize`/`maxEntrySize` set), else 0. */
  readonly calculatedSize: number
  /** The cache's `maxSize` (0 when not set). */
  readonly maxSize: number
  /** Removes stale (expired) entries; true if any were removed. */
  purgeStale(): boolean
  /** Removes and returns the least recently used entry. */
  pop(): unknown
  /**
   * Adds an entry. Needed for `hold` on a cache built without {@link withHoldHook}: the shrinker
   * then wraps this cache object's `set`, `memo`, `load` and `fetch`; optional otherwise.
   */
  set?(key: never, value: never, options?: never): unknown
}

/** Shares of entries (or of size, when the cache tracks sizes) kept at each level, from 0 to 1. */
export interface KeepShares {
  /** Share kept at `'moderate'`. Default 0.75. */
  moderate?: number
  /** Share kept at `'high'`. Default 0.5. */
  high?: number
  /** Share kept at `'critical'`. Default 0.1; 0 empties the cache (entries above `minEntries`). */
  critical?: number
}

/** Options of {@link lruCacheShrinker}. */
export interface LruCacheShrinkerOptions {
  /** Name in shrink reports and metrics. Default `'lru-cache'`. Give each cache its own name when you register several. */
  name?: string
  /**
   * Order among the monitor's shrinkers: lower is asked first. Default 0. Give a cache whose misses
   * are cheap a lower number than one whose misses are expensive.
   */
  priority?: number
  /**
   * Share of the cache kept at each level (defaults: moderate 0.75, high 0.5, critical 0.1). Lower
   * shares give memory back faster at the cost of more misses afterwards.
   */
  keep?: KeepShares
  /**
   * Never evict below this many entries (the most recently used), neither when shrinking nor when
   * holding. Default 0. Set it when a few hot entries are worth keeping whatever the pressure.
   */
  minEntries?: number
  /**
   * Bytes per unit of the cache's `sizeCalculation`, for a cache that tracks sizes. Default 1 (the
   * sizes are bytes). Change it when your sizes are in other units (e.g. 1024 for KiB).
   */
  sizeUnitBytes?: number
  /**
   * For a cache without sizes: an estimate of the bytes one entry holds, so that the shrinker can
   * report its size and the bytes it freed. Default: unknown (the monitor still measures what was
   * freed). Set it when the monitor should size its requests to this cache.
   */
  bytesPerEntry?: number
  /**
   * Keep what was given back while pressure lasts. Default `true`: after a shrink the cache is
   * capped at the size it was left at; an insertion above the cap evicts the least recently used
   * entries, so the cache does not grow straight back into the memory the monitor just asked for.
   * Once the level is `'normal'` again the cap rises (see `regrowth`). `false`: the cache may grow
   * back at once (each shrink cycle then costs a full garbage collection sooner).
   *
   * How: a cache built with {@link withHoldHook} (lru-cache 11.1 or later) is held through its
   * `onInsert` hook, without touching its methods. Any other cache is held by wrapping `set`,
   * `memo`, `load` and `fetch` on the cache object (see {@link LruCacheShrinker.holdBy}).
   * `true` throws when neither is possible.
   */
  hold?: boolean
  /**
   * With `hold`: how fast the cap rises once the level is back to `'normal'`, as a share of the cap
   * per second (of one entry's size while the cap is below one entry), counted while insertions
   * press against the cap, and at most one second's worth per insertion. Default 0.05. Slower
   * finds the room left more gently (fewer shrink cycles); `Infinity` lifts the cap at once.
   */
  regrowth?: number
  /**
   * The clock `regrowth` reads, in milliseconds. Default: `performance.now` of `node:perf_hooks`.
   * Change it in tests that move time by hand.
   */
  now?: () => number
}

/** What the shrinker evicted since it was created. */
export interface LruCacheShrinkerStats {
  /** Times it was asked to shrink. */
  runs: number
  /** Entries removed by `pop()` when shrinking. */
  evicted: number
  /** Entries removed by `purgeStale()`. */
  stale: number
  /** Bytes it reported freed, in total (0 for a cache without sizes and without `bytesPerEntry`). */
  reportedBytes: number
  /** Entries evicted after an insertion to stay under the cap (`hold`). */
  capped: number
}

/** A {@link Shrinker} for one lru-cache, with statistics. */
export interface LruCacheShrinker extends Shrinker {
  /** `'bytes'` when the cache tracks sizes (eviction follows `targetBytes`), `'entries'` otherwise. */
  readonly mode: 'bytes' | 'entries'
  /** What it evicted so far (a live object). */
  readonly stats: Readonly<LruCacheShrinkerStats>
  /**
   * How the cap is enforced: `'onInsert'` (the cache was built with {@link withHoldHook}; its
   * methods are untouched), `'wrapper'` (its `set`, `memo`, `load` and `fetch` are wrapped on the
   * cache object), or `null` (not holding: `hold: false`, or detached).
   */
  readonly holdBy: 'onInsert' | 'wrapper' | null
  /**
   * The cap `hold` keeps the cache under now, in whole units (the cache's size units when it tracks
   * sizes, else entries), or `null` when there is none (no shrink yet, `hold: false`, detached, or
   * lifted by `regrowth: Infinity`). Assigning a number of 0 or more sets the cap by hand (the
   * next insertion evicts down to it; `regrowth` applies as after a shrink); `null` lifts it.
   * Assigning throws a `TypeError` when the shrinker does not hold.
   */
  cap: number | null
  /** Stops holding: removes the cap, unbinds the hook or gives the cache back its own methods. Idempotent. */
  detach(): void
}

const DEFAULT_KEEP: Readonly<Record<Exclude<PressureLevel, 'normal'>, number>> = { moderate: 0.75, high: 0.5, critical: 0.1 }

// Read once: a global `performance` replaced later (test fakes, instrumentation) is not the clock.
const defaultNow = (): number => performance.now()

// The onInsert hooks withHoldHook() made, and the cap each held cache is kept under. lru-cache calls
// onInsert as a method of the cache (`this.#onInsert(...)`), so one hook can serve several caches
// (options reused, or copied by `new LRUCache(otherCache)`).
const hooks = new WeakSet<object>()
const held = new WeakMap<object, () => void>()

/**
 * lru-cache constructor options with the hook that lets {@link lruCacheShrinker} hold the cache
 * without wrapping its methods (lru-cache 11.1 or later, whose `onInsert` sees every insertion:
 * `set`, `fetch` results, `memo`, `load`). Your own `onInsert` is kept and called first. The options
 * may serve several caches; each is held by its own shrinker. On lru-cache 10 and 11.0, which have
 * no `onInsert`, the option is ignored and the shrinker wraps the methods instead.
 *
 * @example
 * ```ts
 * const cache = new LRUCache(withHoldHook({ max: 10_000, maxSize: 2 ** 30, sizeCalculation: (b) => b.length }))
 * monitor.register(lruCacheShrinker(cache)) // holdBy: 'onInsert'
 * ```
 * @throws TypeError when `options` is not an object or its `onInsert` is not a function
 */
export function withHoldHook<O extends object>(options: O): O {
  if (options === null || typeof options !== 'object') {
    throw new TypeError(`options must be an object (received ${describe(options)})`)
  }
  const own: unknown = (options as { onInsert?: unknown }).onInsert
  if (own !== undefined && typeof own !== 'function') {
    throw new TypeError(`options.onInsert must be a function (received ${describe(own)})`)
  }
  const onInsert = function (this: unknown, ...args: unknown[]): void {
    if (typeof own === 'function') Reflect.apply(own, this, args)
    if (this !== null && typeof this === 'object') held.get(this)?.()
  }
  hooks.add(onInsert)
  return { ...options, onInsert }
}

function share(name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !(value >= 0 && value <= 1)) {
    throw new RangeError(`${name} must be a share from 0 to 1 (received ${describe(value)})`)
  }
  return value
}

function positive(name: string, value: unknown, integer: boolean, allowZero: boolean): number | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || (!allowZero && value === 0) || (integer && !Number.isInteger(value))) {
    throw new RangeError(`${name} must be a ${integer ? 'whole ' : ''}number ${allowZero ? 'of 0 or more' : 'above 0'} (received ${describe(value)})`)
  }
  return value
}

// Wrapped when there is no hook, and where their `status` option is (index in the arguments).
// lru-cache 10 stores everything through `this.set`; 11 stores fetch(), memo() and load() results
// through a private method, so those are wrapped too.
const WRAPPED = [['set', 2], ['memo', 1], ['load', -1], ['fetch', -1]] as const

/**
 * A shrinker for an lru-cache. At each level it first drops stale entries, then the least recently
 * used ones:
 * - with sizes (`maxSize`/`sizeCalculation`): until it has freed the request's `targetBytes`,
 *   but never below the level's keep share of `calculatedSize` (at `'critical'`, straight down to
 *   that share); it reports the size it removed;
 * - without sizes: down to the level's keep share of the entries; it reports `bytesPerEntry ×
 *   entries removed` when given, else nothing (the monitor measures).
 * Never below `minEntries`. Then, with `hold`, it keeps the cache at that size until pressure ends.
 * lru-cache is not imported: pass your cache (build it with {@link withHoldHook} on lru-cache 11.1+).
 *
 * @example
 * ```ts
 * import { LRUCache } from 'lru-cache'
 * import { lruCacheShrinker, withHoldHook } from 'node-memory-pressure/lru-cache'
 * const cache = new LRUCache<string, Buffer>(withHoldHook({ max: 10_000, maxSize: 2 ** 30, sizeCalculation: (b) => b.length }))
 * monitor.register(lruCacheShrinker(cache, { name: 'thumbnails', minEntries: 100 }))
 * ```
 * @throws TypeError when `cache` lacks the lru-cache API, when `hold: true` cannot hold it, or when
 *   another shrinker holds it already; RangeError for an option out of range
 */
export function lruCacheShrinker(cache: LruCacheLike, options: LruCacheShrinkerOptions = {}): LruCacheShrinker {
  if (cache === null || typeof cache !== 'object' || typeof cache.pop !== 'function' || typeof cache.purgeStale !== 'function' || typeof cache.size !== 'number') {
    throw new TypeError(`cache must be an LRUCache from lru-cache 10 or 11 (received ${describe(cache)})`)
  }
  if (options === null || typeof options !== 'object') {
    throw new TypeError(`options must be an object (received ${describe(options)})`)
  }
  const name = options.name ?? 'lru-cache'
  if (typeof name !== 'string' || name === '') throw new TypeError(`name must be a non-empty string (received ${describe(name)})`)
  const priority = options.priority ?? 0
  if (typeof priority !== 'number' || !Number.isFinite(priority)) {
    throw new TypeError(`priority must be a finite number (received ${describe(priority)})`)
  }
  if (options.keep !== undefined && (options.keep === null || typeof options.keep !== 'object')) {
    throw new TypeError(`keep must be an object { moderate, high, critical } (received ${describe(options.keep)})`)
  }
  const keep: Record<PressureLevel, number> = {
    normal: 1,
    moderate: share('keep.moderate', options.keep?.moderate, DEFAULT_KEEP.moderate),
    high: share('keep.high', options.keep?.high, DEFAULT_KEEP.high),
    critical: share('keep.critical', options.keep?.critical, DEFAULT_KEEP.critical),
  }
  const minEntries = positive('minEntries', options.minEntries, true, true) ?? 0
  const unit = positive('sizeUnitBytes', options.sizeUnitBytes, false, false) ?? 1
  const perEntry = positive('bytesPerEntry', options.bytesPerEntry, false, false)
  const bySize = (): boolean => cache.maxSize > 0 || cache.calculatedSize > 0
  const stats: LruCacheShrinkerStats = { runs: 0, evicted: 0, stale: 0, reportedBytes: 0, capped: 0 }
  if (options.hold !== undefined && typeof options.hold !== 'boolean') {
    throw new TypeError(`hold must be a boolean (received ${describe(options.hold)})`)
  }
  const regrowth = options.regrowth ?? 0.05
  if (typeof regrowth !== 'number' || !(regrowth > 0)) {
    throw new RangeError(`regrowth must be a share per second above 0, or Infinity (received ${describe(regrowth)})`)
  }
  const now = options.now ?? defaultNow
  if (typeof now !== 'function') throw new TypeError(`now must be a function (received ${describe(now)})`)
  const hook: unknown = (cache as { onInsert?: unknown }).onInsert
  const hooked = typeof hook === 'function' && hooks.has(hook)
  if (options.hold !== false && held.has(cache)) {
    throw new TypeError('cache: another shrinker holds this cache already (detach() it first, or pass hold: false)')
  }
  const target = cache as unknown as Record<string, unknown>
  if (options.hold === true && !hooked && typeof target.set !== 'function') {
    throw new TypeError('hold needs a cache built with withHoldHook() or the cache\'s set() (an LRUCache from lru-cache 10 or 11)')
  }

  // The cap (hold), in size units or entries as the cache is measured. While the level is normal
  // (`growing`), each time the cache presses against the cap the cap first grows by `regrowth` per
  // second since the last time it did, counting at most one second: a cache that sat idle below
  // its cap gets one second's growth, not a burst's worth.
  let cap = Number.POSITIVE_INFINITY
  let growing = false
  let lastGrowth = 0
  let lastLevel: PressureLevel | null = null // as last told by levelChanged
  const measure = (): number => (bySize() ? cache.calculatedSize : cache.size)
  const grow = (): void => {
    if (!growing || !Number.isFinite(cap)) return
    const t = now()
    const dt = Math.min(Math.max(0, t - lastGrowth), 1000)
    lastGrowth = t
    // Growth is proportional to the cap, but at least to one entry: a cap of 0 must grow too.
    const entry = bySize() ? cache.calculatedSize / Math.max(1, cache.size) : 1
    const rate = (regrowth * dt) / 1000
    cap = regrowth === Number.POSITIVE_INFINITY ? regrowth : cap >= entry ? cap * (1 + rate) : cap + entry * rate
  }
  const enforce = (): void => {
    if (!Number.isFinite(cap) || measure() <= cap) return
    grow()
    // The newest entry stays even alone above the cap: evicting what was just inserted would make
    // the insertion a silent no-op.
    while (measure() > cap && cache.size > Math.max(1, minEntries)) {
      cache.pop()
      stats.capped++
    }
  }

  let holdBy: 'onInsert' | 'wrapper' | null = null
  const restore: Array<() => void> = []
  if (options.hold !== false && hooked) {
    holdBy = 'onInsert'
  } else if (options.hold !== false && typeof target.set === 'function') {
    holdBy = 'wrapper'
    for (const [method, statusAt] of WRAPPED) {
      if (typeof target[method] !== 'function') continue
      const own = Object.getOwnPropertyDescriptor(cache, method)
      // Looked up at each call, so that a patch of the prototype made after this (instrumentation)
      // is still called.
      const current = (): unknown => (own !== undefined && 'value' in own ? own.value : Reflect.get(Object.getPrototypeOf(cache) as object, method, cache))
      const wrapper =
        method === 'fetch'
          ? // The promise is not observed (that would mark a rejection as handled): what a fetch
            // stores is held at the next call instead (at once on lru-cache 10, which stores it by set()).
            function (this: unknown, ...args: unknown[]): unknown {
              enforce()
              return Reflect.apply(current() as (...a: unknown[]) => unknown, this, args)
            }
          : function (this: unknown, ...args: unknown[]): unknown {
              const result: unknown = Reflect.apply(current() as (...a: unknown[]) => unknown, this, args)
              enforce()
              const status = statusAt < 0 ? undefined : (args[statusAt] as { status?: { totalCalculatedSize?: unknown } } | undefined)?.status
              if (status != null && typeof status.totalCalculatedSize === 'number') status.totalCalculatedSize = cache.calculatedSize
              return result
            }
      Object.defineProperty(cache, method, { value: wrapper, writable: true, configurable: true, enumerable: false })
      restore.push(() => {
        if (own !== undefined) Object.defineProperty(cache, method, own)
        else delete target[method]
      })
    }
  }

  if (holdBy !== null) {
    held.set(cache, enforce)
    restore.push(() => held.delete(cache))
  }

  const shrink = (request: ShrinkRequest): number | undefined => {
    stats.runs++
    const entriesBefore = cache.size
    const sizeBefore = cache.calculatedSize
    cache.purgeStale()
    stats.stale += entriesBefore - cache.size
    const kept = keep[request.level]
    let reported: number | undefined
    if (bySize()) {
      const floor = sizeBefore * kept
      const goal = request.level === 'critical' ? floor : Math.max(floor, sizeBefore - request.targetBytes / unit)
      while (cache.calculatedSize > goal && cache.size > minEntries && !request.signal.aborted) {
        cache.pop()
        stats.evicted++
      }
      reported = (sizeBefore - cache.calculatedSize) * unit
    } else {
      const goal = Math.max(minEntries, Math.ceil(entriesBefore * kept))
      while (cache.size > goal && !request.signal.aborted) {
        cache.pop()
        stats.evicted++
      }
      if (perEntry !== undefined) reported = (entriesBefore - cache.size) * perEntry
    }
    if (reported !== undefined) stats.reportedBytes += reported
    if (holdBy !== null) {
      cap = measure()
      // asked after the level was already back to normal (a cycle's later shrinkers): grow from now
      growing = lastLevel === 'normal'
      lastGrowth = now()
    }
    return reported
  }

  return {
    name,
    priority,
    get mode() {
      return bySize() ? 'bytes' : 'entries'
    },
    stats,
    get holdBy() {
      return holdBy
    },
    get cap() {
      // Whole units: the cache holds whole entries (sizes are whole too), while the cap itself
      // grows by fractions so that slow growth is not rounded away.
      return Number.isFinite(cap) ? Math.floor(cap) : null
    },
    set cap(value: number | null) {
      if (holdBy === null) throw new TypeError('cap: this shrinker does not hold its cache (hold: false, or detached)')
      if (value !== null && (typeof value !== 'number' || !(value >= 0))) {
        throw new RangeError(`cap must be a number of 0 or more, or null (received ${describe(value)})`)
      }
      cap = value ?? Number.POSITIVE_INFINITY
      growing = lastLevel === 'normal'
      lastGrowth = now()
    },
    size: () => (bySize() ? cache.calculatedSize * unit : perEntry === undefined ? undefined : cache.size * perEntry),
    shrink,
    levelChanged: (level) => {
      lastLevel = level
      if (holdBy === null || !Number.isFinite(cap)) return
      if (level === 'normal') {
        if (!growing) {
          growing = true
          lastGrowth = now()
          if (regrowth === Number.POSITIVE_INFINITY) cap = regrowth
        }
      } else {
        growing = false // pressure again: the cap stays where it grew to
      }
    },
    detach: () => {
      if (holdBy === null) return
      holdBy = null
      cap = Number.POSITIVE_INFINITY
      growing = false
      for (const undo of restore.splice(0)) undo()
    },
  }
}
