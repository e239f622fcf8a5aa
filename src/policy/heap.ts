// Heap reduction after caches let go: a full V8 garbage collection (so freed objects and Buffers
// really return their memory) and glibc malloc_trim (so the C allocator gives free pages back).

import { performance } from 'node:perf_hooks'
import v8 from 'node:v8'
import vm from 'node:vm'
import { MemoryPressureError } from '../errors.js'
import { tryLoadNative } from '../native.js'
import { describe } from '../size.js'

/**
 * How to collect garbage:
 * - `'v8-major'` (default): one synchronous full (major, mark-compact) V8 collection through the
 *   `gc` function that `--expose-gc` provides, called without arguments (V8 first finishes an
 *   incremental marking under way, then collects anew, so what was dropped while it was marking is
 *   freed too: `Heap::PreciseCollectAllGarbage`), then one minor collection
 *   (`gc({ type: 'minor' })`). The minor one is for Buffers: V8 frees the memory of the
 *   ArrayBuffers a full collection found dead on a helper thread after the collection returns, and
 *   counts it at its next collection, so without it `malloc_trim` and the next measure can miss
 *   that memory. (`gc({ type: 'major', execution: 'sync' })` is not used: on Node 20 it did not
 *   free all that `gc()` frees.) The flag is set at run time with
 *   `v8.setFlagsFromString('--expose-gc')` the first time it is needed and `gc` is taken from a new
 *   context (`vm.runInNewContext('gc')`), so no command-line flag is needed. Side effect: contexts
 *   created afterwards (vm) see a global `gc` too. When the process already has `globalThis.gc`,
 *   that one is used.
 * - `'none'`: no collection (freed memory comes back whenever V8 next collects).
 * - a function: your own method (called once per reduction, awaited).
 */
export type GcMethod = 'v8-major' | 'none' | (() => void | Promise<void>)

/** Options of {@link reduceHeap}. */
export interface ReduceHeapOptions {
  /** The garbage-collection method. Default `'v8-major'`. */
  gc?: GcMethod
  /** Call glibc `malloc_trim(0)` after the collection. Default `true`. */
  mallocTrim?: boolean
}

/**
 * What `malloc_trim` did: `'released'` (pages went back to the kernel), `'nothing'` (nothing to
 * give back), `'unavailable'` (no native addon, or not glibc: musl, macOS, Windows), `'skipped'`
 * (turned off).
 */
export type MallocTrimResult = 'released' | 'nothing' | 'unavailable' | 'skipped'

/** The result of one {@link reduceHeap}. Times in milliseconds, sizes in bytes. */
export interface HeapReduction {
  /** The collection method used: `'v8-major'`, `'custom'` (a function), or `'none'`. */
  gc: 'v8-major' | 'custom' | 'none'
  /** Time the collection took. */
  gcMs: number
  /** What `malloc_trim` did. */
  mallocTrim: MallocTrimResult
  /** Time `malloc_trim` took (0 when it did not run). */
  mallocTrimMs: number
  /** `process.memoryUsage().heapUsed` before and after (V8's heap only). */
  heapUsedBefore: number
  heapUsedAfter: number
  /** The process's resident set before and after (`process.memoryUsage.rss()`). */
  rssBefore: number
  rssAfter: number
  /** Total time. */
  ms: number
}

type GcFunction = (options?: { type?: 'major' | 'minor'; execution?: 'sync' | 'async' }) => void | Promise<void>

let v8Gc: GcFunction | undefined

/** How many times `reduceHeap()` ran `malloc_trim` in this process (see {@link allocatorFreeBytes}). */
let trims = 0

/** The number of `malloc_trim` calls made by {@link reduceHeap} so far, in this process. */
export function mallocTrimCount(): number {
  return trims
}

/**
 * Bytes the C allocator holds free for the process's next allocations (glibc `mallinfo2()`
 * `fordblks`, all arenas), or `null` where that is unknown (no addon; a C library without
 * `mallinfo2`: glibc before 2.33, musl). Part of it
 * may not be resident: `malloc_trim` gives pages back but keeps the chunks on its free lists.
 */
export function allocatorFreeBytes(): number | null {
  const native = tryLoadNative()
  if (native instanceof MemoryPressureError || !native.platformSupported || typeof native.mallocInfo !== 'function') return null
  const info = native.mallocInfo()
  if (typeof info === 'number' || !Array.isArray(info)) return null
  const free = info[1]
  return typeof free === 'number' && Number.isFinite(free) && free >= 0 ? free : null
}

/** The `gc` function, exposed at run time if the process was not started with `--expose-gc`. */
function exposedGc(): GcFunction {
  if (v8Gc !== undefined) return v8Gc
  const existing = (globalThis as { gc?: unknown }).gc
  if (typeof existing === 'function') {
    v8Gc = existing as GcFunction
  } else {
    v8.setFlagsFromString('--expose-gc')
    v8Gc = vm.runInNewContext('gc') as GcFunction
  }
  return v8Gc
}

function checkOptions(options: ReduceHeapOptions): void {
  if (options === null || typeof options !== 'object') {
    throw new TypeError(`options must be an object (received ${describe(options)})`)
  }
  const { gc, mallocTrim } = options
  if (gc !== undefined && gc !== 'v8-major' && gc !== 'none' && typeof gc !== 'function') {
    throw new TypeError(`gc must be 'v8-major', 'none' or a function (received ${describe(gc)})`)
  }
  if (mallocTrim !== undefined && typeof mallocTrim !== 'boolean') {
    throw new TypeError(`mallocTrim must be a boolean (received ${describe(mallocTrim)})`)
  }
}

/** Validates heap-reduction options early (for a monitor's constructor). */
export function validateReduceHeapOptions(options: ReduceHeapOptions): void {
  checkOptions(options)
}

/**
 * Gives memory back: a full garbage collection, then `malloc_trim(0)`. Run it after dropping
 * references (a cache cleared) so the memory really leaves the process.
 *
 * @example
 * ```ts
 * cache.clear()
 * const r = await reduceHeap()
 * console.log(r.gcMs, r.mallocTrim, r.rssBefore - r.rssAfter)
 * ```
 */
export async function reduceHeap(options: ReduceHeapOptions = {}): Promise<HeapReduction> {
  checkOptions(options)
  return reduceHeapChecked(options)
}

/** Two reductions run one after the other, reported as one (times added, before of the first, after of the second). */
export function joinReductions(a: HeapReduction, b: HeapReduction): HeapReduction {
  return {
    gc: a.gc,
    gcMs: a.gcMs + b.gcMs,
    mallocTrim: b.mallocTrim === 'skipped' ? a.mallocTrim : b.mallocTrim,
    mallocTrimMs: a.mallocTrimMs + b.mallocTrimMs,
    heapUsedBefore: a.heapUsedBefore,
    heapUsedAfter: b.heapUsedAfter,
    rssBefore: a.rssBefore,
    rssAfter: b.rssAfter,
    ms: a.ms + b.ms,
  }
}

/**
 * {@link reduceHeap} without checking its options (for the policy engine, which checked them once).
 * @internal
 */
export async function reduceHeapChecked(options: ReduceHeapOptions): Promise<HeapReduction> {
  const method = options.gc ?? 'v8-major'
  const start = performance.now()
  const before = process.memoryUsage()
  let gcMs = 0
  if (method !== 'none') {
    const t = performance.now()
    if (typeof method === 'function') await method()
    else {
      // Full, then minor: the minor collection waits for the memory of the Buffers the full one
      // found dead to be freed, so that malloc_trim and whoever measures next see it (see GcMethod).
      const gc = exposedGc()
      gc()
      gc({ type: 'minor' })
    }
    gcMs = performance.now() - t
  }
  let mallocTrim: MallocTrimResult = 'skipped'
  let mallocTrimMs = 0
  if (options.mallocTrim ?? true) {
    const native = tryLoadNative()
    if (native instanceof MemoryPressureError || !native.platformSupported || native.mallocTrimSupported === false) {
      mallocTrim = 'unavailable'
    } else {
      const t = performance.now()
      const r = native.mallocTrim()
      trims++
      mallocTrimMs = performance.now() - t
      mallocTrim = r === 1 ? 'released' : r === 0 ? 'nothing' : 'unavailable'
    }
  }
  const after = process.memoryUsage()
  return {
    gc: typeof method === 'function' ? 'custom' : method,
    gcMs,
    mallocTrim,
    mallocTrimMs,
    heapUsedBefore: before.heapUsed,
    heapUsedAfter: after.heapUsed,
    rssBefore: before.rss,
    rssAfter: after.rss,
    ms: performance.now() - start,
  }
}
