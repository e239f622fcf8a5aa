// The lru-cache shrinker (`node-memory-pressure/lru-cache`): under pressure, stale entries go first, then
// the least recently used, down to a share of the cache kept per level, through lru-cache's public API.

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
   * Adds an entry. Needed for `hold`: the shrinker wraps `set`, `fetch` and `memo` on this cache
   * object and trims to the cap after each (lru-cache 11 stores fetched values through a private
   * method, not `set`); optional otherwise.
   */
  set?(key: never, value: never, options?: never): unknown
}

/** Shares of entries (or of size, when the cache tracks sizes) kept at each level, from 0 to 1. */
export interface KeepShares {
  /** Default 0.75. */
  moderate?: number
  /** Default 0.5. */
  high?: number
  /** Default 0.1. */
  critical?: number
}

/** Options of {@link lruCacheShrinker}. */
export interface LruCacheShrinkerOptions {
  /** Name in shrink reports. Default `'lru-cache'`. */
  name?: string
  /** Shrinkers with a lower priority are asked first. Default 0. */
  priority?: number
  /** Share of the cache kept at each level (defaults: moderate 0.75, high 0.5, critical 0.1). */
  keep?: KeepShares
  /** Never evict below this many entries (the hottest ones). Default 0. */
  minEntries?: number
  /**
   * Bytes per unit of the cache's `sizeCalculation` (default 1: sizes are bytes). Used when the
   * cache tracks sizes.
   */
  sizeUnitBytes?: number
  /**
   * For a cache without sizes: an estimate of the bytes one entry holds, so that the shrinker can
   * report a size and freed bytes. Default: unknown (the monitor still measures what was freed).
   */
  bytesPerEntry?: number
  /**
   * Keep what was given back while pressure lasts (default `true`). After a shrink the cache is
   * capped at the size it was left at: `set()` evicts the least recently used entries to stay under
   * the cap, so the cache does not grow straight back into the memory the monitor just asked for
   * (which would bring the next level, and the next cycle, within a second). When the monitor's
   * level returns to `'normal'` the cap rises by `regrowth` of itself per second, until the next
   * shrink sets it again or the cache stops growing. `false`: the cache may grow again at once.
   * Needs `cache.set`; {@link LruCacheShrinker.detach} restores the cache's own `set`.
   */
  hold?: boolean
  /**
   * With `hold`: how fast the cap rises once the level is back to `'normal'`, as a share of the cap
   * per second (default 0.05). Slower finds the room left more gently (fewer shrink cycles, each one
   * a full garbage collection); `Infinity` lifts the cap at once.
   */
  regrowth?: number
  /** Milliseconds for `regrowth` (default `performance.now`); for tests with a manual clock. */
  now?: () => number
}

/** What the shrinker evicted since it was created. */
export interface LruCacheShrinkerStats {
  /** Times it was asked to shrink. */
  runs: number
  /** Entries removed by `pop()`. */
  evicted: number
  /** Entries removed by `purgeStale()`. */
  stale: number
  /** Bytes it reported freed, in total (0 for a cache without sizes and without `bytesPerEntry`). */
  reportedBytes: number
  /** Entries evicted after `set()`, `fetch()` or `memo()` to stay under the cap (`hold`). */
  capped: number
}

/** A {@link Shrinker} for one lru-cache, with statistics. */
export interface LruCacheShrinker extends Shrinker {
  /** `'bytes'` when the cache tracks sizes (eviction follows `targetBytes`), `'entries'` otherwise. */
  readonly mode: 'bytes' | 'entries'
  /** What it evicted so far (a live object). */
  readonly stats: Readonly<LruCacheShrinkerStats>
  /**
   * The cap `hold` keeps the cache under now (in the cache's size units when it tracks sizes,
   * else in entries), or `null` when there is none (no shrink yet, `hold: false`, detached, or
   * lifted by `regrowth: Infinity`).
   */
  readonly cap: number | null
  /** Stops holding: removes the cap and gives the cache back its own `set`, `fetch` and `memo`. Idempotent. */
  detach(): void
}

const DEFAULT_KEEP: Readonly<Record<Exclude<PressureLevel, 'normal'>, number>> = { moderate: 0.75, high: 0.5, critical: 0.1 }

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

/**
 * A shrinker for an lru-cache. At each level it first drops stale entries, then the least recently
 * used ones:
 * - with sizes (`maxSize`/`sizeCalculation`): until it has freed the request's `targetBytes`,
 *   but never below the level's keep share of `calculatedSize` (at `'critical'`, straight down to
 *   that share); it reports the size it removed;
 * - without sizes: down to the level's keep share of the entries; it reports `bytesPerEntry ×
 *   entries removed` when given, else nothing (the monitor measures).
 * Never below `minEntries`. lru-cache is not imported: pass your cache.
 *
 * @example
 * ```ts
 * import { LRUCache } from 'lru-cache'
 * import { lruCacheShrinker } from 'node-memory-pressure/lru-cache'
 * const cache = new LRUCache<string, Buffer>({ max: 10_000, maxSize: 2 ** 30, sizeCalculation: (b) => b.length })
 * monitor.register(lruCacheShrinker(cache, { name: 'thumbnails', minEntries: 100 }))
 * ```
 * @throws TypeError when `cache` lacks the lru-cache API; RangeError for an option out of range
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
  const now = options.now ?? (() => performance.now())
  if (typeof now !== 'function') throw new TypeError(`now must be a function (received ${describe(now)})`)
  const ownSet = cache.set
  if (options.hold === true && typeof ownSet !== 'function') {
    throw new TypeError('hold needs the cache\'s set() (an LRUCache from lru-cache 10 or 11)')
  }

  // The cap (hold), in size units or entries as the cache is measured. While the level is normal
  // (`growing`), each time the cache presses against the cap the cap first grows by `regrowth` per
  // second since the last time it did, counting at most one second: a cache that sat idle below
  // its cap gets one second's growth, not a burst's worth.
  let cap = Number.POSITIVE_INFINITY
  let growing = false
  let lastGrowth = 0
  let detached = false
  let lastLevel: PressureLevel | null = null // as last told by levelChanged
  const measure = (): number => (bySize() ? cache.calculatedSize : cache.size)
  const grow = (): void => {
    if (!growing || !Number.isFinite(cap)) return
    const t = now()
    const dt = Math.min(Math.max(0, t - lastGrowth), 1000)
    lastGrowth = t
    cap = regrowth === Number.POSITIVE_INFINITY ? regrowth : cap * (1 + (regrowth * dt) / 1000)
  }
  const enforce = (): void => {
    if (!Number.isFinite(cap) || measure() <= cap) return
    grow()
    while (measure() > cap && cache.size > Math.max(1, minEntries)) {
      cache.pop()
      stats.capped++
    }
  }
  // Every way in: set(), and fetch()/memo(), which lru-cache 11 stores through a private method.
  const wrapped: Array<[name: 'set' | 'fetch' | 'memo', own: PropertyDescriptor | undefined]> = []
  const holding = options.hold !== false && typeof ownSet === 'function'
  if (holding) {
    const target = cache as unknown as Record<string, unknown>
    for (const name of ['set', 'fetch', 'memo'] as const) {
      const original = target[name]
      if (typeof original !== 'function') continue
      wrapped.push([name, Object.getOwnPropertyDescriptor(cache, name)])
      const wrapper = function (this: unknown, ...args: unknown[]): unknown {
        const result: unknown = Reflect.apply(original, this, args)
        if (name === 'fetch' && result instanceof Promise) {
          result.then(enforce, () => undefined)
        } else {
          enforce()
        }
        return result
      }
      Object.defineProperty(cache, name, { value: wrapper, writable: true, configurable: true, enumerable: false })
    }
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
    if (holding && !detached) {
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
    get cap() {
      return Number.isFinite(cap) ? cap : null
    },
    size: () => (bySize() ? cache.calculatedSize * unit : perEntry === undefined ? undefined : cache.size * perEntry),
    shrink,
    levelChanged: (level) => {
      lastLevel = level
      if (!holding || detached || !Number.isFinite(cap)) return
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
      if (detached) return
      detached = true
      cap = Number.POSITIVE_INFINITY
      growing = false
      for (const [name, own] of wrapped) {
        if (own !== undefined) Object.defineProperty(cache, name, own)
        else delete (cache as unknown as Record<string, unknown>)[name]
      }
    },
  }
}
