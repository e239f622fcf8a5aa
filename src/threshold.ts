// `onMemoryThreshold`: the one-line way to be told when memory crosses a threshold.

import type { BackendChoice } from './backends/index.js'
import type { SimulatedBackendOptions } from './backends/simulated.js'
import type { MemoryPressureError } from './errors.js'
import { type CloseEvent, type DirectionFilter, MemoryMonitor, type ThresholdEvent, type Unsubscribe } from './monitor.js'
import { checkKeys, checkOptionsObject } from './options.js'
import { type Threshold, describe } from './size.js'

/** Options of {@link onMemoryThreshold}. */
export interface OnMemoryThresholdOptions {
  /** Crossings to report: `'up'` (default), `'down'` or `'both'`. */
  direction?: DirectionFilter
  /** Backend: `'auto'` (default), a name, or a backend object. Ignored when `monitor` is given. */
  backend?: BackendChoice
  /** Filesystem path of the cgroup to watch (default: the one holding the effective limit). */
  cgroup?: string
  /** Options of the simulated backend when `backend` is `'simulated'`. */
  simulated?: SimulatedBackendOptions
  /** Watch through this monitor instead of a private one; errors then go to its `'error'` event. */
  monitor?: MemoryMonitor
  /** Unsubscribes when aborted. */
  signal?: AbortSignal
  /**
   * Receives errors of the handler (code `ERR_HANDLER`) and of the backend. Default: they are
   * passed to `process.emitWarning`. Ignored when `monitor` is given (use its `'error'` event).
   */
  onError?: (error: MemoryPressureError) => void
  /** Called once if watching ends by itself (the cgroup was removed). */
  onClose?: (event: CloseEvent) => void
}

/**
 * Calls `handler` when the memory usage of the container's cgroup crosses `threshold`.
 *
 * `threshold` is bytes, a size string (`'512MiB'`, `'1.5G'`) or a percentage of the effective limit
 * (`'80%'`). If usage is already above an `'up'` threshold, the handler is called right away with
 * `initial: true`. A handler that throws or rejects does not stop the watching: the error goes to
 * `options.onError` (default: a process warning).
 *
 * @returns a function that stops watching (also a `Disposable`: `using stop = onMemoryThreshold(...)`)
 * @throws `MemoryPressureError` with code `ERR_INVALID_THRESHOLD`, `ERR_NO_LIMIT`, `ERR_NO_CGROUP` or
 *   `ERR_BACKEND_UNAVAILABLE`; `TypeError` for arguments of the wrong type.
 *
 * @example
 * ```ts
 * const stop = onMemoryThreshold('80%', (e) => log.warn('memory high', e.usage, e.limit))
 * ```
 */
export function onMemoryThreshold(
  threshold: Threshold,
  handler: (event: ThresholdEvent) => void | Promise<void>,
  options: OnMemoryThresholdOptions = {},
): Unsubscribe {
  if (typeof handler !== 'function') throw new TypeError(`handler must be a function (received ${describe(handler)})`)
  checkOptionsObject('options', options)
  checkKeys(options, ['direction', 'backend', 'cgroup', 'simulated', 'monitor', 'signal', 'onError', 'onClose'])
  if (options.monitor !== undefined && !(options.monitor instanceof MemoryMonitor)) {
    throw new TypeError(`monitor must be a MemoryMonitor (received ${describe(options.monitor)})`)
  }
  if (options.onError !== undefined && typeof options.onError !== 'function') {
    throw new TypeError(`onError must be a function (received ${describe(options.onError)})`)
  }
  if (options.onClose !== undefined && typeof options.onClose !== 'function') {
    throw new TypeError(`onClose must be a function (received ${describe(options.onClose)})`)
  }
  if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) {
    throw new TypeError(`signal must be an AbortSignal (received ${describe(options.signal)})`)
  }
  const own = options.monitor === undefined
  const monitor = options.monitor ?? new MemoryMonitor({ backend: options.backend, cgroup: options.cgroup, simulated: options.simulated })
  const onError = options.onError
  if (own && onError !== undefined) monitor.on('error', onError)
  const onClose = options.onClose
  if (onClose !== undefined) monitor.once('close', (e) => { if (e.reason !== 'closed') onClose(e) })
  let remove: Unsubscribe
  try {
    remove = monitor.addThreshold(threshold, { direction: options.direction, handler })
  } catch (err) {
    if (own) void monitor.close()
    throw err
  }
  const signal = options.signal
  const stop = (): void => {
    signal?.removeEventListener('abort', stop)
    remove()
    if (own) void monitor.close()
  }
  if (signal?.aborted) stop()
  else signal?.addEventListener('abort', stop, { once: true })
  return Object.assign(stop, { [Symbol.dispose]: stop })
}
