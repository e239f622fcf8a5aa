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
import { type PollClock, type PollOptions, ThresholdPoller, checkWatchArgs, resolvePollOptions } from './poll.js'
import type {
  BackendCloseReason,
  BackendEvents,
  Crossing,
  Direction,
  MemoryBackend,
  MemorySnapshot,
  VmPressureLevel,
  PressureLevelEvent,
  VmPressureMode,
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
  /**
   * How thresholds are delivered. `'auto'` (default): the kernel's own thresholds through
   * `cgroup.event_control` when it can be written, else (read-only cgroupfs: EROFS; not root:
   * EACCES; PREEMPT_RT: EOPNOTSUPP) adaptive polling of `memory.usage_in_bytes`, said in `notes`.
   * `'poll'`: always poll.
   */
  thresholds?: 'auto' | 'poll'
  /** Adaptive polling, when thresholds are polled; see {@link PollOptions}. */
  poll?: PollOptions
  /**
   * Report OOM in the cgroup as `'oom'` events (`memory.oom_control` notifications; when polling,
   * its `oom_kill` count read at each poll). Default `true`. Not available on a hierarchy's root.
   */
  oom?: boolean
  /** @internal Timers for tests. */
  clock?: PollClock
}

/** Errors of `cgroup.event_control` that polling works around (memory.rst; PREEMPT_RT kernels). */
const fallbackErrnos = new Set([os.constants.errno.EROFS, os.constants.errno.EACCES, os.constants.errno.EPERM, os.constants.errno.EOPNOTSUPP])

/** The answer of a backend's availability probe. */
export type ProbeResult<T> = { available: true; value: T; reasons: string[] } | { available: false; reasons: string[] }

interface V1Target {
  location: CgroupLocation
  native: NativeBinding | null
  /** Why thresholds are polled; `null` when the kernel's thresholds can be registered. */
  pollReason: string | null
}

/**
 * Thresholds on a cgroup v1 memory controller: kernel-exact through `cgroup.event_control` where it
 * can be written, else polled (and said so in `notes`). Also `'oom'` (`memory.oom_control`),
 * `'pressure-level'` ({@link CgroupV1Backend.watchPressureLevel}) and memory+swap thresholds
 * ({@link CgroupV1Backend.watchMemswThreshold}).
 */
export class CgroupV1Backend extends EventEmitter<BackendEvents> implements MemoryBackend {
  readonly name = 'cgroup-v1' as const
  readonly cgroup: string
  readonly location: CgroupLocation
  /** How thresholds are delivered and anything that was not possible, in words. */
  readonly notes: string[] = []
  #native: NativeBinding | null
  #pollReason: string | null
  #pollOptions: PollOptions | undefined
  #clock: PollClock | undefined
  #poller: ThresholdPoller | null = null
  #memswPoller: ThresholdPoller | null = null
  #oom: V1Event | null = null
  #oomKills = 0
  #events = new Set<V1Event>()
  #usageFd: number
  /** Inode of the `memory.usage_in_bytes` this backend opened: the cgroup is the one opened, not whatever its path names later. */
  #usageIno: number
  #watches = new Set<V1Watch>()
  #closed = false
  #buffer = Buffer.alloc(32)
  /** Registrations waiting for their write, and the number of writes in flight. */
  #queue: WriteJob[] = []
  #writing = 0
  #pumpScheduled = false
  #idle: Array<() => void> = []

  /**
   * Says whether the v1 backend can run here and, if so, which cgroup it would watch. Never throws;
   * every reason for a "no" is in `reasons`.
   */
  static probe(options: CgroupV1Options = {}): ProbeResult<V1Target> {
    const reasons: string[] = []
    const loaded = tryLoadNative()
    let native: NativeBinding | null = null
    let pollReason: string | null = null
    if (loaded instanceof MemoryPressureError) pollReason = `native addon: ${loaded.message}`
    else if (!loaded.platformSupported) pollReason = `native addon: eventfd is not available on ${process.platform}`
    else native = loaded
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
    const usage = path.join(location.path, 'memory.usage_in_bytes')
    try {
      fs.accessSync(usage, fs.constants.R_OK)
    } catch (err) {
      const e = isErrnoException(err) ? syscallError(err, 'access', usage) : err
      return { available: false, reasons: [...reasons, `cannot read ${usage}: ${e instanceof Error ? e.message : String(e)}`] }
    }
    const control = path.join(location.path, 'cgroup.event_control')
    if (options.thresholds === 'poll') {
      pollReason ??= 'thresholds: \'poll\' was asked for'
    } else if (pollReason === null) {
      try {
        // access(2) answers EROFS for a read-only mount and EACCES for a user without write permission.
        fs.accessSync(control, fs.constants.W_OK)
      } catch (err) {
        const e = isErrnoException(err) ? syscallError(err, 'access', control) : err
        pollReason = `cannot write ${control} (${e instanceof Error ? e.message : String(e)})`
      }
    }
    if (pollReason !== null) {
      reasons.push(`${pollReason}: thresholds are polled from memory.usage_in_bytes instead of the kernel's eventfd notifications`)
    }
    return { available: true, value: { location, native, pollReason }, reasons }
  }

  /** Opens the backend, or throws `ERR_BACKEND_UNAVAILABLE` with the probe's reasons. */
  static open(options: CgroupV1Options = {}): CgroupV1Backend {
    if (options === null || typeof options !== 'object') {
      throw new TypeError(`options must be an object (received ${describe(options)})`)
    }
    if (options.cgroup !== undefined && typeof options.cgroup !== 'string') {
      throw new TypeError(`cgroup must be a filesystem path string (received ${describe(options.cgroup)})`)
    }
    if (options.thresholds !== undefined && options.thresholds !== 'auto' && options.thresholds !== 'poll') {
      throw new TypeError(`thresholds must be 'auto' or 'poll' (received ${describe(options.thresholds)})`)
    }
    if (options.oom !== undefined && typeof options.oom !== 'boolean') {
      throw new TypeError(`oom must be a boolean (received ${describe(options.oom)})`)
    }
    resolvePollOptions(options.poll)
    const probe = CgroupV1Backend.probe(options)
    if (!probe.available) {
      throw new MemoryPressureError('ERR_BACKEND_UNAVAILABLE', `the cgroup-v1 backend cannot run here: ${probe.reasons.join('; ')}`, {
        reasons: probe.reasons,
      })
    }
    return new CgroupV1Backend(probe.value, options, probe.reasons)
  }

  private constructor(target: V1Target, options: CgroupV1Options, reasons: string[]) {
    super()
    this.location = target.location
    this.cgroup = target.location.path
    this.#native = target.native
    this.#pollReason = target.pollReason
    this.#pollOptions = options.poll
    this.#clock = options.clock
    this.notes.push(...reasons)
    const usagePath = path.join(this.cgroup, 'memory.usage_in_bytes')
    this.#usageFd = openFile(this.#native, usagePath, 'r')
    try {
      this.#usageIno = fs.fstatSync(this.#usageFd).ino
    } catch (err) {
      closeFile(this.#native, this.#usageFd)
      throw isErrnoException(err) ? syscallError(err, 'fstat', usagePath) : err
    }
    if (options.oom !== false) this.#watchOom()
  }

  /** How thresholds are delivered: by the kernel, or polled since the kernel's could not be registered. */
  get precision(): ThresholdPrecision {
    if (this.#pollReason === null) {
      // memcontrol-v1.c: thresholds are checked once per 128 page events per CPU.
      return { kind: 'kernel', bytes: 128 * pageSize() * os.availableParallelism() }
    }
    const p = resolvePollOptions(this.#pollOptions)
    return { kind: 'polled', bytes: p.guardBytes, intervalMs: { min: p.minIntervalMs, max: p.maxIntervalMs }, signals: [] }
  }

  /** `true` when thresholds are polled rather than the kernel's (see `notes` for why). */
  get polling(): boolean {
    return this.#pollReason !== null
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

  /** Memory+swap usage in bytes (`memory.memsw.usage_in_bytes`); throws `ERR_NO_CGROUP` when the kernel has no swap accounting. */
  readMemswUsage(): number {
    const file = path.join(this.cgroup, 'memory.memsw.usage_in_bytes')
    let text: string
    try {
      text = fs.readFileSync(file, 'latin1').trim()
    } catch (err) {
      throw isErrnoException(err) ? syscallError(err, 'read', file) : err
    }
    if (!/^\d+$/.test(text)) throw new MemoryPressureError('ERR_PARSE', `memory.memsw.usage_in_bytes holds ${describe(text)}`, { path: file })
    return Number(text)
  }

  /**
   * Reads the figures through the cgroup's path, and checks afterwards that the path still names
   * the cgroup this backend opened: a cgroup removed and made again at the same path is another
   * cgroup, and the backend closes (reason `'removed'`) rather than report its figures.
   *
   * @throws MemoryPressureError `ERR_NO_CGROUP` when the cgroup was removed (the backend is closed then)
   */
  snapshot(): MemorySnapshot {
    this.#assertOpen()
    let figures: ReturnType<typeof readFigures>
    let limit: ReturnType<typeof effectiveLimit>
    try {
      figures = readFigures(this.location)
      limit = effectiveLimit(this.location)
    } catch (err) {
      this.#assertSameCgroup()
      throw err
    }
    this.#assertSameCgroup()
    return { ...figures, limit: limit.limit, limitHolder: limit.holder, time: performance.now() }
  }

  #assertSameCgroup(): void {
    if (!this.cgroupGone()) return
    this.removed()
    throw new MemoryPressureError('ERR_NO_CGROUP', `the cgroup ${this.cgroup} was removed`, { path: this.cgroup, reasons: ['removed'] })
  }

  watchThreshold(bytes: number, onCrossing: (crossing: Crossing) => void): ThresholdWatch {
    this.#assertOpen()
    checkWatchArgs(bytes, onCrossing)
    return this.#watch('memory.usage_in_bytes', bytes, onCrossing)
  }

  /**
   * Watches a threshold on memory+swap usage (`memory.memsw.usage_in_bytes`), as
   * {@link CgroupV1Backend.watchThreshold} does for memory. The file exists only with swap
   * accounting (`swapaccount=1`); without swap it equals memory usage.
   *
   * @throws MemoryPressureError `ERR_NO_CGROUP` (with `.path`) when the file does not exist
   */
  watchMemswThreshold(bytes: number, onCrossing: (crossing: Crossing) => void): ThresholdWatch {
    this.#assertOpen()
    checkWatchArgs(bytes, onCrossing)
    this.readMemswUsage()
    return this.#watch('memory.memsw.usage_in_bytes', bytes, onCrossing)
  }

  /**
   * Registers for `memory.pressure_level` notifications at `level` (cgroup-v1/memory.rst section
   * 11), delivered as `'pressure-level'` events. Without swap, `medium` and `critical` were seen
   * only at the moment of an OOM (KERNEL.md): they are no early warning for heap growth.
   *
   * @param level `'low'`, `'medium'` or `'critical'`
   * @param mode `'default'` (default), `'hierarchy'` or `'local'`
   * @throws MemoryPressureError `ERR_PERMISSION` when `cgroup.event_control` cannot be written
   *   (there is no polled substitute for reclaim pressure)
   */
  watchPressureLevel(level: VmPressureLevel, mode: VmPressureMode = 'default'): ThresholdWatch & { level: VmPressureLevel; mode: VmPressureMode } {
    this.#assertOpen()
    if (level !== 'low' && level !== 'medium' && level !== 'critical') {
      throw new TypeError(`level must be 'low', 'medium' or 'critical' (received ${describe(level)})`)
    }
    if (mode !== 'default' && mode !== 'hierarchy' && mode !== 'local') {
      throw new TypeError(`mode must be 'default', 'hierarchy' or 'local' (received ${describe(mode)})`)
    }
    if (this.#native === null || this.#pollReason !== null) {
      throw new MemoryPressureError('ERR_PERMISSION', `memory.pressure_level cannot be registered: ${this.#pollReason ?? 'no native addon'}`, {
        path: path.join(this.cgroup, 'cgroup.event_control'),
      })
    }
    const event = new V1Event(this, this.#native, 'memory.pressure_level', `${level},${mode}`, (count) => {
      const e: PressureLevelEvent = { level, mode, count, time: performance.now() }
      this.emit('pressure-level', e)
    }, (err) => this.fail(err, false))
    this.#events.add(event)
    return { threshold: 0, level, mode, close: () => event.close() }
  }

  close(): void {
    this.#end('closed')
  }

  /**
   * Resolves once no registration is being written (registrations go to the kernel off the event
   * loop); after `close()`, every fd of the backend is closed then.
   */
  idle(): Promise<void> {
    return this.#writing === 0 && this.#queue.length === 0 ? Promise.resolve() : new Promise((resolve) => this.#idle.push(resolve))
  }

  /**
   * @internal Queues a registration's write. Writes start on a later turn of the loop (a watch
   * closed before then is never written), at most {@link MAX_WRITES} at once: each holds a
   * threadpool thread, which the application's fs, dns and crypto calls share, for a grace period.
   */
  enqueueWrite(job: WriteJob): void {
    this.#queue.push(job)
    this.#schedulePump()
  }

  /** @internal Takes a registration out of the queue before its write started; false if it started. */
  dequeueWrite(job: WriteJob): boolean {
    const i = this.#queue.indexOf(job)
    if (i === -1) return false
    this.#queue.splice(i, 1)
    this.#settle()
    return true
  }

  #schedulePump(): void {
    if (this.#pumpScheduled || this.#queue.length === 0 || this.#writing >= MAX_WRITES) return
    this.#pumpScheduled = true
    setImmediate(() => {
      this.#pumpScheduled = false
      this.#pump()
    })
  }

  #pump(): void {
    while (this.#writing < MAX_WRITES && this.#queue.length > 0) {
      const job = this.#queue.shift() as WriteJob
      this.#writing++
      job.start(() => {
        this.#writing--
        // From a write's callback, never from the caller's own turn: the next starts at once.
        this.#pump()
        this.#settle()
      })
    }
  }

  #settle(): void {
    if (this.#writing === 0 && this.#queue.length === 0) for (const resolve of this.#idle.splice(0)) resolve()
  }

  #watch(file: 'memory.usage_in_bytes' | 'memory.memsw.usage_in_bytes', bytes: number, onCrossing: (crossing: Crossing) => void): ThresholdWatch {
    if (this.#pollReason === null && this.#native !== null) {
      try {
        const watch = new V1Watch(this, this.#native, file, bytes, onCrossing)
        this.#watches.add(watch)
        return watch
      } catch (err) {
        // PREEMPT_RT answers EOPNOTSUPP only when the threshold is written; a remount read-only or a
        // dropped privilege shows up here too. Switch to polling and say so.
        if (!(err instanceof MemoryPressureError) || err.syscall !== 'write' && err.syscall !== 'open' ||
          !fallbackErrnos.has(err.errno ?? 0)) throw err
        this.#pollReason = `registering a threshold failed (${err.message})`
        this.notes.push(`${this.#pollReason}: thresholds are now polled from memory.usage_in_bytes`)
      }
    }
    return this.pollInstead(file, bytes, onCrossing, null)
  }

  /**
   * @internal A polled watch of `bytes`; `usage` is where usage was last known to be (a crossing
   * since is delivered at the first poll), `null` to read it now.
   */
  pollInstead(file: 'memory.usage_in_bytes' | 'memory.memsw.usage_in_bytes', bytes: number, onCrossing: (crossing: Crossing) => void, usage: number | null): ThresholdWatch {
    const memsw = file === 'memory.memsw.usage_in_bytes'
    const poller = memsw ? (this.#memswPoller ??= this.#newPoller(() => this.readMemswUsage())) : (this.#poller ??= this.#newPoller(() => this.readUsage()))
    return poller.add(bytes, usage ?? (memsw ? this.readMemswUsage() : this.readUsage()), onCrossing)
  }

  /** @internal The kernel refused a registration written off the loop: thresholds are polled from now on. */
  registrationRefused(err: MemoryPressureError): boolean {
    if (err.syscall !== 'write' || !fallbackErrnos.has(err.errno ?? 0)) return false
    if (this.#pollReason === null) {
      this.#pollReason = `registering a threshold failed (${err.message})`
      this.notes.push(`${this.#pollReason}: thresholds are now polled from memory.usage_in_bytes`)
    }
    return true
  }

  #newPoller(read: () => number): ThresholdPoller {
    return new ThresholdPoller(read, (err) => this.#pollFailed(err), this.#pollOptions, this.#clock, () => {
      this.#pollOom()
      if (!this.#closed) this.emit('wakeup')
    })
  }

  #pollFailed(err: unknown): void {
    if (this.#closed) return
    if (this.cgroupGone()) {
      this.removed()
      return
    }
    this.fail(err instanceof MemoryPressureError ? err : new MemoryPressureError('ERR_SYSCALL', String(err), { cause: err }), true)
  }

  #readOomKills(): number | null {
    try {
      const text = fs.readFileSync(path.join(this.cgroup, 'memory.oom_control'), 'latin1')
      const m = /^oom_kill (\d+)$/m.exec(text)
      return m === null ? null : Number(m[1])
    } catch {
      return null
    }
  }

  #watchOom(): void {
    if (this.location.path === this.location.mountPoint) {
      this.notes.push('no OOM notifications: memory.oom_control cannot be registered on the root cgroup')
      return
    }
    this.#oomKills = this.#readOomKills() ?? 0
    if (this.#native === null || this.#pollReason !== null) {
      this.notes.push('OOM kills are read from memory.oom_control at each poll')
      return
    }
    const failed = (err: unknown): void => {
      this.#oom = null
      this.notes.push(`no OOM notifications (${err instanceof Error ? err.message : String(err)})`)
    }
    try {
      // memory.rst section 10: "<event_fd> <fd of memory.oom_control>", notified on OOM.
      this.#oom = new V1Event(this, this.#native, 'memory.oom_control', null, (count) => this.#reportOom(count), failed)
    } catch (err) {
      failed(err)
    }
  }

  #reportOom(count: number): void {
    const kills = this.#readOomKills()
    const oomKill = kills === null ? null : Math.max(0, kills - this.#oomKills)
    if (kills !== null) this.#oomKills = kills
    if (count === 0 && (oomKill ?? 0) === 0) return
    this.emit('oom', { source: 'memory.oom_control', oom: count, oomKill, time: performance.now() })
  }

  #pollOom(): void {
    if (this.#oom === null && !this.#closed && this.location.path !== this.location.mountPoint) this.#reportOom(0)
  }

  /** @internal */
  forget(watch: V1Watch | V1Event): void {
    if (watch instanceof V1Watch) this.#watches.delete(watch)
    else this.#events.delete(watch)
  }

  /**
   * @internal The kernel signals every eventfd once when the cgroup is removed (memory.rst). Gone
   * means: the held `memory.usage_in_bytes` fd reads ENODEV (kernfs, once the cgroup is removed),
   * or the path no longer leads to the file that was opened (removed, or made again in its place).
   */
  cgroupGone(): boolean {
    if (this.#closed) return false
    try {
      fs.readSync(this.#usageFd, this.#buffer, 0, this.#buffer.length, 0)
    } catch (err) {
      if (isErrnoException(err, 'ENODEV')) return true
    }
    try {
      return fs.statSync(path.join(this.cgroup, 'memory.usage_in_bytes')).ino !== this.#usageIno
    } catch {
      return true
    }
  }

  /** @internal Throws `ERR_NO_CGROUP` when the path names another cgroup than the one opened (see {@link CgroupV1Backend.cgroupGone}). */
  assertOpened(): void {
    if (this.cgroupGone()) throw new MemoryPressureError('ERR_NO_CGROUP', `the cgroup ${this.cgroup} was removed`, { path: this.cgroup, reasons: ['removed'] })
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
    for (const event of this.#events) event.close()
    this.#events.clear()
    this.#oom?.close()
    this.#poller?.close()
    this.#memswPoller?.close()
    closeFile(this.#native, this.#usageFd)
    this.emit('close', reason)
  }

  #assertOpen(): void {
    if (this.#closed) throw new MemoryPressureError('ERR_CLOSED', `the cgroup-v1 backend for ${this.cgroup} is closed`)
  }
}

/** Registration writes in flight at once per backend (see {@link CgroupV1Backend.enqueueWrite}). */
const MAX_WRITES = 2

/** A registration waiting for its `cgroup.event_control` write; `start` calls `done` once the write is back. */
interface WriteJob {
  start(done: () => void): void
}

/** One threshold: its eventfd, the `memory.usage_in_bytes` fd the kernel ties it to, its poll. */
class V1Watch implements ThresholdWatch {
  readonly threshold: number
  #backend: CgroupV1Backend
  #native: NativeBinding
  #onCrossing: (crossing: Crossing) => void
  #registration: Registration
  #side: ThresholdSide = { above: false, pending: 0 }
  #usage: number
  /** The polled watch that replaced this one when the kernel refused the registration. */
  #polled: ThresholdWatch | null = null
  #closed = false

  #file: 'memory.usage_in_bytes' | 'memory.memsw.usage_in_bytes'

  constructor(backend: CgroupV1Backend, native: NativeBinding, file: 'memory.usage_in_bytes' | 'memory.memsw.usage_in_bytes', threshold: number,
    onCrossing: (c: Crossing) => void) {
    this.threshold = threshold
    this.#file = file
    this.#backend = backend
    this.#native = native
    this.#onCrossing = onCrossing
    // The side before registering; once registered, usage is compared again (see #registered).
    this.#usage = this.#read()
    this.#side.above = this.#usage >= threshold
    // memory.rst, "Memory thresholds": "<event_fd> <fd of memory.usage_in_bytes> <threshold>".
    this.#registration = registerEvent(backend, native, file, String(threshold), (status) => this.#wake(status, false), (err) => this.#registered(err))
  }

  close(): void {
    if (this.#closed) return
    this.#closed = true
    this.#backend.forget(this)
    // Closing the eventfd unregisters the threshold (memcg_event_wake on EPOLLHUP).
    this.#registration.close()
    this.#polled?.close()
  }

  #read(): number {
    return this.#file === 'memory.usage_in_bytes' ? this.#backend.readUsage() : this.#backend.readMemswUsage()
  }

  #registered(err: MemoryPressureError | null): void {
    if (this.#closed) return
    if (err === null) {
      // The kernel counts only crossings after its registration (and none for a threshold already
      // crossed then): one while the write was on its way shows only in usage.
      this.#wake(0, true)
      return
    }
    if (this.#backend.registrationRefused(err)) {
      try {
        this.#polled = this.#backend.pollInstead(this.#file, this.threshold, this.#onCrossing, this.#usage)
      } catch (e) {
        this.close()
        this.#backend.fail(e instanceof MemoryPressureError ? e : new MemoryPressureError('ERR_SYSCALL', String(e), { cause: e }), false)
      }
      return
    }
    this.close()
    if (this.#backend.cgroupGone()) this.#backend.removed()
    else this.#backend.fail(err, false)
  }

  #wake(status: number, registered: boolean): void {
    if (this.#closed) return
    if (status < 0) {
      this.close()
      this.#backend.fail(syscallError(status, 'poll'), false)
      return
    }
    const count = this.#native.readEventfd(this.#registration.fd)
    if (count < 0) {
      this.close()
      this.#backend.fail(syscallError(count, 'read'), false)
      return
    }
    if (count === 0 && !registered) return
    if (this.#backend.cgroupGone()) {
      this.#backend.removed()
      return
    }
    let usage: number
    try {
      usage = this.#read()
    } catch (err) {
      if (this.#backend.cgroupGone()) {
        this.#backend.removed()
        return
      }
      this.#backend.fail(err instanceof MemoryPressureError ? err : new MemoryPressureError('ERR_SYSCALL', String(err)), false)
      return
    }
    const above = usage >= this.threshold
    let directions: Direction[]
    if (count === 0) {
      directions = above === this.#side.above ? [] : [above ? 'up' : 'down']
      this.#side.above = above
    } else {
      directions = classifyWakeup(this.#side, count, above)
    }
    const coalesced = directions.length > 1
    const time = performance.now()
    for (const direction of directions) {
      if (this.#closed) return
      this.#onCrossing({ threshold: this.threshold, direction, usage, coalesced, signal: count === 0 ? 'poll' : 'eventfd', time })
    }
  }
}

/**
 * A notification registered through `cgroup.event_control` that is not a threshold:
 * `memory.oom_control` (no argument) or `memory.pressure_level` (`<level>,<mode>`).
 */
class V1Event {
  #backend: CgroupV1Backend
  #native: NativeBinding
  #registration: Registration
  #closed = false

  constructor(backend: CgroupV1Backend, native: NativeBinding, file: 'memory.oom_control' | 'memory.pressure_level', argument: string | null,
    onEvent: (count: number) => void, onRefused: (err: MemoryPressureError) => void) {
    this.#backend = backend
    this.#native = native
    this.#registration = registerEvent(backend, native, file, argument, (status) => {
      if (this.#closed) return
      const count = status < 0 ? status : this.#native.readEventfd(this.#registration.fd)
      if (count === 0) return
      // Every registered eventfd is signalled once when the cgroup is removed (memory.rst).
      if (this.#backend.cgroupGone()) {
        this.#backend.removed()
        return
      }
      if (count < 0) {
        this.close()
        this.#backend.fail(syscallError(count, status < 0 ? 'poll' : 'read'), false)
        return
      }
      onEvent(count)
    }, (err) => {
      if (err === null || this.#closed) return
      this.close()
      if (this.#backend.cgroupGone()) this.#backend.removed()
      else onRefused(err)
    })
  }

  close(): void {
    if (this.#closed) return
    this.#closed = true
    this.#backend.forget(this)
    this.#registration.close()
  }
}

/** statfs(2) `f_type` of a cgroup v1 filesystem (include/uapi/linux/magic.h). */
const CGROUP_SUPER_MAGIC = 0x27e0eb

/**
 * The directory was checked against the mount table when the backend opened, but the write goes
 * through a path again: refuse unless the open fd is on cgroup v1 (a mount over the directory, or
 * the directory replaced, since). Checked on the fd itself through `/proc/self/fd`.
 */
function assertCgroupFile(fd: number, file: string): void {
  const type = fs.statfsSync(`/proc/self/fd/${fd}`).type
  if (type !== CGROUP_SUPER_MAGIC) {
    const reason = `${file} is no longer on a cgroup v1 filesystem (type 0x${type.toString(16)})`
    throw new MemoryPressureError('ERR_NO_CGROUP', `nothing is written to ${file}: ${reason}`, { path: file, syscall: 'statfs', reasons: [reason] })
  }
}

/** `open(2)` through the addon when it can (the environment then owns the fd: see `NativeBinding.open`), else `fs.openSync`. */
function openFile(native: NativeBinding | null, file: string, mode: 'r' | 'w'): number {
  if (native?.open !== undefined && native.platformSupported) {
    const fd = native.open(file, mode)
    if (fd < 0) throw syscallError(fd, 'open', file)
    return fd
  }
  try {
    return fs.openSync(file, mode === 'r' ? 'r' : fs.constants.O_WRONLY)
  } catch (err) {
    throw isErrnoException(err) ? syscallError(err, 'open', file) : err
  }
}

function closeFile(native: NativeBinding | null, fd: number): void {
  if (native?.open !== undefined && native.platformSupported) {
    native.close(fd)
    return
  }
  try {
    fs.closeSync(fd)
  } catch {
    // Already gone with the cgroup; nothing else holds it.
  }
}

/**
 * An eventfd being registered through `cgroup.event_control`, then watched. The registration's
 * write waits in the kernel for an RCU grace period (`synchronize_rcu()` in mm/memcontrol-v1.c:
 * tens of milliseconds on a loaded machine), so it goes to the libuv threadpool; until it has
 * returned the eventfd stays open even when closed here, because the kernel looks up the number
 * written (a number closed and reused meanwhile would be another fd).
 */
interface Registration {
  /** The eventfd. */
  readonly fd: number
  close(): void
}

/**
 * Registers an eventfd for `file` of the backend's cgroup through `cgroup.event_control`
 * (`"<event_fd> <fd of file>[ <argument>]"`, cgroup-v1/memory.rst) and watches it for
 * readability. The opens and checks are done now (their errors are thrown, nothing stays open);
 * the write runs off the event loop and `onRegistered` gets its outcome.
 */
function registerEvent(backend: CgroupV1Backend, native: NativeBinding, file: string, argument: string | null,
  onWake: (status: number) => void, onRegistered: (err: MemoryPressureError | null) => void): Registration {
  const efd = native.eventfd()
  if (efd < 0) throw syscallError(efd, 'eventfd')
  const target = path.join(backend.cgroup, file)
  const controlPath = path.join(backend.cgroup, 'cgroup.event_control')
  let tfd = -1
  let cfd = -1
  let poller: PollWatcher | null = null
  let step: [syscall: string, file?: string] = ['open', target]
  const release = (): void => {
    // The registration holds its own reference to the file; ours can go.
    if (tfd >= 0) closeFile(native, tfd)
    if (cfd >= 0) closeFile(native, cfd)
    tfd = cfd = -1
  }
  try {
    tfd = openFile(native, target, 'r')
    step = ['open', controlPath]
    cfd = openFile(native, controlPath, 'w')
    step = ['statfs', controlPath]
    assertCgroupFile(cfd, controlPath)
    assertCgroupFile(tfd, target)
    // The path could name a cgroup made again in the place of the one opened.
    backend.assertOpened()
    const watched = native.watch(efd, 'readable', onWake)
    if (typeof watched === 'number') throw syscallError(watched, 'uv_poll_start')
    poller = watched
  } catch (err) {
    native.close(efd)
    release()
    throw err instanceof MemoryPressureError || !isErrnoException(err) ? err : syscallError(err, step[0], step[1])
  }
  const watcher = poller
  let state: 'queued' | 'writing' | 'done' = 'queued'
  let closing = false
  const text = argument === null ? `${efd} ${tfd}` : `${efd} ${tfd} ${argument}`
  const job: WriteJob = {
    start: (done) => {
      state = 'writing'
      fs.write(cfd, text, (err) => {
        state = 'done'
        release()
        if (closing) watcher.close()
        else onRegistered(err === null ? null : syscallError(err, 'write', controlPath))
        done()
      })
    },
  }
  backend.enqueueWrite(job)
  return {
    fd: efd,
    close: () => {
      if (closing) return
      closing = true
      if (state === 'done') watcher.close()
      else if (state === 'queued' && backend.dequeueWrite(job)) {
        release()
        watcher.close()
      }
    },
  }
}
