// Choosing a backend: a name the caller gave must work or throw; 'auto' walks the list in order and
// keeps why each one was skipped.

import { resolveCgroupPath } from '../cgroup/discover.js'
import { MemoryPressureError } from '../errors.js'
import { nativeFeatures } from '../native.js'
import { describe } from '../size.js'
import { CgroupV1Backend } from './cgroup-v1.js'
import { CgroupV2Backend } from './cgroup-v2.js'
import type { PollOptions } from './poll.js'
import { ProcessBackend, type ProcessBackendOptions } from './process.js'
import { SimulatedBackend, type SimulatedBackendOptions } from './simulated.js'
import type { BackendName, MemoryBackend } from './types.js'

export { CgroupV1Backend, type CgroupV1Options, type ProbeResult } from './cgroup-v1.js'
export { CgroupV2Backend, parseMemoryEvents, type CgroupV2Options, type MemoryEvents } from './cgroup-v2.js'
export { ProcessBackend, defaultBudget, type ProcessBackendOptions } from './process.js'
export { PsiTrigger, parsePressure, type PsiEvent, type PsiKind, type PsiReading, type PsiTriggerOptions } from './psi.js'
export { ThresholdPoller, nextIntervalMs, type PollOptions } from './poll.js'
export { SimulatedBackend, type SimulatedBackendOptions } from './simulated.js'
export type * from './types.js'

/** What `backend` may be: a name, `'auto'`, or a backend object the caller made. */
export type BackendChoice = 'auto' | BackendName | MemoryBackend

/** Options for {@link openBackend}. */
export interface OpenBackendOptions {
  /** Filesystem path of the cgroup to watch (cgroup backends). */
  cgroup?: string
  /** Options of the simulated backend, when it is chosen by name. */
  simulated?: SimulatedBackendOptions
  /** Options of the process backend (budget, polling), when it is chosen. */
  process?: Omit<ProcessBackendOptions, 'clock'>
  /** How a backend that polls reads usage (cgroup v2, cgroup v1 without eventfd, the process backend). */
  poll?: PollOptions
}

/** A backend opened by {@link openBackend}, with the reasons collected while choosing it. */
export interface OpenedBackend {
  backend: MemoryBackend
  /** True when the backend was created here (and so is closed with its monitor). */
  owned: boolean
  /** Why each backend before it was skipped, and notes on the one chosen. */
  reasons: string[]
}

/** Backends `'auto'` tries, in order. The simulated backend is never chosen automatically. */
export const autoOrder: readonly BackendName[] = ['cgroup-v2', 'cgroup-v1', 'process']

const names: readonly BackendName[] = ['cgroup-v2', 'cgroup-v1', 'process', 'simulated']

/**
 * One line per capability the native addon would give and this process lacks (see
 * `nativeFeatures`), so that diagnostics say what runs instead. The kernel ones only on Linux,
 * where they exist.
 */
function missingNative(): string[] {
  return nativeFeatures()
    .filter((f) => !f.available && (process.platform === 'linux' || f.name === 'allocator-free-bytes' || f.name === 'malloc-trim'))
    .map((f) => `native: ${f.name} unavailable: ${f.without}`)
}

/** Opens the backend `choice` names. Throws `ERR_BACKEND_UNAVAILABLE` (with `.reasons`) when it cannot. */
export function openBackend(choice: BackendChoice = 'auto', options: OpenBackendOptions = {}): OpenedBackend {
  if (typeof choice === 'object' && choice !== null) {
    if (typeof choice.watchThreshold !== 'function' || typeof choice.snapshot !== 'function' || typeof choice.close !== 'function') {
      throw new TypeError('backend must be a backend name or an object implementing MemoryBackend (snapshot, watchThreshold, close)')
    }
    return { backend: choice, owned: false, reasons: [] }
  }
  if (choice !== 'auto' && !names.includes(choice as BackendName)) {
    throw new TypeError(`backend must be 'auto', ${names.map((n) => `'${n}'`).join(', ')} or a MemoryBackend (received ${describe(choice)})`)
  }
  if (options.cgroup !== undefined) {
    if (typeof options.cgroup !== 'string') {
      throw new TypeError(`cgroup must be a filesystem path string (received ${describe(options.cgroup)})`)
    }
    // A cgroup that does not exist is the caller's mistake, not a backend's: say so directly.
    resolveCgroupPath(options.cgroup)
  }
  if (choice === 'simulated') {
    return { backend: new SimulatedBackend(options.simulated), owned: true, reasons: [] }
  }
  const reasons: string[] = []
  const opened = (backend: MemoryBackend & { notes: readonly string[] }): OpenedBackend =>
    ({ backend, owned: true, reasons: [...reasons, ...backend.notes.map((r) => `${backend.name}: ${r}`), ...missingNative()] })
  for (const name of choice === 'auto' ? autoOrder : [choice]) {
    if (name === 'cgroup-v2') {
      const probe = CgroupV2Backend.probe({ cgroup: options.cgroup })
      if (probe.available) return opened(CgroupV2Backend.open({ cgroup: options.cgroup, poll: options.poll }))
      reasons.push(...probe.reasons.map((r) => `cgroup-v2: ${r}`))
    } else if (name === 'cgroup-v1') {
      const probe = CgroupV1Backend.probe({ cgroup: options.cgroup })
      if (probe.available) return opened(CgroupV1Backend.open({ cgroup: options.cgroup, poll: options.poll }))
      reasons.push(...probe.reasons.map((r) => `cgroup-v1: ${r}`))
    } else if (name === 'process') {
      // The process backend watches this process, not a cgroup: it cannot stand in for a named one.
      if (options.cgroup !== undefined) {
        reasons.push(`process: watches this process's resident set size, not the cgroup ${options.cgroup}`)
        continue
      }
      return opened(ProcessBackend.open(options.poll === undefined ? options.process : { poll: options.poll, ...options.process }))
    }
  }
  const which = choice === 'auto' ? 'no backend' : `the ${choice} backend`
  throw new MemoryPressureError('ERR_BACKEND_UNAVAILABLE', `${which} can run here: ${reasons.join('; ')}`, { reasons })
}
