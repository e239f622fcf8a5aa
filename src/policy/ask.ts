// Asking one shrinker for bytes within the cycle's timeout: what it was asked, what it said, how
// long it took, and whether it threw or ran out of time (the cycle goes on in every case).

import { MemoryPressureError } from '../errors.js'
import type { Clock } from './clock.js'
import type { PressureLevel } from './levels.js'
import { DEFAULT_FRACTIONS, type LimitKind, type Shrinker, type ShrinkerResult } from './shrinker.js'

/** What the cycle asks of one shrinker. */
export interface Ask {
  /** Bytes asked (what the request still lacks). */
  bytes: number
  level: PressureLevel
  limit: LimitKind
  cycle: number
  timeoutMs: number
  clock: Clock
  /** Gets the abort controller while the shrinker runs (so closing the monitor can abort it), then `null`. */
  running(abort: AbortController | null): void
}

/**
 * Calls `shrinker.shrink()` with `targetBytes` = `ask.bytes` and `fraction` = that share of its
 * `size()` (without a size, the level's default share), and aborts its signal at the timeout.
 */
export async function askShrinker(shrinker: Shrinker, priority: number, ask: Ask): Promise<ShrinkerResult> {
  const { bytes, level, clock } = ask
  let size: number | undefined
  try {
    const s = shrinker.size?.()
    if (typeof s === 'number' && Number.isFinite(s) && s >= 0) size = s
  } catch {
    size = undefined
  }
  const fraction = size !== undefined && size > 0 ? Math.min(1, bytes / size) : DEFAULT_FRACTIONS[level]
  const abort = new AbortController()
  ask.running(abort)
  const t0 = clock.now()
  const result: ShrinkerResult = { name: shrinker.name, priority, requestedBytes: bytes, size: size ?? null, fraction, reported: null, ms: 0 }
  const timer = clock.setTimeout(() => {
    abort.abort(new MemoryPressureError('ERR_TIMEOUT', `shrinker ${JSON.stringify(shrinker.name)} did not finish within ${ask.timeoutMs} ms`))
  }, ask.timeoutMs)
  let onAbort: (() => void) | undefined
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(abort.signal.reason)
    abort.signal.addEventListener('abort', onAbort, { once: true })
  })
  try {
    const value = await Promise.race([
      (async () => shrinker.shrink({ level, limit: ask.limit, targetBytes: bytes, fraction, signal: abort.signal, cycle: ask.cycle }))(),
      aborted,
    ])
    if (typeof value === 'number' && Number.isFinite(value)) result.reported = Math.max(0, value)
  } catch (err) {
    if (abort.signal.aborted && err === abort.signal.reason && err instanceof MemoryPressureError && err.code === 'ERR_TIMEOUT') result.timedOut = true
    else result.error = err
  } finally {
    clock.clearTimeout(timer)
    if (onAbort !== undefined) abort.signal.removeEventListener('abort', onAbort)
    aborted.catch(() => undefined)
    ask.running(null)
  }
  result.ms = clock.now() - t0
  return result
}
