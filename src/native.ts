// The native addon as TypeScript sees it: one interface describing the binding, and one loader that
// tries each place the compiled addon can live and reports every failure when none works.

import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { MemoryPressureError } from './errors.js'

/**
 * What a {@link PollWatcher} waits for.
 * - `'readable'`: the fd is readable (`POLLIN`), e.g. an eventfd whose counter is non-zero.
 * - `'priority'`: the fd has priority data (`POLLPRI`): how kernfs/sysfs files such as cgroup v2
 *   `memory.events`, PSI triggers and some procfs files announce a change. Plain readability does
 *   not wake this mode.
 */
export type PollMode = 'readable' | 'priority'

/**
 * An fd watched on the Node event loop (a libuv `uv_poll_t`). The watcher owns the fd from the
 * moment {@link NativeBinding.watch} returns it: {@link PollWatcher.close} closes the fd too.
 *
 * Keep a reference to the watcher: if it is garbage-collected while open, it is closed (fd
 * included) as a safety net, and its callback stops. Everything still open when the environment
 * (main thread or worker) shuts down is closed as well.
 */
export interface PollWatcher {
  /** The fd being watched, or `-1` once closed (the number may already name another file then). */
  readonly fd: number
  /** `true` once {@link PollWatcher.close} ran or the environment closed the watcher. */
  readonly closed: boolean
  /** Keeps the event loop (the process or worker) alive while the watcher is active. No-op once closed. */
  ref(): void
  /** Lets the process or worker exit even though the watcher is open. The default state. No-op once closed. */
  unref(): void
  /** Whether the watcher keeps the event loop alive; `false` once closed. */
  hasRef(): boolean
  /**
   * Stops polling, then closes the fd; the callback is never called again, even if events were
   * already pending. Idempotent, and safe to call from inside the watcher's own callback.
   */
  close(): void
}

/**
 * Called on the event-loop thread, inside the async context {@link NativeBinding.watch} was called
 * in (so `AsyncLocalStorage` stores carry over); `process.nextTick` callbacks and microtasks run
 * right after it returns.
 *
 * @param status `0`, or a negative libuv error code. libuv reports `POLLERR` without `POLLPRI` as
 *   `UV_EBADF` (`-9`) and stops polling by itself: no further calls come, but the watcher stays
 *   open until {@link PollWatcher.close}.
 * @param events A bit set of {@link POLL_READABLE}, {@link POLL_PRIORITIZED} and
 *   {@link POLL_DISCONNECT}; `0` when `status` is negative.
 *
 * An exception thrown here goes to `process.on('uncaughtException')`, as for any Node callback.
 * Polling is level-triggered: a readable watcher is called again on every loop iteration until the
 * fd is drained (for an eventfd, {@link NativeBinding.readEventfd} until it returns `0`).
 */
export type PollCallback = (status: number, events: number) => void

/**
 * The native addon. System calls return a negative errno on failure (`-9` is `EBADF`), never throw;
 * pass such a value to `syscallError` from `./errors.js`. Arguments of the wrong type do throw:
 * a non-number fd throws `TypeError` with code `ERR_INVALID_ARG_TYPE`, a number that is not an
 * int32 integer throws `RangeError` with code `ERR_OUT_OF_RANGE`; negative integers are passed to
 * the kernel (answer: `-EBADF`).
 */
export interface NativeBinding {
  /** `true` on Linux; `false` in the stub built elsewhere, where every function returns `-ENOSYS`. */
  readonly platformSupported: boolean
  /**
   * `eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)` (eventfd(2)).
   * @returns the new fd (`>= 0`), or a negative errno.
   */
  eventfd(): number
  /**
   * Reads and resets an eventfd's 8-byte counter (eventfd(2)); retried on `EINTR`.
   * @returns the counter (`> 0`, clamped to `Number.MAX_SAFE_INTEGER`), `0` when nothing is
   *   pending (`EAGAIN` on a non-blocking eventfd), or a negative errno (`-EINVAL` when the fd
   *   did not yield exactly 8 bytes, i.e. is not an eventfd).
   */
  readEventfd(fd: number): number
  /**
   * Watches `fd` on the event loop of the calling thread. The watcher starts unref'd (see
   * {@link PollWatcher.unref}).
   *
   * On success the watcher owns `fd`; on failure (a negative errno is returned) `fd` is left
   * open and stays the caller's. Errors include `-EBADF` (`fd` is not open), `-EEXIST` (`fd` is
   * already watched on this thread: one watcher per fd) and `-EPERM` (epoll cannot watch the
   * file, e.g. a regular file).
   *
   * @throws TypeError (`ERR_INVALID_ARG_TYPE`) when `fd` is not a number or `callback` is not a
   *   function, `ERR_INVALID_ARG_VALUE` when `mode` is not `'readable'` or `'priority'`;
   *   RangeError (`ERR_OUT_OF_RANGE`) when `fd` is not an int32 integer.
   */
  watch(fd: number, mode: PollMode, callback: PollCallback): PollWatcher | number
  /**
   * `close(2)` for an fd no watcher owns (never pass a watcher's fd: use
   * {@link PollWatcher.close}). Not retried on `EINTR`: Linux has released the fd by then.
   * @returns `0`, or a negative errno.
   */
  close(fd: number): number
  /**
   * `open(2)` of `path` read-only (`'r'`) or write-only (`'w'`), with `O_CLOEXEC`. Like the fds of
   * {@link NativeBinding.eventfd}, the fd belongs to the environment (main thread or worker) until
   * {@link NativeBinding.close} or {@link NativeBinding.watch} takes it: one still open when the
   * environment shuts down is closed then. Close it only with {@link NativeBinding.close}.
   * Optional: an addon built before it existed lacks it.
   * @returns the new fd (`>= 0`), or a negative errno.
   */
  open?(path: string, mode: 'r' | 'w'): number
  /**
   * glibc `malloc_trim(0)` (malloc_trim(3)): gives the C allocator's free pages back to the kernel.
   * Looked up at run time, so the addon loads on C libraries without it.
   * @returns `1` if memory was released, `0` if not, `-ENOSYS` where the C library has no
   *   `malloc_trim` (musl) and in the stub (macOS, Windows).
   */
  mallocTrim(): number
  /**
   * Whether the C library has `malloc_trim` (glibc: `true`; musl and the stub: `false`).
   * Optional: an addon built before it was added lacks it.
   */
  readonly mallocTrimSupported?: boolean
  /**
   * glibc `mallinfo2()` (glibc 2.33 and later, looked up at run time), summed over all arenas:
   * `[arena, free, mmapped, keepcost]` in bytes, where `free` (`fordblks`) is memory the C
   * allocator holds for the next allocations. `-ENOSYS` where the C library has no `mallinfo2`
   * (glibc before 2.33, musl) and in the stub. Optional: an addon built before it was added lacks it.
   */
  mallocInfo?(): [arena: number, free: number, mmapped: number, keepcost: number] | number
}

/** Bit in a {@link PollCallback}'s `events`: the fd is readable (libuv `UV_READABLE`). */
export const POLL_READABLE = 1
/** Bit in a {@link PollCallback}'s `events`: the peer hung up (libuv `UV_DISCONNECT`). */
export const POLL_DISCONNECT = 4
/** Bit in a {@link PollCallback}'s `events`: priority data, `POLLPRI` (libuv `UV_PRIORITIZED`). */
export const POLL_PRIORITIZED = 8

/** Options of {@link loadNative}. */
export interface LoadNativeOptions {
  /**
   * Paths of `.node` files to try, in order (relative ones against the current working
   * directory). Default: the file `node-gyp-build` picks for this package (a compiled
   * `build/Release` addon if there is one, else the prebuild in `prebuilds/<platform>-<arch>/`
   * matching this platform, architecture and C library), then
   * `<package root>/build/Release/memory_pressure.node` and `.../build/Debug/memory_pressure.node`.
   */
  paths?: readonly string[]
}

const PACKAGE_NAME = 'node-memory-pressure'

/** Where the addon can live, relative to the package root, best first. */
const DEFAULT_LOCATIONS: readonly string[] = [
  'build/Release/memory_pressure.node',
  'build/Debug/memory_pressure.node',
]

const FUNCTIONS = ['eventfd', 'readEventfd', 'watch', 'close', 'mallocTrim'] as const

const requireAddon = createRequire(import.meta.url)

/** The part of `node-gyp-build` (CommonJS, untyped) the loader uses. */
interface NodeGypBuild {
  /** The `.node` file that suits this process in `dir`; throws when there is none. */
  path(dir: string): string
}

/**
 * The directory whose package.json names this package, searched upwards from this file, so that
 * the same code works from `src/` (tests) and from `dist/` (published build).
 */
function findPackageRoot(start: string): string | undefined {
  for (let dir = start; ; dir = path.dirname(dir)) {
    const manifest = path.join(dir, 'package.json')
    try {
      if ((JSON.parse(readFileSync(manifest, 'utf8')) as { name?: unknown }).name === PACKAGE_NAME) return dir
    } catch {
      // Missing or unreadable package.json: keep climbing.
    }
    if (path.dirname(dir) === dir) return undefined
  }
}

/**
 * `node-gyp-build`'s choice first (a compiled `build/Release` addon, else the prebuild for this
 * platform, architecture and C library), then the compiled locations, so that a compiled addon
 * that fails to load is reported rather than skipped, then the other prebuilds of this platform
 * and architecture: node-gyp-build takes the C library to be musl only where /etc/alpine-release
 * exists, so on other musl systems the musl prebuild is found here after the glibc one fails to
 * load. A failed lookup is recorded in `tried`.
 */
function defaultCandidates(root: string, tried: string[]): string[] {
  const candidates: string[] = []
  try {
    const finder = requireAddon('node-gyp-build') as NodeGypBuild
    candidates.push(finder.path(root))
  } catch (err) {
    tried.push(`${path.join(root, 'prebuilds')}: ${describe(err)}`)
  }
  for (const location of DEFAULT_LOCATIONS) {
    const candidate = path.join(root, location)
    if (!candidates.includes(candidate)) candidates.push(candidate)
  }
  const prebuilds = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`)
  let files: string[] = []
  try {
    files = readdirSync(prebuilds).filter((f) => f.endsWith('.node')).sort()
  } catch {
    // No prebuilds for this platform and architecture (a git checkout, or darwin/win32).
  }
  for (const file of files) {
    const candidate = path.join(prebuilds, file)
    if (!candidates.includes(candidate)) candidates.push(candidate)
  }
  return candidates
}

/** The file each binding was loaded from, for {@link nativeStatus}. */
const loadedFrom = new WeakMap<NativeBinding, string>()

function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err)
  const code = (err as NodeJS.ErrnoException).code
  const message = err.message.split('\n', 1)[0] ?? ''
  return code === undefined ? message : `${code}: ${message}`
}

/** Why `value` is not a {@link NativeBinding}, or `undefined` if it is one. */
function whyNotBinding(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null) return `exports ${value === null ? 'null' : typeof value}, not an object`
  const exports = value as Record<string, unknown>
  const missing: string[] = FUNCTIONS.filter((name) => typeof exports[name] !== 'function')
  if (typeof exports.platformSupported !== 'boolean') missing.push('platformSupported')
  return missing.length === 0 ? undefined : `not the node-memory-pressure addon (missing ${missing.join(', ')})`
}

/**
 * Loads the native addon from the first path that works.
 *
 * @throws MemoryPressureError with code `ERR_NATIVE_UNAVAILABLE` when no path works; its `.tried`
 *   has one line per path, `<path>: <why it failed>`, and the message lists the same lines.
 * @throws TypeError when `options.paths` is not an array of strings.
 */
export function loadNative(options: LoadNativeOptions = {}): NativeBinding {
  const tried: string[] = []
  let candidates: readonly string[]
  if (options.paths !== undefined) {
    if (!Array.isArray(options.paths) || !options.paths.every((p) => typeof p === 'string')) {
      throw new TypeError(`options.paths must be an array of strings, received ${String(options.paths)}`)
    }
    candidates = options.paths.map((p) => path.resolve(p))
  } else {
    const here = path.dirname(fileURLToPath(import.meta.url))
    const root = findPackageRoot(here)
    if (root === undefined) {
      tried.push(`${here}: no package.json named ${PACKAGE_NAME} in this directory or above`)
    }
    candidates = root === undefined ? [] : defaultCandidates(root, tried)
  }
  for (const candidate of candidates) {
    if (!existsSync(candidate)) {
      tried.push(`${candidate}: not found`)
      continue
    }
    let loaded: unknown
    try {
      loaded = requireAddon(candidate)
    } catch (err) {
      tried.push(`${candidate}: ${describe(err)}`)
      continue
    }
    const problem = whyNotBinding(loaded)
    if (problem === undefined) {
      loadedFrom.set(loaded as NativeBinding, candidate)
      return loaded as NativeBinding
    }
    tried.push(`${candidate}: ${problem}`)
  }
  const listing = tried.length === 0 ? ' (no paths given)' : `; tried:\n${tried.map((line) => `  ${line}`).join('\n')}`
  throw new MemoryPressureError('ERR_NATIVE_UNAVAILABLE', `the node-memory-pressure native addon could not be loaded${listing}`, {
    tried,
  })
}

let cached: NativeBinding | MemoryPressureError | undefined

/**
 * {@link loadNative} with the default paths, run once per thread; later calls return the same
 * binding or the same error. Never throws, so backends can probe availability cheaply.
 *
 * On Linux, the first failure in a thread is also reported once as a process warning (`type`
 * `MemoryPressureWarning`, `code` `ERR_NATIVE_UNAVAILABLE`) saying what runs without the addon
 * (see {@link nativeFeatures}). Elsewhere (macOS, Windows) no addon is shipped and nothing is
 * lost that the platform has, so there is no warning. Later calls stay silent.
 */
export function tryLoadNative(): NativeBinding | MemoryPressureError {
  if (cached === undefined) {
    try {
      cached = loadNative()
    } catch (err) {
      cached = err instanceof MemoryPressureError
        ? err
        : new MemoryPressureError('ERR_NATIVE_UNAVAILABLE', `the node-memory-pressure native addon could not be loaded: ${describe(err)}`, { cause: err, tried: [] })
      if (process.platform === 'linux') {
        const lost = FEATURES.map((f) => `  ${f.name}: ${f.without}`).join('\n')
        process.emitWarning(`${cached.message}\nWithout it:\n${lost}`, { type: 'MemoryPressureWarning', code: 'ERR_NATIVE_UNAVAILABLE' })
      }
    }
  }
  return cached
}

/** What {@link nativeStatus} reports. */
export type NativeStatus =
  | {
      /** The addon loaded. */
      loaded: true
      /** Absolute path of the `.node` file: a prebuild under `prebuilds/` or a compiled one under `build/`. */
      path: string
      /** `false` for the stub built on platforms without eventfd (every call answers `-ENOSYS`). */
      platformSupported: boolean
    }
  | {
      loaded: false
      /** Code `ERR_NATIVE_UNAVAILABLE`; `.tried` lists every path tried and why each failed. */
      error: MemoryPressureError
    }

/**
 * Whether the native addon loaded in this thread, and from where. Loads it on first use (so it may
 * emit the one `ERR_NATIVE_UNAVAILABLE` process warning of the thread). Never throws.
 */
export function nativeStatus(): NativeStatus {
  const binding = tryLoadNative()
  if (binding instanceof MemoryPressureError) return { loaded: false, error: binding }
  return { loaded: true, path: loadedFrom.get(binding) ?? '', platformSupported: binding.platformSupported }
}

/**
 * A capability that needs the native addon (and, for the allocator ones, a C library that has the
 * function):
 * - `'cgroup-v1-eventfd'`: cgroup v1 thresholds, OOM kills and `memory.pressure_level` notified by
 *   the kernel (`cgroup.event_control` and an eventfd).
 * - `'cgroup-v2-memory-events'`: changes of cgroup v2 `memory.events` woken by `POLLPRI`.
 * - `'psi-triggers'`: PSI triggers on `memory.pressure` (cgroup v2) or `/proc/pressure/memory`.
 * - `'allocator-free-bytes'`: the C allocator's free bytes (glibc 2.33+ `mallinfo2`), which the
 *   policy counts as available (the allocator credit, see `allocatorFreeBytes`).
 * - `'malloc-trim'`: glibc `malloc_trim` after a shrink, giving the C allocator's free pages back.
 */
export type NativeFeatureName = 'cgroup-v1-eventfd' | 'cgroup-v2-memory-events' | 'psi-triggers' | 'allocator-free-bytes' | 'malloc-trim'

/** One entry of {@link nativeFeatures}. */
export interface NativeFeature {
  name: NativeFeatureName
  /** Whether this thread has it. */
  available: boolean
  /** What happens without it: what takes its place, or what is off. */
  without: string
}

const FEATURES: ReadonlyArray<{ name: NativeFeatureName; without: string }> = [
  { name: 'cgroup-v1-eventfd', without: 'cgroup v1 thresholds are polled from memory.usage_in_bytes, OOM kills are read from memory.oom_control at each poll, and memory.pressure_level cannot be watched' },
  { name: 'cgroup-v2-memory-events', without: 'cgroup v2 memory.events is watched through inotify (fs.watch) instead of POLLPRI' },
  { name: 'psi-triggers', without: 'no PSI trigger wakes the cgroup v2 backend on stalls: usage is polled between memory.events changes' },
  { name: 'allocator-free-bytes', without: "the allocator credit is off: free memory held by the C allocator is not counted as available (allocatorFreeBytes() is null)" },
  { name: 'malloc-trim', without: "no malloc_trim after a shrink (reduceHeap reports mallocTrim 'unavailable'): the C allocator keeps its free pages until it returns them itself" },
]

/**
 * What the native addon gives this thread, one entry per {@link NativeFeatureName}, with what
 * happens instead where one is missing: all are missing when the addon cannot load (see
 * {@link nativeStatus} for why); with the addon, the allocator ones still depend on the C library
 * (musl has neither `mallinfo2` nor `malloc_trim`; glibc before 2.33 has no `mallinfo2`). Loads
 * the addon on first use. Never throws. `doctor` prints it.
 */
export function nativeFeatures(): NativeFeature[] {
  const binding = tryLoadNative()
  const has = (name: NativeFeatureName): boolean => {
    if (binding instanceof MemoryPressureError || !binding.platformSupported) return false
    if (name === 'malloc-trim') return binding.mallocTrimSupported ?? true
    if (name === 'allocator-free-bytes') return typeof binding.mallocInfo === 'function' && Array.isArray(binding.mallocInfo())
    return true
  }
  return FEATURES.map((f) => ({ name: f.name, available: has(f.name), without: f.without }))
}
