// The lru-cache shrinker (`memory-pressure/lru-cache`): under pressure, stale entries go first, then
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
}

/** A {@link Shrinker} for one lru-cache, with statistics. */
export interface LruCacheShrinker extends Shrinker {
  /** `'bytes'` when the cache tracks sizes (eviction follows `targetBytes`), `'entries'` otherwise. */
  readonly mode: 'bytes' | 'entries'
  /** What it evicted so far (a live object). */
  readonly stats: Readonly<LruCacheShrinkerStats>
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
 * import { lruCacheShrinker } from 'memory-pressure/lru-cache'
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
  const stats: LruCacheShrinkerStats = { runs: 0, evicted: 0, stale: 0, reportedBytes: 0 }

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
    return reported
  }

  return {
    name,
    priority,
    get mode() {
      return bySize() ? 'bytes' : 'entries'
    },
    stats,
    size: () => (bySize() ? cache.calculatedSize * unit : perEntry === undefined ? undefined : cache.size * perEntry),
    shrink,
  }
}
