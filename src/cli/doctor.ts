// `node-memory-pressure doctor`: what this machine offers for memory notifications, for one process or
// cgroup, and why each backend can or cannot run: as text, or as JSON for scripts and tests.

import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { effectiveLimit } from '../cgroup/limit.js'
import { parseMountInfo } from '../cgroup/mountinfo.js'
import { readFigures } from '../cgroup/stat.js'
import { MemoryPressureError } from '../errors.js'
import { type NativeFeatureName, nativeFeatures, tryLoadNative } from '../native.js'
import { formatBytes } from '../size.js'
import { HEAP_HIGH_SHARE, HEAP_LOW_SHARE, type HeapReading, type HeapRecipe, heapRecipe, ownHeap, pidHeap, supportsPercentage, youngGenerationBytes } from './heap.js'
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
  /** The native addon: whether it loaded, and what is lost without it. */
  addon: { loaded: boolean; error: string | null; lost: string[] }
  /**
   * V8's heap limit of the target process next to the effective limit: `share` is
   * `heap_size_limit / limit`; `recommended` the flags that fit the heap to the limit.
   */
  heap: HeapReading & { share: number | null; recommended: HeapRecipe | null }
  /** Every setup where the defaults will not work, each with the one thing to change. */
  advice: Advice[]
}

/** Stable codes of {@link Advice} items (their text may change; the codes do not). */
export type AdviceCode =
  /** No memory cgroup: only the process's resident set size is watched. */
  | 'NO_CGROUP'
  /** No backend can watch the target. */
  | 'NO_BACKEND'
  /** No memory limit on the cgroup or its ancestors. */
  | 'NO_LIMIT'
  /** The limit or `memory.stat` cannot be read. */
  | 'UNREADABLE'
  /** cgroup v1 on a read-only cgroupfs: thresholds are polled. */
  | 'READ_ONLY_CGROUPFS'
  /** cgroup v1 `cgroup.event_control` not writable by this user: thresholds are polled. */
  | 'EVENT_CONTROL_DENIED'
  /** cgroup v1 thresholds are polled for another reason (see the backend's reasons). */
  | 'THRESHOLDS_POLLED'
  /** cgroup v2: thresholds are emulated; `memory.high` makes `memory.events` report the approach. */
  | 'V2_EMULATED'
  /** cgroup v2 `memory.pressure` not writable: no PSI trigger. */
  | 'PSI_NOT_WRITABLE'
  /** No CAP_SYS_RESOURCE: PSI windows are multiples of 2 s. */
  | 'PSI_WINDOW_2S'
  /** The native addon did not load. */
  | 'NO_ADDON'
  /** V8's heap limit is above (or too near) the effective limit: the kernel's OOM kill comes first. */
  | 'HEAP_ABOVE_LIMIT'
  /** V8's heap limit is far below the effective limit: heap exhaustion with memory to spare. */
  | 'HEAP_FAR_BELOW_LIMIT'

/** One piece of advice: what will not work, and the one thing to change. */
export interface Advice {
  code: AdviceCode
  /** `'warning'`: something the defaults rely on does not work; `'info'`: it works, less well. */
  severity: 'warning' | 'info'
  /** What will not work, and why. */
  problem: string
  /** The one thing to change. */
  change: string
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
    addon: { loaded: true, error: null, lost: [] },
    heap: { limit: null, source: 'unknown', flags: [], note: null, share: null, recommended: null },
    advice: [],
  }
  const advise = (code: AdviceCode, severity: Advice['severity'], problem: string, change: string): void => {
    report.advice.push({ code, severity, problem, change })
  }
  const w = target.watched
  if (w !== null) {
    try {
      const l = effectiveLimit(w)
      report.limit = { bytes: Number.isFinite(l.limit) ? l.limit : null, holder: l.holder, source: l.source }
    } catch (err) {
      advise('UNREADABLE', 'warning', `the limit cannot be read: ${(err as Error).message}`, 'let this user read the cgroup\'s memory files (or run doctor as the service\'s user)')
    }
    try {
      report.memory = readFigures(w)
    } catch (err) {
      advise('UNREADABLE', 'warning', `memory.stat cannot be read: ${(err as Error).message}`, 'let this user read the cgroup\'s memory files (or run doctor as the service\'s user)')
    }
    // cgroup.event_control and a PSI file are written; everything else is only read.
    const names = w.version === 1
      ? ['memory.usage_in_bytes', 'memory.stat', 'cgroup.event_control', 'memory.oom_control', 'memory.pressure_level', 'memory.memsw.usage_in_bytes']
      : ['memory.current', 'memory.stat', 'memory.events', 'memory.pressure', 'memory.max', 'memory.high']
    const written = new Set(['cgroup.event_control', 'memory.pressure'])
    report.files = names.map((n) => fileAccess(path.join(w.path, n), written.has(n) ? 'write' : 'read'))
  }
  report.kernelExact = backends.find((b) => b.available)?.kernelExact ?? false
  const limit = report.limit?.bytes ?? null
  const native = tryLoadNative()
  // Only Linux has an addon to miss: elsewhere the process backend is all there is, by design.
  if (process.platform === 'linux' && (native instanceof MemoryPressureError || !native.platformSupported)) {
    const relevant = (name: NativeFeatureName): boolean =>
      name === 'cgroup-v1-eventfd' ? w?.version === 1 : name === 'cgroup-v2-memory-events' || name === 'psi-triggers' ? w?.version === 2 : true
    const lost = nativeFeatures().filter((f) => !f.available && relevant(f.name)).map((f) => f.without)
    report.addon = { loaded: false, error: native instanceof MemoryPressureError ? native.message.split('\n', 1)[0] ?? native.message : `not supported on ${process.platform}`, lost }
    advise('NO_ADDON', 'warning', `the native addon did not load: ${lost.join('; ')}`, 'run on a platform with a prebuild (linux-x64 or linux-arm64, glibc 2.17+ or musl), or build the addon in a checkout (npm run build:native) and point NODE_MEMORY_PRESSURE_PREBUILD at it')
  }

  if (chosen === null) {
    advise('NO_BACKEND', 'warning', 'no backend can watch this target', 'run inside a memory cgroup whose files this user can read, or watch a process with --pid')
  } else if (w === null) {
    advise('NO_CGROUP', 'warning', 'no memory cgroup: only the resident set size of a process is visible, with no limit, page cache or kernel notifications', 'run inside a memory cgroup (a container, or systemd-run --scope -p MemoryMax=...)')
  } else if (report.limit !== null && limit === null) {
    advise('NO_LIMIT', 'warning',
      `no memory limit on ${w.path} or its ancestors: percentage thresholds and the default levels have no limit to take a share of, so the cgroup's levels are off (with one warning) and the fastify plugin sheds only on V8's heap limit, which is still watched`,
      'set a memory limit (docker run --memory, Kubernetes resources.limits.memory, systemd MemoryMax=), or give thresholds in bytes')
  }
  if (chosen !== null && !report.kernelExact && w !== null) {
    if (w.version === 1) {
      const control = report.files.find((f) => f.path.endsWith('cgroup.event_control'))
      if (report.addon.loaded && control?.error === 'EROFS') advise('READ_ONLY_CGROUPFS', 'info', 'cgroupfs is mounted read-only: thresholds are polled from memory.usage_in_bytes instead of the kernel\'s eventfd', 'mount /sys/fs/cgroup read-write in the container, or run the watcher outside it against the container\'s cgroup (--cgroup)')
      else if (report.addon.loaded && (control?.error === 'EACCES' || control?.error === 'EPERM')) advise('EVENT_CONTROL_DENIED', 'info', 'cgroup.event_control is writable only by root: thresholds are polled', 'run the watcher as root, or give this user write access to cgroup.event_control')
      else if (report.addon.loaded) advise('THRESHOLDS_POLLED', 'info', 'thresholds are polled; see the cgroup-v1 reasons above', 'see the cgroup-v1 reasons above')
    } else {
      advise('V2_EMULATED', 'info', 'cgroup v2 has no byte thresholds: they are emulated (memory.events, PSI, adaptive polling)', 'set memory.high just under the limit, so that memory.events reports the approach')
      const psi = report.files.find((f) => f.path.endsWith('memory.pressure'))
      if (psi !== undefined && !psi.write) advise('PSI_NOT_WRITABLE', 'info', `memory.pressure cannot be written (${psi.error}): no PSI trigger, no wake-up on stalls`, 'make memory.pressure writable for this user (a read-write cgroupfs)')
      if (report.capSysResource === false) advise('PSI_WINDOW_2S', 'info', 'without CAP_SYS_RESOURCE PSI windows are multiples of 2 s', 'grant CAP_SYS_RESOURCE for shorter PSI windows (optional)')
    }
  }

  // The heap: exact for this process; from its flags for another one; none for a cgroup named.
  if (target.kind === 'self') report.heap = { ...ownHeap(), share: null, recommended: null }
  else if (target.pid !== null) report.heap = { ...pidHeap(target.pid), share: null, recommended: null }
  else report.heap.note = 'a cgroup was named, not a process: no heap to read'
  if (limit !== null) {
    // Node reads only the process's own cgroup: the percentage flag is right only there.
    const ownHolds = report.cgroup !== null && report.limit?.holder === report.cgroup.path
    report.heap.recommended = heapRecipe(limit, { percentage: ownHolds && supportsPercentage(), youngBytes: youngGenerationBytes() })
    const heap = report.heap.limit
    if (heap !== null) {
      report.heap.share = heap / limit
      const fix = `NODE_OPTIONS="${report.heap.recommended.flags.join(' ')}" (a heap limit of ${formatBytes(report.heap.recommended.heapSizeLimit)}), or start it with: npx node-memory-pressure exec -- node app.js`
      if (heap > HEAP_HIGH_SHARE * limit) {
        advise('HEAP_ABOVE_LIMIT', 'warning', `V8's heap limit (${formatBytes(heap)}) is ${heap >= limit ? 'above' : 'near'} the cgroup's (${formatBytes(limit)}): the kernel's OOM kill comes before V8's own limit and before the heap level rises`, fix)
      } else if (heap < HEAP_LOW_SHARE * limit) {
        advise('HEAP_FAR_BELOW_LIMIT', 'warning', `V8's heap limit (${formatBytes(heap)}) is ${Math.round((100 * heap) / limit)}% of the cgroup's (${formatBytes(limit)}): "JavaScript heap out of memory" with memory to spare`, fix)
      }
    }
  }
  report.advice.sort((a, b) => (a.severity === b.severity ? 0 : a.severity === 'warning' ? -1 : 1))
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
  if (r.heap.limit !== null || r.heap.note !== null) {
    out.push(`V8 heap limit: ${r.heap.limit === null ? 'unknown' : `${formatBytes(r.heap.limit)}${r.heap.share !== null ? ` (${Math.round(100 * r.heap.share)}% of the effective limit)` : ''}`}${r.heap.flags.length > 0 ? `, flags ${r.heap.flags.join(' ')}` : ''}${r.heap.note !== null ? ` (${r.heap.note})` : ''}`)
  }
  if (r.heap.recommended !== null) out.push(`heap flags for this limit: NODE_OPTIONS="${r.heap.recommended.flags.join(' ')}" (heap limit ${formatBytes(r.heap.recommended.heapSizeLimit)})`)
  if (!r.addon.loaded) out.push(`native addon: not loaded (${r.addon.error})`)
  if (r.advice.length === 0) out.push('advice: none, the defaults work here')
  for (const a of r.advice) out.push(`${a.severity} ${a.code}: ${a.problem}\n  change: ${a.change}`)
  return `${out.join('\n')}\n`
}
