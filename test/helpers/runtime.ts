// A policy runtime for simulated tests: V8's and the allocator's readings are numbers the test sets,
// and major collections happen when the test says, so nothing depends on the test process's memory.

import type { HeapReduction, ReduceHeapOptions } from '../../src/policy/heap.js'
import type { OldGeneration, PolicyRuntime } from '../../src/policy/runtime.js'

export interface FakeRuntime extends PolicyRuntime {
  /** What the readings return; change them between steps. */
  state: { external: number; free: number | null; heapFree: number; trims: number; used: number; limit: number; gcs: number; gcMs: number }
  /** V8 finished a major collection with `used` bytes in the old generation. */
  majorGc(used?: number): void
  /** Listeners of major collections now. */
  readonly listeners: number
}

export function fakeRuntime(init: Partial<FakeRuntime['state']> = {}): FakeRuntime {
  const state = { external: 0, free: null, heapFree: 0, trims: 0, used: 0, limit: 4096 * 2 ** 20, gcs: 0, gcMs: 0, ...init }
  const listeners = new Set<() => void>()
  return {
    state,
    externalMemory: () => state.external,
    allocatorFree: () => state.free,
    heapFree: () => state.heapFree,
    trimCount: () => state.trims,
    oldGeneration: (): OldGeneration => ({ usedBytes: state.used, limitBytes: state.limit }),
    onMajorGc(fn) {
      listeners.add(fn)
      return () => void listeners.delete(fn)
    },
    majorGc(used) {
      if (used !== undefined) state.used = used
      for (const l of [...listeners]) l()
    },
    get listeners() {
      return listeners.size
    },
    async reduceHeap(options: ReduceHeapOptions): Promise<HeapReduction> {
      const gc = options.gc ?? 'v8-major'
      if (typeof gc === 'function') await gc()
      if (gc !== 'none') state.gcs++
      const trim = options.mallocTrim ?? true
      if (trim) state.trims++
      return {
        gc: typeof gc === 'function' ? 'custom' : gc, gcMs: gc === 'none' ? 0 : state.gcMs, mallocTrim: trim ? 'nothing' : 'skipped', mallocTrimMs: 0,
        heapUsedBefore: 0, heapUsedAfter: 0, rssBefore: 0, rssAfter: 0, ms: 0,
      }
    },
  }
}
