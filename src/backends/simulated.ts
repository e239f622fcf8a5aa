// A virtual memory cgroup with the kernel's threshold semantics, driven by calls: the backend for
// tests, for policy logic, and for machines without cgroups (macOS, Windows, restricted containers).

import { EventEmitter } from 'eventemitter3'
import { performance } from 'node:perf_hooks'
import { MemoryPressureError } from '../errors.js'
import { describe } from '../size.js'
import { checkWatchArgs } from './poll.js'
import type {
  BackendCloseReason,
  BackendEvents,
  Crossing,
  MemoryBackend,
  MemorySnapshot,
  ThresholdPrecision,
  ThresholdWatch,
} from './types.js'

/** Options of {@link SimulatedBackend}. All sizes in bytes. */
export interface SimulatedBackendOptions {
  /** The virtual cgroup's limit. Default 512 MiB. `Infinity` for none. */
  limit?: number
  /** Usage at start. Default 0. */
  usage?: number
  /** Part of usage that is page cache. Default 0. */
  cache?: number
  /** Part of the cache that is inactive (reclaimable first). Default 0. */
  inactiveFile?: number
  /** The virtual cgroup's path, shown in events. Default `'/simulated'`. */
  cgroup?: string
}

function checkBytes(name: string, value: unknown, allowInfinity = false): number {
  if (typeof value !== 'number' || Number.isNaN(value)) {
    throw new TypeError(`${name} must be a number of bytes (received ${describe(value)})`)
  }
  if (value === Infinity && allowInfinity) return value
  if (value < 0 || !Number.isSafeInteger(Math.floor(value))) {
    throw new RangeError(`${name} must be a whole number of bytes from 0 to 2^53 (received ${describe(value)})`)
  }
  return Math.floor(value)
}

interface SimulatedWatch {
  threshold: number
  above: boolean
  onCrossing: (crossing: Crossing) => void
  closed: boolean
}

/**
 * A virtual cgroup. Thresholds behave as the kernel's `cgroup.event_control` thresholds do: one
 * event per crossing in either direction, none at registration, delivered asynchronously on the
 * event loop in the order they happened.
 *
 * @example
 * ```ts
 * const sim = new SimulatedBackend({ limit: 256 * 2 ** 20 })
 * const monitor = createMemoryMonitor({ backend: sim })
 * sim.allocate(200 * 2 ** 20)
 * ```
 */
export class SimulatedBackend extends EventEmitter<BackendEvents> implements MemoryBackend {
  readonly name = 'simulated' as const
  readonly cgroup: string
  readonly precision: ThresholdPrecision = { kind: 'exact', bytes: 0 }
  #limit: number
  #usage: number
  #cache: number
  #inactiveFile: number
  #watches = new Set<SimulatedWatch>()
  #queue: Array<() => void> = []
  #flushScheduled = false
  #closed = false

  constructor(options: SimulatedBackendOptions = {}) {
    super()
    if (options === null || typeof options !== 'object') {
      throw new TypeError(`options must be an object (received ${describe(options)})`)
    }
    this.#limit = checkBytes('limit', options.limit ?? 512 * 2 ** 20, true)
    if (this.#limit === 0) throw new RangeError('limit must be above zero (received 0)')
    this.#usage = checkBytes('usage', options.usage ?? 0)
    this.#cache = checkBytes('cache', options.cache ?? 0)
    this.#inactiveFile = checkBytes('inactiveFile', options.inactiveFile ?? 0)
    if (this.#cache > this.#usage) throw new RangeError(`cache (${this.#cache}) must not exceed usage (${this.#usage})`)
    if (this.#inactiveFile > this.#cache) throw new RangeError(`inactiveFile (${this.#inactiveFile}) must not exceed cache (${this.#cache})`)
    if (this.#usage > this.#limit) throw new RangeError(`usage (${this.#usage}) must not exceed limit (${this.#limit})`)
    if (options.cgroup !== undefined && typeof options.cgroup !== 'string') {
      throw new TypeError(`cgroup must be a string (received ${describe(options.cgroup)})`)
    }
    this.cgroup = options.cgroup ?? '/simulated'
  }

  get closed(): boolean {
    return this.#closed
  }

  /** Current usage in bytes. */
  get usage(): number {
    return this.#usage
  }

  /** Current limit in bytes (`Infinity` for none). */
  get limit(): number {
    return this.#limit
  }

  snapshot(): MemorySnapshot {
    this.#assertOpen()
    return {
      usage: this.#usage,
      limit: this.#limit,
      limitHolder: Number.isFinite(this.#limit) ? this.cgroup : null,
      workingSet: this.#usage - this.#inactiveFile,
      rss: this.#usage - this.#cache,
      cache: this.#cache,
      inactiveFile: this.#inactiveFile,
      time: performance.now(),
    }
  }

  watchThreshold(bytes: number, onCrossing: (crossing: Crossing) => void): ThresholdWatch {
    this.#assertOpen()
    checkWatchArgs(bytes, onCrossing)
    const threshold = checkBytes('threshold', bytes)
    const watch: SimulatedWatch = { threshold, above: this.#usage >= threshold, onCrossing, closed: false }
    this.#watches.add(watch)
    return {
      threshold,
      close: () => {
        watch.closed = true
        this.#watches.delete(watch)
      },
    }
  }

  /**
   * Sets usage to `bytes` (anonymous memory; the page cache stays as it is unless usage drops
   * below it). Going above the limit throws `ERR_SIMULATED_OOM` and changes nothing: the kernel
   * would reclaim or OOM-kill instead.
   */
  setUsage(bytes: number): void {
    this.#assertOpen()
    const next = checkBytes('usage', bytes)
    if (next > this.#limit) {
      throw new MemoryPressureError('ERR_SIMULATED_OOM', `usage of ${next} bytes would exceed the limit of ${this.#limit} bytes`)
    }
    this.#usage = next
    this.#cache = Math.min(this.#cache, next)
    this.#inactiveFile = Math.min(this.#inactiveFile, this.#cache)
    this.#check()
  }

  /** Adds `bytes` of anonymous memory. */
  allocate(bytes: number): void {
    this.setUsage(this.#usage + checkBytes('bytes', bytes))
  }

  /** Frees `bytes` of anonymous memory (not below the page cache). */
  free(bytes: number): void {
    const n = checkBytes('bytes', bytes)
    this.setUsage(Math.max(this.#cache, this.#usage - n))
  }

  /**
   * Sets the page cache charged to the virtual cgroup: usage changes by the difference, as when a
   * process reads a file inside a real cgroup. `inactive` defaults to all of it.
   */
  setCache(bytes: number, inactive = bytes): void {
    this.#assertOpen()
    const cache = checkBytes('cache', bytes)
    const inactiveFile = checkBytes('inactive', inactive)
    if (inactiveFile > cache) throw new RangeError(`inactive (${inactiveFile}) must not exceed cache (${cache})`)
    const usage = this.#usage - this.#cache + cache
    if (usage > this.#limit) {
      throw new MemoryPressureError('ERR_SIMULATED_OOM', `usage of ${usage} bytes would exceed the limit of ${this.#limit} bytes`)
    }
    this.#usage = usage
    this.#cache = cache
    this.#inactiveFile = inactiveFile
    this.#check()
  }

  /** Changes the limit (as writing `memory.limit_in_bytes` would). Must not be below usage. */
  setLimit(bytes: number): void {
    this.#assertOpen()
    const limit = checkBytes('limit', bytes, true)
    if (limit === 0 || limit < this.#usage) {
      throw new RangeError(`limit must be above zero and at least the usage of ${this.#usage} bytes (received ${limit})`)
    }
    this.#limit = limit
  }

  /** Simulates removal of the cgroup: every watch ends and `'close'` is emitted with `'removed'`. */
  remove(): void {
    this.#end('removed')
  }

  close(): void {
    this.#end('closed')
  }

  #end(reason: BackendCloseReason): void {
    if (this.#closed) return
    this.#closed = true
    for (const watch of this.#watches) watch.closed = true
    this.#watches.clear()
    this.#schedule(() => this.emit('close', reason))
  }

  #check(): void {
    const usage = this.#usage
    for (const watch of this.#watches) {
      const above = usage >= watch.threshold
      if (above === watch.above) continue
      watch.above = above
      const direction = above ? 'up' : 'down'
      this.#schedule(() => {
        if (watch.closed) return
        watch.onCrossing({
          threshold: watch.threshold,
          direction,
          usage,
          coalesced: false,
          signal: 'simulated',
          time: performance.now(),
        })
      })
    }
  }

  // The kernel's notifications arrive through the event loop, never inside the allocating call.
  #schedule(task: () => void): void {
    this.#queue.push(task)
    if (this.#flushScheduled) return
    this.#flushScheduled = true
    setImmediate(() => {
      this.#flushScheduled = false
      const tasks = this.#queue
      this.#queue = []
      for (const t of tasks) t()
    })
  }

  #assertOpen(): void {
    if (this.#closed) throw new MemoryPressureError('ERR_CLOSED', 'the simulated backend is closed')
  }
}
