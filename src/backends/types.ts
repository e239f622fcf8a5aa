// The one interface every backend implements: read a snapshot, watch byte thresholds (kernel-exact or
// emulated, with the precision said), report its own end. Policy code talks to backends only here.

import type { EventEmitter } from 'eventemitter3'
import type { MemoryPressureError } from '../errors.js'

/** The backends node-memory-pressure knows. */
export type BackendName = 'cgroup-v2' | 'cgroup-v1' | 'process' | 'simulated'

/** Which way usage moved across a threshold. */
export type Direction = 'up' | 'down'

/** What woke the backend up for a crossing. */
export type CrossingSignal =
  /** the kernel's own threshold check, delivered through an eventfd (cgroup v1) */
  | 'eventfd'
  /** the simulated backend's virtual kernel */
  | 'simulated'
  /** a change of cgroup v2 `memory.events` (POLLPRI), after which usage was read and compared */
  | 'memory.events'
  /** a PSI trigger on the cgroup's `memory.pressure` fired, after which usage was read and compared */
  | 'psi'
  /**
   * an adaptive poll of the usage file (or of the process's resident set size); on cgroup v1 also
   * the read that follows a threshold's registration, for a crossing while it was being registered
   */
  | 'poll'
  /** a V8 garbage collection in this process finished, after which usage was read and compared */
  | 'gc'

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
  /**
   * `'kernel'`: the kernel compares usage itself; `'exact'`: a virtual cgroup compares on every
   * change; `'polled'`: usage is read at an adaptive interval (and on any kernel wake-up there is).
   */
  kind: 'kernel' | 'exact' | 'polled'
  /**
   * How far past the threshold usage can be when the crossing is noticed, in bytes. For cgroup v1
   * the kernel checks thresholds every 128 page events per CPU (`memcontrol-v1.c`), so up to
   * 128 pages × CPUs.
   *
   * For `'polled'` it is an expectation, not a bound: the poll guard (`guardBytes`, 8 MiB by
   * default), the growth per longest interval the poller assumes before it has measured a rate.
   * Growth faster than that overshoots more on the first crossing after a quiet spell (measured
   * here at 50 MiB/s: up to 15 MiB and 350 ms late), then the interval follows the measured rate.
   */
  bytes: number
  /**
   * For `'polled'`: the bounds of the polling interval in milliseconds. The interval shrinks
   * toward `min` as usage nears a threshold or grows fast, and widens toward `max` far from one.
   */
  intervalMs?: { min: number; max: number }
  /** For `'polled'`: what else wakes the backend between polls (`'memory.events'`, `'psi'`, `'gc'`). */
  signals?: CrossingSignal[]
  /**
   * For `'polled'`: each way a crossing can be delivered (the timer included), what growth it sees
   * and how late it can be. A crossing is delivered by whichever sees it first.
   */
  delays?: SignalDelay[]
}

/** How one signal of an emulated threshold sees a crossing. */
export interface SignalDelay {
  signal: CrossingSignal
  /**
   * What the signal sees: `'any'` growth (the timer reads usage whatever grew); `'v8'` allocation
   * of this process that makes V8 collect (its heap, and Buffers: V8 collects after 64 MiB of
   * external memory at the latest); `'memory.high'` usage passing the cgroup's own `memory.high`
   * (or `memory.max`, at the OOM); `'stall'` time stalled in reclaim (PSI: near a limit, once page
   * cache runs out).
   */
  sees: 'any' | 'v8' | 'memory.high' | 'stall'
  /**
   * The longest time in milliseconds from the moment the signal can see a crossing to its
   * delivery, the event loop's own delay aside: the timer's longest interval, the gap between two
   * reads after collections, the PSI window, the kernel's limit on file notifications.
   */
  worstMs: number
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
  /** The kernel reported an OOM in the watched cgroup (v1 `memory.oom_control`, v2 `memory.events`). */
  oom: (event: OomEvent) => void
  /** A v1 `memory.pressure_level` notification registered with `watchPressureLevel`. */
  'pressure-level': (event: PressureLevelEvent) => void
  /** Woke up with no crossing to report (a poll): when to re-read what the kernel never announces, such as the limit. */
  wakeup: () => void
}

/** An out-of-memory situation in the watched cgroup. */
export interface OomEvent {
  /** Where the kernel said so. */
  source: 'memory.oom_control' | 'memory.events'
  /**
   * v2: the growth of the `oom` counter since the last read (OOM situations); v1: the eventfd
   * counter (notifications since the last read).
   */
  oom: number
  /**
   * Processes killed by the OOM killer since the last read (v2 `oom_kill`, v1 `oom_kill` of
   * `memory.oom_control`); `null` when unknown. The v1 eventfd fires as the OOM begins, before the
   * kill is counted (measured here: about 3 ms before the SIGKILL), so it is often 0 there.
   */
  oomKill: number | null
  /** `performance.now()` at delivery. */
  time: number
}

/** v1 `memory.pressure_level` levels (cgroup-v1/memory.rst section 11). */
export type VmPressureLevel = 'low' | 'medium' | 'critical'

/** v1 `memory.pressure_level` propagation modes (cgroup-v1/memory.rst section 11). */
export type VmPressureMode = 'default' | 'hierarchy' | 'local'

/** One `memory.pressure_level` notification. */
export interface PressureLevelEvent {
  level: VmPressureLevel
  mode: VmPressureMode
  /** Notifications the eventfd counted since the last read. */
  count: number
  /** `performance.now()` at delivery. */
  time: number
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
