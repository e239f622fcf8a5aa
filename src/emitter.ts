// An eventemitter3 emitter whose listeners cannot break the watcher: a listener that throws or
// rejects is reported on 'error' and every other listener still runs.

import { EventEmitter } from 'eventemitter3'
import { MemoryPressureError } from './errors.js'
import { describe } from './size.js'

type Listener = (...args: never[]) => unknown

/** Events every {@link SafeEmitter} has. */
export interface ErrorEvents {
  error: (error: MemoryPressureError) => void
}

/**
 * eventemitter3 with guarded listeners. eventemitter3 stops at the first listener that throws and
 * lets the exception reach whoever emitted, which here is the event loop callback of a kernel
 * notification; each listener is therefore wrapped when it is added.
 *
 * `'error'` with no listener: eventemitter3 does not throw for it, so the error would vanish; it is
 * passed to `process.emitWarning` instead (printed on stderr unless the process handles `'warning'`).
 */
export class SafeEmitter<Events extends ErrorEvents> extends EventEmitter<Events> {
  #wrappers = new WeakMap<Listener, Listener>()

  #wrap(event: unknown, fn: Listener): Listener {
    if (event === 'error' || typeof fn !== 'function') return fn
    let wrapper = this.#wrappers.get(fn)
    if (wrapper === undefined) {
      const emitter = this
      wrapper = function guarded(this: unknown, ...args: never[]): unknown {
        try {
          catchRejection(fn.apply(this, args), (err) => emitter.reportError(handlerError(err)))
        } catch (err) {
          emitter.reportError(handlerError(err))
        }
        return undefined
      }
      this.#wrappers.set(fn, wrapper)
    }
    return wrapper
  }

  override on<T extends EventEmitter.EventNames<Events>>(event: T, fn: EventEmitter.EventListener<Events, T>, context?: unknown): this {
    return super.on(event, this.#wrap(event, fn as Listener) as EventEmitter.EventListener<Events, T>, context)
  }

  override addListener<T extends EventEmitter.EventNames<Events>>(event: T, fn: EventEmitter.EventListener<Events, T>, context?: unknown): this {
    return this.on(event, fn, context)
  }

  override once<T extends EventEmitter.EventNames<Events>>(event: T, fn: EventEmitter.EventListener<Events, T>, context?: unknown): this {
    return super.once(event, this.#wrap(event, fn as Listener) as EventEmitter.EventListener<Events, T>, context)
  }

  override off<T extends EventEmitter.EventNames<Events>>(event: T, fn?: EventEmitter.EventListener<Events, T>, context?: unknown, once?: boolean): this {
    const wrapped = fn === undefined ? undefined : ((this.#wrappers.get(fn as Listener) ?? fn) as EventEmitter.EventListener<Events, T>)
    return super.off(event, wrapped, context, once)
  }

  override removeListener<T extends EventEmitter.EventNames<Events>>(event: T, fn?: EventEmitter.EventListener<Events, T>, context?: unknown, once?: boolean): this {
    return this.off(event, fn, context, once)
  }

  /** Emits `'error'`, or warns on the process when nothing listens for it. Never throws. */
  reportError(error: MemoryPressureError): void {
    if (this.listenerCount('error' as EventEmitter.EventNames<Events>) === 0) {
      process.emitWarning(error)
      return
    }
    try {
      ;(this.emit as unknown as (event: 'error', error: MemoryPressureError) => boolean)('error', error)
    } catch (err) {
      // An 'error' listener threw: the SDK's own error is still delivered, as a warning.
      process.emitWarning(new MemoryPressureError('ERR_HANDLER', `an 'error' listener threw: ${errorMessage(err)}`, { cause: err }))
    }
  }
}

/**
 * The message of anything thrown, never throwing itself. Handlers can throw values that break
 * `String()` (`Object.create(null)`, a `toString` that throws, a revoked Proxy, whose every
 * operation, `instanceof` included, throws a TypeError).
 */
export function errorMessage(err: unknown): string {
  try {
    if (typeof err === 'string') return err
    if (err instanceof Error) {
      const message: unknown = err.message
      return typeof message === 'string' ? message : 'an Error without a string message'
    }
    return `a non-Error value (${describe(err)})`
  } catch {
    return 'a value that cannot be inspected'
  }
}

/**
 * Routes the rejection of `result` to `onRejected` when it is a promise (or thenable); a result
 * whose inspection throws (a revoked Proxy) is reported the same way. Never throws.
 */
export function catchRejection(result: unknown, onRejected: (err: unknown) => void): void {
  try {
    if (result === null || (typeof result !== 'object' && typeof result !== 'function')) return
    const then: unknown = (result as { then?: unknown }).then
    if (typeof then === 'function') Promise.resolve(result).catch(onRejected)
  } catch (err) {
    onRejected(err)
  }
}

/** Wraps what a user's handler threw in `ERR_HANDLER`, keeping it as `cause`. Never throws. */
export function handlerError(err: unknown): MemoryPressureError {
  return new MemoryPressureError('ERR_HANDLER', `a handler threw: ${errorMessage(err)}`, { cause: err })
}
