// The lru-cache shrinker against lru-cache 11 and 10 (both installed as dev dependencies): keep
// shares by level, byte-aware eviction, minEntries, stale first, dispose, and inside a monitor.

import { LRUCache as LRUCache10 } from 'lru-cache-10'
import { LRUCache as LRUCache11 } from 'lru-cache'
import { describe, expect, it } from 'vitest'
import { SimulatedBackend } from '../src/backends/simulated.js'
import { createMemoryMonitor } from '../src/monitor.js'
import { ManualClock } from '../src/policy/clock.js'
import type { PressureLevel } from '../src/policy/levels.js'
import type { ShrinkReport, ShrinkRequest } from '../src/policy/shrinker.js'
import { type LruCacheLike, lruCacheShrinker, withHoldHook } from '../src/plugins/lru-cache.js'
import { Collector } from './helpers/collect.js'

const MiB = 2 ** 20

interface CacheOptions {
  max: number
  maxSize?: number
  sizeCalculation?: (v: string) => number
  dispose?: (v: string, k: number, reason: string) => void
  fetchMethod?: (k: number) => Promise<string>
  memoMethod?: (k: number) => string
}
type Cache = LruCacheLike & {
  set(k: number, v: string): unknown
  get(k: number): string | undefined
  has(k: number): boolean
  keys(): IterableIterator<number>
  fetch(k: number): Promise<string | undefined>
  memo(k: number): string
}
type Make = (o: CacheOptions) => Cache

// How the shrinker holds each: lru-cache 11.1+ built with withHoldHook through its onInsert hook;
// any other cache by wrapping its methods.
type HoldBy = 'onInsert' | 'wrapper'
const versions: Array<[string, Make, HoldBy]> = [
  ['lru-cache 11 built with withHoldHook', (o) => new LRUCache11<number, string>(withHoldHook(o)) as unknown as Cache, 'onInsert'],
  ['lru-cache 11', (o) => new LRUCache11<number, string>(o) as unknown as Cache, 'wrapper'],
  ['lru-cache 10', (o) => new LRUCache10<number, string>(o) as unknown as Cache, 'wrapper'],
]

const sorted = (cache: Cache): number[] => [...cache.keys()].sort((a, b) => a - b)
const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_, i) => from + i)

function request(level: PressureLevel, targetBytes = 0): ShrinkRequest {
  return { level, limit: 'cgroup', targetBytes, fraction: 0, signal: new AbortController().signal, cycle: 1 }
}

describe.each(versions)('lruCacheShrinker with %s', (_, make) => {
  it('keeps 75% / 50% / 10% of the entries by level, evicting the least recently used, with dispose', () => {
    const disposed: Array<[number, string]> = []
    const cache = make({ max: 1000, dispose: (_v, k, reason) => disposed.push([k, reason]) })
    for (let i = 0; i < 100; i++) cache.set(i, `v${i}`)
    const shrinker = lruCacheShrinker(cache)
    expect(shrinker.mode).toBe('entries')
    expect(shrinker.size?.()).toBeUndefined()
    expect(shrinker.shrink(request('moderate', 10 * MiB))).toBeUndefined()
    expect(cache.size).toBe(75)
    expect(cache.has(24)).toBe(false)
    expect(cache.has(25)).toBe(true)
    expect(disposed.slice(0, 3)).toEqual([[0, 'evict'], [1, 'evict'], [2, 'evict']])
    shrinker.shrink(request('high'))
    expect(cache.size).toBe(38)
    shrinker.shrink(request('critical'))
    expect(cache.size).toBe(4)
    expect([...cache.keys()].sort((a, b) => a - b)).toEqual([96, 97, 98, 99])
    expect(shrinker.stats).toEqual({ runs: 3, evicted: 96, stale: 0, reportedBytes: 0, capped: 0 })
    expect(disposed.length).toBe(96)
  })

  it('is byte-aware with sizes: frees the target, but keeps the level share', () => {
    const cache = make({ max: 1000, maxSize: 10_000, sizeCalculation: (v) => v.length })
    for (let i = 0; i < 100; i++) cache.set(i, 'x'.repeat(10)) // 1000 bytes
    const shrinker = lruCacheShrinker(cache, { name: 'strings', priority: 3 })
    expect(shrinker).toMatchObject({ name: 'strings', priority: 3, mode: 'bytes' })
    expect(shrinker.size?.()).toBe(1000)
    expect(shrinker.shrink(request('moderate', 100))).toBe(100)
    expect(cache.calculatedSize).toBe(900)
    expect(shrinker.shrink(request('moderate', 800))).toBe(230) // to 75% of 900 = 675, in 10-byte entries
    expect(cache.calculatedSize).toBe(670)
    expect(shrinker.shrink(request('critical', 0))).toBe(610) // critical: straight to 10%
    expect(cache.calculatedSize).toBe(60)
    expect(shrinker.stats).toMatchObject({ runs: 3, evicted: 94, reportedBytes: 940 })
  })

  it('converts size units to bytes and estimates bytes per entry when asked to', () => {
    const sized = make({ max: 100, maxSize: 1000, sizeCalculation: () => 1 })
    for (let i = 0; i < 40; i++) sized.set(i, 'v')
    expect(lruCacheShrinker(sized, { sizeUnitBytes: 4096 }).shrink(request('high', 8192))).toBe(8192)
    expect(sized.size).toBe(38)
    const counted = make({ max: 100 })
    for (let i = 0; i < 40; i++) counted.set(i, 'v')
    const s = lruCacheShrinker(counted, { bytesPerEntry: 1000 })
    expect(s.size?.()).toBe(40_000)
    expect(s.shrink(request('high'))).toBe(20_000)
  })

  it('never goes below minEntries', () => {
    const cache = make({ max: 100 })
    for (let i = 0; i < 50; i++) cache.set(i, 'v')
    lruCacheShrinker(cache, { minEntries: 30 }).shrink(request('critical'))
    expect(cache.size).toBe(30)
    const sized = make({ max: 100, maxSize: 1000, sizeCalculation: () => 10 })
    for (let i = 0; i < 50; i++) sized.set(i, 'v')
    lruCacheShrinker(sized, { minEntries: 40 }).shrink(request('critical'))
    expect(sized.size).toBe(40)
  })

  it('inside a monitor: the cycle asks it, its reported bytes and the measured bytes appear in the report', async () => {
    const sim = new SimulatedBackend({ limit: 100 * MiB, usage: 10 * MiB })
    const cache = make({ max: 1000, maxSize: 1000 * MiB, sizeCalculation: () => MiB, dispose: () => sim.free(MiB) })
    for (let i = 0; i < 60; i++) {
      cache.set(i, 'v')
      sim.allocate(MiB)
    }
    const monitor = createMemoryMonitor({ backend: sim, levels: true, clock: new ManualClock(), reduceHeap: { gc: 'none', mallocTrim: false } })
    const reports = new Collector<ShrinkReport>()
    monitor.on('shrink', reports.push)
    monitor.register(lruCacheShrinker(cache))
    for (let i = 60; i < 80; i++) {
      cache.set(i, 'v')
      sim.allocate(MiB) // working set 90 MiB at the end: high, free 90 − 80 = 10 MiB
    }
    const [report] = await reports.count(1)
    expect(report?.shrinkers[0]).toMatchObject({ name: 'lru-cache', reported: report?.freedBytes })
    expect(report?.freedBytes).toBeGreaterThanOrEqual(report?.requestedBytes ?? Infinity)
    expect(report?.levelAfter).not.toBe(report?.level)
    await monitor.close()
  })

  it('rejects what is not an lru-cache and options out of range', () => {
    const cache = make({ max: 10 })
    expect(() => lruCacheShrinker(new Map() as never)).toThrow(TypeError)
    expect(() => lruCacheShrinker(null as never)).toThrow(TypeError)
    expect(() => lruCacheShrinker(cache, { keep: { moderate: 1.5 } })).toThrow(RangeError)
    expect(() => lruCacheShrinker(cache, { minEntries: -1 })).toThrow(RangeError)
    expect(() => lruCacheShrinker(cache, { minEntries: 1.5 })).toThrow(RangeError)
    expect(() => lruCacheShrinker(cache, { sizeUnitBytes: 0 })).toThrow(RangeError)
    expect(() => lruCacheShrinker(cache, { name: '' })).toThrow(TypeError)
    expect(() => lruCacheShrinker(cache, { priority: Number.NaN })).toThrow(TypeError)
  })
})

describe.each(versions)('lruCacheShrinker hold with %s', (label, make, holdBy) => {
  /** An entries-mode cache of keys 0..n-1 (0 least recently used) and a shrinker on a hand-moved time. */
  function filled(n: number, options: Parameters<typeof lruCacheShrinker>[1] = {}, cacheOptions: Partial<CacheOptions> = {}) {
    const cache = make({ max: 1000, ...cacheOptions })
    for (let i = 0; i < n; i++) cache.set(i, `v${i}`)
    const time = { t: 1000 }
    const shrinker = lruCacheShrinker(cache, { now: () => time.t, ...options })
    return { cache, shrinker, time }
  }

  it('after a shrink, set() evicts the least recently used entries to stay at the post-shrink size', () => {
    const { cache, shrinker } = filled(100)
    expect(shrinker.cap).toBeNull()
    shrinker.shrink(request('moderate'))
    expect(cache.size).toBe(75)
    expect(shrinker.cap).toBe(75)
    cache.get(25) // the oldest entry becomes the most recently used
    for (let i = 100; i < 110; i++) cache.set(i, `v${i}`)
    expect(cache.size).toBe(75)
    expect(sorted(cache)).toEqual([25, ...range(36, 110)])
    expect(shrinker.stats).toMatchObject({ runs: 1, evicted: 25, capped: 10 })
    // overwriting a key adds nothing and evicts nothing
    cache.set(50, 'again')
    expect(cache.size).toBe(75)
    expect(shrinker.stats.capped).toBe(10)
    // a later shrink sets a lower cap
    shrinker.shrink(request('high'))
    expect(shrinker.cap).toBe(38)
    cache.set(200, 'v')
    expect(cache.size).toBe(38)
    expect(cache.has(200)).toBe(true)
  })

  it('without a shrink there is no cap: the wrapped set() changes nothing', () => {
    const { cache, shrinker } = filled(10, {}, { max: 20 })
    for (let i = 10; i < 30; i++) cache.set(i, 'v')
    expect(cache.size).toBe(20) // the cache's own max, nothing more
    expect(shrinker.stats.capped).toBe(0)
    expect(shrinker.cap).toBeNull()
  })

  // The cap grows only inside a set()/fetch()/memo() that leaves the cache above it ("presses"
  // it), while the level is normal: cap × (1 + regrowth × dt / 1000), dt = min(now − the last
  // growth or the relief, 1000) ms; then the least recently used entries go down to the cap.
  const grown = (cap: number, regrowth: number, dt: number): number => cap * (1 + (regrowth * Math.min(dt, 1000)) / 1000)

  it('after relief the cap rises by regrowth per second each time the cache presses it; a level above normal stops it', () => {
    const { cache, shrinker, time } = filled(100)
    shrinker.shrink(request('moderate')) // cap 75 entries
    time.t = 5000
    cache.set(100, 'v') // pressing before relief: no growth, however long since the shrink
    expect(shrinker.cap).toBe(75)
    expect(cache.size).toBe(75)
    expect(shrinker.stats.capped).toBe(1)
    shrinker.levelChanged?.('normal', 'moderate') // relief at t = 5000
    expect(shrinker.cap).toBe(75) // relief alone grows nothing
    // a steady fill, one new key every 100 ms for 2 s: each set presses the cap, which grows by
    // 0.05 × 0.1 of itself, and the cache follows it
    let next = 101
    let cap = 75
    for (let step = 1; step <= 20; step++) {
      time.t = 5000 + step * 100
      cache.set(next++, 'v')
      cap = grown(cap, 0.05, 100)
      expect(shrinker.cap).toBe(Math.floor(cap))
      expect(cache.size).toBe(Math.floor(cap))
    }
    expect(cap).toBeCloseTo(75 * 1.005 ** 20, 9) // 82.87: compounded per press
    expect(cache.size).toBe(82)
    expect(shrinker.stats.capped).toBe(1 + 20 - (82 - 75))
    // reading the cap is not growing it, nor is time alone
    time.t = 9000
    expect(shrinker.cap).toBe(Math.floor(cap))
    // pressure again: the cap stays where it grew to, and sets keep to it
    shrinker.levelChanged?.('moderate', 'normal')
    for (let i = 0; i < 10; i++) {
      time.t += 1000
      cache.set(next++, 'v')
    }
    expect(shrinker.cap).toBe(Math.floor(cap))
    expect(cache.size).toBe(82)
    // relief again at t = 60 000 restarts the clock of growth: a press 200 ms later grows by 1%
    // (not by the full second since the last growth)
    time.t = 60_000
    shrinker.levelChanged?.('normal', 'moderate')
    time.t = 60_200
    cache.set(next++, 'v')
    expect(shrinker.cap).toBe(Math.floor(grown(cap, 0.05, 200)))
    expect(shrinker.cap).toBe(Math.floor(cap * 1.01))
  })

  it('a faster regrowth option is applied; a burst at one instant grows the cap once', () => {
    const { cache, shrinker, time } = filled(100, { regrowth: 0.5 })
    shrinker.shrink(request('high')) // cap 50
    shrinker.levelChanged?.('normal', 'high') // relief at t = 1000
    time.t = 1600
    cache.set(100, 'v') // presses: 50 × (1 + 0.5 × 0.6)
    const first = grown(50, 0.5, 600)
    expect(first).toBeCloseTo(65, 9)
    expect(shrinker.cap).toBe(first)
    expect(cache.size).toBe(51)
    time.t = 2000
    for (let i = 101; i < 131; i++) cache.set(i, 'v') // the 15th presses (dt 400 ms), the rest at dt 0
    const second = grown(first, 0.5, 400)
    expect(second).toBeCloseTo(78, 9)
    expect(shrinker.cap).toBe(second)
    expect(cache.size).toBe(Math.floor(second))
    expect(shrinker.stats.capped).toBe(51 + 30 - Math.floor(second))
  })

  it('an idle period counts for at most one second of growth; a cache below its cap does not grow it', () => {
    const { cache, shrinker, time } = filled(100)
    shrinker.shrink(request('moderate')) // cap 75
    shrinker.levelChanged?.('normal', 'moderate') // relief at t = 1000
    for (let i = 0; i < 30; i++) cache.pop() // the application's own use: 45 entries
    time.t = 2000
    for (let i = 100; i < 120; i++) cache.set(i, 'v') // 65 entries, below the cap
    expect(cache.size).toBe(65)
    expect(shrinker.cap).toBe(75)
    expect(shrinker.stats.capped).toBe(0)
    // 10 s later (11 s after relief), a burst of 40 new keys: only one second of growth
    time.t = 12_000
    for (let i = 120; i < 160; i++) cache.set(i, 'v')
    const cap = grown(75, 0.05, 1000)
    expect(cap).toBeCloseTo(78.75, 9)
    expect(shrinker.cap).toBe(Math.floor(cap))
    expect(cache.size).toBe(78)
    expect(sorted(cache)).toEqual(range(160 - 78, 160))
    expect(shrinker.stats.capped).toBe(65 + 40 - 78)
    // the next press counts from the last growth: 500 ms
    time.t = 12_500
    cache.set(160, 'v')
    expect(shrinker.cap).toBe(Math.floor(grown(cap, 0.05, 500)))
    expect(cache.size).toBe(79)
  })

  it('regrowth: Infinity lifts the cap at relief, and the next shrink sets it again', () => {
    const { cache, shrinker } = filled(100, { regrowth: Infinity })
    shrinker.shrink(request('moderate'))
    expect(shrinker.cap).toBe(75)
    cache.set(100, 'v')
    expect(cache.size).toBe(75)
    shrinker.levelChanged?.('normal', 'moderate')
    expect(shrinker.cap).toBeNull()
    for (let i = 101; i < 131; i++) cache.set(i, 'v')
    expect(cache.size).toBe(105)
    expect(shrinker.stats.capped).toBe(1)
    shrinker.levelChanged?.('high', 'normal')
    shrinker.shrink(request('high'))
    expect(shrinker.cap).toBe(53)
    cache.set(200, 'v')
    expect(cache.size).toBe(53)
  })

  it('a shrink asked after the level is already back to normal (late in a cycle) still lets the cap grow', () => {
    let t = 0
    const { cache, shrinker } = filled(100, { now: () => t })
    shrinker.levelChanged?.('moderate', 'normal')
    shrinker.levelChanged?.('normal', 'moderate') // relief while the cycle still runs
    shrinker.shrink(request('moderate')) // cap 75, and growing from now
    expect(shrinker.cap).toBe(75)
    t = 1000
    for (let i = 100; i < 110; i++) cache.set(i, 'v')
    // without the fix the cap stayed at 75 until the next pressure and relief
    expect(shrinker.cap).toBe(Math.floor(78.75))
    expect(cache.size).toBe(78)
  })

  it('is byte-aware in bytes mode: the cap is in calculatedSize units', () => {
    const cache = make({ max: 1000, maxSize: 10_000, sizeCalculation: (v) => v.length })
    for (let i = 0; i < 100; i++) cache.set(i, 'x'.repeat(10)) // 1000 units
    const shrinker = lruCacheShrinker(cache, { now: () => 0 })
    expect(shrinker.shrink(request('high', 300))).toBe(300)
    expect(shrinker.mode).toBe('bytes')
    expect(shrinker.cap).toBe(700)
    for (let i = 100; i < 105; i++) cache.set(i, 'x'.repeat(10))
    expect(cache.calculatedSize).toBe(700)
    expect(sorted(cache)).toEqual(range(35, 105))
    cache.set(105, 'x'.repeat(50)) // five entries make room for one five times larger
    expect(cache.calculatedSize).toBe(700)
    expect(sorted(cache)).toEqual(range(40, 106))
    expect(shrinker.stats.capped).toBe(10)
  })

  it('never evicts below max(1, minEntries) to hold the cap', () => {
    const sized = make({ max: 100, maxSize: 10_000, sizeCalculation: (v) => v.length })
    for (let i = 0; i < 20; i++) sized.set(i, 'x'.repeat(10))
    const held = lruCacheShrinker(sized, { minEntries: 3, now: () => 0 })
    held.shrink(request('critical')) // 10% of 200 units: 2 entries, but minEntries 3
    expect(sized.size).toBe(3)
    expect(held.cap).toBe(30)
    sized.set(100, 'x'.repeat(500)) // over the cap on its own
    expect(sized.size).toBe(3)
    expect(sized.has(100)).toBe(true)
    expect(sized.calculatedSize).toBe(520)
    const alone = make({ max: 100, maxSize: 10_000, sizeCalculation: (v) => v.length })
    for (let i = 0; i < 20; i++) alone.set(i, 'x'.repeat(10))
    const shrinker = lruCacheShrinker(alone, { now: () => 0 })
    shrinker.shrink(request('critical')) // 2 entries
    alone.set(100, 'x'.repeat(500))
    expect(sorted(alone)).toEqual([100]) // the new entry stays, even above the cap
  })

  it('entries mode respects minEntries too', () => {
    const { cache, shrinker } = filled(10, { minEntries: 5 })
    shrinker.shrink(request('critical'))
    expect(shrinker.cap).toBe(5)
    for (let i = 10; i < 20; i++) cache.set(i, 'v')
    expect(sorted(cache)).toEqual(range(15, 20))
  })

  // lru-cache 11 stores fetch() and memo() results through its private #set, not `this.set`: its
  // onInsert hook sees them; without the hook the shrinker wraps memo() and fetch() too, and holds
  // a fetched value at the next call (test/lru-cache-hold.test.ts).
  it.skipIf(label === 'lru-cache 11')('fetch() goes through the cap too, and presses it like set() (not on lru-cache 11 without the hook)', async () => {
    const { cache, shrinker, time } = filled(20, { regrowth: 0.5 }, { fetchMethod: async (k) => `fetched ${k}` })
    expect(shrinker.holdBy).toBe(holdBy)
    expect(Object.hasOwn(cache, 'fetch')).toBe(holdBy === 'wrapper')
    shrinker.shrink(request('high')) // cap 10
    for (let i = 100; i < 105; i++) expect(await cache.fetch(i)).toBe(`fetched ${i}`)
    expect(cache.size).toBe(10)
    expect(sorted(cache)).toEqual([...range(15, 20), ...range(100, 105)])
    expect(shrinker.stats.capped).toBe(5)
    expect(await cache.fetch(15)).toBe('v15') // a hit adds nothing, evicts nothing
    expect(shrinker.stats.capped).toBe(5)
    shrinker.levelChanged?.('normal', 'high') // relief at t = 1000
    time.t = 1200
    expect(await cache.fetch(105)).toBe('fetched 105') // presses: 10 × (1 + 0.5 × 0.2) = 11
    expect(shrinker.cap).toBe(Math.floor(grown(10, 0.5, 200)))
    expect(cache.size).toBe(11)
    expect(await cache.fetch(106)).toBe('fetched 106') // same instant: no growth, 16 goes
    expect(cache.size).toBe(11)
    expect(sorted(cache)).toEqual([15, ...range(17, 20), ...range(100, 107)])
    expect(shrinker.stats.capped).toBe(6)
  })

  it('memo() goes through the cap too, and presses it like set()', () => {
    const { cache, shrinker, time } = filled(20, { regrowth: 0.5 }, { memoMethod: (k) => `memo ${k}` })
    expect(typeof cache.memo).toBe('function') // lru-cache 10.4 has memo() as well
    expect(Object.hasOwn(cache, 'memo')).toBe(holdBy === 'wrapper')
    shrinker.shrink(request('high')) // cap 10
    for (let i = 100; i < 105; i++) expect(cache.memo(i)).toBe(`memo ${i}`)
    expect(cache.size).toBe(10)
    expect(sorted(cache)).toEqual([...range(15, 20), ...range(100, 105)])
    expect(shrinker.stats.capped).toBe(5)
    expect(cache.memo(15)).toBe('v15') // a hit: nothing added, 15 becomes the most recently used
    expect(shrinker.stats.capped).toBe(5)
    shrinker.levelChanged?.('normal', 'high') // relief at t = 1000
    time.t = 1200
    expect(cache.memo(105)).toBe('memo 105') // presses: cap 11
    expect(shrinker.cap).toBe(Math.floor(grown(10, 0.5, 200)))
    expect(cache.size).toBe(11)
    cache.memo(106) // same instant: no growth, 16 goes (15 was used)
    expect(cache.size).toBe(11)
    expect(sorted(cache)).toEqual([15, ...range(17, 20), ...range(100, 107)])
    expect(shrinker.stats.capped).toBe(6)
  })

  it('detach() gives the cache its own set back and removes the cap; idempotent', () => {
    const { cache, shrinker } = filled(100)
    const own = Object.getPrototypeOf(cache).set
    expect(Object.hasOwn(cache, 'set')).toBe(holdBy === 'wrapper')
    expect(cache.set === own).toBe(holdBy === 'onInsert')
    shrinker.shrink(request('high'))
    expect(shrinker.cap).toBe(50)
    shrinker.detach()
    expect(shrinker.holdBy).toBeNull()
    expect(Object.hasOwn(cache, 'set')).toBe(false)
    expect(cache.set).toBe(own)
    expect(shrinker.cap).toBeNull()
    for (let i = 100; i < 130; i++) cache.set(i, 'v')
    expect(cache.size).toBe(80)
    shrinker.detach()
    expect(cache.set).toBe(own)
    // shrinking still works, and sets no cap any more
    shrinker.shrink(request('high'))
    expect(cache.size).toBe(40)
    expect(shrinker.cap).toBeNull()
    shrinker.levelChanged?.('normal', 'high')
    cache.set(1000, 'v')
    expect(cache.size).toBe(41)
    expect(shrinker.stats.capped).toBe(0)
  })

  it.skipIf(holdBy === 'onInsert')('detach() gives the cache its own fetch and memo back too (wrapper only)', async () => {
    const { cache, shrinker } = filled(20, {}, { fetchMethod: async (k) => `fetched ${k}`, memoMethod: (k) => `memo ${k}` })
    const proto = Object.getPrototypeOf(cache)
    for (const name of ['set', 'fetch', 'memo'] as const) {
      expect(Object.hasOwn(cache, name)).toBe(true)
      expect(cache[name]).not.toBe(proto[name])
    }
    shrinker.shrink(request('high')) // cap 10
    expect(await cache.fetch(100)).toBe('fetched 100')
    expect(cache.memo(101)).toBe('memo 101')
    expect(cache.size).toBe(10)
    expect(shrinker.stats.capped).toBe(2)
    shrinker.detach()
    for (const name of ['set', 'fetch', 'memo'] as const) {
      expect(Object.hasOwn(cache, name)).toBe(false)
      expect(cache[name]).toBe(proto[name])
    }
    for (let i = 102; i < 107; i++) expect(await cache.fetch(i)).toBe(`fetched ${i}`)
    for (let i = 107; i < 112; i++) expect(cache.memo(i)).toBe(`memo ${i}`)
    expect(cache.size).toBe(20)
    expect(shrinker.stats.capped).toBe(2)
  })

  it.skipIf(holdBy === 'onInsert')('detach() restores a set the cache had as its own property (wrapper only)', () => {
    const cache = make({ max: 100 })
    const calls: number[] = []
    const protoSet = Object.getPrototypeOf(cache).set
    const ownSet = function (this: Cache, k: number, v: string) {
      calls.push(k)
      return protoSet.call(this, k, v)
    }
    Object.defineProperty(cache, 'set', { value: ownSet, writable: true, configurable: true })
    for (let i = 0; i < 10; i++) cache.set(i, 'v')
    const shrinker = lruCacheShrinker(cache, { now: () => 0 })
    shrinker.shrink(request('high')) // cap 5
    cache.set(10, 'v')
    expect(cache.size).toBe(5)
    expect(calls).toContain(10) // the wrapper called the cache's own set
    shrinker.detach()
    expect(cache.set).toBe(ownSet)
  })

  it('hold: false keeps the old behaviour: no wrapper, no cap, the cache grows back at once', () => {
    const { cache, shrinker } = filled(100, { hold: false })
    expect(Object.hasOwn(cache, 'set')).toBe(false)
    shrinker.shrink(request('moderate'))
    expect(cache.size).toBe(75)
    expect(shrinker.cap).toBeNull()
    shrinker.levelChanged?.('normal', 'moderate')
    for (let i = 100; i < 125; i++) cache.set(i, 'v')
    expect(cache.size).toBe(100)
    expect(shrinker.stats.capped).toBe(0)
    shrinker.detach() // harmless
    expect(Object.hasOwn(cache, 'set')).toBe(false)
  })

  it('validates hold, regrowth and now', () => {
    const cache = make({ max: 10 })
    expect(() => lruCacheShrinker(cache, { hold: 'yes' as never })).toThrow(TypeError)
    expect(() => lruCacheShrinker(cache, { hold: 1 as never })).toThrow(/hold/)
    for (const regrowth of [0, -0.1, Number.NaN, '0.1' as never]) {
      expect(() => lruCacheShrinker(cache, { regrowth })).toThrow(RangeError)
    }
    expect(() => lruCacheShrinker(cache, { now: 5 as never })).toThrow(TypeError)
    expect(Object.hasOwn(cache, 'set')).toBe(false) // nothing wrapped by a constructor that threw
    expect(lruCacheShrinker(cache, { regrowth: Infinity }).cap).toBeNull()
    // a cache-like object without set(): hold needs it; by default it just does not hold
    const noSet = { size: 0, calculatedSize: 0, maxSize: 0, purgeStale: () => false, pop: () => undefined }
    expect(() => lruCacheShrinker(noSet, { hold: true })).toThrow(TypeError)
    const plain = lruCacheShrinker(noSet)
    plain.shrink(request('moderate'))
    expect(plain.cap).toBeNull()
  })

  it('inside a monitor: a shrink cycle sets the cap, relief lets the cache grow it with time', async () => {
    const sim = new SimulatedBackend({ limit: 100 * MiB, usage: 10 * MiB })
    const clock = new ManualClock()
    const cache = make({ max: 1000, dispose: () => sim.free(MiB) })
    const add = (k: number): void => {
      sim.allocate(MiB)
      cache.set(k, 'v')
    }
    for (let i = 0; i < 50; i++) add(i) // 60 MiB
    const monitor = createMemoryMonitor({ backend: sim, levels: true, clock, reduceHeap: { gc: 'none', mallocTrim: false } })
    const reports = new Collector<ShrinkReport>()
    const relief = new Collector<unknown>()
    monitor.on('shrink', reports.push)
    monitor.on('relief', relief.push)
    const shrinker = lruCacheShrinker(cache, { now: () => clock.now() })
    monitor.register(shrinker)
    for (let i = 50; i < 64; i++) add(i) // 74 MiB: moderate
    const [report] = await reports.count(1)
    await relief.count(1) // 75% of 64 entries kept: 58 MiB
    expect(report).toMatchObject({ level: 'moderate', freedBytes: 16 * MiB, levelAfter: 'normal' })
    expect(cache.size).toBe(48)
    expect(monitor.level).toBe('normal')
    expect(shrinker.cap).toBe(48)
    expect(clock.now()).toBe(0) // relief came at 0
    add(64) // held: one in, one out (it presses the cap, but no time has passed: no growth)
    expect(cache.size).toBe(48)
    expect(shrinker.cap).toBe(48)
    expect(sim.usage).toBe(58 * MiB)
    clock.advance(5000)
    expect(shrinker.cap).toBe(48) // time alone grows nothing
    add(65) // presses after 5 s: one second's growth, 48 × 1.05 = 50.4
    expect(shrinker.cap).toBe(Math.floor(50.4))
    expect(cache.size).toBe(49)
    for (let i = 66; i < 70; i++) add(i) // same instant: up to 50, then one in, one out
    expect(shrinker.cap).toBe(Math.floor(50.4))
    expect(cache.size).toBe(50)
    expect(sim.usage).toBe(60 * MiB)
    expect(shrinker.stats.capped).toBe(1 + 3)
    expect(monitor.level).toBe('normal')
    await monitor.close()
  })
})

describe('lruCacheShrinker and TTL (lru-cache 11, whose clock can be injected)', () => {
  it('drops stale entries first and counts them apart', () => {
    let now = 1000 // lru-cache treats a start time of 0 as "no TTL"
    const cache = new LRUCache11<number, string>({ max: 100, ttl: 1000, ttlResolution: 0, perf: { now: () => now } })
    for (let i = 0; i < 20; i++) cache.set(i, 'old')
    now = 1500
    for (let i = 20; i < 40; i++) cache.set(i, 'new')
    now = 2200 // the first 20 are stale
    const shrinker = lruCacheShrinker(cache)
    // Stale entries count towards the share dropped: 75% of 40 is kept at most, here 20 remain.
    shrinker.shrink(request('moderate'))
    expect(shrinker.stats).toMatchObject({ stale: 20, evicted: 0 })
    expect(cache.size).toBe(20)
    shrinker.shrink(request('high'))
    expect(shrinker.stats).toMatchObject({ stale: 20, evicted: 10, runs: 2 })
    expect([...cache.keys()].sort((a, b) => a - b)).toEqual([30, 31, 32, 33, 34, 35, 36, 37, 38, 39])
  })
})
