// Pressure levels: thresholds on a basis (working set by default) with a hysteresis band, and the
// arithmetic that maps a snapshot to a level and a level to the usage values worth watching.

import type { MemorySnapshot } from '../backends/types.js'
import { type Threshold, describe, parseThreshold, resolveThreshold } from '../size.js'
import type { LimitPlan } from './shrinker.js'

/** Pressure levels, from none to the last moment before an OOM kill. */
export type PressureLevel = 'normal' | 'moderate' | 'high' | 'critical'

/** The levels in increasing order. */
export const PRESSURE_LEVELS: readonly PressureLevel[] = ['normal', 'moderate', 'high', 'critical']

/** The rank of a level: 0 for `'normal'` to 3 for `'critical'`. */
export function levelRank(level: PressureLevel): number {
  return PRESSURE_LEVELS.indexOf(level)
}

/**
 * Which figure of a snapshot levels are decided on:
 * - `'workingSet'` (default): usage minus inactive page cache, what the kernel cannot simply drop
 *   (kubelet's working set). Page cache charged to the cgroup is reclaimable and is not the
 *   application's memory, so it must not trigger shrinking.
 * - `'usage'`: everything charged to the cgroup, page cache included.
 * - `'rss'`: anonymous memory only (heap, stacks, Buffers).
 */
export type PressureBasis = 'workingSet' | 'usage' | 'rss'

export const PRESSURE_BASES: readonly PressureBasis[] = ['workingSet', 'usage', 'rss']

/**
 * Thresholds of the levels above `'normal'`: bytes, size strings or percentages of the limit. A
 * level left out gets its default: the percentage of {@link DEFAULT_LEVELS}, and for `moderate` and
 * `high` above a 320 MiB cgroup limit, `limit − 96 MiB` and `limit − 48 MiB` where that is higher,
 * at most 80% and 90%.
 */
export interface LevelThresholds {
  /** Entering `'moderate'`. Default `'70%'`, up to 80% (limit − 96 MiB) above a 320 MiB limit. */
  moderate?: Threshold
  /** Entering `'high'`. Default `'85%'`, up to 90% (limit − 48 MiB) above a 320 MiB limit. */
  high?: Threshold
  /** Entering `'critical'`. Default `'95%'`. */
  critical?: Threshold
}

/** Defaults of {@link LevelThresholds} at limits up to 320 MiB, and their floor above. */
export const DEFAULT_LEVELS: Required<LevelThresholds> = { moderate: '70%', high: '85%', critical: '95%' }

/**
 * How a default cgroup level rises with the limit. The room a Node process needs above its cache
 * (the garbage V8 lets build up between its own collections, what is allocated while a cycle
 * reacts) is about the same number of MiB at any limit, so a fixed percentage leaves more memory
 * unused the larger the limit: a level without a threshold of its own enters at its percentage or
 * at `limit − headroom`, whichever is higher, never above `max`. When a raised default would not
 * stay below a threshold given explicitly, the defaults keep their percentages.
 * @internal
 */
export const DEFAULT_LEVEL_HEADROOM: Readonly<Record<'moderate' | 'high', { readonly headroom: number; readonly max: number }>> = {
  moderate: { headroom: 96 * 2 ** 20, max: 0.8 },
  high: { headroom: 48 * 2 ** 20, max: 0.9 },
}
/** Default hysteresis: 5% of the limit, at most 10 MiB. */
export const DEFAULT_HYSTERESIS: Threshold = '5%'
const defaultHysteresis = parseThreshold(DEFAULT_HYSTERESIS, 'hysteresis')

/**
 * The most the default hysteresis is, in bytes (5% of a 200 MiB limit). What the band absorbs (the
 * garbage V8 lets build up, the kernel's check granularity) does not grow with the limit, while a
 * cycle asks the shrinkers for everything down to the level's exit point: a wider band only holds
 * caches further below the limit. A `hysteresis` given explicitly is taken as it is.
 * @internal
 */
export const DEFAULT_HYSTERESIS_MAX = 10 * 2 ** 20

/** Levels resolved to bytes against one limit. */
export interface ResolvedLevels {
  /** Entry thresholds in bytes, indexed by rank (index 0, `'normal'`, is 0). */
  readonly enter: readonly [0, number, number, number]
  /** Bytes the basis must fall below a level's threshold before the level is left. */
  readonly hysteresis: number
  readonly basis: PressureBasis
  /** The limit the percentages were taken of (`Infinity` when none). */
  readonly limit: number
}

/**
 * Resolves level thresholds and the hysteresis against `limit`. Percentages need a finite limit
 * (`ERR_NO_LIMIT`). Throws `ERR_INVALID_THRESHOLD` when the thresholds are not strictly increasing
 * or one is above the limit, `TypeError` for a basis or option of the wrong kind.
 */
export function resolveLevels(
  levels: LevelThresholds | true,
  hysteresis: Threshold | undefined,
  basis: PressureBasis | undefined,
  limit: number,
  raise = true,
): ResolvedLevels {
  if (levels !== true && (levels === null || typeof levels !== 'object')) {
    throw new TypeError(`levels must be true or an object { moderate, high, critical } (received ${describe(levels)})`)
  }
  const b = basis ?? 'workingSet'
  if (!PRESSURE_BASES.includes(b)) throw new TypeError(`basis must be 'workingSet', 'usage' or 'rss' (received ${describe(basis)})`)
  const given = levels === true ? {} : levels
  const names = ['moderate', 'high', 'critical'] as const
  let bytes = names.map((name) =>
    resolveThreshold(parseThreshold(given[name] ?? DEFAULT_LEVELS[name], `levels.${name}`), limit, `levels.${name}`),
  ) as [number, number, number]
  if (raise && Number.isFinite(limit)) {
    const raised = bytes.map((b, i) => {
      const name = names[i] ?? 'critical'
      if (given[name] !== undefined || name === 'critical') return b
      const { headroom, max } = DEFAULT_LEVEL_HEADROOM[name]
      return Math.max(b, Math.floor(Math.min(limit * max, limit - headroom)))
    }) as [number, number, number]
    if (raised[0] < raised[1] && raised[1] < raised[2]) bytes = raised
  }
  if (!(bytes[0] < bytes[1] && bytes[1] < bytes[2])) {
    throw new RangeError(`levels must increase: moderate < high < critical (received ${bytes.join(' < ')} bytes)`)
  }
  let h = 0
  if (hysteresis === undefined) {
    // 5% of the limit, at most the cap; with no limit to take 5% of, of the critical threshold,
    // the nearest thing to one.
    h = Math.min(resolveThreshold(defaultHysteresis, Number.isFinite(limit) ? limit : bytes[2], 'hysteresis'), DEFAULT_HYSTERESIS_MAX)
  } else if (hysteresis !== 0) {
    h = resolveThreshold(parseThreshold(hysteresis, 'hysteresis'), limit, 'hysteresis')
  }
  if (h >= bytes[0]) {
    throw new RangeError(`hysteresis must be smaller than the moderate threshold of ${bytes[0]} bytes (received ${h} bytes)`)
  }
  return { enter: [0, bytes[0], bytes[1], bytes[2]], hysteresis: h, basis: b, limit }
}

/**
 * Levels on V8's old generation: the percentages of `levels` of the old generation's `limit` (a
 * level given in bytes or left out gets its default percentage: bytes name a cgroup's memory), the
 * hysteresis resolved the same way. No headroom rule: the heap's basis is a live size measured
 * after a collection, without the garbage the cgroup's room above its levels is for. Settings
 * that do not fit this limit (a hysteresis in bytes above moderate) fall back to the defaults.
 */
export function resolveHeapLevels(levels: LevelThresholds | boolean | undefined, hysteresis: Threshold | undefined, limit: number): ResolvedLevels {
  const given: LevelThresholds = {}
  if (typeof levels === 'object' && levels !== null) {
    for (const name of ['moderate', 'high', 'critical'] as const) {
      const t = levels[name]
      if (t !== undefined && parseThreshold(t, `levels.${name}`).kind === 'percent') given[name] = t
    }
  }
  try {
    return resolveLevels(given, hysteresis, 'workingSet', limit, false)
  } catch {
    return resolveLevels(true, undefined, 'workingSet', limit, false)
  }
}

/** The higher of two levels. */
export function higher(a: PressureLevel, b: PressureLevel): PressureLevel {
  return levelRank(a) >= levelRank(b) ? a : b
}

/** The figure of `snapshot` levels are decided on. */
export function basisOf(snapshot: MemorySnapshot, basis: PressureBasis): number {
  switch (basis) {
    case 'usage':
      return snapshot.usage
    case 'rss':
      return Math.min(snapshot.rss, snapshot.usage)
    default:
      return Math.max(0, Math.min(snapshot.workingSet, snapshot.usage))
  }
}

/** The basis value below which level `rank` (1..3) is left: its threshold minus the hysteresis. */
export function exitPoint(levels: ResolvedLevels, rank: number): number {
  return (levels.enter[rank] ?? 0) - levels.hysteresis
}

/**
 * The level for `basis` bytes when the current level is `current`: up at a threshold, down only
 * at or below threshold − hysteresis, several levels at once if the basis jumped.
 */
export function levelFor(levels: ResolvedLevels, basis: number, current: PressureLevel): PressureLevel {
  let rank = levelRank(current)
  const start = rank
  while (rank < 3 && basis >= (levels.enter[rank + 1] ?? Infinity)) rank++
  if (rank === start) {
    // at the exit point is out: a shrinker that frees exactly what bytesToFree asked leaves the level
    while (rank > 0 && basis <= exitPoint(levels, rank)) rank--
  }
  return PRESSURE_LEVELS[rank] ?? 'normal'
}

/**
 * Bytes a shrink cycle at `level` should free: from the basis down to the point where the level is
 * left (its threshold minus the hysteresis; reaching it is enough). 0 at `'normal'`.
 */
export function bytesToFree(levels: ResolvedLevels, basis: number, level: PressureLevel): number {
  const rank = levelRank(level)
  if (rank === 0) return 0
  return Math.max(0, Math.ceil(basis - exitPoint(levels, rank)))
}

/** Usage values (bytes) to register as kernel thresholds after a wake-up; see {@link watchPoints}. */
export interface WatchPoints {
  /**
   * A usage value a little below the current usage, or `null`: page cache being dropped lowers
   * usage and the offset between usage and basis together, and the level points move with it.
   */
  drift: number | null
  /** `usage − basis` at the snapshot: the page cache (or cache and more, for `'rss'`) on top of the basis. */
  offset: number
  /**
   * Usage values of every reachable level's entry and exit point: armed together, a level change
   * moves none of them.
   */
  all: number[]
}

/**
 * Kernel thresholds are on usage, levels on the basis. With `offset = usage − basis` as of the
 * snapshot, the basis reaches `x` when usage reaches `x + offset` unless the page cache changes
 * meanwhile. Cache growth only makes these points fire early (a harmless wake-up and re-arm); cache
 * loss moves them down, which the drift point catches when usage falls, and the periodic re-check
 * catches when cache is reclaimed to make room for new memory (usage then stays at the limit).
 *
 * @param step - how far below usage the drift point sits (bytes)
 */
export function watchPoints(levels: ResolvedLevels, snapshot: MemorySnapshot, step: number): WatchPoints {
  const basis = basisOf(snapshot, levels.basis)
  const offset = Math.max(0, snapshot.usage - basis)
  const limit = Number.isFinite(snapshot.limit) ? snapshot.limit : Infinity
  // Less cache than half a step on top of the basis can move the other points by no more than
  // that: not worth a watch that fires at every garbage collection (and the re-check covers it).
  const drift = offset >= step / 2 && snapshot.usage - step > 0 ? Math.floor(snapshot.usage - step) : null
  const all: number[] = []
  for (let r = 1; r <= 3; r++) {
    // a level whose entry lies above the limit cannot be reached: neither of its points is needed
    const e = Math.ceil((levels.enter[r] ?? Infinity) + offset)
    if (!(e <= limit && Number.isSafeInteger(e))) continue
    all.push(e)
    const x = Math.floor(exitPoint(levels, r) + offset)
    if (x > 0) all.push(x)
  }
  return { drift, offset, all }
}

/** What a limit's levels make of a basis at `level`: its target and reserve (see `LimitPlan`). */
export function limitPlan(levels: ResolvedLevels, before: number, measured: number, level: PressureLevel): LimitPlan {
  const rank = levelRank(level)
  const target = rank === 0 ? null : exitPoint(levels, rank)
  return {
    limit: levels.limit,
    before,
    measured,
    threshold: rank === 0 ? null : levels.enter[rank as 1 | 2 | 3],
    hysteresis: levels.hysteresis,
    target,
    reserve: target === null ? null : levels.limit - target,
    excess: bytesToFree(levels, measured, level),
  }
}
