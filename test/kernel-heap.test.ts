// V8's heap limit on a real cgroup v1: a cache of JavaScript objects in a process started with a
// small heap, inside a much larger cgroup, dies of heap exhaustion without the SDK (the cgroup's
// levels never rise) and survives with the monitor and the lru-cache plugin, whose shrink reports
// name the heap.

import { fileURLToPath } from 'node:url'
import { describe, expect } from 'vitest'
import type { LimitKind, ShrinkPlan } from '../src/policy/shrinker.js'
import { spawnInCgroup } from './helpers/cgroup.js'
import { oomKills, v1Suite } from './helpers/v1-suite.js'

const MiB = 2 ** 20
const heapChild = fileURLToPath(new URL('./helpers/heap-child.mjs', import.meta.url))
const distPlugin = fileURLToPath(new URL('../dist/plugins/lru-cache.js', import.meta.url))
const { own, test, suffix, cgroup } = v1Suite(distPlugin)




interface Report {
  limit: LimitKind
  level: string
  levelAfter: string
  requestedBytes: number
  heapBefore: { liveBytes: number; limitBytes: number } | null
  heapAfter: { liveBytes: number; limitBytes: number } | null
  plan: ShrinkPlan
  shrinkers: Array<{ name: string; requestedBytes: number; reported: number | null }>
}

describe('the heap limit on a real cgroup v1', () => {
  test(`a JavaScript-object cache with a 64 MiB heap in a 512 MiB cgroup: heap exhaustion without the SDK, survival with it${suffix}`, async () => {
    if (!('dir' in own)) return
    const limit = 512 * MiB
    const env = { NODE_OPTIONS: '--max-old-space-size=64' }
    const fill = 'fill 150000' // about 150 MiB of objects into a 64 MiB old generation

    const bare = cgroup(own.dir, limit)
    const unprotected = await spawnInCgroup(bare, heapChild, [], env)
    const outcome = await Promise.race([unprotected.send(fill).then(() => 'filled'), unprotected.exited.then(() => 'exited')])
    expect(outcome).toBe('exited')
    // V8's fatal out-of-memory aborts the process; the cgroup had memory to spare
    expect(await unprotected.exited).toEqual({ code: null, signal: 'SIGABRT' })
    expect(unprotected.stderr()).toContain('JavaScript heap out of memory')
    expect(oomKills(bare)).toBe(0)

    const cg = cgroup(own.dir, limit)
    const child = await spawnInCgroup(cg, heapChild, ['--plugin'], env)
    const filled = await Promise.race([child.send(fill), child.exited.then((e) => ({ exited: e, stderr: child.stderr().slice(0, 500) }))])
    expect(filled).toHaveProperty('held')
    const lines = child.output.items
    expect(lines.filter((l) => l.startsWith('error'))).toEqual([])
    const reports = lines.filter((l) => l.startsWith('shrink ')).map((l) => JSON.parse(l.slice(7)) as Report)
    expect(reports.length).toBeGreaterThanOrEqual(1)
    // Every cycle was the heap's: the cgroup's basis never came near its own levels.
    expect(reports.every((r) => r.limit === 'heap')).toBe(true)
    for (const r of reports) {
      expect(r.heapBefore?.limitBytes).toBe(64 * MiB)
      expect(r.plan.cgroup?.excess).toBe(0)
      // what was asked is what the heap exceeded its target by (the rule of docs/how-it-works.md)
      expect(r.requestedBytes).toBe(r.plan.heap?.excess)
    }
    // the cache was asked, in heap bytes, and a later reading of the live size (V8's own major
    // collections measure it: a cycle of the heap alone forces none after its shrinkers) was lower
    expect(reports.some((r) => r.shrinkers[0]?.name === 'lru-cache' && (r.shrinkers[0]?.reported ?? 0) > 0)).toBe(true)
    const firstShrink = lines.findIndex((l) => l.startsWith('shrink '))
    // the child is idle now: if V8 has not collected since, the next cycle (after the cool-down)
    // finds the reading stale and collects
    await child.output.until((items) => items.slice(firstShrink + 1).some((l) => l.startsWith('shrink ') || l.startsWith('pressure ')), 20_000)
    const laterLive = lines.slice(firstShrink + 1).flatMap((l) => {
      if (l.startsWith('shrink ')) return [(JSON.parse(l.slice(7)) as Report).heapBefore?.liveBytes ?? Infinity]
      if (l.startsWith('pressure ')) return [(JSON.parse(l.slice(9)) as { heap: { liveBytes: number } | null }).heap?.liveBytes ?? Infinity]
      return []
    })
    expect(Math.min(...laterLive)).toBeLessThan(reports[0]?.heapBefore?.liveBytes ?? 0)
    child.proc.stdin.write('exit\n')
    expect(await child.exited).toEqual({ code: 0, signal: null })
    expect(oomKills(cg)).toBe(0)
  }, 120_000)
})
