// V8's collections in this thread, from one PerformanceObserver of 'gc' entries shared by every
// reader that acts after a collection (the cgroup v2 poller, the heap's level).

import { PerformanceObserver, constants } from 'node:perf_hooks'

/** Called after a batch of collections; `major` is true when one of them was a mark-compact. */
export type GcListener = (major: boolean) => void

const listeners = new Set<GcListener>()
let observer: PerformanceObserver | null = null

/**
 * Calls `fn` after V8's collections (Node delivers 'gc' entries in batches after they end, on the
 * event loop; an observer holds no handle open, so it keeps nothing alive). The observer exists
 * only while something listens. Returns the unsubscribe.
 */
export function onGc(fn: GcListener): () => void {
  listeners.add(fn)
  if (observer === null) {
    observer = new PerformanceObserver((list) => {
      let major = false
      for (const e of list.getEntries()) {
        const kind = ((e as { detail?: unknown }).detail as { kind?: number } | null | undefined)?.kind
        if (kind === constants.NODE_PERFORMANCE_GC_MAJOR) major = true
      }
      for (const l of [...listeners]) l(major)
    })
    observer.observe({ entryTypes: ['gc'] })
  }
  return () => {
    listeners.delete(fn)
    if (listeners.size === 0 && observer !== null) {
      observer.disconnect()
      observer = null
    }
  }
}
