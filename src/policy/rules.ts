// The few constants of the shrink rule (docs/how-it-works.md) that are not levels: the garbage
// floor, where the allocator's credit ends, and how soon a cycle follows one that left the level high.

import type { PressureLevel, ResolvedLevels } from './levels.js'
import type { ShrinkPlan } from './shrinker.js'

export const MiB = 2 ** 20

/**
 * The allocator's credit (free-list bytes counted as available) ends at critical, or this far below
 * the limit where critical is nearer: free lists serve only allocations that fit them, while V8's
 * own pages and larger allocations need room below the limit whatever its size.
 */
const CREDIT_ROOM = 8 * MiB

/** The room {@link backstopRoom} keeps below the limit beyond V8's external step. */
const BACKSTOP_ROOM = 16 * MiB

/**
 * The basis without the allocator's credit from which the credit is no longer given and cycles
 * trim: `min(critical, limit − CREDIT_ROOM)`. Trimming earlier gives pages back that the next
 * allocations fault in again (kernel time); later leaves too little room for what the free lists
 * cannot serve.
 */
export function noCreditFrom(levels: ResolvedLevels): number {
  return Math.min(levels.enter[3], levels.limit - CREDIT_ROOM)
}

/**
 * How far V8's external memory (the backing stores of Buffers and ArrayBuffers) grows past its
 * size at the last collection before V8 collects on its own: `kExternalAllocationSoftLimit` in V8's
 * public `v8-internal.h`, 64 MiB in Node 20 to 24.
 */
const V8_EXTERNAL_STEP = 64 * MiB

/**
 * The garbage floor: a request large enough that the basis after a collection sits V8's external
 * step, and {@link BACKSTOP_ROOM} more, below the limit. Above that, Buffers a cache dropped reach
 * the limit before V8 collects them on its own, and only the SDK's cycles stand between them and
 * the OOM kill. Nothing where that point would be under a quarter of the limit (limits under about
 * 107 MiB), where no cache size brings V8's own collection below the limit.
 */
export function backstopRoom(levels: ResolvedLevels, bytes: number): number {
  const below = levels.limit - V8_EXTERNAL_STEP - BACKSTOP_ROOM
  return below < levels.limit / 4 ? 0 : Math.ceil(bytes - below)
}

/**
 * The longest a cycle that ended at `high` or `critical` waits before the next one: the level
 * cannot rise further to start one, and a whole cool-down there lets an allocation burst reach the
 * limit.
 */
export const URGENT_MS = 100

/**
 * The garbage floor of a cycle of the cgroup at `level` with `bytes` of basis after its first
 * collection, or `null`. V8 collects dead Buffers on its own only after its external memory grew
 * {@link V8_EXTERNAL_STEP}, so the cache is asked to leave that much room below the limit when
 * garbage is seen to come back fast (`backToBack`: a cycle at high within a cool-down of one at
 * high; then at least half the hysteresis), or at moderate when the memory is Buffers (V8's
 * external memory, read only then, at least the floor: a cache that filled before there was garbage).
 */
export function garbageFloor(levels: ResolvedLevels, level: PressureLevel, bytes: number, backToBack: boolean, external: () => number): ShrinkPlan['floor'] {
  if (backToBack) return { rule: 'back-to-back', bytes: Math.max(Math.ceil(levels.hysteresis / 2), backstopRoom(levels, bytes)) }
  if (level !== 'moderate') return null
  const room = backstopRoom(levels, bytes)
  if (room <= 0) return null
  const externalBytes = external()
  return externalBytes >= room ? { rule: 'buffers-at-moderate', bytes: room, externalBytes } : null
}
