// Handlers that throw or reject values that are not Errors, some of which break String() and even
// `instanceof`: nothing a handler throws may escape into the caller or the event loop.

import { afterEach, describe, expect, it } from 'vitest'
import { SimulatedBackend } from '../../src/backends/simulated.js'
import { MemoryPressureError } from '../../src/errors.js'
import { createMemoryMonitor, type MemoryMonitor } from '../../src/monitor.js'
import { onMemoryThreshold } from '../../src/threshold.js'
import { Collector, turns } from '../helpers/collect.js'

const MiB = 2 ** 20

function hostile(): Array<[string, () => unknown]> {
  return [
    ['Object.create(null)', () => Object.create(null)],
    ['an object whose toString throws', () => ({ toString() { throw new Error('no') }, valueOf() { throw new Error('no') } })],
    ['a Proxy whose every trap throws', () => new Proxy({}, {
      get() { throw new Error('get') },
      getPrototypeOf() { throw new Error('getPrototypeOf') },
      has() { throw new Error('has') },
      ownKeys() { throw new Error('ownKeys') },
    })],
    ['a revoked Proxy', () => {
      const { proxy, revoke } = Proxy.revocable({}, {})
      revoke()
      return proxy
    }],
    ['a Symbol', () => Symbol('s')],
    ['an Error whose message getter throws', () => Object.defineProperty(new Error(), 'message', { get() { throw new Error('no') } })],
  ]
}

const cleanup: Array<() => unknown> = []
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f()
})

// A warning emitted for an 'error' nobody listens to: captured so the test can check it arrived.
function captureWarnings(): Collector<Error> {
  const got = new Collector<Error>()
  const all = process.listeners('warning')
  process.removeAllListeners('warning')
  process.on('warning', got.push)
  cleanup.push(() => {
    process.off('warning', got.push)
    for (const l of all) process.on('warning', l)
  })
  return got
}

describe.each(hostile())('a handler that throws %s', (_name, make) => {
  it('onMemoryThreshold with onError: one ERR_HANDLER whose cause is the value, watching goes on', async () => {
    const backend = new SimulatedBackend({ limit: 100 * MiB, usage: 10 * MiB })
    const thrown: unknown[] = []
    const errors = new Collector<MemoryPressureError>()
    const stop = onMemoryThreshold(50 * MiB, () => {
      const v = make()
      thrown.push(v)
      throw v
    }, { backend, onError: errors.push, direction: 'both' })
    cleanup.push(stop)
    expect(() => backend.setUsage(60 * MiB)).not.toThrow()
    expect(() => backend.setUsage(40 * MiB)).not.toThrow()
    await errors.count(2)
    expect(errors.items.map((e) => [e instanceof MemoryPressureError, e.code, typeof e.message])).toEqual([
      [true, 'ERR_HANDLER', 'string'],
      [true, 'ERR_HANDLER', 'string'],
    ])
    expect(errors.items[0]?.cause).toBe(thrown[0])
  })

  it('onMemoryThreshold without onError: the error becomes a process warning', async () => {
    const warnings = captureWarnings()
    const backend = new SimulatedBackend({ limit: 100 * MiB, usage: 10 * MiB })
    cleanup.push(onMemoryThreshold(50 * MiB, () => { throw make() }, { backend }))
    expect(() => backend.setUsage(60 * MiB)).not.toThrow()
    await warnings.count(1)
    expect((warnings.items[0] as MemoryPressureError).code).toBe('ERR_HANDLER')
  })

  it('a rejected promise, a monitor listener and an onError that throws it too: nothing escapes', async () => {
    const warnings = captureWarnings()
    const backend = new SimulatedBackend({ limit: 100 * MiB, usage: 10 * MiB })
    const monitor: MemoryMonitor = createMemoryMonitor({ backend })
    cleanup.push(() => monitor.close())
    const errors = new Collector<MemoryPressureError>()
    monitor.on('error', (e) => {
      errors.push(e)
      throw make()
    })
    monitor.on('threshold', () => { throw make() })
    monitor.addThreshold(50 * MiB, { handler: async () => { throw make() } })
    expect(() => backend.setUsage(60 * MiB)).not.toThrow()
    await errors.count(2)
    await warnings.count(2)
    await turns()
    expect(errors.items.map((e) => e.code)).toEqual(['ERR_HANDLER', 'ERR_HANDLER'])
    // The 'error' listener's own throws are warnings with ERR_HANDLER, not crashes.
    expect(warnings.items.map((w) => (w as MemoryPressureError).code)).toEqual(['ERR_HANDLER', 'ERR_HANDLER'])
  })

  it('a handler returning it (a thenable check that throws) is reported, not thrown', async () => {
    const backend = new SimulatedBackend({ limit: 100 * MiB, usage: 10 * MiB })
    const errors = new Collector<MemoryPressureError>()
    cleanup.push(onMemoryThreshold(50 * MiB, () => make() as void, { backend, onError: errors.push }))
    expect(() => backend.setUsage(60 * MiB)).not.toThrow()
    await turns()
    // A plain value is no error; a value whose `.then` cannot be read is reported.
    let unreadable = 0
    try {
      void (make() as { then?: unknown }).then
    } catch {
      unreadable = 1
    }
    expect(errors.items.map((e) => e.code)).toEqual(unreadable ? ['ERR_HANDLER'] : [])
  })
})
