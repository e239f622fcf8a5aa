// Option validation shared by the public entry points: argument errors carry a `.code` and name the
// option and the value received; timers are bounded to what Node's timers hold; misspelled keys fail.

import { PRESSURE_BASES } from './policy/levels.js'
import { describe, parseThreshold } from './size.js'

/**
 * The `.code` of a `TypeError`/`RangeError` thrown for a bad argument (Node's own codes, plus
 * `ERR_UNKNOWN_OPTION` for a key the options object does not have: usually a misspelling).
 */
export type ArgumentErrorCode = 'ERR_INVALID_ARG_TYPE' | 'ERR_INVALID_ARG_VALUE' | 'ERR_OUT_OF_RANGE' | 'ERR_UNKNOWN_OPTION'

/** A `TypeError` or `RangeError` with an {@link ArgumentErrorCode}. Test `.code`, not the message. */
export type ArgumentError = (TypeError | RangeError) & { readonly code: ArgumentErrorCode }

/** A `TypeError` with `.code` (default `ERR_INVALID_ARG_TYPE`). */
export function argTypeError(message: string, code: ArgumentErrorCode = 'ERR_INVALID_ARG_TYPE'): TypeError & { code: ArgumentErrorCode } {
  return Object.assign(new TypeError(message), { code })
}

/** A `RangeError` with `.code` (default `ERR_OUT_OF_RANGE`). */
export function argRangeError(message: string, code: ArgumentErrorCode = 'ERR_OUT_OF_RANGE'): RangeError & { code: ArgumentErrorCode } {
  return Object.assign(new RangeError(message), { code })
}

/**
 * The longest delay Node's timers honour: a longer one is clamped to 1 ms with a warning
 * (`TimeoutOverflowWarning`, lib/internal/timers.js), which would turn a long timer into a busy one.
 */
export const TIMER_MAX_MS = 2 ** 31 - 1

/**
 * Validates a duration option in milliseconds: a finite number from `min` to {@link TIMER_MAX_MS}
 * (`RangeError` `ERR_OUT_OF_RANGE` otherwise, `TypeError` `ERR_INVALID_ARG_TYPE` for a non-number).
 * Every timer option goes through here so that the bound holds for options added later.
 *
 * @returns `value`, or `fallback` when `value` is `undefined`
 */
export function checkTimerMs(name: string, value: unknown, fallback: number, min = 0): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number') throw argTypeError(`${name} must be a number of milliseconds (received ${describe(value)})`)
  if (!Number.isFinite(value) || value < min || value > TIMER_MAX_MS) {
    throw argRangeError(`${name} must be a number of milliseconds from ${min} to ${TIMER_MAX_MS} (received ${describe(value)})`)
  }
  return value
}

/** An options argument: `undefined` (none given) or a plain object; `TypeError` otherwise. */
export function checkOptionsObject(name: string, value: unknown): void {
  if (value !== undefined && (value === null || typeof value !== 'object' || Array.isArray(value))) {
    throw argTypeError(`${name} must be an object (received ${describe(value)})`)
  }
}

/**
 * Refuses keys `allowed` does not list (`TypeError` with code `ERR_UNKNOWN_OPTION`), naming the
 * key and the nearest known one: a misspelled option (`treshold`, `levels.modrate`) would
 * otherwise be ignored silently and its default used.
 *
 * @param where - prefix of the key in the message (`'levels.'`), `''` at the top level
 */
export function checkKeys(value: object, allowed: readonly string[], where = ''): void {
  for (const key of Object.keys(value)) {
    if (allowed.includes(key)) continue
    const near = nearest(key, allowed)
    throw argTypeError(`unknown option ${where}${key}${near === null ? '' : ` (did you mean ${where}${near}?)`}`, 'ERR_UNKNOWN_OPTION')
  }
}

function nearest(key: string, candidates: readonly string[]): string | null {
  let best: string | null = null
  let bestDistance = Math.max(2, Math.floor(key.length / 3)) + 1
  for (const c of candidates) {
    const d = editDistance(key.toLowerCase(), c.toLowerCase())
    if (d < bestDistance) {
      best = c
      bestDistance = d
    }
  }
  return best
}

function editDistance(a: string, b: string): number {
  if (a.length > 64 || b.length > 64) return Number.POSITIVE_INFINITY
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    const row = [i]
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      row.push(Math.min((prev[j] ?? 0) + 1, (row[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + cost))
    }
    prev = row
  }
  return prev[b.length] ?? Number.POSITIVE_INFINITY
}

/** Every key of `MemoryMonitorOptions` (monitor, backend and policy options). */
export const MONITOR_OPTION_KEYS: readonly string[] = [
  'backend', 'cgroup', 'thresholds', 'simulated', 'process', 'poll',
  'levels', 'hysteresis', 'basis', 'heapLimit', 'shrinkTimeoutMs', 'reduceHeap', 'clock', 'tuning',
]

/** Keys of the internal `tuning` option (not part of the documented surface, checked all the same). */
export const TUNING_OPTION_KEYS: readonly string[] = ['cooldownMs', 'recheckMs', 'collectFirst', 'garbageRoom', 'allocatorFree', 'runtime']

/** Keys of the polling options (`PollOptions`). */
export const POLL_OPTION_KEYS: readonly string[] = ['minIntervalMs', 'maxIntervalMs', 'guardBytes', 'idleIntervalMs']

/** Keys of a level thresholds object. */
export const LEVEL_KEYS: readonly string[] = ['moderate', 'high', 'critical']

/** Keys of the options of one threshold subscription, and of a threshold given in the monitor's options. */
export const THRESHOLD_OPTION_KEYS: readonly string[] = ['direction', 'handler']

/**
 * The policy's timers: default and least value in milliseconds. `recheckMs` has a floor because
 * each re-check reads memory.stat: at 0 the timer re-reads it continuously.
 */
export const POLICY_TIMERS = {
  cooldownMs: { fallback: 2000, min: 0 },
  shrinkTimeoutMs: { fallback: 5000, min: 1 },
  recheckMs: { fallback: 1000, min: 100 },
} as const

/** A policy timer option, validated by {@link checkTimerMs} with its default and floor. */
export function policyTimer(name: keyof typeof POLICY_TIMERS, value: unknown): number {
  return checkTimerMs(name, value, POLICY_TIMERS[name].fallback, POLICY_TIMERS[name].min)
}

/**
 * Checks what can be checked of a monitor's options before anything is opened: unknown keys (at
 * the top, in `levels` and in each threshold spec), the basis, the hysteresis and the level
 * thresholds as thresholds (resolving them needs the limit, later), and the policy's timers.
 */
export function validateMonitorOptions(options: unknown): void {
  checkOptionsObject('options', options)
  if (options === undefined) return
  const o = options as Record<string, unknown>
  checkKeys(o, MONITOR_OPTION_KEYS)
  if (o.thresholds !== undefined && !Array.isArray(o.thresholds)) {
    throw argTypeError(`thresholds must be an array (received ${describe(o.thresholds)})`)
  }
  for (const [i, spec] of ((o.thresholds ?? []) as unknown[]).entries()) {
    if (spec !== null && typeof spec === 'object') checkKeys(spec, ['threshold', ...THRESHOLD_OPTION_KEYS], `thresholds[${i}].`)
  }
  if (o.levels !== null && typeof o.levels === 'object') {
    checkKeys(o.levels, LEVEL_KEYS, 'levels.')
    for (const name of LEVEL_KEYS) {
      const value = (o.levels as Record<string, unknown>)[name]
      if (value !== undefined) parseThreshold(value, `levels.${name}`)
    }
  }
  if (o.hysteresis !== undefined && o.hysteresis !== 0) parseThreshold(o.hysteresis, 'hysteresis')
  if (o.basis !== undefined && !(PRESSURE_BASES as readonly unknown[]).includes(o.basis)) {
    throw argTypeError(`basis must be ${PRESSURE_BASES.map((b) => `'${b}'`).join(', ')} (received ${describe(o.basis)})`, 'ERR_INVALID_ARG_VALUE')
  }
  if (o.poll !== undefined) {
    checkOptionsObject('poll', o.poll)
    checkKeys(o.poll as object, POLL_OPTION_KEYS, 'poll.')
  }
  policyTimer('shrinkTimeoutMs', o.shrinkTimeoutMs)
  if (o.tuning !== null && typeof o.tuning === 'object') {
    checkKeys(o.tuning, TUNING_OPTION_KEYS, 'tuning.')
    const t = o.tuning as Record<string, unknown>
    checkTimerMs('tuning.cooldownMs', t.cooldownMs, POLICY_TIMERS.cooldownMs.fallback, POLICY_TIMERS.cooldownMs.min)
    checkTimerMs('tuning.recheckMs', t.recheckMs, POLICY_TIMERS.recheckMs.fallback, POLICY_TIMERS.recheckMs.min)
  }
}
