// V8's heap as the second basis: the old generation's live size, learned after V8's own major
// collections (and the cycles' forced ones), against its limit.

import { type PressureLevel, type ResolvedLevels, levelFor } from './levels.js'
import type { PolicyRuntime } from './runtime.js'
import type { HeapReading } from './shrinker.js'

/** The heap's levels, its live size as last learned, and the watch on V8's collections. */
export class HeapBasis {
  readonly levels: ResolvedLevels
  /** The old generation's live size as last learned, bytes. */
  live: number
  /** The heap's own level. */
  level: PressureLevel = 'normal'
  #runtime: PolicyRuntime
  #stop: () => void
  /** True once `live` was read right after a major collection. */
  #measured = false
  /** Shrinkers were asked for heap bytes since `live` was measured. */
  #asked = false
  /** The live size and V8's external memory at the last major collection. */
  #last: { live: number; external: number } | null = null

  /** `collected` runs after each of V8's own major collections, once `live` is updated. */
  constructor(runtime: PolicyRuntime, levels: ResolvedLevels, collected: () => void) {
    this.#runtime = runtime
    this.levels = levels
    // Until V8's first major collection the old generation's size is all that is known; it only
    // overstates the live size, and a collection comes before the limit is reached.
    this.live = runtime.oldGeneration().usedBytes
    this.#stop = runtime.onMajorGc(() => {
      this.measure()
      collected()
    })
  }

  /** A major collection just ended: the old generation's size is its live size. */
  measure(): void {
    this.live = this.#runtime.oldGeneration().usedBytes
    this.#measured = true
    this.#asked = false
    this.#last = { live: this.live, external: this.#runtime.externalMemory() }
  }

  /** Shrinkers were asked for heap bytes: the reading is stale until the next major collection. */
  asked(): void {
    this.#asked = true
  }

  /** True when no major collection measured the live size since shrinkers were asked (or ever). */
  get stale(): boolean {
    return !this.#measured || this.#asked
  }

  /** True when shrinkers were asked since the last measurement. */
  get pending(): boolean {
    return this.#asked
  }

  /**
   * What a forced V8 collection could find now: what V8 allocated since its last major collection
   * (the old generation's growth, and its external memory's: Buffers). Objects that were live then
   * and died since without anything new being allocated are missed; a cycle then asks its shrinkers
   * for more than needed, never less. Infinite before the first major collection.
   */
  collectable(): number {
    const last = this.#last
    if (last === null) return Number.POSITIVE_INFINITY
    const grown = this.#runtime.oldGeneration().usedBytes - last.live
    return Math.max(0, grown) + Math.max(0, this.#runtime.externalMemory() - last.external)
  }

  /** The level of the live size now, from `from` (hysteresis applies). */
  levelFrom(from: PressureLevel): PressureLevel {
    return levelFor(this.levels, this.live, from)
  }

  /** The heap as last learned, at `level` (default: its own). */
  reading(level: PressureLevel = this.level): HeapReading {
    return { liveBytes: this.live, limitBytes: this.levels.limit, level }
  }

  /** Stops watching V8's collections. */
  close(): void {
    this.#stop()
  }
}
