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
import { type LruCacheLike, lruCacheShrinker } from '../src/plugins/lru-cache.js'
import { Collector } from './helpers/collect.js'

const MiB = 2 ** 20

interface CacheOptions {
  max: number
  maxSize?: number
  sizeCalculation?: (v: string) => number
  dispose?: (v: string, k: number, reason: string) => void
}
type Make = (o: CacheOptions) => LruCacheLike & { set(k: number, v: string): unknown; has(k: number): boolean; keys(): IterableIterator<number> }

const versions: Array<[string, Make]> = [
  ['lru-cache 11', (o) => new LRUCache11<number, string>(o)],
  ['lru-cache 10', (o) => new LRUCache10<number, string>(o)],
]

function request(level: PressureLevel, targetBytes = 0): ShrinkRequest {
  return { level, targetBytes, fraction: 0, signal: new AbortController().signal, cycle: 1 }
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
    expect(shrinker.stats).toEqual({ runs: 3, evicted: 96, stale: 0, reportedBytes: 0 })
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
