// The kernel thresholds a PolicyEngine keeps armed so that it wakes when the basis may change level.
//
// Why the thresholds move. Levels are decided on the basis (working set by default), read from
// memory.stat after a wake-up, but the kernel compares thresholds with usage, page cache included
// (memory.usage_in_bytes, cgroup-v1/memory.rst §5.5 and §9). A fixed kernel threshold at a level's
// byte value would fire for page cache alone and, worse, stay crossed while cache holds usage above
// it, so the basis reaching the level later would never wake anyone. After every wake-up the
// engine therefore drops its watches and registers new ones at usage = point + (usage − basis) for
// every level's entry and exit point, plus a drift point a little below usage that fires when page
// cache is dropped (which moves both points down). When cache is reclaimed to make room (usage
// pinned at the limit, basis rising underneath), no usage threshold moves: a slow re-check on the
// clock reads memory.stat while there is cache on top of the basis, or while free allocator memory
// holds the level down (allocations drain it without moving usage), and only then; otherwise every
// basis rise is a usage rise and the watches alone are exact.

import type { MemoryBackend, MemorySnapshot, ThresholdWatch } from '../backends/types.js'
import { MemoryPressureError } from '../errors.js'
import type { Clock } from './clock.js'
import { type PressureLevel, type ResolvedLevels, basisOf, levelFor, levelRank, watchPoints } from './levels.js'
import { MiB } from './rules.js'

/** The watches of one engine, and its re-check timer. */
export class Arming {
  #backend: MemoryBackend
  #clock: Clock
  #recheckMs: number
  #evaluate: (crossed: boolean) => void
  #error: (err: MemoryPressureError) => void
  #watches: ThresholdWatch[] = []
  #recheckTimer: unknown = null
  #queued = false
  #closed = false
  /** The page cache on top of the basis that the armed points were placed with. */
  offset = 0

  /** `evaluate(crossed)` is called after a watch fired (`true`) or a re-check came due (`false`). */
  constructor(backend: MemoryBackend, clock: Clock, recheckMs: number, evaluate: (crossed: boolean) => void, error: (err: MemoryPressureError) => void) {
    this.#backend = backend
    this.#clock = clock
    this.#recheckMs = recheckMs
    this.#evaluate = evaluate
    this.#error = error
  }

  /** Closes every watch and stops the re-check. */
  close(): void {
    this.#closed = true
    for (const w of this.#watches) w.close()
    this.#watches = []
    this.#stopRecheck()
  }

  #stopRecheck(): void {
    if (this.#recheckTimer !== null) this.#clock.clearTimeout(this.#recheckTimer)
    this.#recheckTimer = null
  }

  /**
   * Registers the watches that matter from `snapshot` at `level` (the cgroup's), keeping those
   * already at the right value: on cgroup v1 every registration waits for an RCU grace period in
   * the kernel (`synchronize_rcu()` in the threshold registration, tens of milliseconds), and the
   * event loop waits with it. `credit`: the allocator's free bytes counted at the last reading.
   */
  arm(snapshot: MemorySnapshot, levels: ResolvedLevels, level: PressureLevel, credit: number): void {
    if (this.#closed) return
    const step = Math.max(levels.hysteresis / 2, MiB)
    const points = watchPoints(levels, snapshot, step)
    this.offset = points.offset
    // Every level's entry and exit point, not only the two next to the current level: a level
    // change then moves no watch (only a change of the page cache on top of the basis does).
    const values = new Set<number>()
    for (const v of [...points.all, points.drift]) if (v !== null && v > 0) values.add(v)
    // Free allocator memory counted as available: the level points above are placed without that
    // credit, so they fire early, and once usage is past them nothing would fire as it grows. A
    // point above usage does: one step above, or, where the credit is what holds the level below
    // the next one, as near as the backend can see (allocations then drain the free lists without
    // moving usage, and usage rising at all says they ran dry): 1 MiB, about the kernel's check
    // granularity, or the backend's precision where that is coarser. A polled backend reads the
    // more often the nearer a watch is, and one nearer than its precision only costs reads.
    const rank = levelRank(level)
    const held = Arming.holding(snapshot, levels, level, credit)
    const heldBelow = held > 0
    if (credit >= step / 2 || heldBelow) {
      const near = Math.max(MiB, this.#backend.precision.bytes)
      const next = heldBelow ? Math.ceil((levels.enter[rank + 1] ?? Infinity) + points.offset + credit) : Infinity
      const rise = Math.ceil(Math.min(snapshot.usage + (heldBelow ? near : Math.max(step, near)), (snapshot.usage + snapshot.limit) / 2, next))
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
    this.#stopRecheck()
    try {
      for (const v of values) this.#watches.push(this.#backend.watchThreshold(v, () => this.#wake()))
    } catch (err) {
      if (!this.#backend.closed) this.#error(err instanceof MemoryPressureError ? err : new MemoryPressureError('ERR_SYSCALL', String(err), { cause: err }))
    }
    this.recheck(points.offset, levels, held)
  }

  /**
   * The credit when it is what holds the cgroup's level below the one the basis without it is at
   * (allocations can then move the level without moving usage), else 0.
   */
  static holding(snapshot: MemorySnapshot, levels: ResolvedLevels, level: PressureLevel, credit: number): number {
    const rank = levelRank(level)
    return credit > 0 && rank < 3 && levelRank(levelFor(levels, basisOf(snapshot, levels.basis), level)) > rank ? credit : 0
  }

  /**
   * A re-read of the snapshot after the re-check interval, when something besides usage can move
   * the level: page cache on top of the basis (`offset`), or free allocator memory that holds the
   * level down (`credit`, see {@link Arming.holding}; allocations drain it without moving usage).
   */
  recheck(offset: number, levels: ResolvedLevels, credit: number): void {
    const cache = levels.basis === 'usage' ? 0 : offset
    if (this.#recheckTimer !== null || cache + credit <= 0 || this.#closed) return
    this.#recheckTimer = this.#clock.setTimeout(() => {
      this.#recheckTimer = null
      this.#evaluate(false)
    }, this.#recheckMs)
  }

  /** A kernel threshold fired: several in one turn of the loop are one evaluation. */
  #wake(): void {
    if (this.#queued || this.#closed) return
    this.#queued = true
    queueMicrotask(() => {
      this.#queued = false
      if (!this.#closed) this.#evaluate(true)
    })
  }
}
