// events() that nobody consumes holds at most maxQueued events: the oldest are dropped and a
// 'dropped' marker says how many, before the events that were kept.

import { afterEach, describe, expect, it } from 'vitest'
import { SimulatedBackend } from '../../src/backends/simulated.js'
import { createMemoryMonitor, type MemoryMonitor, type MonitorEvent } from '../../src/monitor.js'
import { turns } from '../helpers/collect.js'

const MiB = 2 ** 20
const cleanup: Array<() => unknown> = []
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f()
})

function setup(): { backend: SimulatedBackend; monitor: MemoryMonitor } {
  const backend = new SimulatedBackend({ limit: 100 * MiB, usage: 10 * MiB })
  const monitor = createMemoryMonitor({ backend })
  cleanup.push(() => monitor.close())
  monitor.addThreshold(50 * MiB, { direction: 'both' })
  return { backend, monitor }
}

/** Crosses the 50 MiB threshold `n` times (up, down, up...). */
function cross(backend: SimulatedBackend, n: number): void {
  for (let i = 0; i < n; i++) backend.setUsage(i % 2 === 0 ? 60 * MiB : 40 * MiB)
}

async function drain(iterator: AsyncIterableIterator<MonitorEvent>, monitor: MemoryMonitor): Promise<MonitorEvent[]> {
  // The simulated backend delivers crossings in microtasks: let them all arrive before closing.
  await turns(2)
  await monitor.close()
  const out: MonitorEvent[] = []
  for await (const e of iterator) out.push(e)
  return out
}

describe('events(): a bounded queue', () => {
  it('keeps the newest maxQueued events and says how many older ones were dropped', async () => {
    const { backend, monitor } = setup()
    const iterator = monitor.events({ maxQueued: 3 })
    cross(backend, 10)
    const got = await drain(iterator, monitor)
    // 10 crossings + close = 11 events; the 3 kept are the last two crossings and the close.
    expect(got.map((e) => (e.type === 'threshold' ? `${e.type}:${e.direction}` : e.type === 'dropped' ? `dropped:${e.count}` : e.type))).toEqual([
      'dropped:8', 'threshold:up', 'threshold:down', 'close',
    ])
  })

  it('a consumer that keeps up loses nothing', async () => {
    const { backend, monitor } = setup()
    const iterator = monitor.events({ maxQueued: 2 })
    const seen: string[] = []
    for (let i = 0; i < 6; i++) {
      backend.setUsage(i % 2 === 0 ? 60 * MiB : 40 * MiB)
      const r = await iterator.next()
      seen.push(r.value?.type === 'threshold' ? r.value.direction : String(r.value?.type))
    }
    expect(seen).toEqual(['up', 'down', 'up', 'down', 'up', 'down'])
    await iterator.return?.()
  })

  it('200 000 crossings never consumed: the default bound (1024) holds, and the count adds up', async () => {
    const { backend, monitor } = setup()
    const iterator = monitor.events()
    cross(backend, 200_000)
    const got = await drain(iterator, monitor)
    const dropped = got.filter((e) => e.type === 'dropped')
    expect(dropped.length).toBe(1)
    expect(got.length).toBe(1 + 1024)
    expect((dropped[0] as { count: number }).count + 1024).toBe(200_000 + 1)
  })

  it('after a drop, newer drops are counted again from zero', async () => {
    const { backend, monitor } = setup()
    const iterator = monitor.events({ maxQueued: 1 })
    cross(backend, 3)
    await turns(2)
    const first = await iterator.next()
    const second = await iterator.next()
    backend.setUsage(40 * MiB)
    backend.setUsage(60 * MiB)
    await turns(2)
    const third = await iterator.next()
    const fourth = await iterator.next()
    expect([first.value, second.value, third.value, fourth.value].map((e) => (e?.type === 'dropped' ? e.count : e?.type))).toEqual([
      2, 'threshold', 1, 'threshold',
    ])
    await iterator.return?.()
  })
})
