// The engine's options checked and resolved once, at construction: what PolicyEngine reads.

import type { MemoryBackend } from '../backends/types.js'
import { POLICY_TIMERS, checkTimerMs, policyTimer } from '../options.js'
import { describe } from '../size.js'
import { type Clock, isClock, systemClock } from './clock.js'
import { type ReduceHeapOptions, validateReduceHeapOptions } from './heap.js'
import type { PolicyOptions } from './options.js'
import { type PolicyRuntime, isRuntime, processRuntime } from './runtime.js'

/** A {@link PolicyOptions} with every default applied. @internal */
export interface EngineConfig {
  clock: Clock
  runtime: PolicyRuntime
  heapWatch: boolean
  cooldownMs: number
  timeoutMs: number
  recheckMs: number
  heap: ReduceHeapOptions | false
  collectFirst: boolean
  garbageRoom: boolean
  /** Reads the C allocator's free bytes, or `null` when no credit is given. */
  allocator: (() => number | null) | null
  /** Reads V8's committed but unused heap bytes, or `null` when not counted (a custom reading). */
  heapFree: (() => number) | null
  /** True when `allocator` is the user's own function (its figure is taken as is). */
  customAllocator: boolean
}

const bool = (name: string, value: unknown, fallback: boolean): boolean => {
  if (value !== undefined && typeof value !== 'boolean') throw new TypeError(`${name} must be a boolean (received ${describe(value)})`)
  return value ?? fallback
}

/** Checks `options` (a `TypeError`/`RangeError` naming the option) and applies the defaults. @internal */
export function engineConfig(backend: MemoryBackend, options: PolicyOptions): EngineConfig {
  if (options.levels !== undefined && typeof options.levels !== 'boolean' && (options.levels === null || typeof options.levels !== 'object')) {
    throw new TypeError(`levels must be a boolean or an object { moderate, high, critical } (received ${describe(options.levels)})`)
  }
  if (options.clock !== undefined && !isClock(options.clock)) {
    throw new TypeError(`clock must be an object with now(), setTimeout() and clearTimeout() (received ${describe(options.clock)})`)
  }
  const heapWatch = bool('heapLimit', options.heapLimit, true)
  const tuning = options.tuning ?? {}
  if (tuning === null || typeof tuning !== 'object') throw new TypeError(`tuning must be an object (received ${describe(tuning)})`)
  if (tuning.runtime !== undefined && !isRuntime(tuning.runtime)) {
    throw new TypeError(`tuning.runtime must be a policy runtime (received ${describe(tuning.runtime)})`)
  }
  const runtime = tuning.runtime ?? processRuntime
  if (options.reduceHeap !== undefined && options.reduceHeap !== false) validateReduceHeapOptions(options.reduceHeap)
  const allocator = tuning.allocatorFree
  if (allocator !== undefined && typeof allocator !== 'boolean' && typeof allocator !== 'function') {
    throw new TypeError(`tuning.allocatorFree must be a boolean or a function (received ${describe(allocator)})`)
  }
  // Default: only where the watched cgroup holds this process (its own, as discovered): the free
  // lists are this process's, the cgroup's usage another's otherwise.
  const given = options as { cgroup?: unknown; backend?: unknown; process?: { pid?: unknown } }
  const own = allocator === undefined && (backend.name === 'cgroup-v1' || backend.name === 'cgroup-v2' || backend.name === 'process') &&
    given.cgroup === undefined && typeof given.backend !== 'object' && given.process?.pid === undefined
  return {
    clock: options.clock ?? systemClock,
    runtime,
    heapWatch,
    cooldownMs: checkTimerMs('tuning.cooldownMs', tuning.cooldownMs, POLICY_TIMERS.cooldownMs.fallback, POLICY_TIMERS.cooldownMs.min),
    timeoutMs: policyTimer('shrinkTimeoutMs', options.shrinkTimeoutMs),
    recheckMs: checkTimerMs('tuning.recheckMs', tuning.recheckMs, POLICY_TIMERS.recheckMs.fallback, POLICY_TIMERS.recheckMs.min),
    heap: options.reduceHeap ?? {},
    collectFirst: bool('tuning.collectFirst', tuning.collectFirst, true),
    garbageRoom: bool('tuning.garbageRoom', tuning.garbageRoom, true),
    allocator: typeof allocator === 'function' ? allocator : allocator === true || own ? () => runtime.allocatorFree() : null,
    heapFree: allocator === true || own ? () => runtime.heapFree() : null,
    customAllocator: typeof allocator === 'function',
  }
}
