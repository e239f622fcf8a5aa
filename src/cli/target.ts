// What the command line watches: a cgroup named by path (optionally in a tree given by its root), the
// cgroup of a pid, or this process's own; and the backend each backend probe would give for it.

import fs from 'node:fs'
import { CgroupV1Backend, type ProbeResult } from '../backends/cgroup-v1.js'
import { CgroupV2Backend } from '../backends/cgroup-v2.js'
import { ProcessBackend } from '../backends/process.js'
import type { BackendName, MemoryBackend } from '../backends/types.js'
import { type CgroupLocation, findMemoryCgroup, resolveCgroupPath } from '../cgroup/discover.js'
import { effectiveLimit } from '../cgroup/limit.js'
import { MemoryPressureError } from '../errors.js'

/** Options shared by `doctor` and `watch`. */
export interface TargetOptions {
  cgroup?: string
  pid?: number
  root?: string
}

/** The cgroup a command is about, and the one it would watch (the holder of the effective limit). */
export interface Target {
  /** How the target was named. */
  kind: 'self' | 'pid' | 'cgroup'
  pid: number | null
  /** The memory cgroup of the process, or the one named. `null` when none was found. */
  location: CgroupLocation | null
  /** The cgroup a monitor would watch: the limit holder for a process, the named cgroup otherwise. */
  watched: CgroupLocation | null
  /** Why no cgroup was found. */
  error: MemoryPressureError | null
}

/** A usage error of the command line: exit code 2. */
export class UsageError extends Error {}

/** Validates `--pid`. */
export function parsePid(text: string | undefined): number | undefined {
  if (text === undefined) return undefined
  const pid = Number(text)
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(pid) || pid <= 0) throw new UsageError(`--pid must be a positive integer (received ${JSON.stringify(text)})`)
  return pid
}

function locateRooted(cgroup: string, root: string): CgroupLocation {
  const dir = fs.realpathSync(cgroup)
  const top = fs.realpathSync(root)
  if (dir !== top && !dir.startsWith(`${top}/`)) throw new UsageError(`--cgroup ${cgroup} is not below --root ${root}`)
  const rel = dir.slice(top.length)
  return { version: 2, path: dir, mountPoint: top, relativePath: rel === '' ? '/' : rel }
}

/** Finds what `--cgroup`, `--pid` or nothing name. Cgroup lookup failures are kept, not thrown. */
export function findTarget(options: TargetOptions): Target {
  if (options.cgroup !== undefined && options.pid !== undefined) throw new UsageError('--cgroup and --pid cannot be combined')
  if (options.root !== undefined && options.cgroup === undefined) throw new UsageError('--root needs --cgroup (a cgroup v2 directory below it)')
  const kind = options.cgroup !== undefined ? 'cgroup' : options.pid !== undefined ? 'pid' : 'self'
  const pid = kind === 'cgroup' ? null : options.pid ?? process.pid
  try {
    if (options.cgroup !== undefined) {
      const location = options.root !== undefined ? locateRooted(options.cgroup, options.root) : resolveCgroupPath(options.cgroup)
      return { kind, pid, location, watched: location, error: null }
    }
    const location = findMemoryCgroup(options.pid === undefined ? {} : { pid: options.pid })
    const limit = effectiveLimit(location)
    const watched = limit.holder !== null ? resolveCgroupPath(limit.holder) : location
    return { kind, pid, location, watched, error: null }
  } catch (err) {
    if (err instanceof UsageError) throw err
    if (err instanceof MemoryPressureError) return { kind, pid, location: null, watched: null, error: err }
    if (err instanceof Error && 'code' in err) {
      return { kind, pid, location: null, watched: null, error: new MemoryPressureError('ERR_NO_CGROUP', err.message, { cause: err }) }
    }
    throw err
  }
}

/** One backend's answer for a target. */
export interface BackendVerdict {
  name: BackendName
  available: boolean
  /** True when thresholds would be compared by the kernel itself (cgroup v1 eventfd). */
  kernelExact: boolean
  reasons: string[]
}

/** Probes every backend for `target`, in the order `'auto'` tries them. */
export function probeAll(target: Target, root?: string): BackendVerdict[] {
  const out: BackendVerdict[] = []
  const cgroup = target.watched?.path
  const verdict = (name: BackendName, p: ProbeResult<unknown>, exact = false): BackendVerdict =>
    ({ name, available: p.available, kernelExact: p.available && exact, reasons: p.reasons })
  const no = (name: BackendName, reasons: string[]): BackendVerdict => ({ name, available: false, kernelExact: false, reasons })
  if (cgroup === undefined) {
    const why = target.error?.reasons?.length ? [...target.error.reasons] : [target.error?.message ?? 'no memory cgroup']
    out.push(no('cgroup-v2', why), no('cgroup-v1', why))
  } else if (target.watched?.version === 2) {
    out.push(verdict('cgroup-v2', CgroupV2Backend.probe({ cgroup, root })))
    out.push(no('cgroup-v1', [`${cgroup} is a cgroup v2 cgroup`]))
  } else {
    out.push(no('cgroup-v2', [`${cgroup} is in the cgroup v1 memory hierarchy (v1 holds the memory controller)`]))
    const p = CgroupV1Backend.probe({ cgroup })
    out.push(verdict('cgroup-v1', p, p.available && p.value.pollReason === null))
  }
  if (target.pid === null) out.push(no('process', ['watches a process, and a cgroup was named']))
  else out.push(verdict('process', ProcessBackend.probe({ pid: target.pid })))
  return out
}

/** Opens the best backend for `target` (the first available in `'auto'` order), or throws `ERR_BACKEND_UNAVAILABLE`. */
export function openFor(target: Target, root?: string): MemoryBackend & { notes: readonly string[] } {
  const verdicts = probeAll(target, root)
  const first = verdicts.find((v) => v.available)
  const cgroup = target.watched?.path
  if (first?.name === 'cgroup-v2' && cgroup !== undefined) return CgroupV2Backend.open({ cgroup, root })
  if (first?.name === 'cgroup-v1' && cgroup !== undefined) return CgroupV1Backend.open({ cgroup })
  if (first?.name === 'process' && target.pid !== null) return ProcessBackend.open({ pid: target.pid })
  const reasons = verdicts.flatMap((v) => v.reasons.map((r) => `${v.name}: ${r}`))
  throw new MemoryPressureError('ERR_BACKEND_UNAVAILABLE', `nothing can watch this target: ${reasons.join('; ')}`, { reasons })
}
