// Small file helpers shared by the cgroup modules (not exported from the package): every fs
// failure becomes a MemoryPressureError that names the file.

import { readFileSync, statSync } from 'node:fs'
import { posix } from 'node:path'
import { MemoryPressureError, isErrnoException, syscallError } from '../errors.js'

/** Reads a whole text file; fs errors become `syscallError(err, 'read', path)`. */
export function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8')
  } catch (err) {
    throw toSyscallError(err, 'read', path)
  }
}

/** Like {@link readText} but returns `null` when the file does not exist (ENOENT). */
export function readOptionalText(path: string): string | null {
  try {
    return readFileSync(path, 'utf8')
  } catch (err) {
    if (isErrnoException(err, 'ENOENT')) return null
    throw toSyscallError(err, 'read', path)
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
