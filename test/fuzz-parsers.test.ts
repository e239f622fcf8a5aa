// Property-based tests (fast-check) of every parser of a kernel file and of user thresholds: valid
// input round-trips exactly, garbage and truncated input give ERR_PARSE (or a documented prefix),
// never a wrong number and never another exception.

import fc from 'fast-check'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { parseMemoryEvents } from '../src/backends/cgroup-v2.js'
import { parsePressure } from '../src/backends/psi.js'
import { parseLimitValue, parseMemoryStat, parseMountInfo, parseProcCgroup, unlimitedV1 } from '../src/cgroup/index.js'
import { MemoryPressureError } from '../src/errors.js'
import { parseThreshold, resolveThreshold } from '../src/size.js'

const hosts = fileURLToPath(new URL('./fixtures/hosts/', import.meta.url))
const fixture = (host: string, file: string): string => readFileSync(`${hosts}${host}/${file}`, 'utf8')
const HOSTS = ['this-machine', 'docker-v1', 'docker-v2-cgroupns', 'k8s-v2', 'systemd-hybrid']
const RUNS = { numRuns: 500 }

/** Runs `fn`; a MemoryPressureError is returned as `{ code }`, anything else thrown propagates. */
function attempt<T>(fn: () => T): { ok: true; value: T } | { ok: false; code: string } {
  try {
    return { ok: true, value: fn() }
  } catch (err) {
    if (err instanceof MemoryPressureError) return { ok: false, code: err.code }
    throw err
  }
}

/** Text a kernel file could never hold but a broken read or a fake tree could. */
const garbage = fc.oneof(
  fc.string({ maxLength: 200 }),
  fc.string({ unit: 'binary', maxLength: 200 }),
  fc.array(fc.constantFrom('0', '1', '9', ' ', '\n', ':', '-', '/', 'a', '=', '.', '\\', '\t', '\0', 'some', 'total='), { maxLength: 60 }).map((a) => a.join('')),
)

/** Every cut of `text`, sampled: the parse is an error, or agrees with the full parse on the complete lines. */
function truncations(text: string): fc.Arbitrary<number> {
  return fc.integer({ min: 0, max: text.length })
}
const completeLines = (text: string): number => text.split('\n').length - 1

/** `text` cut anywhere parses to ERR_PARSE or to what the full text gives on its complete lines. */
function agreesWhenTruncated(text: string, parse: (text: string) => unknown[], numRuns = 200): void {
  const full = parse(text)
  fc.assert(fc.property(truncations(text), (cut) => {
    const part = text.slice(0, cut)
    const r = attempt(() => parse(part))
    if (!r.ok) { expect(r.code).toBe('ERR_PARSE'); return }
    const n = completeLines(part)
    expect(r.value.slice(0, n)).toEqual(full.slice(0, n))
  }), { numRuns })
}

describe('mountinfo', () => {
  const segment = fc.stringMatching(/^[a-z0-9_.-]{1,12}$/)
  const path = fc.array(segment, { minLength: 0, maxLength: 4 }).map((s) => `/${s.join('/')}`)
  const entry = fc.record({
    mountId: fc.nat({ max: 2 ** 31 }),
    parentId: fc.nat({ max: 2 ** 31 }),
    major: fc.nat({ max: 4095 }),
    minor: fc.nat({ max: 2 ** 20 }),
    root: path,
    mountPoint: path,
    mountOptions: fc.array(fc.constantFrom('rw', 'ro', 'nosuid', 'nodev', 'relatime'), { minLength: 1, maxLength: 4 }),
    optional: fc.array(fc.constantFrom('shared:1', 'master:7', 'unbindable'), { maxLength: 2 }),
    fsType: fc.constantFrom('cgroup', 'cgroup2', 'tmpfs', 'proc', 'ext4'),
    source: fc.constantFrom('cgroup', 'none', '/dev/sda1', ''),
    superOptions: fc.array(fc.constantFrom('rw', 'memory', 'cpu', 'nsdelegate'), { minLength: 1, maxLength: 3 }),
  })
  type Entry = typeof entry extends fc.Arbitrary<infer T> ? T : never
  const render = (e: Entry): string =>
    [e.mountId, e.parentId, `${e.major}:${e.minor}`, e.root, e.mountPoint, e.mountOptions.join(','), ...e.optional, '-', e.fsType,
      e.source, e.superOptions.join(',')].join(' ')

  it('round-trips every field of generated lines', () => {
    fc.assert(fc.property(fc.array(entry, { maxLength: 8 }), (entries) => {
      const parsed = parseMountInfo(entries.map(render).join('\n') + '\n')
      expect(parsed).toEqual(entries.map((e) => ({
        mountId: e.mountId, parentId: e.parentId, root: e.root, mountPoint: e.mountPoint, mountOptions: e.mountOptions,
        fsType: e.fsType, source: e.source, superOptions: e.superOptions,
      })))
    }), RUNS)
  })

  it('decodes octal escapes of spaces, tabs, newlines and backslashes in paths', () => {
    fc.assert(fc.property(fc.array(fc.constantFrom('a', 'b', ' ', '\t', '\n', '\\', 'é'), { minLength: 1, maxLength: 10 }), (chars) => {
      const name = chars.join('')
      const escaped = name.replace(/[ \t\n\\]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`)
      const [e] = parseMountInfo(`30 1 0:5 / /mnt/${escaped} rw - tmpfs tmpfs rw\n`)
      expect(e?.mountPoint).toBe(`/mnt/${name}`)
    }), RUNS)
  })

  it('garbage is ERR_PARSE or lines whose ids are the decimal numbers written', () => {
    fc.assert(fc.property(garbage, (text) => {
      const r = attempt(() => parseMountInfo(text))
      if (!r.ok) { expect(r.code).toBe('ERR_PARSE'); return }
      const lines = text.split('\n').filter((l) => l !== '')
      expect(r.value).toHaveLength(lines.length)
      r.value.forEach((e, i) => {
        const [id, parent] = (lines[i] as string).split(' ')
        expect(String(e.mountId)).toBe(String(Number(id)))
        expect(String(e.parentId)).toBe(String(Number(parent)))
      })
    }), RUNS)
  })

  it.each(HOSTS)('a truncated %s mountinfo is ERR_PARSE or agrees on its complete lines', (host) => {
    agreesWhenTruncated(fixture(host, 'mountinfo'), (t) => parseMountInfo(t))
  })
})

describe('/proc/<pid>/cgroup', () => {
  const line = fc.record({
    id: fc.nat({ max: 64 }),
    controllers: fc.array(fc.constantFrom('memory', 'cpu', 'cpuacct', 'name=systemd', 'pids'), { maxLength: 3 }),
    path: fc.array(fc.stringMatching(/^[a-z0-9_.:-]{1,10}$/), { maxLength: 4 }).map((s) => `/${s.join('/')}`),
  })

  it('round-trips generated lines, colons in paths included', () => {
    fc.assert(fc.property(fc.array(line, { maxLength: 10 }), (lines) => {
      const parsed = parseProcCgroup(lines.map((l) => `${l.id}:${l.controllers.join(',')}:${l.path}`).join('\n') + '\n')
      expect(parsed).toEqual(lines.map((l) => ({ hierarchyId: l.id, controllers: l.controllers, path: l.path })))
    }), RUNS)
  })

  it('garbage is ERR_PARSE or entries with the ids and absolute paths written', () => {
    fc.assert(fc.property(garbage, (text) => {
      const r = attempt(() => parseProcCgroup(text))
      if (!r.ok) { expect(r.code).toBe('ERR_PARSE'); return }
      const lines = text.split('\n').filter((l) => l !== '')
      expect(r.value).toHaveLength(lines.length)
      r.value.forEach((e, i) => {
        expect(String(e.hierarchyId)).toBe(String(Number((lines[i] as string).split(':')[0])))
        expect(e.path.startsWith('/')).toBe(true)
      })
    }), RUNS)
  })

  it.each(HOSTS)('a truncated %s cgroup file is ERR_PARSE or agrees on its complete lines', (host) => {
    agreesWhenTruncated(fixture(host, 'cgroup'), (t) => parseProcCgroup(t))
  })
})

describe('memory.stat', () => {
  const key = fc.stringMatching(/^[a-z][a-z_]{0,20}$/)

  it('round-trips any unsigned value exactly as bigint, 2^64 and above included', () => {
    fc.assert(fc.property(fc.uniqueArray(fc.tuple(key, fc.bigInt({ min: 0n, max: 2n ** 70n })), { selector: ([k]) => k, maxLength: 20 }), (pairs) => {
      const parsed = parseMemoryStat(pairs.map(([k, v]) => `${k} ${v}`).join('\n') + '\n')
      expect([...parsed]).toEqual(pairs)
    }), RUNS)
  })

  it('a repeated key is ERR_PARSE, not the first or the last value', () => {
    fc.assert(fc.property(key, fc.bigInt({ min: 0n, max: 2n ** 64n }), fc.bigInt({ min: 0n, max: 2n ** 64n }), (k, a, b) => {
      expect(attempt(() => parseMemoryStat(`${k} ${a}\nother_key 1\n${k} ${b}\n`))).toEqual({ ok: false, code: 'ERR_PARSE' })
    }), RUNS)
  })

  it('garbage is ERR_PARSE or values equal to the digits written', () => {
    fc.assert(fc.property(garbage, (text) => {
      const r = attempt(() => parseMemoryStat(text))
      if (!r.ok) { expect(r.code).toBe('ERR_PARSE'); return }
      for (const l of text.split('\n').filter((x) => x !== '')) {
        const [k, v] = l.split(' ')
        expect(r.value.get(k as string)).toBe(BigInt(v as string))
      }
    }), RUNS)
  })

  it.each(['this-machine', 'docker-v1', 'docker-v2-cgroupns', 'k8s-v2'])('a truncated %s memory.stat is ERR_PARSE or agrees on its complete lines', (host) => {
    agreesWhenTruncated(fixture(host, 'memory.stat'), (t) => [...parseMemoryStat(t)])
  })
})

describe('limit files', () => {
  it('v1: any decimal is its exact value below the page-rounded LONG_MAX and unlimited from there', () => {
    const unlimited = unlimitedV1()
    fc.assert(fc.property(fc.oneof(fc.bigInt({ min: 0n, max: 2n ** 64n }), fc.bigInt({ min: unlimited - 4096n, max: unlimited + 4096n })), (n) => {
      expect(parseLimitValue(`${n}\n`, 1)).toBe(n >= unlimited ? null : n)
    }), RUNS)
  })

  it('v2: decimals are exact, max is unlimited', () => {
    fc.assert(fc.property(fc.bigInt({ min: 0n, max: 2n ** 64n }), (n) => {
      expect(parseLimitValue(`${n}\n`, 2)).toBe(n)
    }), RUNS)
    expect(parseLimitValue('max\n', 2)).toBeNull()
  })

  it('garbage, signs, spaces, two newlines and v1 "max" are ERR_PARSE', () => {
    fc.assert(fc.property(garbage, fc.constantFrom(1 as const, 2 as const), (text, version) => {
      const r = attempt(() => parseLimitValue(text, version))
      const value = text.endsWith('\n') ? text.slice(0, -1) : text
      if (/^\d+$/.test(value) || (version === 2 && value === 'max')) expect(r.ok).toBe(true)
      else expect(r).toEqual({ ok: false, code: 'ERR_PARSE' })
    }), RUNS)
    for (const bad of ['-1\n', ' 1\n', '1 \n', '1\n\n', '+1', '1e9', '0x10', 'max\n']) {
      expect(attempt(() => parseLimitValue(bad, 1))).toEqual({ ok: false, code: 'ERR_PARSE' })
    }
  })
})

describe('memory.events', () => {
  const name = fc.constantFrom('low', 'high', 'max', 'oom', 'oom_kill', 'oom_group_kill', 'sock_throttled')

  it('round-trips counters up to 2^53', () => {
    fc.assert(fc.property(fc.uniqueArray(fc.tuple(name, fc.nat({ max: Number.MAX_SAFE_INTEGER })), { selector: ([k]) => k }), (pairs) => {
      expect([...parseMemoryEvents(pairs.map(([k, v]) => `${k} ${v}`).join('\n') + '\n')]).toEqual(pairs)
    }), RUNS)
  })

  it('garbage is ERR_PARSE or counters equal to the digits written', () => {
    fc.assert(fc.property(garbage, (text) => {
      const r = attempt(() => parseMemoryEvents(text))
      if (!r.ok) { expect(r.code).toBe('ERR_PARSE'); return }
      for (const l of text.split('\n').filter((x) => x !== '')) {
        const [k, v] = l.split(' ')
        expect(BigInt(r.value.get(k as string) as number)).toBe(BigInt(v as string))
      }
    }), RUNS)
  })
})

describe('numbers past 2^53 and repeated names', () => {
  const huge = fc.bigInt({ min: 2n ** 53n, max: 2n ** 70n })

  it('memory.events: a counter past 2^53 is ERR_PARSE, not a rounded number', () => {
    fc.assert(fc.property(huge, (n) => {
      expect(attempt(() => parseMemoryEvents(`low 0\noom_kill ${n}\n`))).toEqual({ ok: false, code: 'ERR_PARSE' })
    }), RUNS)
  })

  it('memory.events: a repeated counter is ERR_PARSE, not the last value', () => {
    expect(attempt(() => parseMemoryEvents('oom 1\noom_kill 1\noom 2\n'))).toEqual({ ok: false, code: 'ERR_PARSE' })
  })

  it('PSI: a total past 2^53 us, an average above 100% or a repeated line is ERR_PARSE', () => {
    fc.assert(fc.property(huge, (n) => {
      expect(attempt(() => parsePressure(`some avg10=0.00 avg60=0.00 avg300=0.00 total=${n}\n`))).toEqual({ ok: false, code: 'ERR_PARSE' })
    }), RUNS)
    expect(attempt(() => parsePressure('some avg10=100.01 avg60=0.00 avg300=0.00 total=1\n'))).toEqual({ ok: false, code: 'ERR_PARSE' })
    expect(attempt(() => parsePressure('some avg10=0.00 avg60=0.00 avg300=0.00 total=1\nsome avg10=0.00 avg60=0.00 avg300=0.00 total=2\n')))
      .toEqual({ ok: false, code: 'ERR_PARSE' })
  })
})

describe('PSI files', () => {
  const avg = fc.integer({ min: 0, max: 10000 }).map((n) => (n / 100).toFixed(2))
  const line = fc.record({ a10: avg, a60: avg, a300: avg, total: fc.nat({ max: Number.MAX_SAFE_INTEGER }) })
  const render = (kind: string, l: { a10: string; a60: string; a300: string; total: number }): string =>
    `${kind} avg10=${l.a10} avg60=${l.a60} avg300=${l.a300} total=${l.total}`

  it('round-trips some and full lines', () => {
    fc.assert(fc.property(line, fc.option(line), (some, full) => {
      const text = render('some', some) + '\n' + (full === null ? '' : render('full', full) + '\n')
      const r = parsePressure(text)
      expect(r.some).toEqual({ avg10: Number(some.a10), avg60: Number(some.a60), avg300: Number(some.a300), totalUs: some.total })
      if (full === null) expect(r.full).toBeUndefined()
      else expect(r.full?.totalUs).toBe(full.total)
    }), RUNS)
  })

  it('garbage is ERR_PARSE or a reading with the totals written', () => {
    fc.assert(fc.property(garbage, (text) => {
      const r = attempt(() => parsePressure(text))
      if (!r.ok) { expect(r.code).toBe('ERR_PARSE'); return }
      const total = /^some .* total=(\d+)$/m.exec(text)?.[1]
      expect(BigInt(r.value.some.totalUs)).toBe(BigInt(total as string))
    }), RUNS)
  })

  it('a truncated file is ERR_PARSE or agrees on its complete lines', () => {
    const text = 'some avg10=1.25 avg60=0.50 avg300=0.10 total=123456789\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=98765\n'
    fc.assert(fc.property(truncations(text), (cut) => {
      const part = text.slice(0, cut)
      const r = attempt(() => parsePressure(part))
      if (!r.ok) { expect(r.code).toBe('ERR_PARSE'); return }
      expect(r.value.some.totalUs).toBe(cut >= 55 ? 123456789 : Number(/total=(\d+)/.exec(part)?.[1]))
    }), { numRuns: 300 })
  })
})

describe('thresholds', () => {
  it('any number is ERR_INVALID_THRESHOLD or at least one whole byte, the floor of the number', () => {
    fc.assert(fc.property(fc.oneof(fc.double(), fc.double({ min: 0, max: 4, noNaN: true }), fc.integer()), (n) => {
      const r = attempt(() => parseThreshold(n))
      if (!r.ok) { expect(r.code).toBe('ERR_INVALID_THRESHOLD'); return }
      expect(r.value).toMatchObject({ kind: 'bytes', bytes: Math.floor(n) })
      expect(Number.isSafeInteger(r.value.kind === 'bytes' ? r.value.bytes : NaN)).toBe(true)
      expect(r.value.kind === 'bytes' && r.value.bytes >= 1).toBe(true)
    }), { numRuns: 2000 })
  })

  it('size strings are the exact binary multiple', () => {
    const units: Array<[string, number]> = [['B', 0], ['K', 1], ['KiB', 1], ['kb', 1], ['M', 2], ['MiB', 2], ['G', 3], ['GiB', 3], ['T', 4]]
    fc.assert(fc.property(fc.integer({ min: 1, max: 8191 }), fc.constantFrom(...units), (n, [unit, power]) => {
      expect(parseThreshold(`${n}${unit}`)).toMatchObject({ kind: 'bytes', bytes: n * 1024 ** power })
    }), RUNS)
  })

  it('a size string without a unit is refused (a number is bytes; a string says its unit or %)', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 2 ** 40 }), (n) => {
      expect(attempt(() => parseThreshold(String(n)))).toMatchObject({ ok: false, code: 'ERR_INVALID_THRESHOLD' })
    }), RUNS)
  })

  it('any string is a TypeError-free answer: ERR_INVALID_THRESHOLD, or bytes ≥ 1, or a percentage in (0, 100]', () => {
    fc.assert(fc.property(fc.oneof(garbage, fc.stringMatching(/^ ?-?[0-9.]{0,6}[kmgtKMGT]?i?[bB]? ?%?$/)), (s) => {
      const r = attempt(() => parseThreshold(s))
      if (!r.ok) { expect(r.code).toBe('ERR_INVALID_THRESHOLD'); return }
      if (r.value.kind === 'bytes') expect(Number.isSafeInteger(r.value.bytes) && r.value.bytes >= 1).toBe(true)
      else expect(r.value.percent > 0 && r.value.percent <= 100).toBe(true)
    }), { numRuns: 2000 })
  })

  it('a percentage resolves to at most the limit and at least one byte, or is refused', () => {
    fc.assert(fc.property(fc.double({ min: 0, max: 100, noNaN: true }), fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }), (p, limit) => {
      const parsed = attempt(() => parseThreshold(`${p.toFixed(6)}%`))
      if (!parsed.ok) { expect(parsed.code).toBe('ERR_INVALID_THRESHOLD'); return }
      const r = attempt(() => resolveThreshold(parsed.value, limit))
      if (!r.ok) { expect(r.code).toBe('ERR_INVALID_THRESHOLD'); return }
      expect(r.value >= 1 && r.value <= limit && Number.isSafeInteger(r.value)).toBe(true)
    }), RUNS)
  })
})
