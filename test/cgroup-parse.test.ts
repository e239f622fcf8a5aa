// Unit tests of the cgroup text parsers on fixtures of real /proc and cgroupfs files: mountinfo,
// /proc/<pid>/cgroup, memory.stat, limit values, the page size and the derived memory figures.

import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import {
  memoryFigures,
  pageSize,
  pageSizeFromAuxv,
  parseLimitValue,
  parseMemoryStat,
  parseMountInfo,
  parseProcCgroup,
  unlimitedV1,
} from '../src/cgroup/index.js'
import { MemoryPressureError } from '../src/errors.js'

const hosts = fileURLToPath(new URL('./fixtures/hosts/', import.meta.url))
const fixture = (host: string, file: string): string => readFileSync(`${hosts}${host}/${file}`, 'utf8')

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (err) {
    if (err instanceof MemoryPressureError) return err.code
    throw err
  }
  return undefined
}

function errorOf(fn: () => unknown): MemoryPressureError {
  try {
    fn()
  } catch (err) {
    if (err instanceof MemoryPressureError) return err
    throw err
  }
  throw new Error('expected a MemoryPressureError, nothing was thrown')
}

describe('parseMountInfo', () => {
  it('parses this machine\'s mountinfo: every line, the v1 memory and the v2 mounts', () => {
    const text = fixture('this-machine', 'mountinfo')
    const entries = parseMountInfo(text)
    expect(entries).toHaveLength(text.trim().split('\n').length)
    expect(entries.find((e) => e.mountPoint === '/sys/fs/cgroup/memory')).toEqual({
      mountId: 35,
      parentId: 31,
      root: '/',
      mountPoint: '/sys/fs/cgroup/memory',
      mountOptions: ['rw', 'relatime'],
      fsType: 'cgroup',
      source: 'cgroup',
      superOptions: ['rw', 'memory'],
    })
    expect(entries.filter((e) => e.fsType === 'cgroup2').map((e) => e.mountPoint)).toEqual(['/sys/fs/cgroup/unified'])
  })

  it('skips optional fields (shared:N) and keeps non-path roots (nsfs net:[...])', () => {
    const entries = parseMountInfo(fixture('k8s-v2', 'mountinfo'))
    const cg = entries.find((e) => e.fsType === 'cgroup2')
    expect(cg).toMatchObject({ mountId: 34, parentId: 24, root: '/', mountPoint: '/sys/fs/cgroup', source: 'cgroup2' })
    expect(cg?.superOptions).toEqual(['rw', 'nsdelegate', 'memory_recursiveprot'])
    expect(cg?.mountOptions).toEqual(['rw', 'nosuid', 'nodev', 'noexec', 'relatime'])
    const ns = entries.find((e) => e.fsType === 'nsfs')
    expect(ns?.root).toBe('net:[4026532611]')
  })

  it('keeps the bind-mount root of a Docker v1 container', () => {
    const entries = parseMountInfo(fixture('docker-v1', 'mountinfo'))
    const memory = entries.filter((e) => e.fsType === 'cgroup' && e.superOptions.includes('memory'))
    expect(memory).toHaveLength(1)
    expect(memory[0]?.root).toBe('/docker/23c70359c0511abf8a8d316fe9e9558a0fa32b535851966a6d886fd6045d17f9')
    expect(memory[0]?.mountOptions[0]).toBe('ro')
  })

  it('keeps the /.. root of a cgroup2 mount seen from inside a cgroup namespace (captured)', () => {
    const entries = parseMountInfo(fixture('vm-v2-cgroupns-inherited', 'mountinfo'))
    expect(entries[0]).toMatchObject({ mountId: 28, parentId: 28, root: '/', mountPoint: '/', fsType: 'rootfs' })
    expect(entries.find((e) => e.fsType === 'cgroup2')).toMatchObject({ root: '/../../../..', mountPoint: '/sys/fs/cgroup' })
  })

  it('decodes \\040 in a real mount point', () => {
    const entries = parseMountInfo(fixture('systemd-hybrid', 'mountinfo'))
    expect(entries.at(-1)?.mountPoint).toBe('/media/alice/Backup Disk')
    expect(entries.at(-1)?.fsType).toBe('fuseblk')
  })

  it('decodes tab, newline, backslash and multi-byte escapes', () => {
    const [e] = parseMountInfo('7 1 0:9 /a\\011b /mnt/x\\012y\\134z\\040\\303\\251 rw - tmpfs tmpfs rw\n')
    expect(e?.root).toBe('/a\tb')
    expect(e?.mountPoint).toBe('/mnt/x\ny\\z é')
  })

  it('accepts several optional fields and an empty mount source', () => {
    const [e] = parseMountInfo('100 1 0:50 / /mnt rw shared:1 master:2 propagate_from:3 unbindable - tmpfs  rw,size=4k')
    expect(e).toMatchObject({ mountId: 100, fsType: 'tmpfs', source: '', superOptions: ['rw', 'size=4k'] })
  })

  it('ignores empty lines', () => {
    expect(parseMountInfo('\n7 1 0:9 / /a rw - tmpfs t rw\n\n')).toHaveLength(1)
    expect(parseMountInfo('')).toEqual([])
  })

  it.each([
    ['no separator', '7 1 0:9 / /a rw tmpfs t rw'],
    ['too few fields after the separator', '7 1 0:9 / /a rw - tmpfs rw'],
    ['too many fields after the separator', '7 1 0:9 / /a rw - tmpfs t rw extra'],
    ['separator too early', '7 1 0:9 / /a - tmpfs t rw'],
    ['non-numeric mount id', 'x 1 0:9 / /a rw - tmpfs t rw'],
    ['bad device field', '7 1 09 / /a rw - tmpfs t rw'],
    ['relative mount point', '7 1 0:9 / a rw - tmpfs t rw'],
    ['double space before the separator', '7 1 0:9 /  /a rw - tmpfs t rw'],
  ])('throws ERR_PARSE with the path for a malformed line: %s', (_name, line) => {
    const good = '1 0 0:1 / / rw - ext4 /dev/vda rw'
    const err = errorOf(() => parseMountInfo(`${good}\n${line}\n`, '/proc/self/mountinfo'))
    expect(err.code).toBe('ERR_PARSE')
    expect(err.path).toBe('/proc/self/mountinfo')
  })
})

describe('parseProcCgroup', () => {
  it('parses this machine\'s cgroup file (v1 lines and the 0:: line)', () => {
    const entries = parseProcCgroup(fixture('this-machine', 'cgroup'))
    expect(entries).toHaveLength(10)
    expect(entries.find((e) => e.controllers.includes('memory'))).toEqual({
      hierarchyId: 4,
      controllers: ['memory'],
      path: '/process_api/20f65afaa5dffb637b7b379a3f55e882',
    })
    expect(entries.find((e) => e.hierarchyId === 0)).toEqual({ hierarchyId: 0, controllers: [], path: '/' })
  })

  it('splits controller lists and keeps named hierarchies', () => {
    const entries = parseProcCgroup(fixture('systemd-hybrid', 'cgroup'))
    expect(entries[0]).toEqual({ hierarchyId: 12, controllers: ['cpu', 'cpuacct'], path: '/user.slice' })
    expect(entries.find((e) => e.hierarchyId === 1)?.controllers).toEqual(['name=systemd'])
  })

  it('splits on the first two colons only', () => {
    expect(parseProcCgroup('4:memory:/a:b::c\n0::/x:y')).toEqual([
      { hierarchyId: 4, controllers: ['memory'], path: '/a:b::c' },
      { hierarchyId: 0, controllers: [], path: '/x:y' },
    ])
  })

  it('reads the cgroup-namespace form /../x as a plain path', () => {
    expect(parseProcCgroup('0::/../sibling\n')[0]?.path).toBe('/../sibling')
  })

  it.each([
    ['no colon', 'memory'],
    ['one colon', '4:memory'],
    ['non-numeric id', 'x:memory:/a'],
    ['relative path', '4:memory:a/b'],
    ['empty path', '4:memory:'],
  ])('throws ERR_PARSE for %s', (_name, line) => {
    const err = errorOf(() => parseProcCgroup(`0::/\n${line}\n`, '/proc/self/cgroup'))
    expect(err.code).toBe('ERR_PARSE')
    expect(err.path).toBe('/proc/self/cgroup')
  })
})

describe('parseMemoryStat', () => {
  it('reads a v1 memory.stat by key, keeping values above 2^53 exact', () => {
    const stat = parseMemoryStat(fixture('this-machine', 'memory.stat'))
    expect(stat.get('hierarchical_memory_limit')).toBe(9223372036854771712n)
    expect(stat.get('total_rss')).toBe(2113536n)
    expect(stat.get('total_inactive_file')).toBe(13770752n)
    expect(stat.size).toBe(fixture('this-machine', 'memory.stat').trim().split('\n').length)
  })

  it('reads a v2 memory.stat', () => {
    const stat = parseMemoryStat(fixture('k8s-v2', 'memory.stat'))
    expect(stat.get('anon')).toBe(98304n * 4096n)
    expect(stat.get('inactive_file')).toBe(13100n * 4096n)
    expect(stat.get('slab')).toBe(4980736n + 1571864n)
  })

  it('reads a v2 memory.stat captured from a 6.1 kernel', () => {
    const stat = parseMemoryStat(fixture('vm-v2', 'memory.stat'))
    expect(stat.get('anon')).toBe(59682816n)
    expect(stat.get('inactive_file')).toBe(50335744n)
    expect(stat.has('sec_pagetables')).toBe(true)
  })

  it('tolerates unknown keys and does not depend on line order', () => {
    const lines = fixture('docker-v1', 'memory.stat').trim().split('\n')
    const shuffled = [...lines].reverse()
    shuffled.splice(3, 0, 'some_future_key 12345')
    const a = parseMemoryStat(lines.join('\n'))
    const b = parseMemoryStat(shuffled.join('\n'))
    expect(b.get('some_future_key')).toBe(12345n)
    b.delete('some_future_key')
    expect(b).toEqual(a)
  })

  it.each([
    ['a key without a value', 'rss'],
    ['a negative value', 'rss -1'],
    ['three fields', 'rss 1 2'],
    ['a hex value', 'rss 0x10'],
    ['a tab separator', 'rss\t10'],
    ['a repeated key', 'cache 1'],
  ])('throws ERR_PARSE for %s', (_name, line) => {
    const err = errorOf(() => parseMemoryStat(`cache 4096\n${line}\n`, '/cg/memory.stat'))
    expect(err.code).toBe('ERR_PARSE')
    expect(err.path).toBe('/cg/memory.stat')
  })
})

describe('memoryFigures', () => {
  it('v1: uses the hierarchical total_* keys', () => {
    const stat = parseMemoryStat('rss 100\ncache 200\ninactive_file 50\ntotal_rss 1000\ntotal_cache 2000\ntotal_inactive_file 500\n')
    expect(memoryFigures(1, 4000n, stat)).toEqual({ usage: 4000, rss: 1000, cache: 2000, inactiveFile: 500, workingSet: 3500 })
  })

  it('v1: falls back to the cgroup\'s own keys without total_*', () => {
    const stat = parseMemoryStat('rss 100\ncache 200\ninactive_file 50\n')
    expect(memoryFigures(1, 400, stat)).toEqual({ usage: 400, rss: 100, cache: 200, inactiveFile: 50, workingSet: 350 })
  })

  it('v1: figures of the Docker fixture', () => {
    const stat = parseMemoryStat(fixture('docker-v1', 'memory.stat'))
    const usage = 229957632n
    expect(memoryFigures(1, usage, stat)).toEqual({
      usage: 229957632,
      rss: 201285632,
      cache: 28672000,
      inactiveFile: 17338368,
      workingSet: 229957632 - 17338368,
    })
  })

  it('v2: anon, file and inactive_file, ignoring v1 names', () => {
    const stat = parseMemoryStat(fixture('docker-v2-cgroupns', 'memory.stat') + 'rss 1\ncache 2\n')
    expect(memoryFigures(2, 300_000_000n, stat)).toEqual({
      usage: 300_000_000,
      rss: 61234 * 4096,
      cache: 9120 * 4096,
      inactiveFile: 6011 * 4096,
      workingSet: 300_000_000 - 6011 * 4096,
    })
  })

  it('clamps the working set at 0 when inactive_file exceeds usage', () => {
    const stat = parseMemoryStat('anon 0\nfile 8192\ninactive_file 8192\n')
    expect(memoryFigures(2, 4096n, stat).workingSet).toBe(0)
  })

  it('throws ERR_PARSE when a needed key is absent', () => {
    expect(codeOf(() => memoryFigures(2, 1n, parseMemoryStat('anon 1\nfile 1\n')))).toBe('ERR_PARSE')
    expect(codeOf(() => memoryFigures(1, 1n, parseMemoryStat('anon 1\nfile 1\ninactive_file 1\n')))).toBe('ERR_PARSE')
  })
})

describe('limits', () => {
  it('unlimitedV1 is LONG_MAX rounded down to the page size', () => {
    expect(unlimitedV1(4096)).toBe(9223372036854771712n)
    expect(unlimitedV1(16384)).toBe(9223372036854759424n)
    expect(unlimitedV1(65536)).toBe(9223372036854710272n)
    expect(unlimitedV1()).toBe(unlimitedV1(pageSize()))
  })

  it('unlimitedV1 rejects a page size that is not a positive integer', () => {
    expect(() => unlimitedV1(0)).toThrow(RangeError)
    expect(() => unlimitedV1(1.5)).toThrow(RangeError)
  })

  it('parses v1 limits: unlimited and above are null, everything else exact', () => {
    expect(parseLimitValue(fixture('this-machine', 'memory.limit_in_bytes'), 1)).toBeNull()
    expect(parseLimitValue('18446744073709551615\n', 1)).toBeNull()
    expect(parseLimitValue(`${unlimitedV1() - 1n}\n`, 1)).toBe(unlimitedV1() - 1n)
    expect(parseLimitValue('536870912\n', 1)).toBe(536870912n)
    expect(parseLimitValue('0', 1)).toBe(0n)
  })

  it('parses v2 limits: max is null', () => {
    expect(parseLimitValue('max\n', 2)).toBeNull()
    expect(parseLimitValue('1073741824\n', 2)).toBe(1073741824n)
    expect(parseLimitValue(`${unlimitedV1()}\n`, 2)).toBe(unlimitedV1())
  })

  it.each([
    [1, 'max\n'],
    [1, '-1\n'],
    [2, ''],
    [2, ' 12\n'],
    [2, '12\n\n'],
    [2, 'Max\n'],
    [2, '1e9\n'],
  ] as const)('v%i limit %j is ERR_PARSE with the path', (version, text) => {
    const err = errorOf(() => parseLimitValue(text, version, '/cg/memory.max'))
    expect(err.code).toBe('ERR_PARSE')
    expect(err.path).toBe('/cg/memory.max')
  })
})

describe('page size', () => {
  function auxv(words: bigint[], wordBytes: 4 | 8, littleEndian: boolean): Uint8Array {
    const buf = new DataView(new ArrayBuffer(words.length * wordBytes))
    words.forEach((w, i) => wordBytes === 8
      ? buf.setBigUint64(i * 8, w, littleEndian)
      : buf.setUint32(i * 4, Number(w), littleEndian))
    return new Uint8Array(buf.buffer)
  }

  it('pageSize() matches getconf PAGESIZE', () => {
    const expected = Number(execFileSync('getconf', ['PAGESIZE'], { encoding: 'utf8' }).trim())
    expect(pageSize()).toBe(expected)
  })

  it('finds AT_PAGESZ in 64-bit and 32-bit, little- and big-endian vectors', () => {
    const words = [33n, 0x7ffc0000n, 16n, 0xbfebfbffn, 6n, 16384n, 17n, 100n, 0n, 0n]
    expect(pageSizeFromAuxv(auxv(words, 8, true), 8, true)).toBe(16384)
    expect(pageSizeFromAuxv(auxv(words, 8, false), 8, false)).toBe(16384)
    expect(pageSizeFromAuxv(auxv(words, 4, true), 4, true)).toBe(16384)
    expect(pageSizeFromAuxv(auxv(words, 8, false), 8, true)).toBeNull()
  })

  it('stops at AT_NULL and rejects a value that is not a power of two', () => {
    expect(pageSizeFromAuxv(auxv([33n, 1n, 0n, 0n, 6n, 4096n], 8, true), 8, true)).toBeNull()
    expect(pageSizeFromAuxv(auxv([6n, 4000n, 0n, 0n], 8, true), 8, true)).toBeNull()
    expect(pageSizeFromAuxv(new Uint8Array(0), 8, true)).toBeNull()
  })

  it('reads this process\'s real auxv', () => {
    const expected = Number(execFileSync('getconf', ['PAGESIZE'], { encoding: 'utf8' }).trim())
    expect(pageSizeFromAuxv(readFileSync('/proc/self/auxv'))).toBe(expected)
  })
})
