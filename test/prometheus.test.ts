// The prom-client collector: gauges read at scrape time, counters driven by the monitor's events,
// conventional names and units, labels, and a close that leaves the registry as it was.

import { Registry } from 'prom-client'
import { describe, expect, it } from 'vitest'
import { SimulatedBackend } from '../src/backends/simulated.js'
import { type MemoryMonitor, createMemoryMonitor } from '../src/monitor.js'
import { memoryPressureMetrics } from '../src/plugins/prometheus.js'
import type { ReduceHeapOptions } from '../src/policy/heap.js'

const MiB = 2 ** 20

interface Sample {
  value: number
  labels: Record<string, string | number>
  metricName?: string
}

async function samples(registry: Registry): Promise<Map<string, Sample[]>> {
  const json = (await registry.getMetricsAsJSON()) as Array<{ name: string; values: Sample[] }>
  return new Map(json.map((m) => [m.name, m.values]))
}

/** The sample of metric `name` (or of a histogram's series `metricName`, e.g. `x_count`) with `labels`. */
function value(all: Map<string, Sample[]>, name: string, labels: Record<string, string> = {}, metricName?: string): number | undefined {
  return all.get(name)?.find((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v) && (metricName === undefined || s.metricName === metricName))?.value
}

function simulated(reduceHeap: ReduceHeapOptions | false = false): { sim: SimulatedBackend; monitor: MemoryMonitor } {
  const sim = new SimulatedBackend({ limit: 100 * MiB })
  const monitor = createMemoryMonitor({ backend: sim, levels: { moderate: '50%', high: '70%', critical: '90%' }, reduceHeap })
  return { sim, monitor }
}

describe('prom-client collector', () => {
  it('reads usage, limit, working set, page cache and rss at scrape time, in bytes', async () => {
    const registry = new Registry()
    const { sim, monitor } = simulated()
    memoryPressureMetrics(monitor, { registry })
    sim.setUsage(30 * MiB)
    // Page cache comes on top of usage, as a file read inside a real cgroup.
    sim.setCache(10 * MiB, 4 * MiB)
    let all = await samples(registry)
    expect(value(all, 'memory_pressure_usage_bytes')).toBe(40 * MiB)
    expect(value(all, 'memory_pressure_limit_bytes')).toBe(100 * MiB)
    expect(value(all, 'memory_pressure_working_set_bytes')).toBe(36 * MiB)
    expect(value(all, 'memory_pressure_page_cache_bytes')).toBe(10 * MiB)
    expect(value(all, 'memory_pressure_rss_bytes')).toBe(30 * MiB)
    expect(value(all, 'memory_pressure_level')).toBe(0)
    expect(value(all, 'memory_pressure_level_threshold_bytes', { level: 'moderate' })).toBe(50 * MiB)
    expect(value(all, 'memory_pressure_level_threshold_bytes', { level: 'critical' })).toBe(90 * MiB)
    expect(all.get('memory_pressure_info')?.[0]?.labels).toEqual({ backend: 'simulated', cgroup: monitor.cgroup })
    sim.setUsage(50 * MiB)
    all = await samples(registry)
    expect(value(all, 'memory_pressure_usage_bytes')).toBe(50 * MiB)
    await monitor.close()
    sim.close()
  })

  it('counts crossings by direction, level changes, shrink cycles, the bytes they freed and their forced collections\' time', async () => {
    const registry = new Registry()
    // a collection that takes 2 ms
    const { sim, monitor } = simulated({ gc: () => void Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2), mallocTrim: false })
    memoryPressureMetrics(monitor, { registry })
    const before = await samples(registry)
    expect(value(before, 'memory_pressure_threshold_crossings_total', { direction: 'up' })).toBe(0)
    expect(value(before, 'memory_pressure_shrink_freed_bytes_total')).toBe(0)
    expect(value(before, 'memory_pressure_forced_gc_seconds_total')).toBe(0)

    monitor.addThreshold(40 * MiB, { direction: 'both' })
    let cached = 40 * MiB
    monitor.register({ name: 'cache', size: () => cached, shrink: (req) => { const n = Math.min(cached, req.targetBytes); cached -= n; sim.free(n); return n } })
    const shrunk = new Promise<{ freedBytes: number; reportedBytes: number; level: string; heap: { gcMs: number } | null }>((resolve) => monitor.once('shrink', resolve))
    sim.setUsage(95 * MiB)
    const report = await shrunk
    const all = await samples(registry)
    expect(value(all, 'memory_pressure_threshold_crossings_total', { direction: 'up' })).toBe(1)
    expect(value(all, 'memory_pressure_level_changes_total', { level: 'critical' })).toBe(1)
    expect(value(all, 'memory_pressure_shrink_cycles_total', { level: report.level })).toBe(1)
    expect(report.freedBytes).toBeGreaterThan(0)
    expect(value(all, 'memory_pressure_shrink_freed_bytes_total')).toBe(report.freedBytes)
    expect(value(all, 'memory_pressure_shrink_reported_bytes_total')).toBe(report.reportedBytes)
    expect(report.heap?.gcMs).toBeGreaterThan(0)
    expect(value(all, 'memory_pressure_forced_gc_seconds_total')).toBeCloseTo((report.heap?.gcMs ?? 0) / 1000, 6)
    expect(value(all, 'memory_pressure_shrink_duration_seconds', {}, 'memory_pressure_shrink_duration_seconds_count')).toBe(1)
    expect(value(all, 'memory_pressure_level')).toBeGreaterThanOrEqual(1)
    await monitor.close()
    sim.close()
  })

  it('counts OOM events and kills', async () => {
    const registry = new Registry()
    const { sim, monitor } = simulated()
    memoryPressureMetrics(monitor, { registry })
    // The backend's 'oom' event, as a kernel backend emits it.
    sim.emit('oom', { source: 'memory.events', oom: 2, oomKill: 1, time: 0 } as never)
    sim.emit('oom', { source: 'memory.oom_control', oom: 1, oomKill: null, time: 0 } as never)
    const all = await samples(registry)
    expect(value(all, 'memory_pressure_oom_events_total')).toBe(3)
    expect(value(all, 'memory_pressure_oom_kills_total')).toBe(1)
    await monitor.close()
    sim.close()
  })

  it('takes a prefix and fixed labels; close() removes the metrics and stops counting', async () => {
    const registry = new Registry()
    const { sim, monitor } = simulated()
    const metrics = memoryPressureMetrics(monitor, { registry, prefix: 'app_mem_', labels: { service: 'api' } })
    expect(metrics.names).toContain('app_mem_usage_bytes')
    expect(metrics.names.every((n) => n.startsWith('app_mem_'))).toBe(true)
    sim.setUsage(30 * MiB)
    const all = await samples(registry)
    expect(value(all, 'app_mem_usage_bytes', { service: 'api' })).toBe(30 * MiB)
    expect(all.get('app_mem_info')?.[0]?.labels).toMatchObject({ service: 'api', backend: 'simulated' })
    // A second collector with the same names in the same registry is refused by prom-client...
    expect(() => memoryPressureMetrics(monitor, { registry, prefix: 'app_mem_' })).toThrow()
    metrics.close()
    metrics.close()
    expect((await registry.getMetricsAsJSON()).filter((m) => m.name.startsWith('app_mem_'))).toEqual([])
    // ...and accepted again once the first is closed.
    const again = memoryPressureMetrics(monitor, { registry, prefix: 'app_mem_' })
    again.close()
    await monitor.close()
    sim.close()
  })

  it('rejects bad arguments with TypeError/RangeError naming them', () => {
    const { sim, monitor } = simulated()
    const registry = new Registry()
    expect(() => memoryPressureMetrics({} as MemoryMonitor, { registry })).toThrow(TypeError)
    expect(() => memoryPressureMetrics(monitor, { registry, prefix: '9bad' })).toThrow(TypeError)
    expect(() => memoryPressureMetrics(monitor, { registry, labels: { 'bad-name': 'x' } })).toThrow(TypeError)
    expect(() => memoryPressureMetrics(monitor, { registry, labels: { ok: 1 as unknown as string } })).toThrow(TypeError)
    expect(() => memoryPressureMetrics(monitor, { registry, durationBuckets: [-1] })).toThrow(RangeError)
    expect(registry.getMetricsAsArray()).toEqual([])
    void monitor.close()
    sim.close()
  })
})
