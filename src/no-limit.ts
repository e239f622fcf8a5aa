// What levels do when the cgroup has no memory limit (a laptop, a CI runner): they stay off with
// one process warning, instead of failing on percentages the user never wrote.

import { MemoryPressureError } from './errors.js'
import type { LevelThresholds } from './policy/levels.js'
import { parseThreshold } from './size.js'

// On globalThis so that two copies of the package in one process (a bundled and an installed one)
// warn once between them, as the warning promises.
const WARNED = Symbol.for('node-memory-pressure.no-limit-warned')

/**
 * True when levels without a limit must be refused (`ERR_NO_LIMIT`) rather than left off: the
 * user wrote a percentage in `levels`. Defaults (`levels: true`, or levels left out) are not the
 * user's percentages.
 */
export function explicitPercentLevels(levels: LevelThresholds | boolean | undefined): boolean {
  if (levels === null || typeof levels !== 'object') return false
  return Object.values(levels).some((v) => {
    try {
      return parseThreshold(v, 'levels').kind === 'percent'
    } catch {
      return false
    }
  })
}

/** True when levels given in bytes for all three levels can run without a limit. */
export function levelsInBytes(levels: LevelThresholds | boolean | undefined): boolean {
  return levels !== null && typeof levels === 'object' && !explicitPercentLevels(levels) &&
    levels.moderate !== undefined && levels.high !== undefined && levels.critical !== undefined
}

/**
 * Emits, once per process, a warning (`MemoryPressureError` `ERR_NO_LIMIT`, `.path` the cgroup)
 * saying that levels are off because `cgroup` has no memory limit.
 */
export function warnNoLimitOnce(cgroup: string): void {
  const g = globalThis as { [WARNED]?: boolean }
  if (g[WARNED] === true) return
  g[WARNED] = true
  process.emitWarning(new MemoryPressureError('ERR_NO_LIMIT',
    `the cgroup ${cgroup} has no memory limit: its pressure levels are off until one is set (V8's heap limit is still watched unless heapLimit is false)`,
    { path: cgroup }))
}

/** `err` with the cgroup named, when it is an `ERR_NO_LIMIT` that does not name one yet. */
export function withCgroup(err: unknown, cgroup: string): unknown {
  if (!(err instanceof MemoryPressureError) || err.code !== 'ERR_NO_LIMIT' || err.path !== undefined) return err
  return new MemoryPressureError('ERR_NO_LIMIT', `${err.message} (cgroup ${cgroup})`, { path: cgroup, cause: err })
}
