// diagnostics_channel: every monitor publishes its events on node-memory-pressure:* channels, the same
// event objects its listeners get, in the same order, and only while someone subscribes.

import diagnosticsChannel from 'node:diagnostics_channel'
import { afterEach, describe, expect, it } from 'vitest'
import { SimulatedBackend } from '../src/backends/simulated.js'
import { CHANNELS } from '../src/diagnostics.js'
import { createMemoryMonitor } from '../src/monitor.js'

const MiB = 2 ** 20
const subscriptions: Array<() => void> = []
afterEach(() => {
  for (const off of subscriptions.splice(0)) off()
})

function record(): Array<[string, unknown]> {
  const seen: Array<[string, unknown]> = []
  for (const name of Object.values(CHANNELS)) {
    const fn = (message: unknown): void => void seen.push([name, message])
    diagnosticsChannel.subscribe(name, fn)
    subscriptions.push(() => diagnosticsChannel.unsubscribe(name, fn))
  }
  return seen
}

describe('diagnostics_channel', () => {
  it('publishes creation, thresholds, level changes, shrink cycles and close, with the monitor and its own event objects', async () => {
    const seen = record()
    const sim = new SimulatedBackend({ limit: 100 * MiB })
    const monitor = createMemoryMonitor({ backend: sim, levels: { moderate: '50%', high: '70%', critical: '90%' }, reduceHeap: false })
    const own: Array<[string, unknown]> = []
    for (const name of ['threshold', 'pressure', 'shrink', 'close'] as const) monitor.on(name, (e: unknown) => own.push([`node-memory-pressure:${name}`, e]))
    monitor.addThreshold(40 * MiB)
    let cached = 30 * MiB
    monitor.register({ name: 'cache', size: () => cached, shrink: (req) => { const n = Math.min(cached, req.targetBytes); cached -= n; sim.free(n); return n } })
    const shrunk = new Promise((resolve) => monitor.once('shrink', resolve))
    sim.setUsage(95 * MiB)
    await shrunk
    await monitor.close()

    expect(seen[0]).toEqual([CHANNELS.monitor, { monitor }])
    const events = seen.slice(1)
    // Same order, same objects as the monitor's own listeners received.
    expect(events.map(([name]) => name)).toEqual(own.map(([name]) => name))
    for (const [i, [, message]] of events.entries()) expect(message).toEqual({ monitor, event: own[i]![1] })
    for (const [i, [, message]] of events.entries()) expect((message as { event: unknown }).event).toBe(own[i]![1])
    const names = events.map(([name]) => name)
    expect(names).toContain(CHANNELS.threshold)
    expect(names).toContain(CHANNELS.pressure)
    expect(names).toContain(CHANNELS.shrink)
    expect(names.at(-1)).toBe(CHANNELS.close)
    expect(names.indexOf(CHANNELS.pressure)).toBeLessThan(names.indexOf(CHANNELS.shrink))
  })

  it('a subscriber sees the events from when it subscribed on', async () => {
    const channel = diagnosticsChannel.channel(CHANNELS.threshold)
    expect(channel.hasSubscribers).toBe(false)
    const sim = new SimulatedBackend({ limit: 100 * MiB })
    const monitor = createMemoryMonitor({ backend: sim })
    const got = new Promise((resolve) => monitor.addThreshold(10 * MiB, { handler: resolve }))
    // A subscriber added later sees only later events.
    sim.setUsage(20 * MiB)
    await got
    const seen = record()
    sim.setUsage(5 * MiB)
    sim.setUsage(20 * MiB)
    await new Promise((resolve) => monitor.once('threshold', resolve))
    await monitor.close()
    expect(seen.filter(([name]) => name === CHANNELS.threshold).map(([, m]) => (m as { event: { direction: string } }).event.direction)).toEqual(['up'])
  })
})
