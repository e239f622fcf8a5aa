// Finds the memory cgroup of a process (cgroup v1 memory hierarchy or cgroup v2) as a directory
// this process can open, and validates cgroup directories named by the user.

import { realpathSync } from 'node:fs'
import { posix } from 'node:path'
import { MemoryPressureError, isErrnoException } from '../errors.js'
import { isWithin, joinPath, kindOf, readOptionalText, readText, toSyscallError } from './files.js'
import { parseMountInfo, type MountInfoEntry } from './mountinfo.js'
import { parseProcCgroup, type ProcCgroupEntry } from './proc-cgroup.js'

/** `1` for the cgroup v1 memory hierarchy, `2` for the cgroup v2 unified hierarchy. */
export type CgroupVersion = 1 | 2

/** Where a memory cgroup is. */
export interface CgroupLocation {
  /** Which cgroup version the directory belongs to. */
  version: CgroupVersion
  /** Absolute filesystem path of the cgroup directory, e.g. `/sys/fs/cgroup/memory/docker/ab12…`. */
  path: string
  /** The mount point of the hierarchy that `path` is in; the walk up to ancestors stops here. */
  mountPoint: string
  /** The cgroup's path in its hierarchy, as `/proc/<pid>/cgroup` shows it (e.g. `/docker/ab12…`). */
  relativePath: string
}

/** Where {@link findMemoryCgroup} reads the process's `cgroup` and `mountinfo` files. */
export interface DiscoverOptions {
  /**
   * Directory holding `mountinfo` and `cgroup` files in the `/proc/<pid>/` formats. Default
   * `'/proc/self'`. Tests point it at a fixture directory. Cannot be combined with `pid`.
   */
  procDir?: string
  /**
   * Find the memory cgroup of this process instead of the calling one. Its cgroup is read from
   * `/proc/<pid>/cgroup`, but the mount table from `/proc/self/mountinfo`: both show paths relative
   * to the *reader's* cgroup namespace, and only mount points in the reader's own mount namespace
   * can be opened by the reader (cgroup_namespaces(7)). Positive integer.
   */
  pid?: number
}

interface ProcFiles {
  cgroupFile: string
  mountinfoFile: string
}

function procFiles(options: DiscoverOptions): ProcFiles {
  if (options === null || typeof options !== 'object') {
    throw new TypeError(`options must be an object, received ${String(options)}`)
  }
  const { procDir, pid } = options
  if (procDir !== undefined && (typeof procDir !== 'string' || procDir === '')) {
    throw new TypeError(`options.procDir must be a non-empty string, received ${JSON.stringify(procDir)}`)
  }
  if (pid !== undefined) {
    if (typeof pid !== 'number' || !Number.isSafeInteger(pid) || pid <= 0) {
      throw new RangeError(`options.pid must be a positive integer, received ${String(pid)}`)
    }
    if (procDir !== undefined) throw new TypeError('options.pid and options.procDir cannot be combined')
    return { cgroupFile: `/proc/${pid}/cgroup`, mountinfoFile: '/proc/self/mountinfo' }
  }
  const dir = procDir ?? '/proc/self'
  return { cgroupFile: joinPath(dir, 'cgroup'), mountinfoFile: joinPath(dir, 'mountinfo') }
}

/** Reads a /proc file; a missing one (no /proc, process gone) is `ERR_NO_CGROUP` with a reason. */
function readProcFile(path: string): string {
  try {
    // mountinfo lists every mount: hosts with thousands of them reach a few hundred KiB.
    return readText(path, 16 * 2 ** 20)
  } catch (err) {
    if (err instanceof MemoryPressureError && err.code === 'ERR_NO_CGROUP') {
      throw new MemoryPressureError('ERR_NO_CGROUP', `cannot read ${path}: it does not exist`, {
        path, syscall: 'read', errno: err.errno, cause: err, reasons: [`${path} does not exist`],
      })
    }
    throw err
  }
}

const isV1Memory = (m: MountInfoEntry): boolean => m.fsType === 'cgroup' && m.superOptions.includes('memory')
const isV2 = (m: MountInfoEntry): boolean => m.fsType === 'cgroup2'

type Mapped = { mount: MountInfoEntry; path: string } | { reason: string }

/**
 * Maps a hierarchy path to a directory through one of several mounts of that hierarchy: the mount
 * whose `root` contains the path, longest root first. `root /docker/abc` + `/docker/abc/x` →
 * `<mountPoint>/x`. Both come from the same reader, so both are relative to the same cgroup
 * namespace root and `/..` prefixes compare as plain text.
 */
function mapToMount(mounts: readonly MountInfoEntry[], cgroupPath: string): Mapped {
  let best: MountInfoEntry | undefined
  for (const m of mounts) {
    if (isWithin(m.root, cgroupPath) && (best === undefined || m.root.length > best.root.length)) best = m
  }
  if (best === undefined) {
    const roots = mounts.map((m) => `${m.root} at ${m.mountPoint}`).join(', ')
    return { reason: `${cgroupPath} is not below the root of any mount of the hierarchy (${roots})` }
  }
  const rest = best.root === '/' ? cgroupPath : cgroupPath.slice(best.root.length)
  const segments = rest.split('/').filter((s) => s !== '')
  // cgroup_namespaces(7): a cgroup outside the reader's namespace root shows as `/../x`; it has
  // no directory under any mount this process can see.
  if (segments.some((s) => s === '..' || s === '.')) {
    return { reason: `${cgroupPath} is outside the mount root ${best.root} at ${best.mountPoint} (cgroup namespace)` }
  }
  return { mount: best, path: segments.length === 0 ? best.mountPoint : posix.join(best.mountPoint, ...segments) }
}

function locate(
  version: CgroupVersion,
  mounts: readonly MountInfoEntry[],
  line: ProcCgroupEntry,
  reasons: string[],
): CgroupLocation | null {
  const mapped = mapToMount(mounts, line.path)
  if ('reason' in mapped) {
    reasons.push(`cgroup v${version}: ${mapped.reason}`)
    return null
  }
  const kind = kindOf(mapped.path)
  if (kind !== 'directory') {
    reasons.push(`cgroup v${version}: ${mapped.path} ${kind === 'missing' ? 'does not exist' : 'is not a directory'}`)
    return null
  }
  return { version, path: mapped.path, mountPoint: mapped.mount.mountPoint, relativePath: line.path }
}

function findV1(mounts: readonly MountInfoEntry[], lines: readonly ProcCgroupEntry[], files: ProcFiles,
  reasons: string[]): CgroupLocation | null {
  const line = lines.find((l) => l.hierarchyId !== 0 && l.controllers.includes('memory'))
  const candidates = mounts.filter(isV1Memory)
  if (line === undefined) reasons.push(`cgroup v1: no line with the memory controller in ${files.cgroupFile}`)
  if (candidates.length === 0) reasons.push(`cgroup v1: no mounted hierarchy with the memory controller in ${files.mountinfoFile}`)
  if (line === undefined || candidates.length === 0) return null
  return locate(1, candidates, line, reasons)
}

function findV2(mounts: readonly MountInfoEntry[], lines: readonly ProcCgroupEntry[], files: ProcFiles,
  reasons: string[]): CgroupLocation | null {
  const line = lines.find((l) => l.hierarchyId === 0)
  const candidates = mounts.filter(isV2)
  if (line === undefined) reasons.push(`cgroup v2: no 0:: line in ${files.cgroupFile}`)
  if (candidates.length === 0) reasons.push(`cgroup v2: no cgroup2 mount in ${files.mountinfoFile}`)
  if (line === undefined || candidates.length === 0) return null
  const loc = locate(2, candidates, line, reasons)
  if (loc === null) return null
  // cgroup-v2.rst ("Enabling and Disabling"): a cgroup's `cgroup.controllers` lists exactly the
  // controllers enabled in its parent's `cgroup.subtree_control` (at the root: every controller
  // bound to v2). Reading the cgroup's own file gives the same answer as the parent's without
  // needing the parent, which is invisible at a cgroup-namespace root.
  const controllersFile = joinPath(loc.path, 'cgroup.controllers')
  let controllers: string | null
  try {
    controllers = readOptionalText(controllersFile)
  } catch {
    controllers = null
  }
  if (controllers !== null && !controllers.trim().split(/\s+/).includes('memory')) {
    reasons.push(`cgroup v2: the memory controller is not enabled for ${loc.path} (${controllersFile}: ${JSON.stringify(controllers.trim())})`)
    return null
  }
  // cgroup-v2.rst: memory.current "exists on non-root cgroups". Without it (the real root, seen
  // without a cgroup namespace) there is no usage to read, so this cgroup is no use either.
  if (kindOf(joinPath(loc.path, 'memory.current')) !== 'file') {
    reasons.push(controllers === null
      ? `cgroup v2: ${controllersFile} cannot be read and ${loc.path} has no memory.current`
      : `cgroup v2: ${loc.path} has no memory.current (the root cgroup has none)`)
    return null
  }
  return loc
}

/**
 * Finds the memory cgroup of this process (or of `options.pid`).
 *
 * cgroup v1 is chosen when a mounted v1 hierarchy has the `memory` controller and the process's
 * `cgroup` file has a line for it (this includes hybrid hosts, where v2 is also mounted without
 * memory). Otherwise cgroup v2, when a `cgroup2` mount and the `0::` line exist and the memory
 * controller is enabled for the cgroup and it has `memory.current` (the v2 root has not). With
 * several mounts of a hierarchy, the one whose root contains the cgroup's path is used (longest
 * root wins). The directory must exist.
 *
 * @throws MemoryPressureError `ERR_NO_CGROUP` with `.reasons` saying why each version was
 *   rejected (no mount, no line, outside the mount root, controller not enabled, missing
 *   directory); `ERR_PARSE` for malformed proc files; `ERR_PERMISSION`/`ERR_SYSCALL` when they
 *   cannot be read.
 */
export function findMemoryCgroup(options: DiscoverOptions = {}): CgroupLocation {
  const files = procFiles(options)
  const lines = parseProcCgroup(readProcFile(files.cgroupFile), files.cgroupFile)
  const mounts = parseMountInfo(readProcFile(files.mountinfoFile), files.mountinfoFile)
  const reasons: string[] = []
  const found = findV1(mounts, lines, files, reasons) ?? findV2(mounts, lines, files, reasons)
  if (found !== null) return found
  const who = options.pid === undefined ? 'this process' : `process ${options.pid}`
  throw new MemoryPressureError('ERR_NO_CGROUP', `no memory cgroup found for ${who}: ${reasons.join('; ')}`,
    { reasons, path: files.cgroupFile })
}

/** The memory cgroup of process `pid`: `findMemoryCgroup({ pid })`. */
export function cgroupOfPid(pid: number): CgroupLocation {
  return findMemoryCgroup({ pid })
}

/**
 * Validates a cgroup directory named by the user and describes it. The path is resolved with
 * `realpath` (symlinks and `..`), and the result must lie in a mounted memory-capable hierarchy
 * (cgroup v1 with `memory`, or cgroup2), be a directory, and hold `memory.usage_in_bytes` (v1) or
 * `memory.current` (v2; the v2 root has none).
 *
 * @param path absolute filesystem path of the cgroup directory
 * @param options only `procDir` matters: the mount table is `<procDir>/mountinfo` (with `pid`,
 *   still `/proc/self/mountinfo`, the table of the namespace this process opens files in)
 * @returns the location, with `path` resolved and `relativePath` computed from the mount's root
 * @throws TypeError when `path` is not an absolute path
 * @throws MemoryPressureError `ERR_NO_CGROUP` with `.path` (as given) and one reason: does not
 *   exist, is not a directory, outside any cgroup mount, or not a memory cgroup
 */
export function resolveCgroupPath(path: string, options: DiscoverOptions = {}): CgroupLocation {
  if (typeof path !== 'string' || !path.startsWith('/')) {
    throw new TypeError(`path must be an absolute path, received ${JSON.stringify(path)}`)
  }
  procFiles(options)
  const { mountinfoFile } = procFiles({ procDir: options.procDir })
  const reject = (reason: string): never => {
    throw new MemoryPressureError('ERR_NO_CGROUP', `${path} is not a usable memory cgroup: ${reason}`,
      { path, reasons: [reason] })
  }
  let real: string
  try {
    real = realpathSync(path)
  } catch (err) {
    if (isErrnoException(err, 'ENOENT') || isErrnoException(err, 'ENOTDIR')) return reject('does not exist')
    throw toSyscallError(err, 'realpath', path)
  }
  const kind = kindOf(real)
  if (kind === 'missing') return reject('does not exist')
  if (kind === 'file') return reject(`is not a directory (${real})`)

  // The filesystem `real` is on is the one mounted deepest above it; for equal mount points the
  // later line wins (it is mounted over the earlier one).
  const mounts = parseMountInfo(readProcFile(mountinfoFile), mountinfoFile)
  let mount: MountInfoEntry | undefined
  for (const m of mounts) {
    if (isWithin(m.mountPoint, real) && (mount === undefined || m.mountPoint.length >= mount.mountPoint.length)) mount = m
  }
  if (mount === undefined || (mount.fsType !== 'cgroup' && mount.fsType !== 'cgroup2')) {
    return reject(`outside any cgroup mount (${real} is on ${mount === undefined ? 'no listed mount' : `${mount.fsType} at ${mount.mountPoint}`})`)
  }
  if (mount.fsType === 'cgroup' && !mount.superOptions.includes('memory')) {
    return reject(`not a memory cgroup (the v1 hierarchy at ${mount.mountPoint} has ${mount.superOptions.join(',')})`)
  }
  const version: CgroupVersion = mount.fsType === 'cgroup' ? 1 : 2
  const usageFile = version === 1 ? 'memory.usage_in_bytes' : 'memory.current'
  if (kindOf(joinPath(real, usageFile)) !== 'file') return reject(`not a memory cgroup (no ${usageFile} in ${real})`)
  const rest = mount.mountPoint === '/' ? real : real.slice(mount.mountPoint.length)
  const relativePath = rest === '' ? mount.root : mount.root === '/' ? rest : mount.root + rest
  return { version, path: real, mountPoint: mount.mountPoint, relativePath }
}

/**
 * The parent cgroup of `loc`, or `null` when `loc` is at its mount point (the parent, if any, is
 * not visible: it is above the mount root or outside the cgroup namespace).
 */
export function parentOf(loc: CgroupLocation): CgroupLocation | null {
  if (loc.path === loc.mountPoint || !isWithin(loc.mountPoint, loc.path)) return null
  return {
    version: loc.version,
    path: posix.dirname(loc.path),
    mountPoint: loc.mountPoint,
    relativePath: loc.relativePath === '/' ? '/' : posix.dirname(loc.relativePath),
  }
}
