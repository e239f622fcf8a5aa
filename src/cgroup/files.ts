// Small file helpers shared by the cgroup modules (not exported from the package): every fs
// failure becomes a MemoryPressureError that names the file, and no read trusts what it opens.

import { type Stats, closeSync, constants, fstatSync, openSync, readSync, statSync } from 'node:fs'
import { posix } from 'node:path'
import { MemoryPressureError, isErrnoException, syscallError } from '../errors.js'

/**
 * The most a cgroup file is read to (64 KiB): the largest, `memory.stat`, is a few KiB. A tree given
 * by the user (`--root`) could link a file to `/dev/zero`, which never ends.
 */
export const MAX_CGROUP_FILE_BYTES = 64 * 1024

/**
 * Opens `path` without blocking and refuses anything but a regular file (cgroupfs, sysfs and
 * procfs files are regular files): a FIFO would block `open()` and `read()` until a writer comes,
 * a device can be endless. Returns the open fd; the caller closes it.
 *
 * @throws MemoryPressureError `ERR_NO_CGROUP` for a file that is not regular (`.path`); fs errors as
 *   `syscallError(err, syscall, path)` (`syscall` default `'open'`)
 */
export function openRegular(path: string, syscall = 'open'): number {
  let fd: number
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY)
  } catch (err) {
    throw toSyscallError(err, syscall, path)
  }
  let st: Stats
  try {
    st = fstatSync(fd)
  } catch (err) {
    closeSync(fd)
    throw toSyscallError(err, 'fstat', path)
  }
  if (!st.isFile()) {
    closeSync(fd)
    throw new MemoryPressureError('ERR_NO_CGROUP', `${path} is ${fileKind(st)}, not a cgroup file`, { path, reasons: [`${path} is ${fileKind(st)}`] })
  }
  return fd
}

function fileKind(st: Stats): string {
  if (st.isFIFO()) return 'a FIFO'
  if (st.isCharacterDevice()) return 'a character device'
  if (st.isBlockDevice()) return 'a block device'
  if (st.isSocket()) return 'a socket'
  if (st.isDirectory()) return 'a directory'
  return 'not a regular file'
}

/**
 * Reads an open fd from its current position to the end, at most `maxBytes`; more is `ERR_PARSE`
 * (not a cgroup file). `buffer` is scratch space (any size).
 */
export function readFdBounded(fd: number, path: string, maxBytes = MAX_CGROUP_FILE_BYTES, buffer?: Buffer): string {
  const chunk = buffer ?? Buffer.allocUnsafe(Math.min(maxBytes + 1, 16 * 1024))
  const parts: Buffer[] = []
  let total = 0
  for (;;) {
    let n: number
    try {
      n = readSync(fd, chunk, 0, chunk.length, null)
    } catch (err) {
      throw toSyscallError(err, 'read', path)
    }
    if (n === 0) break
    total += n
    if (total > maxBytes) {
      throw new MemoryPressureError('ERR_PARSE', `${path} holds more than ${maxBytes} bytes: not a cgroup file`, { path })
    }
    parts.push(Buffer.from(chunk.subarray(0, n)))
  }
  return Buffer.concat(parts, total).toString('utf8')
}

/**
 * Reads a whole text file safely: opened without blocking, a regular file only, at most
 * `maxBytes` (see {@link openRegular}, {@link readFdBounded}). fs errors (of the open too) become
 * `syscallError(err, 'read', path)`.
 */
export function readText(path: string, maxBytes = MAX_CGROUP_FILE_BYTES): string {
  const fd = openRegular(path, 'read')
  try {
    return readFdBounded(fd, path, maxBytes)
  } finally {
    closeSync(fd)
  }
}

/** Like {@link readText} but returns `null` when the file does not exist (ENOENT). */
export function readOptionalText(path: string, maxBytes = MAX_CGROUP_FILE_BYTES): string | null {
  try {
    return readText(path, maxBytes)
  } catch (err) {
    if (err instanceof MemoryPressureError && isErrnoException(err.cause, 'ENOENT')) return null
    throw err
  }
}

/** What is at `path`: a directory, a regular (or special) file, or nothing. Other errors throw. */
export function kindOf(path: string): 'directory' | 'file' | 'missing' {
  try {
    return statSync(path).isDirectory() ? 'directory' : 'file'
  } catch (err) {
    if (isErrnoException(err, 'ENOENT') || isErrnoException(err, 'ENOTDIR')) return 'missing'
    throw toSyscallError(err, 'stat', path)
  }
}

/** Wraps anything thrown by `node:fs` into a {@link MemoryPressureError}. */
export function toSyscallError(err: unknown, syscall: string, path: string): MemoryPressureError {
  if (isErrnoException(err)) return syscallError(err, syscall, path)
  return new MemoryPressureError('ERR_SYSCALL', `${syscall} failed (${path})`, { syscall, path, cause: err })
}

/**
 * True when `child` is `parent` or below it, comparing whole path segments (`/a/b` is not inside
 * `/a/bc`). Both must be absolute and free of trailing slashes (except the root `/`).
 */
export function isWithin(parent: string, child: string): boolean {
  if (parent === '/') return child.startsWith('/')
  return child === parent || child.startsWith(parent + '/')
}

/** Joins a directory and a file name with `/` (cgroup paths are always POSIX). */
export function joinPath(dir: string, name: string): string {
  return posix.join(dir, name)
}
