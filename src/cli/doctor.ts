// `node-memory-pressure doctor`: what this machine offers for memory notifications, for one process or
// cgroup, and why each backend can or cannot run: as text, or as JSON for scripts and tests.

import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { effectiveLimit } from '../cgroup/limit.js'
import { parseMountInfo } from '../cgroup/mountinfo.js'
import { readFigures } from '../cgroup/stat.js'
import { formatBytes } from '../size.js'
import { type BackendVerdict, type Target, type TargetOptions, findTarget, probeAll } from './target.js'

/** The JSON `doctor --json` prints. Sizes in bytes; `null` where unknown or unlimited. */
export interface DoctorReport {
  node: string
  kernel: string
  platform: string
  uid: number | null
  /** CAP_SYS_RESOURCE in the effective set (PSI windows below 2 s need it); `null` when unknown. */
  capSysResource: boolean | null
  hierarchies: {
    /** Mount point of the cgroup v1 hierarchy with the memory controller. */
    v1Memory: string | null
    /** Mount point of the cgroup v2 hierarchy. */
    v2: string | null
    /** `v1`, `v2`, `hybrid` (v1 memory and a v2 mount) or `none`. */
    layout: 'v1' | 'v2' | 'hybrid' | 'none'
  }
  target: { kind: Target['kind']; pid: number | null }
  /** The process's memory cgroup, or the one named. */
  cgroup: { version: 1 | 2; path: string; relativePath: string; mountPoint: string } | null
  /** Why no cgroup was found (error code and reasons). */
  cgroupError: { code: string; reasons: string[] } | null
  /** The cgroup a monitor would watch (the limit holder for a process). */
  watched: string | null
  limit: { bytes: number | null; holder: string | null; source: string | null } | null
  memory: { usage: number; workingSet: number; rss: number; cache: number; inactiveFile: number } | null
  backends: BackendVerdict[]
  /** The backend `'auto'` would choose; `null` when none can run. */
  chosen: string | null
  /** True when thresholds would be compared by the kernel itself (cgroup v1 eventfd). */
  kernelExact: boolean
  /** Files the backends read or write, and what this process may do with them. */
  files: Array<{ path: string; needs: 'read' | 'write'; exists: boolean; read: boolean; write: boolean; error: string | null }>
  /** What to change for kernel-exact notifications, or to get any at all. */
  advice: string[]
}

function capSysResource(): boolean | null {
  try {
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(fs.readFileSync('/proc/self/status', 'latin1'))
    return m === null ? null : ((BigInt(`0x${m[1]}`) >> 24n) & 1n) === 1n
  } catch {
    return null
  }
}

function hierarchies(): DoctorReport['hierarchies'] {
  let v1Memory: string | null = null
  let v2: string | null = null
  try {
    for (const m of parseMountInfo(fs.readFileSync('/proc/self/mountinfo', 'utf8'))) {
      if (m.fsType === 'cgroup' && m.superOptions.includes('memory')) v1Memory ??= m.mountPoint
      if (m.fsType === 'cgroup2') v2 ??= m.mountPoint
    }
  } catch {
    // No /proc (not Linux): no hierarchies.
  }
  const layout = v1Memory !== null ? (v2 !== null ? 'hybrid' : 'v1') : v2 !== null ? 'v2' : 'none'
  return { v1Memory, v2, layout }
}

function fileAccess(file: string, needs: 'read' | 'write'): DoctorReport['files'][number] {
  const can = (mode: number): [boolean, string | null] => {
    try {
      fs.accessSync(file, mode)
      return [true, null]
    } catch (err) {
      return [false, (err as NodeJS.ErrnoException).code ?? String(err)]
    }
  }
  const exists = fs.existsSync(file)
  const [read, readErr] = can(fs.constants.R_OK)
  const [write, writeErr] = can(fs.constants.W_OK)
  // `error` says what stands in the way of what the backends need: missing, unreadable, not writable.
  return { path: file, needs, exists, read, write, error: !exists ? 'ENOENT' : needs === 'read' ? (read ? null : readErr) : write ? null : writeErr }
}

/** Builds the report. Throws `UsageError` for contradictory options only. */
export function doctor(options: TargetOptions): DoctorReport {
  const target = findTarget(options)
  const backends = probeAll(target, options.root)
  const chosen = backends.find((b) => b.available)?.name ?? null
  const report: DoctorReport = {
    node: process.version,
    kernel: os.release(),
    platform: process.platform,
    uid: typeof process.getuid === 'function' ? process.getuid() : null,
    capSysResource: capSysResource(),
    hierarchies: hierarchies(),
    target: { kind: target.kind, pid: target.pid },
    cgroup: target.location === null ? null : { ...target.location },
    cgroupError: target.error === null ? null : { code: target.error.code, reasons: [...(target.error.reasons ?? [target.error.message])] },
    watched: target.watched?.path ?? null,
    limit: null,
    memory: null,
    backends,
    chosen,
    kernelExact: false,
    files: [],
    advice: [],
  }
  const w = target.watched
  if (w !== null) {
    try {
      const l = effectiveLimit(w)
      report.limit = { bytes: Number.isFinite(l.limit) ? l.limit : null, holder: l.holder, source: l.source }
    } catch (err) {
      report.advice.push(`the limit cannot be read: ${(err as Error).message}`)
    }
    try {
      report.memory = readFigures(w)
    } catch (err) {
      report.advice.push(`memory.stat cannot be read: ${(err as Error).message}`)
    }
    // cgroup.event_control and a PSI file are written; everything else is only read.
    const names = w.version === 1
      ? ['memory.usage_in_bytes', 'memory.stat', 'cgroup.event_control', 'memory.oom_control', 'memory.pressure_level', 'memory.memsw.usage_in_bytes']
      : ['memory.current', 'memory.stat', 'memory.events', 'memory.pressure', 'memory.max', 'memory.high']
    const written = new Set(['cgroup.event_control', 'memory.pressure'])
    report.files = names.map((n) => fileAccess(path.join(w.path, n), written.has(n) ? 'write' : 'read'))
  }
  report.kernelExact = backends.find((b) => b.available)?.kernelExact ?? false
  if (chosen === null) {
    report.advice.push('no backend can run: run inside a memory cgroup whose files this user can read, or watch a process with --pid')
  } else if (!report.kernelExact) {
    if (w?.version === 1) {
      const control = report.files.find((f) => f.path.endsWith('cgroup.event_control'))
      if (control?.error === 'EROFS') report.advice.push('cgroupfs is mounted read-only: mount it read-write (Docker: --cgroupns=private with a writable /sys/fs/cgroup, or run the watcher outside the container against the container\'s cgroup) for kernel thresholds')
      else if (control?.error === 'EACCES' || control?.error === 'EPERM') report.advice.push('cgroup.event_control is writable only by root: run the watcher as root (or give the user that file) for kernel thresholds')
      else report.advice.push('thresholds are polled; see the cgroup-v1 reasons')
    } else if (w?.version === 2) {
      report.advice.push('cgroup v2 has no byte thresholds: they are emulated (memory.events, PSI, adaptive polling). Set memory.high just under the limit so that memory.events reports approaching it')
      const psi = report.files.find((f) => f.path.endsWith('memory.pressure'))
      if (psi !== undefined && !psi.write) report.advice.push(`memory.pressure cannot be written (${psi.error}): no PSI trigger; make it writable for stall wake-ups`)
      if (report.capSysResource === false) report.advice.push('without CAP_SYS_RESOURCE PSI windows are multiples of 2 s')
    } else {
      report.advice.push('only the resident set size of a process is visible: run inside a memory cgroup for limits, page cache and kernel notifications')
    }
  }
  return report
}

const yes = (b: boolean): string => (b ? 'yes' : 'no')
const bytes = (n: number | null | undefined): string => (n === null || n === undefined ? 'none' : `${formatBytes(n)} (${n})`)

/** The report as text for a person. */
export function renderDoctor(r: DoctorReport): string {
  const out: string[] = []
  out.push(`node-memory-pressure doctor: node ${r.node}, ${r.platform} ${r.kernel}, uid ${r.uid ?? '?'}, CAP_SYS_RESOURCE ${r.capSysResource === null ? '?' : yes(r.capSysResource)}`)
  out.push(`cgroup layout: ${r.hierarchies.layout} (v1 memory: ${r.hierarchies.v1Memory ?? 'not mounted'}, v2: ${r.hierarchies.v2 ?? 'not mounted'})`)
  const who = r.target.kind === 'cgroup' ? 'the cgroup named' : r.target.kind === 'pid' ? `process ${r.target.pid}` : `this process (${r.target.pid})`
  if (r.cgroup === null) {
    out.push(`memory cgroup of ${who}: none (${r.cgroupError?.code}: ${r.cgroupError?.reasons.join('; ')})`)
  } else {
    out.push(`memory cgroup of ${who}: cgroup v${r.cgroup.version} ${r.cgroup.path} (${r.cgroup.relativePath} under ${r.cgroup.mountPoint})`)
  }
  if (r.watched !== null) out.push(`watched: ${r.watched}`)
  if (r.limit !== null) out.push(`effective limit: ${bytes(r.limit.bytes)}${r.limit.holder !== null ? `, held by ${r.limit.holder} (${r.limit.source})` : r.limit.source !== null ? ` (${r.limit.source}, above the visible tree)` : ''}`)
  if (r.memory !== null) {
    const m = r.memory
    out.push(`usage ${bytes(m.usage)}; working set ${bytes(m.workingSet)}; anon ${bytes(m.rss)}; page cache ${bytes(m.cache)} (inactive ${bytes(m.inactiveFile)})`)
  }
  out.push('backends (in the order auto tries them):')
  for (const b of r.backends) {
    out.push(`  ${b.name === r.chosen ? '*' : ' '} ${b.name}: ${b.available ? 'usable' : 'not usable'}`)
    for (const reason of b.reasons) out.push(`      ${reason}`)
  }
  if (r.files.length > 0) {
    out.push('files:')
    for (const f of r.files) out.push(`    ${f.exists ? `${f.read ? 'r' : '-'}${f.write ? 'w' : '-'}` : '  '} ${f.path} (needs ${f.needs}${f.error !== null ? `: ${f.error}` : ''})`)
  }
  out.push(`notifications: ${r.chosen === null ? 'none' : r.kernelExact ? 'kernel-exact (cgroup v1 eventfd thresholds)' : `emulated by ${r.chosen}`}`)
  for (const a of r.advice) out.push(`advice: ${a}`)
  return `${out.join('\n')}\n`
}
