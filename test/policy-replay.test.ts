// Shrink reports recorded from real runs, replayed through the rule docs/how-it-works.md states:
// levels and hysteresis from the documented defaults, the level the collection left, each limit's
// target and excess, the garbage floor, and what each shrinker is asked. The rule is written out
// here again on purpose, from the document and not from src/, so that the engine and the document
// cannot drift apart unnoticed.

import fs from 'node:fs'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import type { LimitPlan, ShrinkReport } from '../src/policy/shrinker.js'

const MiB = 2 ** 20
type Level = 'normal' | 'moderate' | 'high' | 'critical'
const LEVELS: Level[] = ['normal', 'moderate', 'high', 'critical']
const rank = (l: Level): number => LEVELS.indexOf(l)

type Recorded = Omit<ShrinkReport, 'before' | 'after' | 'heap'> & { limitBytes: number }
const fixture = JSON.parse(fs.readFileSync(fileURLToPath(new URL('./fixtures/shrink-reports.json', import.meta.url)), 'utf8')) as {
  runs: Array<{ name: string; reports: Recorded[] }>
}

/** The documented default levels of a limit: [0, moderate, high, critical] and the hysteresis. */
function defaults(limit: number, kind: 'cgroup' | 'heap'): { E: number[]; H: number } {
  const pct = (p: number) => Math.floor(limit * p)
  let moderate = pct(0.7)
  let high = pct(0.85)
  if (kind === 'cgroup') {
    // above a 320 MiB cgroup limit, moderate and high keep 96 and 48 MiB, at most 80% and 90%
    moderate = Math.max(moderate, Math.floor(Math.min(limit * 0.8, limit - 96 * MiB)))
    high = Math.max(high, Math.floor(Math.min(limit * 0.9, limit - 48 * MiB)))
  }
  return { E: [0, moderate, high, pct(0.95)], H: Math.min(pct(0.05), 10 * MiB) }
}

/** The level a basis is at, coming from `from`: up at a threshold, down at or below threshold − H. */
function levelOf(E: number[], H: number, basis: number, from: Level): Level {
  let r = rank(from)
  const start = r
  while (r < 3 && basis >= (E[r + 1] ?? Infinity)) r++
  if (r === start) while (r > 0 && basis <= (E[r] ?? 0) - H) r--
  return LEVELS[r] ?? 'normal'
}

const excessAt = (E: number[], H: number, measured: number, level: Level): number =>
  rank(level) === 0 ? 0 : Math.max(0, Math.ceil(measured - ((E[rank(level)] ?? 0) - H)))

describe.each(fixture.runs)('recorded reports: $name', ({ reports }) => {
  it.each(reports.map((r) => [r.cycle, r] as const))('cycle %i: the documented rule gives the request the engine made', (_, report) => {
    const { plan } = report
    expect(report.updates).toBe(0) // a notification during the cycle would have raised the request
    const sides: Array<{ kind: 'cgroup' | 'heap'; side: LimitPlan; E: number[]; H: number }> = []
    for (const kind of ['cgroup', 'heap'] as const) {
      const side = plan[kind]
      if (side === null) continue
      const { E, H } = defaults(side.limit, kind)
      sides.push({ kind, side, E, H })
      expect(side.hysteresis).toBe(H)
    }
    // 1. the level the collection left: each limit's, from the cycle's level, the higher of the two
    let left: Level = 'normal'
    for (const { side, E, H } of sides) {
      const l = levelOf(E, H, side.measured, report.level)
      if (rank(l) > rank(left)) left = l
    }
    // 3. the request at that level, then the floor (cgroup only)
    let Q = Math.max(0, ...sides.map(({ side, E, H }) => excessAt(E, H, side.measured, left)))
    let level = left
    if (plan.floor !== null) {
      const c = sides.find((s) => s.kind === 'cgroup')
      expect(c).toBeDefined()
      if (c === undefined) return
      const room = Math.ceil(c.side.measured - (c.side.limit - 80 * MiB))
      const floor = plan.floor.rule === 'back-to-back' ? Math.max(Math.ceil(c.H / 2), room) : room
      if (plan.floor.rule === 'buffers-at-moderate') {
        expect(report.level).toBe('moderate')
        expect(plan.floor.externalBytes).toBeGreaterThanOrEqual(floor)
      }
      expect(floor).toBeGreaterThan(Q)
      expect(plan.floor.bytes).toBe(floor)
      Q = floor
      const at: Level = plan.floor.rule === 'back-to-back' ? 'moderate' : 'high'
      if (rank(level) < rank(at)) level = at
    }
    expect(plan.level).toBe(level)
    expect(plan.requestedBytes).toBe(Q)
    expect(report.requestedBytes).toBe(Q)
    // 2. each side's target and reserve at the level asked
    for (const { side, E, H } of sides) {
      const T = rank(level) === 0 ? null : (E[rank(level)] ?? 0) - H
      expect(side.target).toBe(T)
      expect(side.reserve).toBe(T === null ? null : side.limit - T)
      expect(side.excess).toBe(excessAt(E, H, side.measured, level))
    }
    // the limit named: the larger excess
    const c = plan.cgroup?.excess ?? 0
    const h = plan.heap?.excess ?? 0
    if (c !== h) expect(report.limit).toBe(h > c ? 'heap' : 'cgroup')
    // 4. who is asked: Q less what the shrinkers before reported, until it is covered
    let reported = 0
    for (const s of report.shrinkers) {
      expect(rank(level) === 3 || reported < Q).toBe(true)
      expect(s.requestedBytes).toBe(Math.max(0, Q - reported))
      if (s.size !== null && s.size > 0) expect(s.fraction).toBeCloseTo(Math.min(1, s.requestedBytes / s.size), 12)
      reported += s.reported ?? 0
    }
    if (rank(level) > 0 && rank(level) < 3 && Q > 0) expect(report.shrinkers.length).toBeGreaterThan(0)
  })
})

describe('the fixture', () => {
  it('has reports of both limits and of the floor', () => {
    const all = fixture.runs.flatMap((r) => r.reports)
    expect(all.some((r) => r.limit === 'heap' && r.plan.requestedBytes > 0)).toBe(true)
    expect(all.some((r) => r.limit === 'cgroup' && r.plan.floor === null && r.plan.requestedBytes > 0)).toBe(true)
    expect(all.some((r) => r.plan.floor !== null)).toBe(true)
  })
})
