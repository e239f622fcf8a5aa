// `node-memory-pressure watch`: a live view of a cgroup's usage against its limit (a status line fitted
// to the terminal's width, plain lines otherwise), with threshold crossings, OOM and pressure-level
// events as they happen, repeated events coalesced into counts.

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
  /** Draw a live status line (a terminal) or print plain lines. */
  tty: boolean
  /**
   * The terminal's width in columns, read at each redraw (it changes when the window is resized;
   * read it from the terminal, `getWindowSize()`, rather than a copy updated by the resize event).
   */
  columns: number | (() => number)
  /** Subscribes to terminal resizes (stdout's `'resize'`); returns the unsubscribe function. */
  onResize?: (listener: () => void) => () => void
  write: (text: string) => void
}

/** How a watch ended: the exit code the command returns. */
export type WatchEnd = { code: number; reason: string }

/**
 * The first event of a kind is printed at once; more of the same kind within this window are counted
 * and printed as one line when it ends. A window that saw repeats doubles, up to the maximum, so a
 * flood (v1 pressure levels on a busy cgroup fire several times a second) costs a line a minute.
 */
const COALESCE_FIRST_MS = 2000
const COALESCE_MAX_MS = 60_000

/** Narrowest status bar worth drawing, and the widest. */
const BAR_MIN = 10
const BAR_MAX = 50

const pct = (part: number, whole: number): string => (Number.isFinite(whole) && whole > 0 ? `${((100 * part) / whole).toFixed(1)}%` : '-')

/** `text` shortened to `width` characters by cutting its middle (paths keep both ends). */
function ellipsize(text: string, width: number): string {
  if (text.length <= width) return text
  if (width <= 1) return text.slice(0, width)
  const head = Math.ceil((width - 1) / 2)
  return `${text.slice(0, head)}…${text.slice(text.length - (width - 1 - head))}`
}

/**
 * `text` as rows of at most `width` characters, broken at spaces (continuation rows indented), a word
 * too long for a row shortened in its middle: the terminal itself never has to wrap a row.
 */
export function fitRows(text: string, width: number): string[] {
  const lead = /^ */.exec(text)?.[0] ?? ''
  const indent = `${lead}    `
  const rows: string[] = []
  let row = lead
  let empty = true
  for (const word of text.slice(lead.length).split(/ +/)) {
    // A word too long for what is left of the row starts the next one, unless it is too long for any
    // row (a path): then it is shortened into the room left, if that is room enough to be useful.
    const left = width - row.length - 1
    if (!empty && word.length > left && (word.length <= width - indent.length || left < 30)) {
      rows.push(row)
      row = indent
      empty = true
    }
    const sep = empty ? '' : ' '
    row += sep + ellipsize(word, width - row.length - sep.length)
    empty = false
  }
  rows.push(row)
  return rows
}

/** What the status line shows. */
interface StatusParts {
  snapshot: MemorySnapshot
  thresholds: readonly number[]
  level: string
}

/**
 * The status line in at most `width` characters: usage against the limit always, then as room allows
 * the level, the working set, the page cache, and a bar of 10 to 50 cells with the thresholds marked.
 */
export function statusLine({ snapshot: s, thresholds, level }: StatusParts, width: number): string {
  const limited = Number.isFinite(s.limit) && s.limit > 0
  const head = `${formatBytes(s.usage)} / ${limited ? formatBytes(s.limit) : 'no limit'}${limited ? ` ${pct(s.usage, s.limit)}` : ''}`
  const optional = [`ws ${formatBytes(s.workingSet)}`, `cache ${formatBytes(s.cache)}`]
  const parts = [head, level, ...optional]
  const bar = (cells: number): string => {
    const fill = Math.min(cells, Math.round((cells * s.usage) / s.limit))
    const marks: string[] = Array.from({ length: cells }, (_, i) => (i < fill ? '#' : '.'))
    for (const t of thresholds) marks[Math.min(cells - 1, Math.floor((cells * t) / s.limit))] = '|'
    return `[${marks.join('')}] `
  }
  // Drop the least useful parts until the text leaves room for the narrowest bar (or just fits).
  for (let keep = parts.length; keep >= 1; keep--) {
    const text = parts.slice(0, keep).join('  ')
    if (limited && text.length + BAR_MIN + 3 <= width) return bar(Math.min(BAR_MAX, width - text.length - 3)) + text
    if (!limited && text.length <= width) return text
  }
  return ellipsize(head, width)
}

/**
 * Runs the watch until `signal` aborts (exit 0) or the cgroup goes away (exit 1). Throws
 * `UsageError` for bad thresholds and `MemoryPressureError` when nothing can watch the target.
 */
export async function watch(options: WatchOptions, signal: AbortSignal): Promise<WatchEnd> {
  const target = findTarget(options)
  if (target.error !== null) throw target.error
  const backend: MemoryBackend & { notes: readonly string[] } = openFor(target, options.root)
  let first: MemorySnapshot
  try {
    first = backend.snapshot()
  } catch (err) {
    backend.close()
    throw err
  }
  let thresholds: number[]
  const given = options.defaultThresholds === true && !Number.isFinite(first.limit) ? [] : options.thresholds
  try {
    // On the command line a number of bytes has no other spelling than its digits.
    thresholds = given.map((t) => resolveThreshold(parseThreshold(/^\d+$/.test(t) ? Number(t) : t, '--thresholds'), first.limit, '--thresholds')).sort((a, b) => a - b)
  } catch (err) {
    backend.close()
    if (err instanceof MemoryPressureError) throw new UsageError(`${err.message} (${err.code})`)
    throw err
  }
  const { tty } = options
  // What one redraw or one event puts on the screen goes out in one write: a terminal that renders
  // between two writes would otherwise show a cleared row or an event line below no status line.
  let unwritten: string | null = null
  const write = (text: string): void => {
    if (unwritten === null) options.write(text)
    else unwritten += text
  }
  const batch = (draw: () => void): void => {
    if (unwritten !== null) return draw()
    unwritten = ''
    try {
      draw()
    } finally {
      const text = unwritten
      unwritten = null
      if (text !== '') options.write(text)
    }
  }
  // A row uses one column less than the terminal has: a row filling the last column leaves some
  // terminals in their pending-wrap state, and the next write would start a new row.
  const columns = (): number => (typeof options.columns === 'function' ? options.columns() : options.columns)
  const width = (): number => Math.max(20, columns() - 1)
  let last: MemorySnapshot = first
  /** Length of the status line on the screen (0: none shown), and the terminal's width then. */
  let shown = 0
  let shownColumns = 0
  const above = new Set<number>()
  const start = performance.now()
  const stamp = (): string => `+${((performance.now() - start) / 1000).toFixed(3)}s`
  const level = (): string => {
    const top = [...above].sort((a, b) => b - a)[0]
    return top === undefined ? 'below all thresholds' : `above ${formatBytes(top)}${Number.isFinite(last.limit) ? ` (${pct(top, last.limit)})` : ''}`
  }
  const read = (): void => {
    try {
      last = backend.snapshot()
    } catch {
      // the cgroup may be going away: its 'close' event says so; keep the last figures meanwhile
    }
  }
  const clear = (): void => {
    if (tty && shown > 0) {
      // Terminals that reflow on a shrink (tmux, VTE, kitty, iTerm2, Windows Terminal) have moved
      // the end of a status line wider than the new width onto rows of its own, the cursor on the
      // last: clear those rows too, so that no half of the old line stays on the screen.
      const now = columns()
      const rows = now < shownColumns && shown > now ? Math.ceil(shown / now) : 1
      write(`\r\x1b[2K${'\x1b[1A\x1b[2K'.repeat(rows - 1)}`)
    }
    shown = 0
  }
  const redraw = (): void => batch(() => {
    if (!tty) return
    clear()
    const text = statusLine({ snapshot: last, thresholds, level: level() }, width())
    // Written with autowrap off (DECAWM, `CSI ? 7 l`): if the window shrinks while this write is on
    // its way, the terminal cuts the line instead of wrapping it onto a row the next clear misses.
    write(`\x1b[?7l${text}\x1b[?7h`)
    shown = text.length
    shownColumns = columns()
  })
  const line = (text: string): void => batch(() => {
    if (!tty) {
      write(`${text}\n`)
      return
    }
    clear()
    write(`${fitRows(text, width()).join('\n')}\n`)
    redraw()
  })
  // The width is read at each redraw (a timer's redraw can come before the resize event).
  const onResize = (): void => redraw()
  // Plain lines are printed when the figures moved (1% of the limit, or 1 MiB without one), so that
  // a log of an idle cgroup does not grow by a line a second.
  let printed: MemorySnapshot | null = null
  const moved = (): boolean => {
    if (printed === null) return true
    const step = Number.isFinite(last.limit) ? last.limit / 100 : 2 ** 20
    return Math.abs(last.usage - printed.usage) >= step || Math.abs(last.workingSet - printed.workingSet) >= step || Math.abs(last.cache - printed.cache) >= step
  }
  const refresh = (): void => {
    read()
    if (tty) redraw()
    else if (moved()) {
      printed = last
      line(`${stamp()} usage ${last.usage} limit ${Number.isFinite(last.limit) ? last.limit : 'max'} working-set ${last.workingSet} cache ${last.cache} (${pct(last.usage, last.limit)}; ${level()})`)
    }
  }
  const figures = (): string => `usage ${formatBytes(last.usage)} ws ${formatBytes(last.workingSet)}`

  /** Repeats of one kind of event: counted while its window is open, printed when it closes. */
  interface Pending { count: number; windowMs: number; opened: number; timer: NodeJS.Timeout | null; summary: (count: number, seconds: string) => string }
  const pending = new Map<string, Pending>()
  const flush = (key: string, reopen: boolean): void => {
    const p = pending.get(key)
    if (p === undefined) return
    if (p.timer !== null) clearTimeout(p.timer)
    p.timer = null
    if (p.count === 0) {
      pending.delete(key)
      return
    }
    read()
    line(`${stamp()} ${p.summary(p.count, ((performance.now() - p.opened) / 1000).toFixed(1))}`)
    p.count = 0
    if (!reopen) {
      pending.delete(key)
      return
    }
    p.windowMs = Math.min(COALESCE_MAX_MS, p.windowMs * 2)
    p.opened = performance.now()
    p.timer = setTimeout(() => flush(key, true), p.windowMs)
  }
  /** Prints an event, or counts it when one of its kind was printed in the open window. */
  const event = (key: string, count: number, text: () => string, summary: Pending['summary']): void => {
    const p = pending.get(key)
    if (p !== undefined) {
      p.count += count
      p.summary = summary
      if (tty) {
        read()
        redraw()
      }
      return
    }
    read()
    line(`${stamp()} ${text()}`)
    pending.set(key, { count: 0, windowMs: COALESCE_FIRST_MS, opened: performance.now(), timer: setTimeout(() => flush(key, true), COALESCE_FIRST_MS), summary })
  }

  const onCrossing = (c: Crossing): void => {
    if (c.direction === 'up') above.add(c.threshold)
    else above.delete(c.threshold)
    const where = `${formatBytes(c.threshold)} (${pct(c.threshold, last.limit)})`
    // Up and down are counted apart: the first of each is news, their repeats (usage hovering
    // around the threshold) are a count.
    event(`threshold ${c.threshold} ${c.direction}`, 1,
      () => `threshold ${c.direction} ${where} ${figures()} via ${c.signal}${c.coalesced ? ' (coalesced)' : ''}`,
      (n, s) => `threshold ${c.direction} ${where} x${n} more in ${s}s, now ${above.has(c.threshold) ? 'above' : 'below'}; ${figures()}`)
  }
  // Armed before anything is printed, and the side of each threshold read after arming: whoever
  // reads the header may change usage at once, and registering never reports a crossing by itself.
  try {
    for (const t of thresholds) backend.watchThreshold(t, onCrossing)
  } catch (err) {
    backend.close()
    throw err
  }
  read()
  for (const t of thresholds) if (last.usage >= t) above.add(t)

  line(`watching ${backend.cgroup} with ${backend.name} (${backend.precision.kind}${backend.precision.kind === 'polled' ? `, ${backend.precision.intervalMs?.min}..${backend.precision.intervalMs?.max} ms` : ''})`)
  for (const note of backend.notes) line(`  ${note}`)
  if (given.length < options.thresholds.length) line('  no limit: the default percentage thresholds do not apply; give --thresholds in bytes')
  line(`limit ${Number.isFinite(first.limit) ? `${formatBytes(first.limit)} held by ${first.limitHolder ?? 'an ancestor above the visible tree'}` : 'none'}; thresholds ${thresholds.map((t) => `${formatBytes(t)} (${pct(t, first.limit)})`).join(', ') || 'none'}`)

  const onOom = (e: OomEvent): void => event('oom', e.oom,
    () => `OOM in ${backend.cgroup} (${e.source}: oom ${e.oom}, killed ${e.oomKill ?? '?'}) ${figures()}`,
    (n, s) => `OOM ${n} more in ${s}s (${e.source}); ${figures()}`)
  const onLevel = (e: PressureLevelEvent): void => event(`level ${e.level} ${e.mode}`, e.count,
    () => `pressure level ${e.level} (${e.mode}) x${e.count} ${figures()}`,
    (n, s) => `pressure level ${e.level} (${e.mode}) x${n} more in ${s}s; ${figures()}`)
  backend.on('oom', onOom)
  backend.on('pressure-level', onLevel)
  backend.on('error', (err) => event(`error ${err.code}`, 1, () => `error ${err.code}: ${err.message}`, (n, s) => `error ${err.code} x${n} more in ${s}s`))
  if (backend instanceof CgroupV1Backend && !backend.polling) {
    for (const l of ['medium', 'critical'] as const) {
      try {
        backend.watchPressureLevel(l)
      } catch (err) {
        line(`  pressure level ${l} not watched: ${(err as Error).message}`)
      }
    }
  }
  const unsubscribe = tty ? options.onResize?.(onResize) : undefined
  refresh()
  const timer = setInterval(refresh, options.intervalMs)
  return await new Promise<WatchEnd>((resolve) => {
    const finish = (end: WatchEnd, farewell?: string): void => {
      clearInterval(timer)
      unsubscribe?.()
      signal.removeEventListener('abort', onAbort)
      backend.off('close', onClose)
      // Counts still open are printed: an event is never dropped without a word.
      for (const key of [...pending.keys()]) flush(key, false)
      if (farewell !== undefined) line(farewell)
      backend.close()
      clear()
      resolve(end)
    }
    const onAbort = (): void => finish({ code: 0, reason: 'interrupted' })
    const onClose = (reason: string): void =>
      finish({ code: 1, reason }, `${stamp()} ${backend.cgroup} ${reason === 'removed' ? 'was removed' : `closed (${reason})`}`)
    backend.on('close', onClose)
    if (signal.aborted) onAbort()
    else signal.addEventListener('abort', onAbort, { once: true })
  })
}
