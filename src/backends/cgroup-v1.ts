// cgroup v1 memory thresholds, the seed paper's mechanism: an eventfd registered through
// `cgroup.event_control` on `memory.usage_in_bytes`, watched on the event loop by the native addon.

import { EventEmitter } from 'eventemitter3'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import { type CgroupLocation, findMemoryCgroup, resolveCgroupPath } from '../cgroup/discover.js'
import { effectiveLimit, pageSize } from '../cgroup/limit.js'
import { readFigures } from '../cgroup/stat.js'
import { MemoryPressureError, isErrnoException, syscallError } from '../errors.js'
import { type NativeBinding, type PollWatcher, tryLoadNative } from '../native.js'
import { describe } from '../size.js'
import type {
  BackendCloseReason,
  BackendEvents,
  Crossing,
  MemoryBackend,
  MemorySnapshot,
  ThresholdPrecision,
  ThresholdWatch,
} from './types.js'
import { classifyWakeup, type ThresholdSide } from './wakeup.js'

/** Options of {@link CgroupV1Backend.open}. */
export interface CgroupV1Options {
  /**
   * Filesystem path of the cgroup to watch. Default: the cgroup that holds the effective limit of
   * the process's own memory cgroup, or the process's own cgroup when no visible cgroup holds it.
   */
  cgroup?: string
}

/** The answer of a backend's availability probe. */
export type ProbeResult<T> = { available: true; value: T; reasons: string[] } | { available: false; reasons: string[] }

interface V1Target {
  location: CgroupLocation
  native: NativeBinding
}

/** Kernel-exact thresholds on a cgroup v1 memory controller. */
export class CgroupV1Backend extends EventEmitter<BackendEvents> implements MemoryBackend {
  readonly name = 'cgroup-v1' as const
  readonly cgroup: string
  readonly precision: ThresholdPrecision
  readonly location: CgroupLocation
  #native: NativeBinding
  #usageFd: number
  #watches = new Set<V1Watch>()
  #closed = false
  #buffer = Buffer.alloc(32)

  /**
   * Says whether the v1 backend can run here and, if so, which cgroup it would watch. Never throws;
   * every reason for a "no" is in `reasons`.
   */
  static probe(options: CgroupV1Options = {}): ProbeResult<V1Target> {
    const reasons: string[] = []
    const native = tryLoadNative()
    if (native instanceof MemoryPressureError) {
      return { available: false, reasons: [`native addon: ${native.message}`] }
    }
    if (!native.platformSupported) {
      return { available: false, reasons: [`native addon: eventfd is not available on ${process.platform}`] }
    }
    let location: CgroupLocation
    try {
      if (options.cgroup !== undefined) {
        location = resolveCgroupPath(options.cgroup)
      } else {
        const own = findMemoryCgroup()
        if (own.version !== 1) {
          return { available: false, reasons: [`the process's memory cgroup is cgroup v${own.version}, not v1 (${own.path})`] }
        }
        const limit = effectiveLimit(own)
        location = limit.holder !== null ? resolveCgroupPath(limit.holder) : own
        reasons.push(limit.holder !== null ? `the effective limit is held by ${limit.holder}` : `no visible cgroup holds a limit; watching the process's own cgroup`)
      }
    } catch (err) {
      return { available: false, reasons: [...reasons, err instanceof Error ? err.message : String(err)] }
    }
    if (location.version !== 1) {
      return { available: false, reasons: [`${location.path} is a cgroup v${location.version} cgroup, not v1`] }
    }
    const control = path.join(location.path, 'cgroup.event_control')
    try {
      fs.accessSync(control, fs.constants.W_OK)
    } catch (err) {
      const e = isErrnoException(err) ? syscallError(err, 'access', control) : err
      return { available: false, reasons: [...reasons, `cannot write ${control}: ${e instanceof Error ? e.message : String(e)}`] }
    }
    return { available: true, value: { location, native }, reasons }
  }

  /** Opens the backend, or throws `ERR_BACKEND_UNAVAILABLE` with the probe's reasons. */
  static open(options: CgroupV1Options = {}): CgroupV1Backend {
    if (options === null || typeof options !== 'object') {
      throw new TypeError(`options must be an object (received ${describe(options)})`)
    }
    if (options.cgroup !== undefined && typeof options.cgroup !== 'string') {
      throw new TypeError(`cgroup must be a filesystem path string (received ${describe(options.cgroup)})`)
    }
    const probe = CgroupV1Backend.probe(options)
    if (!probe.available) {
      throw new MemoryPressureError('ERR_BACKEND_UNAVAILABLE', `the cgroup-v1 backend cannot run here: ${probe.reasons.join('; ')}`, {
        reasons: probe.reasons,
      })
    }
    return new CgroupV1Backend(probe.value.location, probe.value.native)
  }

  private constructor(location: CgroupLocation, native: NativeBinding) {
    super()
    this.location = location
    this.cgroup = location.path
    this.#native = native
    // memcontrol-v1.c: thresholds are checked once per 128 page events per CPU.
    this.precision = { kind: 'kernel', bytes: 128 * pageSize() * os.availableParallelism() }
    const usagePath = path.join(location.path, 'memory.usage_in_bytes')
    try {
      this.#usageFd = fs.openSync(usagePath, 'r')
    } catch (err) {
      throw isErrnoException(err) ? syscallError(err, 'open', usagePath) : err
    }
  }

  get closed(): boolean {
    return this.#closed
  }

  /** Usage in bytes from the held `memory.usage_in_bytes` fd (a pread: no path lookup per read). */
  readUsage(): number {
    let n: number
    try {
      n = fs.readSync(this.#usageFd, this.#buffer, 0, this.#buffer.length, 0)
    } catch (err) {
      throw isErrnoException(err) ? syscallError(err, 'read', path.join(this.cgroup, 'memory.usage_in_bytes')) : err
    }
    const text = this.#buffer.toString('latin1', 0, n).trim()
    if (!/^\d+$/.test(text)) {
      throw new MemoryPressureError('ERR_PARSE', `memory.usage_in_bytes holds ${describe(text)}, not a number`, {
        path: path.join(this.cgroup, 'memory.usage_in_bytes'),
      })
    }
    return Number(text)
  }

  snapshot(): MemorySnapshot {
    this.#assertOpen()
    const figures = readFigures(this.location)
    const limit = effectiveLimit(this.location)
    return { ...figures, limit: limit.limit, limitHolder: limit.holder, time: performance.now() }
  }

  watchThreshold(bytes: number, onCrossing: (crossing: Crossing) => void): ThresholdWatch {
    this.#assertOpen()
    if (!Number.isSafeInteger(bytes) || bytes <= 0) {
      throw new RangeError(`threshold must be a whole number of bytes above zero (received ${describe(bytes)})`)
    }
    const watch = new V1Watch(this, this.#native, bytes, onCrossing)
    this.#watches.add(watch)
    return watch
  }

  close(): void {
    this.#end('closed')
  }

  /** @internal */
  forget(watch: V1Watch): void {
    this.#watches.delete(watch)
  }

  /** @internal The kernel signals every eventfd once when the cgroup is removed (memory.rst). */
  cgroupGone(): boolean {
    return !fs.existsSync(path.join(this.cgroup, 'memory.usage_in_bytes'))
  }

  /** @internal */
  fail(error: MemoryPressureError, fatal: boolean): void {
    this.emit('error', error)
    if (fatal) this.#end('error')
  }

  /** @internal */
  removed(): void {
    this.#end('removed')
  }

  #end(reason: BackendCloseReason): void {
    if (this.#closed) return
    this.#closed = true
    for (const watch of this.#watches) watch.close()
    this.#watches.clear()
    try {
      fs.closeSync(this.#usageFd)
    } catch {
      // Already gone with the cgroup; nothing else holds it.
    }
    this.emit('close', reason)
  }

  #assertOpen(): void {
    if (this.#closed) throw new MemoryPressureError('ERR_CLOSED', `the cgroup-v1 backend for ${this.cgroup} is closed`)
  }
}

/** One threshold: its eventfd, the `memory.usage_in_bytes` fd the kernel ties it to, its poll. */
class V1Watch implements ThresholdWatch {
  readonly threshold: number
  #backend: CgroupV1Backend
  #native: NativeBinding
  #onCrossing: (crossing: Crossing) => void
  #efd: number
  #poller: PollWatcher | null = null
  #side: ThresholdSide = { above: false, pending: 0 }
  #closed = false

  constructor(backend: CgroupV1Backend, native: NativeBinding, threshold: number, onCrossing: (c: Crossing) => void) {
    this.threshold = threshold
    this.#backend = backend
    this.#native = native
    this.#onCrossing = onCrossing
    const cgroup = backend.cgroup
    const efd = native.eventfd()
    if (efd < 0) throw syscallError(efd, 'eventfd')
    this.#efd = efd
    const usagePath = path.join(cgroup, 'memory.usage_in_bytes')
    const controlPath = path.join(cgroup, 'cgroup.event_control')
    let ufd = -1
    let cfd = -1
    let step: [syscall: string, file?: string] = ['open', usagePath]
    try {
      ufd = fs.openSync(usagePath, 'r')
      step = ['open', controlPath]
      cfd = fs.openSync(controlPath, fs.constants.O_WRONLY)
      step = ['write', controlPath]
      // memory.rst, "Memory thresholds": "<event_fd> <fd of memory.usage_in_bytes> <threshold>".
      fs.writeSync(cfd, `${efd} ${ufd} ${threshold}`)
      // The kernel placed the threshold against usage read during the write; if usage crossed it
      // since, classifyWakeup reconciles when the kernel reports the next crossing.
      this.#side.above = backend.readUsage() >= threshold
      step = ['uv_poll_start']
      const poller = native.watch(efd, 'readable', (status) => this.#wake(status))
      if (typeof poller === 'number') throw syscallError(poller, 'uv_poll_start')
      this.#poller = poller
    } catch (err) {
      native.close(efd)
      throw isErrnoException(err) ? syscallError(err, step[0], step[1]) : err
    } finally {
      // The registration holds its own reference to the usage file; ours can go.
      if (ufd >= 0) fs.closeSync(ufd)
      if (cfd >= 0) fs.closeSync(cfd)
    }
  }

  close(): void {
    if (this.#closed) return
    this.#closed = true
    this.#backend.forget(this)
    // Closing the eventfd unregisters the threshold (memcg_event_wake on EPOLLHUP).
    this.#poller?.close()
  }

  #wake(status: number): void {
    if (this.#closed) return
    if (status < 0) {
      this.close()
      this.#backend.fail(syscallError(status, 'poll'), false)
      return
    }
    const count = this.#native.readEventfd(this.#efd)
    if (count < 0) {
      this.close()
      this.#backend.fail(syscallError(count, 'read'), false)
      return
    }
    if (count === 0) return
    if (this.#backend.cgroupGone()) {
      this.#backend.removed()
      return
    }
    let usage: number
    try {
      usage = this.#backend.readUsage()
    } catch (err) {
      if (this.#backend.cgroupGone()) {
        this.#backend.removed()
        return
      }
      this.#backend.fail(err instanceof MemoryPressureError ? err : new MemoryPressureError('ERR_SYSCALL', String(err)), false)
      return
    }
    const directions = classifyWakeup(this.#side, count, usage >= this.threshold)
    const coalesced = directions.length > 1
    const time = performance.now()
    for (const direction of directions) {
      if (this.#closed) return
      this.#onCrossing({ threshold: this.threshold, direction, usage, coalesced, signal: 'eventfd', time })
    }
  }
}
