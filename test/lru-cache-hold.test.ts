// The lru-cache plugin's hold as seen by code that uses the cache: a cap of 0 grows back, fetch()
// rejections stay unhandled, load() and status are held, prototype patches still run, the default
// clock is not the global `performance`; on lru-cache 11 with withHoldHook, 11 wrapped, 10 wrapped.

import { LRUCache as LRUCache10 } from 'lru-cache-10'
import { LRUCache as LRUCache11 } from 'lru-cache'
import { afterEach, describe, expect, it } from 'vitest'
import type { PressureLevel } from '../src/policy/levels.js'
import type { ShrinkRequest } from '../src/policy/shrinker.js'
import { type LruCacheLike, lruCacheShrinker, withHoldHook } from '../src/plugins/lru-cache.js'

interface Status {
  totalCalculatedSize?: number
}
interface CacheOptions {
  max: number
  maxSize?: number
  sizeCalculation?: (v: string) => number
  fetchMethod?: (k: number) => Promise<string>
}
type Cache = LruCacheLike & {
  set(k: number, v: string, options?: { status?: Status }): unknown
  has(k: number): boolean
  keys(): IterableIterator<number>
  fetch(k: number): Promise<string | undefined>
  dump(): Array<[number, unknown]>
  load(entries: Array<[number, unknown]>): void
}
type Proto = { set: (...args: unknown[]) => unknown }

const versions: Array<[string, (o: CacheOptions) => Cache, Proto, 'onInsert' | 'wrapper']> = [
  ['lru-cache 11 built with withHoldHook', (o) => new LRUCache11<number, string>(withHoldHook(o)) as unknown as Cache, LRUCache11.prototype as unknown as Proto, 'onInsert'],
  ['lru-cache 11', (o) => new LRUCache11<number, string>(o) as unknown as Cache, LRUCache11.prototype as unknown as Proto, 'wrapper'],
  ['lru-cache 10', (o) => new LRUCache10<number, string>(o) as unknown as Cache, LRUCache10.prototype as unknown as Proto, 'wrapper'],
]

function request(level: PressureLevel, targetBytes = 0): ShrinkRequest {
  return { level, targetBytes, fraction: 0, signal: new AbortController().signal, cycle: 1, limit: 'cgroup' }
}

/**
 * Runs `run` with only our 'unhandledRejection' listener (the test runner's own would fail the
 * run) and returns every reason reported, up to a control rejection made on the next turn of the
 * event loop, after the rejections `run` caused have been processed.
 */
async function unhandledReasons(run: () => void): Promise<unknown[]> {
  const saved = process.listeners('unhandledRejection')
  process.removeAllListeners('unhandledRejection')
  const reasons: unknown[] = []
  const control = new Error('control')
  try {
    await new Promise<void>((resolve) => {
      process.on('unhandledRejection', (reason) => {
        reasons.push(reason)
        if (reason === control) resolve()
      })
      run()
      setImmediate(() => void Promise.reject(control))
    })
  } finally {
    process.removeAllListeners('unhandledRejection')
    for (const listener of saved) process.on('unhandledRejection', listener)
  }
  return reasons.slice(0, -1)
}

describe.each(versions)('lru-cache plugin hold with %s', (label, make, proto, holdBy) => {
  it('a cap of 0 grows back once the level is normal', () => {
    let t = 0
    const cache = make({ max: 100 })
    for (let i = 0; i < 10; i++) cache.set(i, 'v')
    const shrinker = lruCacheShrinker(cache, { keep: { critical: 0 }, regrowth: 0.5, now: () => t })
    expect(shrinker.holdBy).toBe(holdBy)
    shrinker.shrink(request('critical'))
    expect(cache.size).toBe(0)
    expect(shrinker.cap).toBe(0)
    shrinker.levelChanged?.('normal', 'critical')
    const sizes: number[] = []
    for (let k = 10; k < 16; k++) {
      t += 1000
      cache.set(k, 'v')
      cache.set(k + 100, 'v')
      sizes.push(cache.size)
    }
    // one entry's share (0.5) per second until the cap reaches one entry, then 50% of itself:
    // 0.5, 1, 1.5, 2.25, 3.375, 5.06
    expect(sizes).toEqual([1, 1, 1, 2, 3, 5])
    expect(shrinker.cap).toBe(5) // 5.0625 inside: whole entries outside
  })

  it('a cap of 0 grows back in bytes mode, by the size of an average entry', () => {
    let t = 0
    const cache = make({ max: 100, maxSize: 10_000, sizeCalculation: (v) => v.length })
    for (let i = 0; i < 10; i++) cache.set(i, 'x'.repeat(10))
    const shrinker = lruCacheShrinker(cache, { keep: { critical: 0 }, regrowth: 0.5, now: () => t })
    shrinker.shrink(request('critical'))
    expect(shrinker.cap).toBe(0)
    shrinker.levelChanged?.('normal', 'critical')
    const sizes: number[] = []
    for (let k = 10; k < 16; k++) {
      t += 1000
      cache.set(k, 'x'.repeat(10))
      cache.set(k + 100, 'x'.repeat(10))
      sizes.push(cache.calculatedSize)
    }
    expect(sizes).toEqual([10, 10, 10, 20, 30, 50]) // caps 5, 10, 15, 22.5, 33.75, 50.6
  })

  it('a rejected fetch() reaches unhandledRejection as with plain lru-cache', async () => {
    const failure = new Error('backend down')
    const options = { max: 100, fetchMethod: async (): Promise<string> => Promise.reject(failure) }
    const plain = make(options)
    expect(await unhandledReasons(() => void plain.fetch(1))).toEqual([failure])
    const cache = make(options)
    for (let i = 0; i < 10; i++) cache.set(i, 'v')
    const shrinker = lruCacheShrinker(cache)
    shrinker.shrink(request('high')) // holding at 5
    expect(await unhandledReasons(() => void cache.fetch(100))).toEqual([failure])
    // and a handled one stays handled
    expect(await unhandledReasons(() => void cache.fetch(101).catch(() => undefined))).toEqual([])
  })

  // Without the hook, lru-cache 11 stores a fetched value through a private method, and observing
  // fetch()'s promise would mark its rejection handled: the value is held at the next call instead.
  it.skipIf(label !== 'lru-cache 11')('a fetched value is held at the next call (lru-cache 11 without the hook only; the others hold it at once)', async () => {
    const cache = make({ max: 100, fetchMethod: async (k) => `fetched ${k}` })
    for (let i = 0; i < 10; i++) cache.set(i, 'v')
    const shrinker = lruCacheShrinker(cache)
    shrinker.shrink(request('high')) // cap 5
    expect(await cache.fetch(100)).toBe('fetched 100')
    expect(cache.size).toBe(6)
    expect(await cache.fetch(101)).toBe('fetched 101')
    expect(cache.size).toBe(6)
    cache.set(102, 'v')
    expect(cache.size).toBe(5)
    expect([...cache.keys()].sort((a, b) => a - b)).toEqual([8, 9, 100, 101, 102])
  })

  it('load() respects the cap', () => {
    const source = make({ max: 100 })
    for (let i = 0; i < 20; i++) source.set(i, `v${i}`)
    const cache = make({ max: 100 })
    for (let i = 0; i < 10; i++) cache.set(i, 'v')
    const shrinker = lruCacheShrinker(cache)
    shrinker.shrink(request('high')) // cap 5
    cache.load(source.dump())
    expect(cache.size).toBe(5)
    expect(shrinker.stats.capped).toBe(15)
  })

  it.skipIf(holdBy === 'onInsert')('status.totalCalculatedSize of set() is the size after the cap (wrapper only: onInsert cannot reach the status)', () => {
    const cache = make({ max: 100, maxSize: 10_000, sizeCalculation: (v) => v.length })
    for (let i = 0; i < 10; i++) cache.set(i, 'x'.repeat(10))
    const shrinker = lruCacheShrinker(cache)
    shrinker.shrink(request('high', 50)) // cap 50
    expect(shrinker.cap).toBe(50)
    const status: Status = {}
    cache.set(100, 'x'.repeat(30), { status })
    expect(cache.calculatedSize).toBe(50)
    expect(status.totalCalculatedSize).toBe(50)
  })

  it('a patch of the prototype made after the shrinker was attached still runs, and the cap still holds', () => {
    const cache = make({ max: 100 })
    for (let i = 0; i < 10; i++) cache.set(i, 'v')
    const shrinker = lruCacheShrinker(cache)
    shrinker.shrink(request('high')) // cap 5
    const original = proto.set
    const seen: unknown[] = []
    proto.set = function (this: unknown, ...args: unknown[]): unknown {
      seen.push(args[0])
      return Reflect.apply(original, this, args)
    }
    try {
      cache.set(100, 'v')
      cache.set(101, 'v')
    } finally {
      proto.set = original
    }
    expect(seen).toEqual([100, 101])
    expect(cache.size).toBe(5)
    expect(cache.has(101)).toBe(true)
  })

  it.skipIf(holdBy === 'wrapper')('the cache keeps its own methods: none is replaced (onInsert only)', () => {
    const cache = make({ max: 100 })
    const before = ['set', 'fetch', 'memo', 'load'].map((m) => (cache as unknown as Record<string, unknown>)[m])
    const shrinker = lruCacheShrinker(cache)
    shrinker.shrink(request('high'))
    expect(Object.getOwnPropertyNames(cache).filter((n) => typeof (cache as unknown as Record<string, unknown>)[n] === 'function')).toEqual([])
    expect(['set', 'fetch', 'memo', 'load'].map((m) => (cache as unknown as Record<string, unknown>)[m])).toEqual(before)
    expect(cache.set).toBe(proto.set)
    expect(label).toContain('withHoldHook')
  })
})

describe('the default clock', () => {
  const own = Object.getOwnPropertyDescriptor(globalThis, 'performance')
  afterEach(() => {
    if (own !== undefined) Object.defineProperty(globalThis, 'performance', own)
  })

  it('is not the global performance read at each call', () => {
    const real = globalThis.performance
    let reads = 0
    const cache = new LRUCache11<number, string>({ max: 100 }) as unknown as Cache
    for (let i = 0; i < 10; i++) cache.set(i, 'v')
    const shrinker = lruCacheShrinker(cache)
    Object.defineProperty(globalThis, 'performance', {
      configurable: true,
      get() {
        reads++
        return real
      },
    })
    // Synchronous: nothing else reads the global meanwhile.
    shrinker.shrink(request('high'))
    shrinker.levelChanged?.('normal', 'high')
    for (let i = 100; i < 110; i++) cache.set(i, 'v')
    expect(reads).toBe(0)
    expect(shrinker.stats.capped).toBeGreaterThan(0) // the clock was read: presses against the cap
  })
})

describe('withHoldHook', () => {
  it('keeps the caller\'s onInsert, called first, and serves one shrinker at a time', () => {
    const seen: Array<[string, number, string]> = []
    const cache = new LRUCache11<number, string>(withHoldHook({ max: 100, onInsert: (v: string, k: number, reason: string) => void seen.push([v, k, reason]) }))
    for (let i = 0; i < 4; i++) cache.set(i, `v${i}`)
    const shrinker = lruCacheShrinker(cache)
    expect(shrinker.holdBy).toBe('onInsert')
    shrinker.shrink(request('high')) // cap 2
    cache.set(9, 'v9')
    expect(seen.at(-1)).toEqual(['v9', 9, 'add'])
    expect([...cache.keys()].sort()).toEqual([3, 9])
    expect(() => lruCacheShrinker(cache)).toThrow(TypeError)
    shrinker.detach()
    const again = lruCacheShrinker(cache)
    expect(again.holdBy).toBe('onInsert')
  })

  it('one set of options serves several caches, and a copy made by new LRUCache(cache) is held on its own', () => {
    const options = withHoldHook({ max: 100 })
    const a = new LRUCache11<number, string>(options)
    const b = new LRUCache11<number, string>(options)
    for (let i = 0; i < 10; i++) {
      a.set(i, 'a')
      b.set(i, 'b')
    }
    const sa = lruCacheShrinker(a)
    const sb = lruCacheShrinker(b)
    sa.shrink(request('high')) // a: cap 5
    sb.cap = 8
    a.set(100, 'a')
    b.set(100, 'b')
    expect([a.size, b.size]).toEqual([5, 8])
    const copy = new LRUCache11<number, string>(a)
    copy.load(a.dump())
    const sc = lruCacheShrinker(copy)
    expect(sc.holdBy).toBe('onInsert')
    sc.cap = 2
    copy.set(200, 'c')
    expect([a.size, copy.size]).toEqual([5, 2])
  })

  it('rejects options that are not an object, and an onInsert that is not a function', () => {
    expect(typeof (withHoldHook({ max: 1 }) as { onInsert?: unknown }).onInsert).toBe('function')
    expect(() => withHoldHook(null as never)).toThrow(TypeError)
    expect(() => withHoldHook({ onInsert: 3 })).toThrow(TypeError)
  })

  it('on lru-cache 10, which has no onInsert, the shrinker wraps instead', () => {
    const cache = new LRUCache10<number, string>(withHoldHook({ max: 100 }))
    expect(lruCacheShrinker(cache).holdBy).toBe('wrapper')
  })
})

describe('cap set by hand', () => {
  it('evicts down to it at the next insertion, null lifts it, and it is refused when not holding', () => {
    const cache = new LRUCache11<number, string>(withHoldHook({ max: 100 }))
    for (let i = 0; i < 10; i++) cache.set(i, 'v')
    const shrinker = lruCacheShrinker(cache)
    shrinker.cap = 4
    cache.set(10, 'v')
    expect(cache.size).toBe(4)
    shrinker.cap = null
    cache.set(11, 'v')
    expect(cache.size).toBe(5)
    expect(() => {
      shrinker.cap = -1
    }).toThrow(RangeError)
    const loose = lruCacheShrinker(new LRUCache11<number, string>({ max: 10 }), { hold: false })
    expect(() => {
      loose.cap = 3
    }).toThrow(TypeError)
  })
})
