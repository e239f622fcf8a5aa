// Threshold parsing: every accepted spelling gives the right bytes; every bad one a typed error.

import { describe, expect, it } from 'vitest'
import { MemoryPressureError } from '../src/errors.js'
import { formatBytes, parseThreshold, resolveThreshold } from '../src/size.js'

const MiB = 2 ** 20
const GiB = 2 ** 30

function code(fn: () => unknown): string {
  try {
    fn()
  } catch (err) {
    if (err instanceof MemoryPressureError) return err.code
    if (err instanceof TypeError) return 'TypeError'
    if (err instanceof RangeError) return 'RangeError'
    return `other: ${String(err)}`
  }
  return 'no error'
}

describe('parseThreshold', () => {
  it.each([
    [1048576, 1048576],
    ['1.9K', 1945],
    ['0.5K', 512],
    ['512MiB', 512 * MiB],
    ['512M', 512 * MiB],
    ['512mb', 512 * MiB],
    ['1.5G', 1.5 * GiB],
    ['1.5 GiB', 1.5 * GiB],
    ['64k', 64 * 1024],
    ['2T', 2 * 1024 * GiB],
    ['100B', 100],
    [' 7 m ', 7 * MiB],
  ])('%j is %d bytes', (input, bytes) => {
    expect(parseThreshold(input)).toMatchObject({ kind: 'bytes', bytes })
  })

  it.each([
    ['80%', 80],
    ['0.5%', 0.5],
    ['100%', 100],
  ])('%j is %d percent', (input, percent) => {
    expect(parseThreshold(input)).toMatchObject({ kind: 'percent', percent })
  })

  it.each([
    [0, 'ERR_INVALID_THRESHOLD'],
    [-1, 'ERR_INVALID_THRESHOLD'],
    [Number.NaN, 'ERR_INVALID_THRESHOLD'],
    [Infinity, 'ERR_INVALID_THRESHOLD'],
    [2 ** 60, 'ERR_INVALID_THRESHOLD'],
    ['', 'ERR_INVALID_THRESHOLD'],
    ['abc', 'ERR_INVALID_THRESHOLD'],
    ['12XB', 'ERR_INVALID_THRESHOLD'],
    ['-5M', 'ERR_INVALID_THRESHOLD'],
    ['0%', 'ERR_INVALID_THRESHOLD'],
    ['101%', 'ERR_INVALID_THRESHOLD'],
    ['%', 'ERR_INVALID_THRESHOLD'],
    ['0M', 'ERR_INVALID_THRESHOLD'],
    ['9999999999T', 'ERR_INVALID_THRESHOLD'],
    // A string must say its unit or '%'; bytes are whole.
    ['80', 'ERR_INVALID_THRESHOLD'],
    ['1.9', 'ERR_INVALID_THRESHOLD'],
    [' 100 ', 'ERR_INVALID_THRESHOLD'],
    ['1.5B', 'ERR_INVALID_THRESHOLD'],
    [1.5, 'ERR_INVALID_THRESHOLD'],
    [1.9, 'ERR_INVALID_THRESHOLD'],
    [0.5, 'ERR_INVALID_THRESHOLD'],
    [null, 'TypeError'],
    [undefined, 'TypeError'],
    [BigInt(10), 'TypeError'],
    [{}, 'TypeError'],
  ])('%s is refused with %s', (input, expected) => {
    expect(code(() => parseThreshold(input))).toBe(expected)
  })
})

describe('resolveThreshold', () => {
  it('takes percentages of the limit, rounded down to whole bytes', () => {
    expect(resolveThreshold(parseThreshold('80%'), 100_000)).toBe(80_000)
    expect(resolveThreshold(parseThreshold('33.3%'), 100_001)).toBe(33_300)
  })

  it('keeps bytes as they are, up to the limit', () => {
    expect(resolveThreshold(parseThreshold('1M'), MiB)).toBe(MiB)
    expect(resolveThreshold(parseThreshold(5), Infinity)).toBe(5)
  })

  it('refuses a threshold above the limit', () => {
    expect(code(() => resolveThreshold(parseThreshold('2M'), MiB))).toBe('ERR_INVALID_THRESHOLD')
  })

  it('refuses a percentage without a limit with ERR_NO_LIMIT', () => {
    expect(code(() => resolveThreshold(parseThreshold('80%'), Infinity))).toBe('ERR_NO_LIMIT')
  })

  it('refuses a percentage that is less than a byte', () => {
    expect(code(() => resolveThreshold(parseThreshold('1%'), 50))).toBe('ERR_INVALID_THRESHOLD')
  })

  it('refuses a percentage below one page (4096 bytes): 0.0001% of 2.5 GiB is 268 bytes', () => {
    expect(code(() => resolveThreshold(parseThreshold('0.0001%'), 2.5 * GiB))).toBe('ERR_INVALID_THRESHOLD')
    expect(resolveThreshold(parseThreshold('0.0002%'), 2 * GiB)).toBe(4294)
  })

  it('names the cgroup it looked at in ERR_NO_LIMIT (.path)', () => {
    let err: unknown
    try {
      resolveThreshold(parseThreshold('80%'), Infinity, 'threshold', '/sys/fs/cgroup/memory/x')
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(MemoryPressureError)
    expect([(err as MemoryPressureError).code, (err as MemoryPressureError).path]).toEqual(['ERR_NO_LIMIT', '/sys/fs/cgroup/memory/x'])
  })
})

describe('formatBytes', () => {
  it('uses binary units', () => {
    expect(formatBytes(512)).toBe('512 B')
    expect(formatBytes(1.5 * GiB)).toBe('1.5 GiB')
    expect(formatBytes(300 * MiB)).toBe('300 MiB')
    expect(formatBytes(Infinity)).toBe('unlimited')
  })
})
