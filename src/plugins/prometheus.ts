// The prom-client collector (`node-memory-pressure/prometheus`): a monitor's figures as gauges read at
// scrape time, and its events (crossings, levels, OOMs, shrink cycles) as counters and a histogram.

import { Counter, Gauge, Histogram, type Registry, register as defaultRegistry } from 'prom-client'
import type { OomEvent } from '../backends/types.js'
import { MemoryPressureError } from '../errors.js'
import { MemoryMonitor, type ThresholdEvent } from '../monitor.js'
import type { PressureEvent } from '../policy/engine.js'
import { levelRank } from '../policy/levels.js'
import type { ShrinkReport } from '../policy/shrinker.js'
import { describe } from '../size.js'

/** Options of {@link memoryPressureMetrics}. */
export interface PrometheusOptions {
  /** The registry to register the metrics in. Default: prom-client's global `register`. */
  registry?: Registry
  /**
   * Prefix of every metric name. Default `'memory_pressure_'`. Use another prefix (or another
   * registry) to export two monitors side by side: a name can be registered once per registry.
   */
  prefix?: string
  /** Labels with fixed values added to every metric, e.g. `{ service: 'api' }`. Default none. */
  labels?: Readonly<Record<string, string>>
  /**
   * Buckets of the shrink-cycle duration histogram, in seconds. Default
   * `[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5]`.
   */
  durationBuckets?: readonly number[]
}

/** What {@link memoryPressureMetrics} returns. */
export interface MemoryPressureMetrics {
  /** The full names of the metrics registered, in registration order. */
  readonly names: readonly string[]
  /** Removes the metrics from the registry and stops listening to the monitor. Idempotent. */
  close(): void
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/

function validate(monitor: unknown, options: PrometheusOptions): void {
  if (!(monitor instanceof MemoryMonitor)) throw new TypeError(`monitor must be a MemoryMonitor (received ${describe(monitor)})`)
  if (options === null || typeof options !== 'object') throw new TypeError(`options must be an object (received ${describe(options)})`)
  if (options.prefix !== undefined && (typeof options.prefix !== 'string' || (options.prefix !== '' && !NAME.test(options.prefix)))) {
    throw new TypeError(`prefix must be a valid Prometheus metric name prefix (received ${describe(options.prefix)})`)
  }
  if (options.labels !== undefined) {
    if (options.labels === null || typeof options.labels !== 'object') throw new TypeError(`labels must be an object of strings (received ${describe(options.labels)})`)
    for (const [key, value] of Object.entries(options.labels)) {
      if (!LABEL.test(key) || key.startsWith('__')) throw new TypeError(`labels: ${describe(key)} is not a valid Prometheus label name`)
      if (typeof value !== 'string') throw new TypeError(`labels.${key} must be a string (received ${describe(value)})`)
    }
  }
  if (options.durationBuckets !== undefined && (!Array.isArray(options.durationBuckets) || !options.durationBuckets.every((b) => typeof b === 'number' && b > 0))) {
    throw new RangeError(`durationBuckets must be an array of positive numbers of seconds (received ${describe(options.durationBuckets)})`)
  }
}

/**
 * Exports a monitor's memory figures and events to Prometheus through prom-client. Names follow
 * Prometheus conventions: base units (bytes, seconds), `_total` for counters. With the default
 * prefix:
 *
 * | metric | type | what |
 * | --- | --- | --- |
 * | `memory_pressure_usage_bytes` | gauge | usage of the watched cgroup, page cache included |
 * | `memory_pressure_limit_bytes` | gauge | the effective limit (`+Inf` when none) |
 * | `memory_pressure_working_set_bytes` | gauge | usage minus inactive page cache |
 * | `memory_pressure_page_cache_bytes` | gauge | page cache charged to the cgroup |
 * | `memory_pressure_rss_bytes` | gauge | anonymous memory |
 * | `memory_pressure_level` | gauge | 0 normal, 1 moderate, 2 high, 3 critical |
 * | `memory_pressure_level_threshold_bytes{level}` | gauge | where each level starts (once levels are on) |
 * | `memory_pressure_info{backend,cgroup}` | gauge | always 1: the backend and cgroup in use |
 * | `memory_pressure_threshold_crossings_total{direction}` | counter | threshold crossings seen |
 * | `memory_pressure_level_changes_total{level}` | counter | changes of level, by the level entered |
 * | `memory_pressure_oom_events_total` | counter | OOM situations the kernel reported |
 * | `memory_pressure_oom_kills_total` | counter | processes the OOM killer killed (where known) |
 * | `memory_pressure_shrink_cycles_total{level}` | counter | shrink cycles, by level |
 * | `memory_pressure_shrink_freed_bytes_total` | counter | bytes freed by shrink cycles, as measured |
 * | `memory_pressure_shrink_reported_bytes_total` | counter | bytes shrinkers said they freed |
 * | `memory_pressure_forced_gc_seconds_total` | counter | time shrink cycles spent in the collections they forced |
 * | `memory_pressure_shrink_duration_seconds` | histogram | duration of shrink cycles |
 *
 * Gauges are read when Prometheus scrapes (one snapshot per scrape); after the monitor closes they
 * keep their last values.
 *
 * @throws TypeError/RangeError for bad arguments; prom-client's error when a name is already
 *   registered in the registry.
 *
 * @example
 * ```ts
 * import { memoryPressureMetrics } from 'node-memory-pressure/prometheus'
 * const metrics = memoryPressureMetrics(monitor, { labels: { service: 'api' } })
 * ```
 */
export function memoryPressureMetrics(monitor: MemoryMonitor, options: PrometheusOptions = {}): MemoryPressureMetrics {
  validate(monitor, options)
  const registry = options.registry ?? defaultRegistry
  const prefix = options.prefix ?? 'memory_pressure_'
  const fixed = { ...options.labels }
  const fixedNames = Object.keys(fixed)
  const registers = [registry]
  const names: string[] = []
  const add = <M>(name: string, make: (fullName: string) => M): M => {
    const metric = make(`${prefix}${name}`)
    names.push(`${prefix}${name}`)
    return metric
  }
  let snapshotTaken: ReturnType<MemoryMonitor['snapshot']> | null = null
  // Every gauge of one scrape reads the same snapshot: the first collect() of a scrape takes it,
  // and it is dropped once the scrape's microtasks have run.
  const snapshot = (): ReturnType<MemoryMonitor['snapshot']> | null => {
    if (snapshotTaken !== null) return snapshotTaken
    if (monitor.closed) return null
    try {
      snapshotTaken = monitor.snapshot()
    } catch (err) {
      if (err instanceof MemoryPressureError) return null
      throw err
    }
    queueMicrotask(() => (snapshotTaken = null))
    return snapshotTaken
  }
  const figure = (name: string, help: string, read: (s: NonNullable<ReturnType<typeof snapshot>>) => number): void => {
    add(name, (fullName) =>
      new Gauge({
        name: fullName,
        help,
        labelNames: fixedNames,
        registers,
        collect() {
          const s = snapshot()
          if (s !== null) this.set(fixed, read(s))
        },
      }),
    )
  }
  figure('usage_bytes', 'Memory charged to the watched cgroup, page cache included.', (s) => s.usage)
  figure('limit_bytes', 'The effective memory limit over the cgroup and its ancestors (+Inf when none).', (s) => s.limit)
  figure('working_set_bytes', 'Usage minus inactive page cache (what the kernel cannot simply drop).', (s) => s.workingSet)
  figure('page_cache_bytes', 'Page cache charged to the watched cgroup.', (s) => s.cache)
  figure('rss_bytes', 'Anonymous memory of the watched cgroup (heaps, stacks, Buffers).', (s) => s.rss)
  add('level', (fullName) =>
    new Gauge({
      name: fullName,
      help: 'Pressure level: 0 normal, 1 moderate, 2 high, 3 critical.',
      labelNames: fixedNames,
      registers,
      collect() {
        this.set(fixed, levelRank(monitor.level))
      },
    }),
  )
  add('level_threshold_bytes', (fullName) =>
    new Gauge({
      name: fullName,
      help: 'Where each pressure level starts, on the basis (working set by default).',
      labelNames: [...fixedNames, 'level'],
      registers,
      collect() {
        const levels = monitor.levels
        if (levels === null) return
        for (const level of ['moderate', 'high', 'critical'] as const) this.set({ ...fixed, level }, levels[level])
      },
    }),
  )
  const info = add('info', (fullName) => new Gauge({ name: fullName, help: 'Always 1; labels name the backend and cgroup in use.', labelNames: [...fixedNames, 'backend', 'cgroup'], registers }))
  info.set({ ...fixed, backend: monitor.backend, cgroup: monitor.cgroup }, 1)

  const crossings = add('threshold_crossings_total', (fullName) => new Counter({ name: fullName, help: 'Threshold crossings seen, by direction.', labelNames: [...fixedNames, 'direction'], registers }))
  const levels = add('level_changes_total', (fullName) => new Counter({ name: fullName, help: 'Changes of pressure level, by the level entered.', labelNames: [...fixedNames, 'level'], registers }))
  const ooms = add('oom_events_total', (fullName) => new Counter({ name: fullName, help: 'OOM situations the kernel reported in the watched cgroup.', labelNames: fixedNames, registers }))
  const kills = add('oom_kills_total', (fullName) => new Counter({ name: fullName, help: 'Processes the OOM killer killed in the watched cgroup, where the kernel says.', labelNames: fixedNames, registers }))
  const cycles = add('shrink_cycles_total', (fullName) => new Counter({ name: fullName, help: 'Shrink cycles run, by level.', labelNames: [...fixedNames, 'level'], registers }))
  const freed = add('shrink_freed_bytes_total', (fullName) => new Counter({ name: fullName, help: 'Bytes freed by shrink cycles, as measured (basis before minus after, when positive).', labelNames: fixedNames, registers }))
  const reported = add('shrink_reported_bytes_total', (fullName) => new Counter({ name: fullName, help: 'Bytes the shrinkers reported freeing.', labelNames: fixedNames, registers }))
  const forcedGc = add('forced_gc_seconds_total', (fullName) => new Counter({ name: fullName, help: 'Time shrink cycles spent in the collections they forced.', labelNames: fixedNames, registers }))
  const duration = add('shrink_duration_seconds', (fullName) =>
    new Histogram({
      name: fullName,
      help: 'Duration of shrink cycles.',
      labelNames: fixedNames,
      buckets: [...(options.durationBuckets ?? [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5])],
      registers,
    }),
  )
  // Zero-valued series from the start, so rate() works from the first scrape.
  for (const direction of ['up', 'down']) crossings.inc({ ...fixed, direction }, 0)
  ooms.inc(fixed, 0)
  kills.inc(fixed, 0)
  freed.inc(fixed, 0)
  reported.inc(fixed, 0)
  forcedGc.inc(fixed, 0)

  const onThreshold = (e: ThresholdEvent): void => {
    if (!e.initial) crossings.inc({ ...fixed, direction: e.direction })
  }
  const onPressure = (e: PressureEvent): void => levels.inc({ ...fixed, level: e.level })
  const onOom = (e: OomEvent): void => {
    ooms.inc(fixed, e.oom)
    if (e.oomKill !== null) kills.inc(fixed, e.oomKill)
  }
  const onShrink = (r: ShrinkReport): void => {
    cycles.inc({ ...fixed, level: r.level })
    if (r.freedBytes > 0) freed.inc(fixed, r.freedBytes)
    if (r.reportedBytes > 0) reported.inc(fixed, r.reportedBytes)
    if (r.heap !== null && r.heap.gcMs > 0) forcedGc.inc(fixed, r.heap.gcMs / 1000)
    duration.observe(fixed, r.durationMs / 1000)
  }
  monitor.on('threshold', onThreshold)
  monitor.on('pressure', onPressure)
  monitor.on('oom', onOom)
  monitor.on('shrink', onShrink)

  let closed = false
  return {
    names,
    close() {
      if (closed) return
      closed = true
      monitor.off('threshold', onThreshold)
      monitor.off('pressure', onPressure)
      monitor.off('oom', onOom)
      monitor.off('shrink', onShrink)
      for (const name of names) registry.removeSingleMetric(name)
    },
  }
}
