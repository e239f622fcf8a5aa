// watch's layout without a terminal: the status line and the other rows fit any width from 20
// columns up, and the status keeps the most useful parts when room is short.

import { describe, expect, it } from 'vitest'
import type { MemorySnapshot } from '../src/backends/types.js'
import { fitRows, statusLine } from '../src/cli/watch.js'

const MiB = 2 ** 20
const snapshot = (over: Partial<MemorySnapshot> = {}): MemorySnapshot => ({
  usage: 52.5 * MiB, limit: 100 * MiB, limitHolder: '/cg', workingSet: 50.25 * MiB, rss: 40 * MiB, cache: 12.5 * MiB, inactiveFile: 2.25 * MiB, time: 0, ...over,
})
const parts = { snapshot: snapshot(), thresholds: [50 * MiB, 80 * MiB], level: 'above 50.0 MiB (50.0%)' }

describe('watch layout', () => {
  it('the status line never exceeds the width, and shows the bar, level, ws and cache where they fit', () => {
    for (let width = 20; width <= 200; width++) expect(statusLine(parts, width).length).toBeLessThanOrEqual(width)
    const wide = statusLine(parts, 160)
    expect(wide).toMatch(/^\[[#.|]{50}\] 52\.5 MiB \/ 100 MiB 52\.5%  above 50\.0 MiB \(50\.0%\)  ws 50\.3 MiB  cache 12\.5 MiB$/)
    // 79 columns (an 80-column terminal): the cache goes first, the bar and the level stay.
    expect(statusLine(parts, 79)).toMatch(/^\[[#.|]{10,}\] 52\.5 MiB \/ 100 MiB 52\.5%  above 50\.0 MiB \(50\.0%\)  ws 50\.3 MiB$/)
    expect(statusLine(parts, 40)).toMatch(/^\[[#.|]{10,}\] 52\.5 MiB \/ 100 MiB 52\.5%$/)
  })

  it('the bar marks the thresholds and fills to usage', () => {
    const bar = /^\[([#.|]+)\]/.exec(statusLine(parts, 160))?.[1] ?? ''
    expect(bar.length).toBe(50)
    expect([bar[25], bar[40]]).toEqual(['|', '|'])
    expect(bar.slice(0, 25).replaceAll('|', '#')).toBe('#'.repeat(25))
    expect(bar.slice(27, 40)).toBe('.'.repeat(13))
  })

  it('without a limit: no bar, no percentage', () => {
    expect(statusLine({ ...parts, snapshot: snapshot({ limit: Number.POSITIVE_INFINITY }), thresholds: [] }, 100)).toMatch(/^52\.5 MiB \/ no limit  above/)
  })

  it('other lines break at spaces into rows that fit, continuation rows indented; long words shortened in the middle', () => {
    const text = `+1.234s threshold up 50.0 MiB (50.0%) usage 52.5 MiB ws 50.3 MiB via eventfd ${'/sys/fs/cgroup/memory/'.repeat(5)}x`
    for (let width = 20; width <= 140; width++) {
      const rows = fitRows(text, width)
      for (const row of rows) expect(row.length).toBeLessThanOrEqual(width)
      for (const row of rows.slice(1)) expect(row.startsWith('    ')).toBe(true)
    }
    expect(fitRows('short line', 79)).toEqual(['short line'])
    const rows = fitRows(`watching ${'/a'.repeat(60)} with cgroup-v1 (kernel)`, 79)
    expect(rows[0]).toMatch(/^watching \/a\/a.*….*\/a$/)
    expect(rows.join(' ')).toMatch(/with cgroup-v1 \(kernel\)$/)
  })
})
