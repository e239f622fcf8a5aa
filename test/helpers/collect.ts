// Awaiting events without sleeping: a collector records everything and resolves waiters as soon as
// what they wait for has arrived.

export class Collector<T> {
  readonly items: T[] = []
  #waiters: Array<{ pred: (items: T[]) => boolean; resolve: () => void }> = []

  push = (item: T): void => {
    this.items.push(item)
    this.#waiters = this.#waiters.filter((w) => {
      if (!w.pred(this.items)) return true
      w.resolve()
      return false
    })
  }

  /** Resolves once `pred(items)` holds; rejects after `ms` with what was collected so far. */
  until(pred: (items: T[]) => boolean, ms = 10_000): Promise<T[]> {
    if (pred(this.items)) return Promise.resolve(this.items)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms; collected ${JSON.stringify(this.items)}`)), ms)
      this.#waiters.push({
        pred,
        resolve: () => {
          clearTimeout(timer)
          resolve(this.items)
        },
      })
    })
  }

  /** Resolves once at least `n` items arrived. */
  count(n: number, ms?: number): Promise<T[]> {
    return this.until((items) => items.length >= n, ms)
  }
}

/** Lets the event loop turn `n` times (for "nothing more arrived" checks after an awaited event). */
export async function turns(n = 5): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r))
}
