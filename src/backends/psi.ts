// PSI memory triggers (`/proc/pressure/memory`, `<cgroup v2>/memory.pressure`): arm one, watch it for
// POLLPRI on the event loop, and report only real stalls (the kernel's first event can be false).

import { EventEmitter } from 'eventemitter3'
import fs from 'node:fs'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import { MemoryPressureError, isErrnoException, syscallError } from '../errors.js'
import { type NativeBinding, POLL_DISCONNECT, type PollWatcher, tryLoadNative } from '../native.js'
import { describe } from '../size.js'
import { readText } from '../cgroup/files.js'

/** `some`: at least one task stalled on memory; `full`: all non-idle tasks stalled at once (psi.rst). */
export type PsiKind = 'some' | 'full'

/** One line of a PSI file: averages in percent, `total` in microseconds. */
export interface PsiLine {
  avg10: number
  avg60: number
  avg300: number
  /** Total stall time since boot (or since the cgroup was created), microseconds. */
  totalUs: number
}

/** A parsed PSI file. `full` is absent from files that have no `full` line. */
export interface PsiReading {
  some: PsiLine
  full?: PsiLine
}

const lineRe = /^(some|full) avg10=(\d+\.\d+) avg60=(\d+\.\d+) avg300=(\d+\.\d+) total=(\d+)$/

/**
 * Parses a PSI file (`some avg10=0.00 avg60=0.00 avg300=0.00 total=0` and the same for `full`).
 *
 * @throws MemoryPressureError `ERR_PARSE` when the `some` line is missing or a line is malformed
 */
export function parsePressure(text: string, source?: string): PsiReading {
  const out: Partial<PsiReading> = {}
  for (const raw of text.split('\n')) {
    if (raw === '') continue
    const m = lineRe.exec(raw)
    const line = m === null ? null : { avg10: Number(m[2]), avg60: Number(m[3]), avg300: Number(m[4]), totalUs: Number(m[5]) }
    // Averages are percentages of time (psi.rst); a total past 2^53 us or a kind seen twice is a
    // torn or foreign file, and no number from it is right.
    if (m === null || line === null || !Number.isSafeInteger(line.totalUs) || out[m[1] as PsiKind] !== undefined ||
      [line.avg10, line.avg60, line.avg300].some((a) => a > 100)) {
      throw new MemoryPressureError('ERR_PARSE', `not a PSI line: ${JSON.stringify(raw)}`, source === undefined ? {} : { path: source })
    }
    out[m[1] as PsiKind] = line
  }
  if (out.some === undefined) {
    throw new MemoryPressureError('ERR_PARSE', 'no "some" line in the PSI file', source === undefined ? {} : { path: source })
  }
  return out as PsiReading
}

/**
 * The bytes to write to arm a trigger: `"<kind> <stall us> <window us>"` and a NUL. psi.rst: the
 * kernel writes a NUL over the last byte of the buffer it copied, so without our own NUL the last
 * digit of the window is cut (measured: `some 100000 2000000` alone fails with EINVAL).
 */
export function triggerBytes(kind: PsiKind, stallUs: number, windowUs: number): Buffer {
  return Buffer.from(`${kind} ${stallUs} ${windowUs}\0`, 'latin1')
}

/** Unprivileged windows must be a multiple of 2 s (psi.rst, "Userspace monitor usage"). */
export const UNPRIVILEGED_WINDOW_STEP_US = 2_000_000

/** The smallest multiple of 2 s at or above `windowUs`: a window an unprivileged process may use. */
export function unprivilegedWindowUs(windowUs: number): number {
  return Math.max(1, Math.ceil(windowUs / UNPRIVILEGED_WINDOW_STEP_US)) * UNPRIVILEGED_WINDOW_STEP_US
}

/** Options of {@link PsiTrigger.open}. */
export interface PsiTriggerOptions {
  /** `'some'` (default) or `'full'`. */
  kind?: PsiKind
  /** Stall time within a window that fires the trigger, microseconds. Default 100000 (100 ms). */
  stallUs?: number
  /**
   * Window length, microseconds: 500000 to 10000000 with CAP_SYS_RESOURCE, else a multiple of
   * 2000000. Default 2000000. When the kernel answers EINVAL for a window an unprivileged process
   * may not use, the trigger is armed again with the next multiple of 2 s (see `windowUs` of the
   * trigger for the one in force, and `notes` for why).
   */
  windowUs?: number
}

/** A PSI stall the trigger reported. */
export interface PsiEvent {
  kind: PsiKind
  /** Growth of the file's `total` for `kind` since the previous report (or arming), microseconds. */
  stallUs: number
  /** The file's `total` for `kind` now, microseconds. */
  totalUs: number
  /** `performance.now()` at delivery. */
  time: number
}

/** Events of a {@link PsiTrigger}. */
export interface PsiTriggerEvents {
  /** The stall threshold was reached within a window. */
  stall: (event: PsiEvent) => void
  /** The trigger stopped: `'closed'` by `close()`, `'removed'` when the kernel signalled POLLERR (cgroup gone). */
  close: (reason: 'closed' | 'removed') => void
  /** A wake-up was dropped: `total` had grown by less than `stallUs` (microseconds of growth given). */
  filtered: (growthUs: number) => void
}

/**
 * One armed PSI trigger (one per open fd, psi.rst). Wake-ups whose `total` did not grow by the
 * stall threshold since the last report are dropped and counted in {@link PsiTrigger.filtered}:
 * unprivileged triggers fire once right after arming whether or not anything stalled.
 */
export class PsiTrigger extends EventEmitter<PsiTriggerEvents> {
  /** The PSI file. */
  readonly file: string
  readonly kind: PsiKind
  readonly stallUs: number
  /** The window in force, microseconds (may be larger than asked: see `notes`). */
  readonly windowUs: number
  /** What happened while arming (a window rounded up after EINVAL). */
  readonly notes: readonly string[]
  #watcher: PollWatcher
  #baseline: number
  #filtered = 0
  #closed = false

  /**
   * Opens `file` read-write and non-blocking, writes the trigger and starts watching for POLLPRI.
   *
   * @throws TypeError / RangeError for bad options (naming the option and the value)
   * @throws MemoryPressureError `ERR_NATIVE_UNAVAILABLE` without the addon, `ERR_PERMISSION`
   *   (EACCES, EPERM, EROFS), `ERR_NO_CGROUP` (ENOENT, or not a PSI file: anything but `/proc/pressure/*` on procfs
   *   and `*.pressure` on cgroup2, symlinks resolved), `ERR_SYSCALL` (EINVAL for a window no
   *   retry could fix, EOPNOTSUPP without PSI), each with `.syscall` and `.path`. No fd stays open.
   */
  static open(file: string, options: PsiTriggerOptions = {}, native?: NativeBinding): PsiTrigger {
    if (typeof file !== 'string' || file === '') throw new TypeError(`file must be a path (received ${describe(file)})`)
    if (options === null || typeof options !== 'object') throw new TypeError(`options must be an object (received ${describe(options)})`)
    const kind = options.kind ?? 'some'
    if (kind !== 'some' && kind !== 'full') throw new TypeError(`kind must be 'some' or 'full' (received ${describe(kind)})`)
    const stallUs = options.stallUs ?? 100_000
    const windowUs = options.windowUs ?? UNPRIVILEGED_WINDOW_STEP_US
    if (!Number.isSafeInteger(windowUs) || windowUs < 500_000 || windowUs > 10_000_000) {
      throw new RangeError(`windowUs must be a whole number of microseconds from 500000 to 10000000 (received ${describe(windowUs)})`)
    }
    if (!Number.isSafeInteger(stallUs) || stallUs <= 0 || stallUs > windowUs) {
      throw new RangeError(`stallUs must be a whole number of microseconds above 0 and at most windowUs (received ${describe(stallUs)})`)
    }
    const binding = native ?? tryLoadNative()
    if (binding instanceof MemoryPressureError) throw binding
    // An injected binding is a test's fake poll over a fake file in a temporary directory.
    const checked = native === undefined || native === tryLoadNative()
    // Checked before opening (opening a device read-write can itself do something) and again on
    // the open fd, which no rename or symlink swapped in between can redirect.
    if (checked) assertPsiFile(file, file, true)
    let fd: number
    try {
      fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY)
    } catch (err) {
      throw isErrnoException(err) ? syscallError(err, 'open', file) : err
    }
    if (checked) {
      try {
        assertPsiFile(`/proc/self/fd/${fd}`, file)
      } catch (err) {
        fs.closeSync(fd)
        throw err
      }
    }
    const notes: string[] = []
    let window = windowUs
    try {
      const baseline = readTotal(file, kind)
      try {
        fs.writeSync(fd, triggerBytes(kind, stallUs, window))
      } catch (err) {
        const rounded = unprivilegedWindowUs(window)
        if (!isErrnoException(err, 'EINVAL') || rounded === window || stallUs > rounded) throw err
        // Without CAP_SYS_RESOURCE only multiples of 2 s are accepted (psi.rst).
        fs.writeSync(fd, triggerBytes(kind, stallUs, rounded))
        notes.push(`a ${window / 1000} ms window was refused (EINVAL, no CAP_SYS_RESOURCE); using ${rounded / 1000} ms`)
        window = rounded
      }
      const trigger = new PsiTrigger(file, kind, stallUs, window, notes, baseline, fd, binding)
      return trigger
    } catch (err) {
      fs.closeSync(fd)
      throw err instanceof MemoryPressureError || !isErrnoException(err) ? err : syscallError(err, 'write', file)
    }
  }

  private constructor(file: string, kind: PsiKind, stallUs: number, windowUs: number, notes: string[], baseline: number, fd: number,
    native: NativeBinding) {
    super()
    this.file = file
    this.kind = kind
    this.stallUs = stallUs
    this.windowUs = windowUs
    this.notes = notes
    this.#baseline = baseline
    const watcher = native.watch(fd, 'priority', (status, events) => this.#wake(status, events))
    if (typeof watcher === 'number') throw syscallError(watcher, 'uv_poll_start', file)
    this.#watcher = watcher
  }

  /** Wake-ups dropped because `total` had not grown by `stallUs` (the false first event among them). */
  get filtered(): number {
    return this.#filtered
  }

  get closed(): boolean {
    return this.#closed
  }

  /** Disarms the trigger (closing its fd) and emits `'close'` with `'closed'`. Idempotent. */
  close(): void {
    this.#end('closed')
  }

  #end(reason: 'closed' | 'removed'): void {
    if (this.#closed) return
    this.#closed = true
    this.#watcher.close()
    this.emit('close', reason)
  }

  #wake(status: number, events: number): void {
    if (this.#closed) return
    // POLLERR (reported as EBADF, libuv stops polling) or a hang-up (POLL_DISCONNECT, seen on a
    // 6.1 kernel): the trigger's source is gone (psi.rst: the cgroup was removed). Close at once:
    // leaving the fd in the poll set would spin.
    if (status < 0 || (events & POLL_DISCONNECT) !== 0) {
      this.#end('removed')
      return
    }
    let total: number
    try {
      total = readTotal(this.file, this.kind)
    } catch {
      this.#end('removed')
      return
    }
    const growth = total - this.#baseline
    if (growth < this.stallUs) {
      this.#filtered++
      this.emit('filtered', growth)
      return
    }
    this.#baseline = total
    this.emit('stall', { kind: this.kind, stallUs: growth, totalUs: total, time: performance.now() })
  }
}

/** statfs(2) `f_type` of the filesystems PSI files live on (include/uapi/linux/magic.h). */
const PROC_SUPER_MAGIC = 0x9fa0
const CGROUP2_SUPER_MAGIC = 0x63677270
const psiName = /^(memory|cpu|io|irq)$/

/**
 * Refuses anything but a PSI file: `/proc/pressure/<resource>` on procfs or `<resource>.pressure`
 * on cgroup2. The trigger is written into the file, so a symlink or a `root` pointing elsewhere
 * (a regular file, `/proc/sysrq-trigger`, a device) must never receive it. `target` is the path
 * to check (`/proc/self/fd/N` for an open fd: statfs and realpath then see the file itself).
 */
function assertPsiFile(target: string, file: string, leaveErrorsToOpen = false): void {
  let type: number
  let real: string
  try {
    type = fs.statfsSync(target).type
    real = fs.realpathSync(target)
  } catch (err) {
    // Before opening, a missing or unreadable path is left to open(2), which names the error.
    if (leaveErrorsToOpen && isErrnoException(err)) return
    throw isErrnoException(err) ? syscallError(err, 'statfs', file) : err
  }
  const base = path.basename(real)
  const ok = type === PROC_SUPER_MAGIC
    ? path.dirname(real) === '/proc/pressure' && psiName.test(base)
    : type === CGROUP2_SUPER_MAGIC && base.endsWith('.pressure') && psiName.test(base.slice(0, -'.pressure'.length))
  if (!ok) {
    const reason = `${real} is not a PSI file (filesystem type 0x${type.toString(16)}; PSI files are /proc/pressure/* on proc and *.pressure on cgroup2)`
    throw new MemoryPressureError('ERR_NO_CGROUP', `no PSI trigger is written to ${file}: ${reason}`, { path: file, syscall: 'statfs', reasons: [reason] })
  }
}

function readTotal(file: string, kind: PsiKind): number {
  const reading = parsePressure(readText(file), file)
  // Files without a `full` line (the system-wide CPU file) cannot arm `full`; report `some` then.
  return (reading[kind] ?? reading.some).totalUs
}
