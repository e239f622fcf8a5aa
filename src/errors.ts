// The one error class of node-memory-pressure: every failure the SDK reports carries a stable `.code`,
// and the kernel's `errno`/`syscall` and the file `path` when they apply.

import { constants as osConstants } from 'node:os'

/** Every code a {@link MemoryPressureError} can carry. Codes are stable; messages are not. */
export type MemoryPressureErrorCode =
  /** No memory cgroup could be found for the process, or the named cgroup does not exist. */
  | 'ERR_NO_CGROUP'
  /** A percentage threshold was given but the cgroup has no memory limit to take it of. */
  | 'ERR_NO_LIMIT'
  /** The kernel refused an operation for lack of permission (EACCES, EPERM, EROFS). */
  | 'ERR_PERMISSION'
  /** A threshold is unparsable, zero, negative, NaN, or above the effective limit. */
  | 'ERR_INVALID_THRESHOLD'
  /** The native addon could not be loaded; `.tried` lists every path that was tried. */
  | 'ERR_NATIVE_UNAVAILABLE'
  /** The backend the caller asked for cannot run here; `.reasons` says why. */
  | 'ERR_BACKEND_UNAVAILABLE'
  /** A kernel file had content the SDK could not parse. */
  | 'ERR_PARSE'
  /** A system call failed for a reason not covered by a more specific code. */
  | 'ERR_SYSCALL'
  /** The monitor or subscription was used after `close()`. */
  | 'ERR_CLOSED'
  /** A handler registered by the application threw or rejected. */
  | 'ERR_HANDLER'
  /** The simulated cgroup was asked to go above its limit (the kernel would OOM-kill). */
  | 'ERR_SIMULATED_OOM'
  /** A shrinker did not finish within its timeout (the abort reason of its `AbortSignal`). */
  | 'ERR_TIMEOUT'
  /** The fastify plugin refused a request because memory is at its shedding level (HTTP 503). */
  | 'ERR_UNDER_PRESSURE'

/** Extra fields a {@link MemoryPressureError} can be built with. */
export interface MemoryPressureErrorOptions {
  /** Positive errno value when the error came from the kernel. */
  errno?: number
  /** The system call that failed (`open`, `write`, `eventfd`, ...). */
  syscall?: string
  /** The file involved, if any. */
  path?: string
  /** The underlying error. */
  cause?: unknown
  /** For `ERR_NATIVE_UNAVAILABLE`: every path the loader tried and why each failed. */
  tried?: readonly string[]
  /** For `ERR_BACKEND_UNAVAILABLE` and `ERR_NO_CGROUP`: why each candidate was rejected. */
  reasons?: readonly string[]
}

const errnoNames = new Map<number, string>(
  Object.entries(osConstants.errno).map(([name, value]) => [value, name]),
)

/** The symbolic name of a positive errno value (`ENOENT`), or `undefined` when unknown. */
export function errnoName(errno: number): string | undefined {
  return errnoNames.get(Math.abs(errno))
}

/**
 * The error thrown or emitted by node-memory-pressure. Test `.code`, never the message text.
 *
 * @example
 * ```ts
 * try { onMemoryThreshold('80%', handler) }
 * catch (err) { if (err instanceof MemoryPressureError && err.code === 'ERR_NO_LIMIT') ... }
 * ```
 */
export class MemoryPressureError extends Error {
  /** Stable machine-readable code. */
  readonly code: MemoryPressureErrorCode
  // The optional fields are `declare`d so that only those set become own properties: a class
  // field would define each as `undefined`, and Node prints every own property of an uncaught error.
  /** Positive errno when a system call failed. */
  declare readonly errno?: number
  /** The failing system call. */
  declare readonly syscall?: string
  /** The file involved. */
  declare readonly path?: string
  /** For `ERR_NATIVE_UNAVAILABLE`: the paths tried. */
  declare readonly tried?: readonly string[]
  /** For `ERR_BACKEND_UNAVAILABLE` / `ERR_NO_CGROUP`: the reasons collected. */
  declare readonly reasons?: readonly string[]

  constructor(code: MemoryPressureErrorCode, message: string, options: MemoryPressureErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.code = code
    // The stack's first line (what an uncaught error shows) names the code, as Node's own errors
    // do (`TypeError [ERR_X]: ...`); `name` itself stays the class name.
    this.name = `MemoryPressureError [${code}]`
    void this.stack
    this.name = 'MemoryPressureError'
    if (options.errno !== undefined) this.errno = options.errno
    if (options.syscall !== undefined) this.syscall = options.syscall
    if (options.path !== undefined) this.path = options.path
    if (options.tried !== undefined) this.tried = options.tried
    if (options.reasons !== undefined) this.reasons = options.reasons
  }
}

const permissionErrnos = new Set(['EACCES', 'EPERM', 'EROFS'])

/**
 * Turns a failed system call into a {@link MemoryPressureError}. `err` is either a negative errno
 * returned by the native addon or a Node `SystemError` (with `.code`/`.errno`) from `node:fs`.
 */
export function syscallError(err: number | NodeJS.ErrnoException, syscall: string, path?: string): MemoryPressureError {
  let errno: number
  let name: string
  let cause: unknown
  if (typeof err === 'number') {
    errno = Math.abs(err)
    name = errnoName(errno) ?? `errno ${errno}`
  } else {
    errno = Math.abs(err.errno ?? 0)
    name = err.code ?? errnoName(errno) ?? 'EUNKNOWN'
    cause = err
  }
  const code: MemoryPressureErrorCode = permissionErrnos.has(name)
    ? 'ERR_PERMISSION'
    : name === 'ENOENT' || name === 'ENODEV'
      ? 'ERR_NO_CGROUP'
      : 'ERR_SYSCALL'
  const where = path === undefined ? '' : ` (${path})`
  return new MemoryPressureError(code, `${syscall} failed with ${name}${where}`, { errno, syscall, path, cause })
}

/** True when `err` is a Node system error with the given `code` (`ENOENT`, ...). */
export function isErrnoException(err: unknown, code?: string): err is NodeJS.ErrnoException {
  // A MemoryPressureError has a string code too, but it is ours, not the kernel's.
  return err instanceof Error && !(err instanceof MemoryPressureError) && typeof (err as NodeJS.ErrnoException).code === 'string' &&
    (code === undefined || (err as NodeJS.ErrnoException).code === code)
}
