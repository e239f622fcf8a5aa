// The one interface every backend implements: read a snapshot, watch byte thresholds (kernel-exact or
// emulated, with the precision said), report its own end. Policy code talks to backends only here.

import type { EventEmitter } from 'eventemitter3'
import type { MemoryPressureError } from '../errors.js'

/** The backends memory-pressure knows. */
export type BackendName = 'cgroup-v1' | 'simulated'

/** Which way usage moved across a threshold. */
export type Direction = 'up' | 'down'

/** What woke the backend up for a crossing. */
export type CrossingSignal =
  /** the kernel's own threshold check, delivered through an eventfd (cgroup v1) */
  | 'eventfd'
  /** the simulated backend's virtual kernel */
  | 'simulated'

/** Memory of the watched cgroup (or virtual cgroup) at one moment. All sizes in bytes. */
export interface MemorySnapshot {
  /** Bytes charged to the cgroup, page cache included (`memory.usage_in_bytes` / `memory.current`). */
  usage: number
  /** The effective limit over the cgroup and its ancestors; `Infinity` when there is none. */
  limit: number
  /** Path of the cgroup whose own setting is the effective limit; `null` when unlimited or not visible. */
  limitHolder: string | null
  /** `usage − inactive file cache`: what the kernel cannot simply drop (kubelet's working set). */
  workingSet: number
  /** Anonymous memory (`rss` / `anon`): heap, stacks, Buffers. */
  rss: number
  /** Page cache charged to the cgroup (`cache` / `file`). */
  cache: number
  /** The inactive part of the page cache, reclaimable first. */
  inactiveFile: number
  /** `performance.now()` when the snapshot was read. */
  time: number
}

/** How exactly a backend sees a threshold crossing. */
export interface ThresholdPrecision {
  /** `'kernel'`: the kernel compares usage itself; `'exact'`: a virtual cgroup compares on every change. */
  kind: 'kernel' | 'exact'
  /**
   * How far past the threshold usage can be when the crossing is noticed, in bytes. For cgroup v1
   * the kernel checks thresholds every 128 page events per CPU (`memcontrol-v1.c`), so up to
   * 128 pages × CPUs.
   */
  bytes: number
}

/** One crossing of one threshold, as the backend saw it. */
export interface Crossing {
  /** The threshold crossed, in bytes. */
  threshold: number
  /** Which way usage went. */
  direction: Direction
  /** Usage read after the wake-up, in bytes. */
  usage: number
  /**
   * True when the kernel reported this crossing together with others in one wake-up (the eventfd
   * counter was above 1): usage went back and forth before the process could read it, and `usage`
   * is the value after all of them.
   */
  coalesced: boolean
  /** What delivered it. */
  signal: CrossingSignal
  /** `performance.now()` at delivery. */
  time: number
}

/** A registered threshold. Closing it unregisters it from the kernel; idempotent. */
export interface ThresholdWatch {
  /** The threshold in bytes. */
  readonly threshold: number
  /** Stop watching and release its file descriptors. */
  close(): void
}

/** Why a backend stopped. */
export type BackendCloseReason =
  /** `close()` was called. */
  | 'closed'
  /** The watched cgroup was removed (the kernel signals every registered eventfd once on rmdir). */
  | 'removed'
  /** A fatal error; the `'error'` event carried it. */
  | 'error'

/** Events of every backend. */
export interface BackendEvents {
  /** The backend stopped; every watch is closed. Emitted once. */
  close: (reason: BackendCloseReason) => void
  /** Something failed while watching; the backend goes on unless it also emits `'close'`. */
  error: (error: MemoryPressureError) => void
}

/** The interface every backend implements. */
export interface MemoryBackend extends EventEmitter<BackendEvents> {
  /** Which backend this is. */
  readonly name: BackendName
  /** Filesystem path of the cgroup watched (for the simulated backend, a virtual path). */
  readonly cgroup: string
  /** How precisely thresholds are delivered. */
  readonly precision: ThresholdPrecision
  /** True once closed (by `close()` or because the cgroup went away). */
  readonly closed: boolean
  /** Reads the current figures. Throws `MemoryPressureError` when the cgroup cannot be read. */
  snapshot(): MemorySnapshot
  /**
   * Starts watching `bytes` (a whole number of bytes above zero). `onCrossing` runs on the event loop
   * for every crossing in either direction, in order; registering never reports a crossing by
   * itself, even when usage is already above (the kernel's semantics).
   */
  watchThreshold(bytes: number, onCrossing: (crossing: Crossing) => void): ThresholdWatch
  /** Closes every watch and releases every resource. Idempotent. */
  close(): void
}
