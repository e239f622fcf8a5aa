// The short soak (bench/soak.mjs for 40 s): a child's memory oscillating across two thresholds and
// the level points in a limited v1 cgroup; every crossing in order, no storms, the watcher flat.

import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { ownV1MemoryCgroup } from '../helpers/cgroup.js'

const script = fileURLToPath(new URL('../../bench/soak.mjs', import.meta.url))
const built = fs.existsSync(fileURLToPath(new URL('../../dist/index.js', import.meta.url)))
const own = ownV1MemoryCgroup()
const ready = built && 'dir' in own
const MiB = 2 ** 20

interface SoakResult {
  cycles: number
  crossings: number
  outOfOrder: number
  extraCrossings: number
  pressureEvents: number
  reliefEvents: number
  maxPressurePerCycle: number
  errors: string[]
  oomKills: number
  growth: { fds: number; resources: number; heapUsed: number }
}

describe.skipIf(!ready)(`soak, 40 s${ready ? '' : ` (skipped: ${built ? (own as { reason: string }).reason : 'dist/ not built'})`}`, () => {
  it('delivers every crossing in order, levels change at most 4 times a cycle, and the watcher stays flat', () => {
    const out = execFileSync(process.execPath, [script, '--duration-s', '40', '--sample-every', '10', '--json'], { encoding: 'utf8', maxBuffer: 16 * MiB, stdio: ['ignore', 'pipe', 'ignore'] })
    const r = JSON.parse(out) as SoakResult
    expect(r.cycles).toBeGreaterThanOrEqual(10)
    // Two thresholds, each crossed up and down once a cycle; a direction never repeats.
    expect(r.outOfOrder).toBe(0)
    expect(r.crossings).toBeGreaterThanOrEqual(4 * r.cycles - 2)
    expect(r.crossings).toBeLessThanOrEqual(4 * r.cycles + 4 * r.extraCrossings)
    // Up through moderate and high, back down through the exits: no flapping at a level point.
    expect(r.maxPressurePerCycle).toBeLessThanOrEqual(4)
    expect(r.reliefEvents).toBeGreaterThanOrEqual(r.cycles - 1)
    expect(r.reliefEvents).toBeLessThanOrEqual(r.cycles)
    expect(r.errors).toEqual([])
    expect(r.oomKills).toBe(0)
    // The level engine holds one to three kernel watches (eventfds) depending on the level and page cache
    // when a sample is taken; a leak over ~50 cycles would be far more than that.
    expect(Math.abs(r.growth.fds)).toBeLessThanOrEqual(2)
    expect(Math.abs(r.growth.resources)).toBeLessThanOrEqual(2)
    expect(r.growth.heapUsed).toBeLessThan(2 * MiB)
  }, 180_000)
})
