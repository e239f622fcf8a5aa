// cgroup v2 has no byte thresholds: they are emulated from four signals, `memory.events` changes
// (POLLPRI), a PSI trigger on `memory.pressure`, V8's collections when the process is in the
// cgroup, and a timer on `memory.current` that sleeps while usage is steady.

import { EventEmitter } from 'eventemitter3'
import fs from 'node:fs'
import { performance } from 'node:perf_hooks'
import path from 'node:path'
import { type CgroupLocation, findMemoryCgroup, resolveCgroupPath } from '../cgroup/discover.js'
import { isWithin, openRegular, readText } from '../cgroup/files.js'
import { effectiveLimit } from '../cgroup/limit.js'
import { readFigures } from '../cgroup/stat.js'
import { MemoryPressureError, isErrnoException, syscallError } from '../errors.js'
import { type NativeBinding, POLL_DISCONNECT, type PollWatcher, tryLoadNative } from '../native.js'
import { describe } from '../size.js'
import type { ProbeResult } from './cgroup-v1.js'
import { FOLLOW, type GcSource, type PollClock, type PollOptions, ThresholdPoller, checkWatchArgs, resolvePollOptions, v8Collections } from './poll.js'
import { PsiTrigger, type PsiTriggerOptions } from './psi.js'
import type {
  BackendCloseReason,
  BackendEvents,
  Crossing,
  CrossingSignal,
  MemoryBackend,
  MemorySnapshot,
  SignalDelay,
  ThresholdPrecision,
  ThresholdWatch,
} from './types.js'

/** Options of {@link CgroupV2Backend.open}. */
export interface CgroupV2Options {
  /**
   * Filesystem path of the cgroup to watch. Default: the cgroup holding the effective limit of the
   * process's own memory cgroup, else the process's own cgroup.
   */
  cgroup?: string
  /**
   * The directory the cgroup v2 hierarchy is mounted on, when `cgroup` is below it. Given, the
   * mount table is not read: ancestors are walked up to `root`, and `root` may be any directory
   * laid out as a cgroup v2 tree (a guest's `/sys/fs/cgroup`, or a test fixture). Requires `cgroup`.
   */
  root?: string
  /** Adaptive polling of `memory.current`; see {@link PollOptions}. */
  poll?: PollOptions
  /**
   * The PSI trigger armed on the cgroup's `memory.pressure` to read usage as soon as the cgroup
   * stalls, or `false` for none. Default `{ kind: 'some', stallUs: 100000, windowUs: 2000000 }`.
   */
  psi?: PsiTriggerOptions | false
  /** @internal Timers for tests. */
  clock?: PollClock
  /**
   * @internal Collections to read after, for tests; `null` for none. Default: V8's, when this
   * process is in the watched cgroup (or below it), else none.
   */
  gc?: GcSource | null
  /**
   * @internal A stand-in for the native addon, for tests of the POLLPRI paths on plain files;
   * `null` runs as without the addon.
   */
  native?: NativeBinding | null
}

/** What the probe found. */
export interface V2Target {
  location: CgroupLocation
  native: NativeBinding | null
}

/** `memory.events` counters by name (`low`, `high`, `max`, `oom`, `oom_kill`, `oom_group_kill`). */
export type MemoryEvents = Map<string, number>

/**
 * Parses cgroup v2 `memory.events` (or `memory.events.local`): one `name count` pair a line.
 *
 * @throws MemoryPressureError `ERR_PARSE` for a malformed line
 */
export function parseMemoryEvents(text: string, source?: string): MemoryEvents {
  const out: MemoryEvents = new Map()
  for (const line of text.split('\n')) {
    if (line === '') continue
    const m = /^([a-z_]+) (\d+)$/.exec(line)
    const count = m === null ? Number.NaN : Number(m[2])
    // A counter past 2^53 or a name seen twice is a torn or foreign file: no number from it is right.
    if (m === null || !Number.isSafeInteger(count) || out.has(m[1] as string)) {
      throw new MemoryPressureError('ERR_PARSE', `not a memory.events line: ${JSON.stringify(line)}`, source === undefined ? {} : { path: source })
    }
    out.set(m[1] as string, count)
  }
  return out
}

function locate(options: CgroupV2Options, reasons: string[]): CgroupLocation {
  if (options.root !== undefined) {
    if (options.cgroup === undefined) throw new TypeError('root requires cgroup (the cgroup v2 directory below root to watch)')
    const root = fs.realpathSync(options.root)
    let dir: string
    try {
      dir = fs.realpathSync(options.cgroup)
    } catch (err) {
      throw isErrnoException(err) ? syscallError(err, 'realpath', options.cgroup) : err
    }
    if (!isWithin(root, dir)) {
      throw new MemoryPressureError('ERR_NO_CGROUP', `${options.cgroup} is not below root ${options.root}`, { path: options.cgroup })
    }
    const rel = dir.slice(root.length)
    return { version: 2, path: dir, mountPoint: root, relativePath: rel === '' ? '/' : rel }
  }
  if (options.cgroup !== undefined) return resolveCgroupPath(options.cgroup)
  const own = findMemoryCgroup()
  if (own.version !== 2) {
    throw new MemoryPressureError('ERR_NO_CGROUP', `the process's memory cgroup is cgroup v${own.version}, not v2 (${own.path})`, { path: own.path })
  }
  const limit = effectiveLimit(own)
  reasons.push(limit.holder !== null ? `the effective limit is held by ${limit.holder}` : `no visible cgroup holds a limit; watching the process's own cgroup`)
  return limit.holder !== null ? resolveCgroupPath(limit.holder) : own
}

const message = (err: unknown): string => (err instanceof Error ? err.message : String(err))

/**
 * Byte thresholds on a cgroup v2 memory cgroup, emulated: usage (`memory.current`) is read on an
 * adaptive timer, on every change of `memory.events` and whenever the cgroup's PSI trigger fires.
 * Each crossing names the signal that led to it. Also emits `'oom'` when `memory.events` shows an
 * OOM (`oom`, `oom_kill`).
 */
export class CgroupV2Backend extends EventEmitter<BackendEvents> implements MemoryBackend {
  readonly name = 'cgroup-v2' as const
  readonly cgroup: string
  readonly location: CgroupLocation
  readonly precision: ThresholdPrecision
  /** What is watched and what could not be, in words (also in the monitor's diagnostics). */
  readonly notes: string[] = []
  #poller: ThresholdPoller
  #events: PollWatcher | null = null
  /** The inotify watch on memory.events used instead of #events when the addon is not loaded. */
  #inotify: fs.FSWatcher | null = null
  #eventsFd = -1
  #counters: MemoryEvents
  #psi: PsiTrigger | null = null
  #closed = false
  #buffer = Buffer.alloc(512)

  /** Says whether the v2 backend can run here and on which cgroup. Never throws. */
  static probe(options: CgroupV2Options = {}): ProbeResult<V2Target> {
    const reasons: string[] = []
    let location: CgroupLocation
    try {
      location = locate(options, reasons)
    } catch (err) {
      return { available: false, reasons: [...reasons, message(err)] }
    }
    if (location.version !== 2) return { available: false, reasons: [`${location.path} is a cgroup v${location.version} cgroup, not v2`] }
    const current = path.join(location.path, 'memory.current')
    try {
      fs.accessSync(current, fs.constants.R_OK)
    } catch (err) {
      return { available: false, reasons: [...reasons, message(isErrnoException(err) ? syscallError(err, 'access', current) : err)] }
    }
    const native = options.native === null ? null : options.native ?? tryLoadNative()
    if (native === null || native instanceof MemoryPressureError || !native.platformSupported) {
      const why = native === null ? 'turned off' : native instanceof MemoryPressureError ? native.message : `not supported on ${process.platform}`
      reasons.push(`native addon unavailable (${why}): memory.events is watched through inotify, PSI cannot be watched, usage is polled`)
      return { available: true, value: { location, native: null }, reasons }
    }
    return { available: true, value: { location, native }, reasons }
  }

  /**
   * Opens the backend, or throws `ERR_BACKEND_UNAVAILABLE` with the probe's reasons.
   *
   * @throws TypeError / RangeError for malformed options (naming the option)
   */
  static open(options: CgroupV2Options = {}): CgroupV2Backend {
    if (options === null || typeof options !== 'object') throw new TypeError(`options must be an object (received ${describe(options)})`)
    for (const key of ['cgroup', 'root'] as const) {
      if (options[key] !== undefined && typeof options[key] !== 'string') {
        throw new TypeError(`${key} must be a filesystem path string (received ${describe(options[key])})`)
      }
    }
    if (options.psi !== undefined && options.psi !== false && (options.psi === null || typeof options.psi !== 'object')) {
      throw new TypeError(`psi must be an object or false (received ${describe(options.psi)})`)
    }
    if (options.root !== undefined && options.cgroup === undefined) {
      throw new TypeError('root requires cgroup (the cgroup v2 directory below root to watch)')
    }
    resolvePollOptions(options.poll)
    const probe = CgroupV2Backend.probe(options)
    if (!probe.available) {
      throw new MemoryPressureError('ERR_BACKEND_UNAVAILABLE', `the cgroup-v2 backend cannot run here: ${probe.reasons.join('; ')}`, {
        reasons: probe.reasons,
      })
    }
    return new CgroupV2Backend(probe.value, options, probe.reasons)
  }

  private constructor(target: V2Target, options: CgroupV2Options, reasons: string[]) {
    super()
    this.location = target.location
    this.cgroup = target.location.path
    this.notes.push(...reasons)
    const gc = options.gc !== undefined ? options.gc : (this.#holdsThisProcess() ? v8Collections : null)
    this.#poller = new ThresholdPoller(() => this.readUsage(), (err) => this.#readFailed(err), options.poll, options.clock,
      () => this.#tick(), gc === null ? undefined : { gc })
    const signals: CrossingSignal[] = []
    const eventsFile = path.join(this.cgroup, 'memory.events')
    this.#counters = this.#readEvents()
    const native = target.native
    if (native !== null) {
      // cgroup-v2.rst: a change of memory.events "generates a file modified event"; kernfs reports
      // it as POLLPRI, and only a read through the same fd re-arms it.
      try {
        const fd = openRegular(eventsFile)
        const watcher = native.watch(fd, 'priority', (status, events) => this.#eventsChanged((events & POLL_DISCONNECT) !== 0 ? -1 : status))
        if (typeof watcher === 'number') {
          fs.closeSync(fd)
          this.notes.push(`memory.events cannot be watched for POLLPRI (${message(syscallError(watcher, 'epoll_ctl', eventsFile))}); it is read at each poll`)
        } else {
          this.#events = watcher
          this.#eventsFd = fd
          this.#readEventsFd()
          signals.push('memory.events')
          this.notes.push('memory.events is watched for changes (POLLPRI)')
        }
      } catch (err) {
        this.notes.push(`memory.events cannot be opened (${message(isErrnoException(err) ? syscallError(err, 'open', eventsFile) : err)}); OOM is not reported`)
      }
      if (options.psi !== false) {
        const file = path.join(this.cgroup, 'memory.pressure')
        try {
          const psi = PsiTrigger.open(file, options.psi ?? {}, native)
          psi.on('stall', () => this.#poller.check('psi'))
          psi.on('close', (reason) => {
            if (reason !== 'removed') return
            if (this.#gone()) this.#end('removed')
            else this.notes.push(`the PSI trigger on ${file} stopped (POLLERR); memory.events and polling go on`)
          })
          this.#psi = psi
          signals.push('psi')
          this.notes.push(`PSI trigger armed on ${file}: ${psi.kind} ${psi.stallUs} us per ${psi.windowUs} us window`, ...psi.notes)
        } catch (err) {
          this.notes.push(`no PSI trigger on ${file} (${message(err)})`)
        }
      }
    } else if (this.#watchEventsFile(eventsFile)) {
      signals.push('memory.events')
    }
    const p = this.#poller.options
    const delays: SignalDelay[] = []
    if (gc !== null) {
      signals.push('gc')
      delays.push({ signal: 'gc', sees: 'v8', worstMs: p.minIntervalMs * FOLLOW.GC_GAP_FACTOR })
      this.notes.push(`this process is in the cgroup: memory.current is read after V8's collections, and every ${p.minIntervalMs} to ${p.maxIntervalMs} ms while usage grows; while it is steady, every ${p.idleIntervalMs} ms at most (the longest delay before growth outside V8 is first seen, unless memory.high or PSI reports it)`)
    } else {
      this.notes.push(`thresholds are emulated: memory.current is polled every ${p.minIntervalMs} to ${p.maxIntervalMs} ms depending on the distance to the nearest threshold and the growth rate`)
    }
    delays.unshift({ signal: 'poll', sees: 'any', worstMs: gc !== null ? p.idleIntervalMs : p.maxIntervalMs })
    // kernel/cgroup/cgroup.c, cgroup_file_notify(): at most one notification per CGROUP_FILE_NOTIFY_MIN_INTV (10 ms).
    if (signals.includes('memory.events')) delays.push({ signal: 'memory.events', sees: 'memory.high', worstMs: 10 })
    if (this.#psi !== null) delays.push({ signal: 'psi', sees: 'stall', worstMs: this.#psi.windowUs / 1000 })
    this.precision = {
      kind: 'polled', bytes: p.guardBytes, intervalMs: { min: p.minIntervalMs, max: gc !== null ? p.idleIntervalMs : p.maxIntervalMs }, signals, delays,
    }
  }

  /** Whether this process's own memory cgroup is the watched cgroup or below it (its heap is counted there). */
  #holdsThisProcess(): boolean {
    try {
      const own = findMemoryCgroup()
      return own.version === 2 && isWithin(fs.realpathSync(this.cgroup), fs.realpathSync(own.path))
    } catch {
      return false
    }
  }

  /** Usage reads done by the timer so far: the backend's own wake-ups (for measurements). */
  get timedReads(): number {
    return this.#poller.timedReads
  }

  get closed(): boolean {
    return this.#closed
  }

  /** Usage in bytes from `memory.current` (page cache included). */
  readUsage(): number {
    const file = path.join(this.cgroup, 'memory.current')
    const text = readText(file).trim()
    if (!/^\d+$/.test(text)) throw new MemoryPressureError('ERR_PARSE', `memory.current holds ${describe(text)}, not a number`, { path: file })
    return Number(text)
  }

  /** The `memory.events` counters as last read. */
  memoryEvents(): MemoryEvents {
    return new Map(this.#counters)
  }

  snapshot(): MemorySnapshot {
    this.#assertOpen()
    const figures = readFigures(this.location)
    const limit = effectiveLimit(this.location)
    return { ...figures, limit: limit.limit, limitHolder: limit.holder, time: performance.now() }
  }

  watchThreshold(bytes: number, onCrossing: (crossing: Crossing) => void): ThresholdWatch {
    this.#assertOpen()
    checkWatchArgs(bytes, onCrossing)
    return this.#poller.add(bytes, this.readUsage(), onCrossing)
  }

  close(): void {
    this.#end('closed')
  }

  #gone(): boolean {
    return !fs.existsSync(path.join(this.cgroup, 'memory.current'))
  }

  #readFailed(err: unknown): void {
    if (this.#closed) return
    if (this.#gone()) {
      this.#end('removed')
      return
    }
    const error = err instanceof MemoryPressureError ? err : new MemoryPressureError('ERR_SYSCALL', message(err), { cause: err })
    this.emit('error', error)
    // A torn read (ERR_PARSE) is worth another try at the next poll; anything else ends the backend.
    if (error.code !== 'ERR_PARSE') this.#end('error')
  }

  /** Each timed poll also reads memory.events when no watch tells of its changes. */
  #tick(): void {
    if (this.#closed) return
    if (this.#events === null && this.#inotify === null) this.#compareEvents(this.#readEvents(), false)
    // A timed read is a wake-up too: the monitor re-reads the limit then (the kernel announces no
    // change of memory.max or memory.high), at most every half second.
    this.emit('wakeup')
  }

  /**
   * Without the addon: inotify through fs.watch. kernfs_notify() raises IN_MODIFY on the file as
   * well as POLLPRI (kernel fs/kernfs/file.c; containerd watches memory.events this way).
   */
  #watchEventsFile(file: string): boolean {
    try {
      const watcher = fs.watch(file, { persistent: false }, () => this.#eventsModified())
      watcher.on('error', () => {
        if (this.#closed) return
        watcher.close()
        this.#inotify = null
        if (this.#gone()) this.#end('removed')
        else this.notes.push('the inotify watch on memory.events failed; it is read at each poll')
      })
      this.#inotify = watcher
      this.notes.push('memory.events is watched for changes through inotify (fs.watch), the native addon being unavailable')
      return true
    } catch (err) {
      this.notes.push(`memory.events cannot be watched with inotify (${message(isErrnoException(err) ? syscallError(err, 'inotify_add_watch', file) : err)}); it is read at each poll`)
      return false
    }
  }

  #eventsModified(): void {
    if (this.#closed) return
    if (this.#gone()) {
      this.#end('removed')
      return
    }
    this.#compareEvents(this.#readEvents(), true)
  }

  #readEvents(): MemoryEvents {
    const file = path.join(this.cgroup, 'memory.events')
    try {
      return parseMemoryEvents(readText(file), file)
    } catch {
      return this.#counters ?? new Map()
    }
  }

  #readEventsFd(): MemoryEvents | null {
    try {
      const n = fs.readSync(this.#eventsFd, this.#buffer, 0, this.#buffer.length, 0)
      return parseMemoryEvents(this.#buffer.toString('latin1', 0, n))
    } catch {
      return null
    }
  }

  #eventsChanged(status: number): void {
    if (this.#closed) return
    const counters = status < 0 ? null : this.#readEventsFd()
    if (counters === null) {
      if (this.#gone()) {
        this.#end('removed')
        return
      }
      // POLLERR on a live cgroup: stop watching (libuv already stopped) and fall back to polling.
      this.#events?.close()
      this.#events = null
      this.notes.push('memory.events watch stopped (POLLERR); it is read at each poll')
      return
    }
    this.#compareEvents(counters, true)
  }

  #compareEvents(counters: MemoryEvents, woke: boolean): void {
    const before = this.#counters
    this.#counters = counters
    const delta = (key: string): number => (counters.get(key) ?? 0) - (before.get(key) ?? 0)
    const oom = delta('oom')
    const oomKill = delta('oom_kill')
    if (oom > 0 || oomKill > 0) this.emit('oom', { source: 'memory.events', oom, oomKill, time: performance.now() })
    if (woke && this.#poller.size > 0) this.#poller.check('memory.events')
  }

  #end(reason: BackendCloseReason): void {
    if (this.#closed) return
    this.#closed = true
    this.#poller.close()
    this.#events?.close()
    this.#events = null
    this.#inotify?.close()
    this.#inotify = null
    this.#psi?.removeAllListeners()
    this.#psi?.close()
    this.#psi = null
    this.emit('close', reason)
  }

  #assertOpen(): void {
    if (this.#closed) throw new MemoryPressureError('ERR_CLOSED', `the cgroup-v2 backend for ${this.cgroup} is closed`)
  }
}
