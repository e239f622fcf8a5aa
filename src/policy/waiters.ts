// The promises of `monitor.until(level)`: each resolves once the level is at or below its own.

import { type PressureLevel, levelRank } from './levels.js'

interface Waiter {
  rank: number
  resolve: () => void
  reject: (err: unknown) => void
}

/** Pending `until()` promises. */
export class LevelWaiters {
  #waiters = new Set<Waiter>()

  /** A promise that resolves when {@link settle} sees a level of `rank` or lower; `signal` rejects it. */
  wait(rank: number, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        this.#waiters.delete(waiter)
        reject(signal?.reason)
      }
      const waiter: Waiter = {
        rank,
        resolve: () => {
          signal?.removeEventListener('abort', onAbort)
          resolve()
        },
        reject: (err) => {
          signal?.removeEventListener('abort', onAbort)
          reject(err)
        },
      }
      this.#waiters.add(waiter)
      signal?.addEventListener('abort', onAbort, { once: true })
    })
  }

  /** The level is `level` now: resolves every waiter it satisfies. */
  settle(level: PressureLevel): void {
    for (const w of this.#waiters) {
      if (levelRank(level) <= w.rank) {
        this.#waiters.delete(w)
        w.resolve()
      }
    }
  }

  /** Rejects every waiter with `err`. */
  rejectAll(err: unknown): void {
    for (const w of this.#waiters) w.reject(err)
    this.#waiters.clear()
  }
}
