// The monitor and onMemoryThreshold on the simulated backend: events, filters, errors, lifecycle.

import { describe, expect, it } from 'vitest'
import { SimulatedBackend } from '../src/backends/simulated.js'
import { MemoryPressureError } from '../src/errors.js'
import { type CloseEvent, type MonitorEvent, type ThresholdEvent, createMemoryMonitor } from '../src/monitor.js'
import { onMemoryThreshold } from '../src/threshold.js'
import { Collector, turns } from './helpers/collect.js'

const MiB = 2 ** 20

function errorCode(fn: () => unknown): string {
  try {
    fn()
  } catch (err) {
    if (err instanceof MemoryPressureError) return err.code
    if (err instanceof TypeError) return 'TypeError'
    if (err instanceof RangeError) return 'RangeError'
    throw err
  }
  return 'no error'
}

describe('createMemoryMonitor on the simulated backend', () => {
  it('emits typed threshold events with the snapshot fields', async () => {
    const sim = new SimulatedBackend({ limit: 100 * MiB, usage: 10 * MiB, cache: 5 * MiB, inactiveFile: 4 * MiB })
    const monitor = createMemoryMonitor({ backend: sim, thresholds: ['50%'] })
    const got = new Collector<ThresholdEvent>()
    monitor.on('threshold', got.push)
    sim.setUsage(60 * MiB)
    const [e] = await got.count(1)
    expect(e).toMatchObject({
      threshold: 50 * MiB,
      usage: 60 * MiB,
      limit: 100 * MiB,
      workingSet: 56 * MiB,
      direction: 'up',
      initial: false,
      coalesced: false,
      signal: 'simulated',
      backend: 'simulated',
      cgroup: '/simulated',
    })
    expect(typeof e?.time).toBe('number')
    expect(monitor.backend).toBe('simulated')
    await monitor.close()
  })

  it('filters by direction: up (default), down, both', async () => {
    const sim = new SimulatedBackend({ limit: 100 * MiB })
    const monitor = createMemoryMonitor({ backend: sim })
    const up = new Collector<string>()
    const down = new Collector<string>()
    const both = new Collector<string>()
    monitor.addThreshold('30M', { handler: (e) => up.push(e.direction) })
    monitor.addThreshold('30M', { direction: 'down', handler: (e) => down.push(e.direction) })
    monitor.addThreshold('30M', { direction: 'both', handler: (e) => both.push(e.direction) })
    sim.setUsage(40 * MiB)
    await both.count(1)
    sim.setUsage(20 * MiB)
    await both.count(2)
    sim.setUsage(35 * MiB)
    await both.count(3)
    await turns()
    expect(up.items).toEqual(['up', 'up'])
    expect(down.items).toEqual(['down'])
    expect(both.items).toEqual(['up', 'down', 'up'])
    await monitor.close()
  })

  it('reports an already-crossed up threshold at once with initial: true, and only for up', async () => {
    const sim = new SimulatedBackend({ limit: 100 * MiB, usage: 90 * MiB })
    const monitor = createMemoryMonitor({ backend: sim })
    const up = new Collector<ThresholdEvent>()
    const down = new Collector<ThresholdEvent>()
    monitor.addThreshold('80%', { handler: up.push })
    monitor.addThreshold('80%', { direction: 'down', handler: down.push })
    const [e] = await up.count(1)
    expect(e).toMatchObject({ initial: true, direction: 'up', signal: 'initial', usage: 90 * MiB, threshold: 80 * MiB })
    await turns()
    expect(down.items).toEqual([])
    await monitor.close()
  })

  it('a handler that throws or rejects goes to error; other listeners still run', async () => {
    const sim = new SimulatedBackend({ limit: 100 * MiB })
    const monitor = createMemoryMonitor({ backend: sim })
    const errors = new Collector<MemoryPressureError>()
    const after = new Collector<ThresholdEvent>()
    monitor.on('error', errors.push)
    monitor.on('threshold', () => {
      throw new Error('listener boom')
    })
    monitor.on('threshold', after.push)
    monitor.addThreshold('10M', {
      handler: () => {
        throw new Error('handler boom')
      },
    })
    monitor.addThreshold('20M', { handler: async () => Promise.reject(new Error('async boom')) })
    sim.setUsage(30 * MiB)
    await after.count(2)
    await errors.count(4)
    expect(errors.items.map((e) => e.code)).toEqual(['ERR_HANDLER', 'ERR_HANDLER', 'ERR_HANDLER', 'ERR_HANDLER'])
    expect(errors.items.map((e) => (e.cause as Error).message).sort()).toEqual(['async boom', 'handler boom', 'listener boom', 'listener boom'])
    // the watcher goes on
    sim.setUsage(0)
    sim.setUsage(30 * MiB)
    await after.count(4)
    await monitor.close()
  })

  it('off() removes a listener added with on()', async () => {
    const sim = new SimulatedBackend({ limit: 100 * MiB })
    const monitor = createMemoryMonitor({ backend: sim, thresholds: ['10M'] })
    const removed = new Collector<ThresholdEvent>()
    const kept = new Collector<ThresholdEvent>()
    monitor.on('threshold', removed.push)
    monitor.on('threshold', kept.push)
    monitor.off('threshold', removed.push)
    sim.setUsage(20 * MiB)
    await kept.count(1)
    await turns()
    expect(removed.items).toEqual([])
    await monitor.close()
  })

  it('the async iterator yields thresholds and ends with close', async () => {
    const sim = new SimulatedBackend({ limit: 100 * MiB })
    const monitor = createMemoryMonitor({ backend: sim, thresholds: [{ threshold: '10M', direction: 'both' }] })
    const seen: Array<[string, string?]> = []
    const done = (async () => {
      for await (const e of monitor) seen.push(e.type === 'threshold' ? [e.type, e.direction] : e.type === 'close' ? [e.type, e.reason] : [e.type])
    })()
    sim.setUsage(20 * MiB)
    sim.setUsage(5 * MiB)
    await turns()
    await monitor.close()
    await done
    expect(seen).toEqual([
      ['threshold', 'up'],
      ['threshold', 'down'],
      ['close', 'closed'],
    ])
  })

  it('the iterator stops on abort', async () => {
    const sim = new SimulatedBackend({ limit: 100 * MiB })
    const monitor = createMemoryMonitor({ backend: sim, thresholds: ['10M'] })
    const ac = new AbortController()
    const seen: MonitorEvent[] = []
    const done = (async () => {
      for await (const e of monitor.events({ signal: ac.signal })) seen.push(e)
    })()
    sim.setUsage(20 * MiB)
    await turns()
    ac.abort()
    await done
    expect(seen.map((e) => e.type)).toEqual(['threshold'])
    expect(monitor.listenerCount('threshold')).toBe(0)
    await monitor.close()
  })

  it('unsubscribe and dispose stop one threshold', async () => {
    const sim = new SimulatedBackend({ limit: 100 * MiB })
    const monitor = createMemoryMonitor({ backend: sim })
    const a = new Collector<ThresholdEvent>()
    const b = new Collector<ThresholdEvent>()
    const c = new Collector<ThresholdEvent>()
    const stopA = monitor.addThreshold('10M', { handler: a.push })
    const stopB = monitor.addThreshold('10M', { handler: b.push })
    monitor.addThreshold('10M', { handler: c.push })
    stopA()
    stopA()
    stopB[Symbol.dispose]()
    sim.setUsage(20 * MiB)
    await c.count(1)
    await turns()
    expect(a.items).toEqual([])
    expect(b.items).toEqual([])
    await monitor.close()
  })

  it('close emits once, is idempotent, and leaves a passed-in backend open', async () => {
    const sim = new SimulatedBackend({ limit: 100 * MiB })
    const monitor = createMemoryMonitor({ backend: sim, thresholds: ['10M'] })
    const closes = new Collector<CloseEvent>()
    monitor.on('close', closes.push)
    await monitor.close()
    await monitor.close()
    await turns()
    expect(closes.items).toEqual([{ reason: 'closed' }])
    expect(monitor.closed).toBe(true)
    expect(sim.closed).toBe(false)
    expect(errorCode(() => monitor.addThreshold('5M'))).toBe('ERR_CLOSED')
    expect(errorCode(() => monitor.snapshot())).toBe('ERR_CLOSED')
  })

  it('closes a backend it created', async () => {
    const monitor = createMemoryMonitor({ backend: 'simulated', simulated: { limit: 64 * MiB } })
    expect(monitor.snapshot().limit).toBe(64 * MiB)
    await monitor.close()
    expect(monitor.closed).toBe(true)
  })

  it('removal of the cgroup closes the monitor with reason removed', async () => {
    const sim = new SimulatedBackend({ limit: 100 * MiB })
    const monitor = createMemoryMonitor({ backend: sim, thresholds: ['10M'] })
    const closes = new Collector<CloseEvent>()
    const events = new Collector<ThresholdEvent>()
    monitor.on('close', closes.push)
    monitor.on('threshold', events.push)
    sim.remove()
    await closes.count(1)
    expect(closes.items).toEqual([{ reason: 'removed' }])
    expect(events.items).toEqual([])
    expect(monitor.closed).toBe(true)
  })

  it('validates its options with typed errors', () => {
    const sim = new SimulatedBackend({ limit: 100 * MiB })
    expect(errorCode(() => createMemoryMonitor({ backend: 'nope' as 'auto' }))).toBe('TypeError')
    expect(errorCode(() => createMemoryMonitor({ backend: sim, thresholds: '80%' as never }))).toBe('TypeError')
    expect(errorCode(() => createMemoryMonitor({ backend: sim, thresholds: ['200M'] }))).toBe('ERR_INVALID_THRESHOLD')
    expect(errorCode(() => createMemoryMonitor({ backend: sim, thresholds: ['abc'] }))).toBe('ERR_INVALID_THRESHOLD')
    expect(errorCode(() => createMemoryMonitor({ backend: 'simulated', simulated: { limit: Infinity }, thresholds: ['80%'] }))).toBe('ERR_NO_LIMIT')
    const monitor = createMemoryMonitor({ backend: sim })
    expect(errorCode(() => monitor.addThreshold('1M', { direction: 'sideways' as 'up' }))).toBe('TypeError')
    expect(errorCode(() => monitor.addThreshold('1M', { handler: 5 as never }))).toBe('TypeError')
    expect(errorCode(() => monitor.addThreshold(0))).toBe('ERR_INVALID_THRESHOLD')
    expect(errorCode(() => createMemoryMonitor({ cgroup: '/nonexistent/cgroup/x' }))).toBe('ERR_NO_CGROUP')
  })
})

describe('onMemoryThreshold', () => {
  it('calls the handler on crossing and stops when unsubscribed', async () => {
    const sim = new SimulatedBackend({ limit: 100 * MiB })
    const got = new Collector<ThresholdEvent>()
    const stop = onMemoryThreshold('80%', got.push, { backend: sim })
    sim.setUsage(85 * MiB)
    await got.count(1)
    expect(got.items[0]).toMatchObject({ threshold: 80 * MiB, direction: 'up', usage: 85 * MiB })
    stop()
    sim.setUsage(10 * MiB)
    sim.setUsage(90 * MiB)
    await turns()
    expect(got.items.length).toBe(1)
  })

  it('handler errors go to onError, and the handler keeps being called', async () => {
    const sim = new SimulatedBackend({ limit: 100 * MiB })
    const errors = new Collector<MemoryPressureError>()
    let calls = 0
    const stop = onMemoryThreshold(
      '50M',
      () => {
        calls++
        throw new Error('boom')
      },
      { backend: sim, direction: 'both', onError: errors.push },
    )
    sim.setUsage(60 * MiB)
    sim.setUsage(40 * MiB)
    await errors.count(2)
    expect(calls).toBe(2)
    expect(errors.items.every((e) => e.code === 'ERR_HANDLER')).toBe(true)
    stop()
  })

  it('without onError, handler errors become process warnings', async () => {
    const sim = new SimulatedBackend({ limit: 100 * MiB })
    const warnings = new Collector<Error>()
    process.on('warning', warnings.push)
    try {
      const stop = onMemoryThreshold('50M', () => {
        throw new Error('warned')
      }, { backend: sim })
      sim.setUsage(60 * MiB)
      await warnings.count(1)
      expect((warnings.items[0] as MemoryPressureError).code).toBe('ERR_HANDLER')
      stop()
    } finally {
      process.off('warning', warnings.push)
    }
  })

  it('an AbortSignal unsubscribes; using disposes', async () => {
    const sim = new SimulatedBackend({ limit: 100 * MiB })
    const got = new Collector<ThresholdEvent>()
    const ac = new AbortController()
    onMemoryThreshold('10M', got.push, { backend: sim, signal: ac.signal })
    {
      using _stop = onMemoryThreshold('10M', got.push, { backend: sim })
    }
    ac.abort()
    sim.setUsage(20 * MiB)
    await turns()
    expect(got.items).toEqual([])
  })

  it('onClose hears the cgroup going away', async () => {
    const sim = new SimulatedBackend({ limit: 100 * MiB })
    const closes = new Collector<CloseEvent>()
    onMemoryThreshold('10M', () => {}, { backend: sim, onClose: closes.push })
    sim.remove()
    await closes.count(1)
    expect(closes.items).toEqual([{ reason: 'removed' }])
  })

  it('refuses bad arguments with typed errors and leaves nothing open', () => {
    const sim = new SimulatedBackend({ limit: 100 * MiB })
    expect(errorCode(() => onMemoryThreshold('80%', 'no' as never, { backend: sim }))).toBe('TypeError')
    expect(errorCode(() => onMemoryThreshold('101M', () => {}, { backend: sim }))).toBe('ERR_INVALID_THRESHOLD')
    expect(errorCode(() => onMemoryThreshold(Number.NaN, () => {}, { backend: sim }))).toBe('ERR_INVALID_THRESHOLD')
    expect(errorCode(() => onMemoryThreshold('1M', () => {}, { backend: sim, direction: 'x' as 'up' }))).toBe('TypeError')
    expect(errorCode(() => onMemoryThreshold('1M', () => {}, { backend: sim, signal: {} as AbortSignal }))).toBe('TypeError')
    expect(errorCode(() => onMemoryThreshold('1M', () => {}, { monitor: {} as never }))).toBe('TypeError')
  })
})

describe('the process backend through the monitor', () => {
  it('takes the polling options from `poll`, and refuses a misspelled one with ERR_UNKNOWN_OPTION', async () => {
    const monitor = createMemoryMonitor({ backend: 'process', poll: { minIntervalMs: 7, maxIntervalMs: 70 } })
    try {
      expect(monitor.precision.intervalMs).toEqual({ min: 7, max: 70 })
    } finally {
      await monitor.close()
    }
    let err: unknown
    try {
      createMemoryMonitor({ backend: 'process', poll: { idleIntervalMS: 1000 } as never })
    } catch (e) {
      err = e
    }
    expect(err).toMatchObject({ name: 'TypeError', code: 'ERR_UNKNOWN_OPTION' })
  })

  it('takes its options from `process`: the budget is the limit thresholds are resolved against', async () => {
    const budget = 7 * 2 ** 30
    const monitor = createMemoryMonitor({ backend: 'process', process: { budget } })
    try {
      expect(monitor.backend).toBe('process')
      expect(monitor.snapshot().limit).toBe(budget)
    } finally {
      await monitor.close()
    }
  })
})
