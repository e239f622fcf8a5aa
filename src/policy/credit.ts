// The allocators' credit: bytes this process's allocators hold resident but free for its next
// allocations are counted as available below the limit (glibc's free lists, and V8's committed heap
// that holds no object: the next allocations reuse them before usage grows).

import type { ResolvedLevels } from './levels.js'
import { noCreditFrom } from './rules.js'
import type { PolicyRuntime } from './runtime.js'

/** The credit of one engine: how much of the basis it discounted at the last reading. */
export class AllocatorCredit {
  #read: (() => number | null) | null
  #heapFree: (() => number) | null
  #runtime: PolicyRuntime
  #custom: boolean
  /** With the built-in reading: the trim count seen, and the free bytes not known to be resident. */
  #trimsSeen = -1
  #freeFloor = 0
  /** The credit applied at the last reading (0 when none). */
  bytes = 0

  constructor(read: (() => number | null) | null, heapFree: (() => number) | null, runtime: PolicyRuntime, custom: boolean) {
    this.#read = read
    this.#heapFree = heapFree
    this.#runtime = runtime
    this.#custom = custom
  }

  /** True when free allocator bytes are counted at all. */
  get counted(): boolean {
    return this.#read !== null
  }

  /** `raw` (a basis in bytes) less the credit now. Reads the allocator each time: once per decision. */
  apply(raw: number, levels: ResolvedLevels): number {
    this.bytes = 0
    if (this.#read === null) return raw
    let free: number | null
    try {
      free = this.#read()
    } catch {
      free = null
    }
    if (free !== null && (!Number.isFinite(free) || free < 0)) free = null
    if (free !== null && !this.#custom) {
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
    let heap = 0
    try {
      const h = this.#heapFree?.() ?? 0
      if (Number.isFinite(h) && h > 0) heap = h
    } catch {
      heap = 0
    }
    if (free === null && heap === 0) return raw
    const total = (free ?? 0) + heap
    // From noCreditFrom on (critical, or 8 MiB below the limit where critical is closer) the
    // credit is not given: free lists only help allocations they fit (and those of the same arena;
    // V8's own heap not at all), and the cycle that starts gives them back with malloc_trim.
    if (raw >= noCreditFrom(levels)) return raw
    this.bytes = Math.min(total, raw)
    return raw - this.bytes
  }
}
