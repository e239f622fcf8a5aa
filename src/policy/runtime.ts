// What the policy reads from the running process besides the cgroup (V8's heap and external memory,
// the C allocator's free lists) and how it collects: one object, injectable like the clock, so that
// simulated policy tests do not depend on the test process's own memory.

import os from 'node:os'
import v8 from 'node:v8'
import { isMainThread, resourceLimits } from 'node:worker_threads'
import { onGc } from '../gc-observer.js'
import { type HeapReduction, type ReduceHeapOptions, allocatorFreeBytes, mallocTrimCount, reduceHeapChecked } from './heap.js'

const MiB = 2 ** 20

/** V8's old generation: where a JavaScript heap runs out ("JavaScript heap out of memory"). Bytes. */
export interface OldGeneration {
  /** Bytes used in the old generation now (live objects and, between major collections, garbage). */
  usedBytes: number
  /** The old generation's limit (see {@link oldGenerationLimit}). */
  limitBytes: number
}

/**
 * The process as the policy sees it. The default ({@link processRuntime}) reads this process; tests
 * give their own.
 * @internal
 */
export interface PolicyRuntime {
  /** V8's external memory (the backing stores of Buffers and ArrayBuffers), bytes. */
  externalMemory(): number
  /** Bytes the C allocator holds free for the next allocations, or `null` when unknown. */
  allocatorFree(): number | null
  /**
   * Bytes V8's heap holds committed but unused (`total_heap_size − used_heap_size`): resident
   * memory the next JavaScript allocations reuse before the heap grows.
   */
  heapFree(): number
  /** How many times the heap reduction has run `malloc_trim` so far. */
  trimCount(): number
  /** The old generation now. */
  oldGeneration(): OldGeneration
  /**
   * Calls `fn` after each of V8's major (mark-compact) collections, however started; returns a
   * function that stops it. Nothing runs while nothing is allocated.
   */
  onMajorGc(fn: () => void): () => void
  /** Collects garbage and trims the allocator (`reduceHeap`). */
  reduceHeap(options: ReduceHeapOptions): Promise<HeapReduction>
}

/**
 * The old generation's limit: `--max-old-space-size` when the process was given it (V8 sizes the
 * old generation to exactly that), else `heap_size_limit` less V8's young generation, which V8
 * sizes at three semi-spaces of 1/256 of the old generation, at most 16 MiB each
 * (`Heap::YoungGenerationSizeFromOldGenerationSize`): an estimate, within a few MiB where it is not
 * exact. `heap_size_limit` alone would count the young generation's 3 to 48 MiB as room the old
 * generation never gets. In a worker thread, `youngMb` (its `resourceLimits.maxYoungGenerationSizeMb`)
 * gives the young generation exactly, whatever set the old one (the worker's `resourceLimits` or
 * the process's flag, which wins over them).
 */
export function oldGenerationLimit(heapSizeLimit: number, flags: readonly string[], youngMb?: number, availableBytes?: number): number {
  if (youngMb !== undefined && youngMb > 0 && youngMb * MiB < heapSizeLimit) return heapSizeLimit - youngMb * MiB
  let flagged: number | null = null
  for (const [i, f] of flags.entries()) {
    const m = /^--max[-_]old[-_]space[-_]size(?:=(\d+))?$/.exec(f)
    const size = m === null ? undefined : m[1] ?? (/^\d+$/.test(flags[i + 1] ?? '') ? flags[i + 1] : undefined)
    if (size !== undefined) flagged = Number(size) * MiB
    // Node 22.21+/24: a share of the memory available to the process (the cgroup's, else the
    // machine's), as src/node.cc computes it; what `heap-flags` recommends where Node has it.
    const p = /^--max[-_]old[-_]space[-_]size[-_]percentage=(\d+(?:\.\d+)?)$/.exec(f)
    if (p !== null && availableBytes !== undefined && availableBytes > 0) flagged = Math.floor((availableBytes * Number(p[1])) / 100 / MiB) * MiB
  }
  if (flagged !== null && flagged > 0 && flagged < heapSizeLimit) return flagged
  return Math.max(0, heapSizeLimit - Math.min(48 * MiB, Math.ceil((heapSizeLimit * 3) / 259)))
}

/** The memory Node takes `--max-old-space-size-percentage` of: its cgroup's limit, else the machine's. */
function availableMemory(): number {
  const total = os.totalmem()
  const constrained = typeof process.constrainedMemory === 'function' ? process.constrainedMemory() : 0
  return constrained > 0 && constrained < total ? constrained : total
}

/** Node's command-line flags and `NODE_OPTIONS`, in the order V8 sees them (the last wins). */
function nodeFlags(): string[] {
  const fromEnv = (process.env.NODE_OPTIONS ?? '').split(/\s+/).filter((s) => s !== '')
  return [...fromEnv, ...process.execArgv]
}

let limitCache: { heapSizeLimit: number; limit: number } | null = null

function oldGenerationNow(): OldGeneration {
  let used = 0
  for (const s of v8.getHeapSpaceStatistics()) {
    if (s.space_name !== 'new_space' && s.space_name !== 'new_large_object_space') used += s.space_used_size
  }
  const heapSizeLimit = v8.getHeapStatistics().heap_size_limit
  if (limitCache === null || limitCache.heapSizeLimit !== heapSizeLimit) {
    limitCache = { heapSizeLimit, limit: oldGenerationLimit(heapSizeLimit, nodeFlags(), isMainThread ? undefined : resourceLimits.maxYoungGenerationSizeMb, availableMemory()) }
  }
  return { usedBytes: used, limitBytes: limitCache.limit }
}

/** `fn` after each batch of V8's collections that held a major one (the old generation was measured). */
function onMajorGc(fn: () => void): () => void {
  return onGc((major) => {
    if (major) fn()
  })
}

/**
 * This process: V8's statistics, glibc's `mallinfo2()` through the addon, 'gc' performance
 * entries. In a worker thread, V8's figures are that worker's own isolate's.
 * @internal
 */
export const processRuntime: PolicyRuntime = {
  externalMemory: () => v8.getHeapStatistics().external_memory,
  allocatorFree: allocatorFreeBytes,
  heapFree: () => {
    const h = v8.getHeapStatistics()
    return Math.max(0, h.total_heap_size - h.used_heap_size)
  },
  trimCount: mallocTrimCount,
  oldGeneration: oldGenerationNow,
  onMajorGc,
  reduceHeap: reduceHeapChecked,
}

/** Checks an injected runtime has every function. @internal */
export function isRuntime(value: unknown): value is PolicyRuntime {
  if (value === null || typeof value !== 'object') return false
  const r = value as Record<string, unknown>
  return ['externalMemory', 'allocatorFree', 'heapFree', 'trimCount', 'oldGeneration', 'onMajorGc', 'reduceHeap'].every((k) => typeof r[k] === 'function')
}
