// `node-memory-pressure watch`: a live view of a cgroup's usage against its limit (a bar on a terminal,
// plain lines otherwise), with every threshold crossing, OOM and pressure-level event as it happens.

import { performance } from 'node:perf_hooks'
import { CgroupV1Backend } from '../backends/cgroup-v1.js'
import type { Crossing, MemoryBackend, MemorySnapshot, OomEvent, PressureLevelEvent } from '../backends/types.js'
import { MemoryPressureError } from '../errors.js'
import { formatBytes, parseThreshold, resolveThreshold } from '../size.js'
import { type TargetOptions, UsageError, findTarget, openFor } from './target.js'

/** Options of the `watch` command. */
export interface WatchOptions extends TargetOptions {
  /** Thresholds, as the command line gives them (`50%,80%,95%`, `512MiB`, bytes). */
  thresholds: string[]
  /**
   * True when `thresholds` are the defaults rather than the user's: percentages are then dropped,
   * with a note, for a cgroup without a limit instead of failing.
   */
  defaultThresholds?: boolean
  /** How often the view is refreshed, milliseconds. */
  intervalMs: number
  /** Draw a live bar (a terminal) or print plain lines. */
  tty: boolean
  /** Terminal width in columns (for the bar). */
  columns: number
  write: (text: string) => void
}

/** How a watch ended: the exit code the command returns. */
export type WatchEnd = { code: number; reason: string }

const pct = (part: number, whole: number): string => (Number.isFinite(whole) && whole > 0 ? `${((100 * part) / whole).toFixed(1)}%` : '-')

/**
 * Runs the watch until `signal` aborts (exit 0) or the cgroup goes away (exit 1). Throws
 * `UsageError` for bad thresholds and `MemoryPressureError` when nothing can watch the target.
 */
export async function watch(options: WatchOptions, signal: AbortSignal): Promise<WatchEnd> {
  const target = findTarget(options)
  if (target.error !== null) throw target.error
  const backend: MemoryBackend & { notes: readonly string[] } = openFor(target, options.root)
  const first = backend.snapshot()
  let thresholds: number[]
  const given = options.defaultThresholds === true && !Number.isFinite(first.limit) ? [] : options.thresholds
  try {
    thresholds = given.map((t) => resolveThreshold(parseThreshold(t, '--thresholds'), first.limit, '--thresholds')).sort((a, b) => a - b)
  } catch (err) {
    backend.close()
    if (err instanceof MemoryPressureError) throw new UsageError(`${err.message} (${err.code})`)
    throw err
  }
  const { write, tty } = options
  let last: MemorySnapshot = first
  let statusShown = false
  const above = new Set<number>()
  const start = performance.now()
  const stamp = (): string => `+${((performance.now() - start) / 1000).toFixed(3)}s`
  const level = (): string => {
    const top = [...above].sort((a, b) => b - a)[0]
    return top === undefined ? 'below all thresholds' : `above ${formatBytes(top)}${Number.isFinite(last.limit) ? ` (${pct(top, last.limit)})` : ''}`
  }
  const status = (): string => {
    const s = last
    const width = Math.max(10, Math.min(50, options.columns - 70))
    const fill = Number.isFinite(s.limit) ? Math.min(width, Math.round((width * s.usage) / s.limit)) : 0
    const marks: string[] = Array.from({ length: width }, (_, i) => (i < fill ? '#' : '.'))
    if (Number.isFinite(s.limit)) for (const t of thresholds) marks[Math.min(width - 1, Math.floor((width * t) / s.limit))] = '|'
    const bar = Number.isFinite(s.limit) ? `[${marks.join('')}] ` : ''
    return `${bar}${formatBytes(s.usage)} / ${Number.isFinite(s.limit) ? formatBytes(s.limit) : 'no limit'} ${pct(s.usage, s.limit)}  ws ${formatBytes(s.workingSet)}  cache ${formatBytes(s.cache)}  ${level()}`
  }
  const clear = (): void => {
    if (tty && statusShown) write('\r\x1b[2K')
    statusShown = false
  }
  const redraw = (): void => {
    if (!tty) return
    clear()
    write(status())
    statusShown = true
  }
  const line = (text: string): void => {
    clear()
    write(`${text}\n`)
    redraw()
  }
  const refresh = (): void => {
    try {
      last = backend.snapshot()
    } catch {
      return
    }
    if (tty) redraw()
    else line(`${stamp()} usage ${last.usage} limit ${Number.isFinite(last.limit) ? last.limit : 'max'} working-set ${last.workingSet} cache ${last.cache} (${pct(last.usage, last.limit)}; ${level()})`)
  }

  const onCrossing = (c: Crossing): void => {
    if (c.direction === 'up') above.add(c.threshold)
    else above.delete(c.threshold)
    last = { ...last, usage: c.usage }
    line(`${stamp()} threshold ${c.direction} ${formatBytes(c.threshold)} (${pct(c.threshold, last.limit)}) usage ${formatBytes(c.usage)} via ${c.signal}${c.coalesced ? ' (coalesced)' : ''}`)
  }
  // Armed before anything is printed, and the side of each threshold read after arming: whoever
  // reads the header may change usage at once, and registering never reports a crossing by itself.
  for (const t of thresholds) backend.watchThreshold(t, onCrossing)
  try {
    last = backend.snapshot()
  } catch {
    // keep the first snapshot; the refresh below reports the failure's consequences
  }
  for (const t of thresholds) if (last.usage >= t) above.add(t)

  line(`watching ${backend.cgroup} with ${backend.name} (${backend.precision.kind}${backend.precision.kind === 'polled' ? `, ${backend.precision.intervalMs?.min}..${backend.precision.intervalMs?.max} ms` : ''})`)
  for (const note of backend.notes) line(`  ${note}`)
  if (given.length < options.thresholds.length) line('  no limit: the default percentage thresholds do not apply; give --thresholds in bytes')
  line(`limit ${Number.isFinite(first.limit) ? `${formatBytes(first.limit)} held by ${first.limitHolder ?? 'an ancestor above the visible tree'}` : 'none'}; thresholds ${thresholds.map((t) => `${formatBytes(t)} (${pct(t, first.limit)})`).join(', ') || 'none'}`)

  const onOom = (e: OomEvent): void => line(`${stamp()} OOM in ${backend.cgroup} (${e.source}: oom ${e.oom}, killed ${e.oomKill ?? '?'})`)
  const onLevel = (e: PressureLevelEvent): void => line(`${stamp()} pressure level ${e.level} (${e.mode}) x${e.count}`)
  backend.on('oom', onOom)
  backend.on('pressure-level', onLevel)
  backend.on('error', (err) => line(`${stamp()} error ${err.code}: ${err.message}`))
  if (backend instanceof CgroupV1Backend && !backend.polling) {
    for (const l of ['medium', 'critical'] as const) {
      try {
        backend.watchPressureLevel(l)
      } catch (err) {
        line(`  pressure level ${l} not watched: ${(err as Error).message}`)
      }
    }
  }
  refresh()
  const timer = setInterval(refresh, options.intervalMs)
  return await new Promise<WatchEnd>((resolve) => {
    const finish = (end: WatchEnd): void => {
      clearInterval(timer)
      signal.removeEventListener('abort', onAbort)
      backend.off('close', onClose)
      backend.close()
      clear()
      resolve(end)
    }
    const onAbort = (): void => finish({ code: 0, reason: 'interrupted' })
    const onClose = (reason: string): void => {
      line(`${stamp()} ${backend.cgroup} ${reason === 'removed' ? 'was removed' : `closed (${reason})`}`)
      finish({ code: 1, reason })
    }
    backend.on('close', onClose)
    if (signal.aborted) onAbort()
    else signal.addEventListener('abort', onAbort, { once: true })
  })
}
