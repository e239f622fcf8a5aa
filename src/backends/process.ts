// The backend of last resort (macOS, Windows, Linux without readable cgroup files): a process's
// resident set size, polled adaptively against a memory budget.

import { EventEmitter } from 'eventemitter3'
import fs from 'node:fs'
import os from 'node:os'
import { performance } from 'node:perf_hooks'
import { pageSize } from '../cgroup/limit.js'
import { MemoryPressureError, isErrnoException, syscallError } from '../errors.js'
import { describe } from '../size.js'
import type { ProbeResult } from './cgroup-v1.js'
import { type PollClock, type PollOptions, ThresholdPoller, checkWatchArgs, resolvePollOptions } from './poll.js'
import type { BackendCloseReason, BackendEvents, Crossing, MemoryBackend, MemorySnapshot, ThresholdPrecision, ThresholdWatch } from './types.js'

/** Options of {@link ProcessBackend.open}. */
export interface ProcessBackendOptions {
  /**
   * The budget thresholds and percentages are taken against, in bytes. Default: the memory limit
   * Node reports (`process.constrainedMemory()`) when it is a real limit below total memory, else
   * the machine's total memory (`os.totalmem()`).
   */
  budget?: number
  /**
   * Watch this process instead of the calling one (Linux only: its RSS is read from
   * `/proc/<pid>/statm`). When it exits, the backend closes with `'removed'`. Positive integer.
   */
  pid?: number
  /** Adaptive polling of the resident set size; see {@link PollOptions}. */
  poll?: PollOptions
  /** @internal Timers for tests. */
  clock?: PollClock
}

/** The default budget and where it came from. */
export function defaultBudget(): { bytes: number; source: 'constrainedMemory' | 'totalmem' } {
  const total = os.totalmem()
  const constrained = typeof process.constrainedMemory === 'function' ? process.constrainedMemory() : 0
  // Node returns 0 or 2^64−1 (or a huge cgroup "unlimited") when there is no limit.
  if (typeof constrained === 'number' && constrained > 0 && constrained < total) return { bytes: constrained, source: 'constrainedMemory' }
  return { bytes: total, source: 'totalmem' }
}

/**
 * Thresholds on a process's resident set size, polled. No page cache, no working set: `usage`,
 * `rss` and `workingSet` are all the RSS, and the limit is the budget.
 */
export class ProcessBackend extends EventEmitter<BackendEvents> implements MemoryBackend {
  readonly name = 'process' as const
  readonly cgroup: string
  readonly precision: ThresholdPrecision
  /** The budget in bytes. */
  readonly budget: number
  /** The pid watched. */
  readonly pid: number
  /** Where the budget came from, and how thresholds are delivered. */
  readonly notes: string[] = []
  #poller: ThresholdPoller
  #closed = false
  #statm: string | null

  /** The process backend runs everywhere Node runs; for another pid, `/proc/<pid>/statm` must be readable. */
  static probe(options: ProcessBackendOptions = {}): ProbeResult<null> {
    if (options.pid !== undefined && options.pid !== process.pid) {
      const file = `/proc/${options.pid}/statm`
      try {
        fs.accessSync(file, fs.constants.R_OK)
      } catch (err) {
        const e = isErrnoException(err) ? syscallError(err, 'access', file) : err
        return { available: false, reasons: [`cannot read ${file}: ${e instanceof Error ? e.message : String(e)}`] }
      }
    }
    return { available: true, value: null, reasons: [] }
  }

  /**
   * Opens the backend.
   *
   * @throws TypeError / RangeError for malformed options (naming the option and the value)
   * @throws MemoryPressureError `ERR_BACKEND_UNAVAILABLE` when another pid's RSS cannot be read
   */
  static open(options: ProcessBackendOptions = {}): ProcessBackend {
    if (options === null || typeof options !== 'object') throw new TypeError(`options must be an object (received ${describe(options)})`)
    if (options.budget !== undefined && (typeof options.budget !== 'number' || !Number.isSafeInteger(options.budget) || options.budget <= 0)) {
      throw new RangeError(`budget must be a whole number of bytes above zero (received ${describe(options.budget)})`)
    }
    if (options.pid !== undefined && (typeof options.pid !== 'number' || !Number.isSafeInteger(options.pid) || options.pid <= 0)) {
      throw new RangeError(`pid must be a positive integer (received ${describe(options.pid)})`)
    }
    resolvePollOptions(options.poll)
    const probe = ProcessBackend.probe(options)
    if (!probe.available) {
      throw new MemoryPressureError('ERR_BACKEND_UNAVAILABLE', `the process backend cannot run here: ${probe.reasons.join('; ')}`, { reasons: probe.reasons })
    }
    return new ProcessBackend(options)
  }

  private constructor(options: ProcessBackendOptions) {
    super()
    this.pid = options.pid ?? process.pid
    this.cgroup = `process:${this.pid}`
    this.#statm = this.pid === process.pid ? null : `/proc/${this.pid}/statm`
    if (options.budget !== undefined) {
      this.budget = options.budget
      this.notes.push(`budget ${options.budget} bytes (given)`)
    } else {
      const d = defaultBudget()
      this.budget = d.bytes
      this.notes.push(d.source === 'constrainedMemory'
        ? `budget ${d.bytes} bytes: the memory limit Node reports (process.constrainedMemory())`
        : `budget ${d.bytes} bytes: total memory (no memory limit reported by Node)`)
    }
    this.#poller = new ThresholdPoller(() => this.readUsage(), (err) => this.#readFailed(err), options.poll, options.clock)
    const p = this.#poller.options
    this.notes.push(`resident set size polled every ${p.minIntervalMs} to ${p.maxIntervalMs} ms; page cache and other processes are not seen`)
    this.precision = { kind: 'polled', bytes: p.guardBytes, intervalMs: { min: p.minIntervalMs, max: p.maxIntervalMs }, signals: [] }
  }

  get closed(): boolean {
    return this.#closed
  }

  /** Resident set size in bytes. */
  readUsage(): number {
    if (this.#statm === null) return process.memoryUsage.rss()
    let text: string
    try {
      text = fs.readFileSync(this.#statm, 'latin1')
    } catch (err) {
      throw isErrnoException(err) ? syscallError(err, 'read', this.#statm) : err
    }
    // proc(5): statm fields are in pages; the second is the resident set.
    const resident = Number(text.split(' ')[1])
    if (!Number.isSafeInteger(resident)) throw new MemoryPressureError('ERR_PARSE', `unexpected ${this.#statm}: ${describe(text)}`, { path: this.#statm })
    return resident * pageSize()
  }

  snapshot(): MemorySnapshot {
    this.#assertOpen()
    const rss = this.readUsage()
    // The budget is this backend's own setting, so the watched "cgroup" holds the limit.
    return { usage: rss, limit: this.budget, limitHolder: this.cgroup, workingSet: rss, rss, cache: 0, inactiveFile: 0, time: performance.now() }
  }

  watchThreshold(bytes: number, onCrossing: (crossing: Crossing) => void): ThresholdWatch {
    this.#assertOpen()
    checkWatchArgs(bytes, onCrossing)
    return this.#poller.add(bytes, this.readUsage(), onCrossing)
  }

  close(): void {
    this.#end('closed')
  }

  #readFailed(err: unknown): void {
    if (this.#closed) return
    if (this.#statm !== null && !fs.existsSync(this.#statm)) {
      this.#end('removed')
      return
    }
    this.emit('error', err instanceof MemoryPressureError ? err : new MemoryPressureError('ERR_SYSCALL', String(err), { cause: err }))
    this.#end('error')
  }

  #end(reason: BackendCloseReason): void {
    if (this.#closed) return
    this.#closed = true
    this.#poller.close()
    this.emit('close', reason)
  }

  #assertOpen(): void {
    if (this.#closed) throw new MemoryPressureError('ERR_CLOSED', `the process backend for pid ${this.pid} is closed`)
  }
}
