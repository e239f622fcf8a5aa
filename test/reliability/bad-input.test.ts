// The bad-input corpus: wrong calls across the public API and the command line, each with the
// error class and code it must get (or a documented no-op), and nothing left open after it: no fd,
// no cgroup, no timer or watcher.

import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { LRUCache } from 'lru-cache'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CgroupV1Backend } from '../../src/backends/cgroup-v1.js'
import { ProcessBackend } from '../../src/backends/process.js'
import { PsiTrigger } from '../../src/backends/psi.js'
import { SimulatedBackend } from '../../src/backends/simulated.js'
import { cgroupOfPid, findMemoryCgroup, resolveCgroupPath } from '../../src/cgroup/index.js'
import { main } from '../../src/cli/main.js'
import { MemoryPressureError } from '../../src/errors.js'
import { createMemoryMonitor, type MemoryMonitor } from '../../src/monitor.js'
import { lruCacheShrinker } from '../../src/plugins/lru-cache.js'
import { reduceHeap } from '../../src/policy/heap.js'
import { onMemoryThreshold } from '../../src/threshold.js'
import { createTestCgroup, openFdCount, ownV1MemoryCgroup, type TestCgroup } from '../helpers/cgroup.js'

const MiB = 2 ** 20
const own = ownV1MemoryCgroup()
const noop = (): void => {}
const sim = (options: object = {}): { backend: 'simulated'; simulated: object } => ({ backend: 'simulated', simulated: { limit: 256 * MiB, ...options } })

type ErrorClass = typeof TypeError | typeof RangeError | typeof MemoryPressureError
/** What a call must end in: an error of a class (and code), a CLI exit code, or a documented no-op. */
type Outcome = { error: ErrorClass; code?: string } | { exit: number } | { noop: string }
interface Case {
  name: string
  call: () => unknown
  outcome: Outcome
  /** Needs the real cgroup v1 test cgroup. */
  v1?: boolean
}

let cg: TestCgroup | undefined
let tmp: string
const cgPath = (): string => cg?.path ?? '/nonexistent-test-cgroup'

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-bad-input-'))
  fs.mkdirSync(path.join(tmp, 'dir'))
  fs.writeFileSync(path.join(tmp, 'file'), 'not a cgroup\n')
  fs.symlinkSync('/etc', path.join(tmp, 'to-etc'))
  fs.symlinkSync(path.join(tmp, 'dir'), path.join(tmp, 'to-dir'))
  if ('dir' in own) cg = createTestCgroup(own.dir, { limit: 64 * MiB })
})

afterAll(async () => {
  await cg?.remove()
  fs.rmSync(tmp, { recursive: true, force: true })
})

/** A closed monitor on the simulated backend. */
function closedMonitor(): MemoryMonitor {
  const m = createMemoryMonitor(sim())
  void m.close()
  return m
}

/** Runs the command line in this process; resolves to its exit code. Output is discarded. */
async function cli(...argv: string[]): Promise<number> {
  const sink = { write: () => true, isTTY: false, columns: 80 } as unknown as NodeJS.WriteStream
  return main(argv, { out: sink, err: sink })
}

const thresholdCases: Case[] = ([
  ['NaN', Number.NaN], ['Infinity', Number.POSITIVE_INFINITY], ['-Infinity', Number.NEGATIVE_INFINITY], ['-1', -1], ['0', 0], ['0.5 bytes', 0.5],
  ['2^53', 2 ** 53], ['2^60', 2 ** 60], ['Number.MAX_VALUE', Number.MAX_VALUE], ['"12XB"', '12XB'], ['"1.2.3M"', '1.2.3M'], ['""', ''],
  ['"   "', '   '], ['"-5%"', '-5%'], ['"0%"', '0%'], ['"101%"', '101%'], ['"NaN%"', 'NaN%'], ['"80%%"', '80%%'], ['"1e9"', '1e9'],
  ['"0x100000"', '0x100000'], ['"9007199254740993"', '9007199254740993'], ['"8388608TiB" (2^63)', '8388608TiB'],
  ['"2GiB" above a 256 MiB limit', '2GiB'], ['256 MiB + 1 byte above the limit', 256 * MiB + 1],
] as Array<[string, unknown]>).map(([label, value]) => ({
  name: `onMemoryThreshold(${label})`,
  call: () => onMemoryThreshold(value as string, noop, sim()),
  outcome: { error: MemoryPressureError, code: 'ERR_INVALID_THRESHOLD' },
}))

const typeCases: Case[] = ([
  ['a bigint threshold', () => onMemoryThreshold(10n as unknown as number, noop, sim())],
  ['a null threshold', () => onMemoryThreshold(null as unknown as number, noop, sim())],
  ['an object threshold', () => onMemoryThreshold({} as unknown as number, noop, sim())],
  ['an array threshold', () => onMemoryThreshold(['80%'] as unknown as string, noop, sim())],
  ['a handler that is not a function', () => onMemoryThreshold('80%', 'log' as unknown as () => void, sim())],
  ['null options', () => onMemoryThreshold('80%', noop, null as unknown as object)],
  ['direction "sideways"', () => onMemoryThreshold('80%', noop, { ...sim(), direction: 'sideways' as 'up' })],
  ['a signal that is not an AbortSignal', () => onMemoryThreshold('80%', noop, { ...sim(), signal: {} as AbortSignal })],
  ['onError that is not a function', () => onMemoryThreshold('80%', noop, { ...sim(), onError: 1 as unknown as () => void })],
  ['monitor that is not a MemoryMonitor', () => onMemoryThreshold('80%', noop, { monitor: {} as MemoryMonitor })],
  ['backend "nope"', () => createMemoryMonitor({ backend: 'nope' as 'auto' })],
  ['backend {}', () => createMemoryMonitor({ backend: {} as 'auto' })],
  ['cgroup 42', () => createMemoryMonitor({ cgroup: 42 as unknown as string })],
  ['a relative cgroup path', () => resolveCgroupPath('memory/x')],
  ['options "x"', () => createMemoryMonitor('x' as unknown as object)],
  ['thresholds that are not an array', () => createMemoryMonitor({ ...sim(), thresholds: '80%' as unknown as string[] })],
  ['levels "high"', () => createMemoryMonitor({ ...sim(), levels: 'high' as unknown as true })],
  ['basis "heap"', () => createMemoryMonitor({ ...sim(), levels: true, basis: 'heap' as 'rss' })],
  ['clock {}', () => createMemoryMonitor({ ...sim(), clock: {} as never })],
  ['reduceHeap gc "minor"', () => createMemoryMonitor({ ...sim(), reduceHeap: { gc: 'minor' as 'none' } })],
  ['register(null)', () => createMemoryMonitor(sim()).register(null as never)],
  ['a shrinker without a name', () => createMemoryMonitor(sim()).register({ name: '', shrink: noop } as never)],
  ['a shrinker without shrink()', () => createMemoryMonitor(sim()).register({ name: 'cache' } as never)],
  ['a shrinker whose shrink is a number', () => createMemoryMonitor(sim()).register({ name: 'cache', shrink: 1 } as never)],
  ['a shrinker with priority NaN', () => createMemoryMonitor(sim()).register({ name: 'cache', priority: Number.NaN, shrink: noop } as never)],
  ['a shrinker whose size is a string', () => createMemoryMonitor(sim()).register({ name: 'cache', size: 'big', shrink: noop } as never)],
  ['SimulatedBackend(null)', () => new SimulatedBackend(null as never)],
  ['simulated watchThreshold(1, "fn")', () => new SimulatedBackend().watchThreshold(1, 'fn' as never)],
  ['PsiTrigger.open("")', () => PsiTrigger.open('')],
  ['PsiTrigger.open kind "half"', () => PsiTrigger.open('/proc/pressure/memory', { kind: 'half' as 'some' })],
  ['lruCacheShrinker({})', () => lruCacheShrinker({} as never)],
  ['findMemoryCgroup(null)', () => findMemoryCgroup(null as never)],
] as Array<[string, () => unknown]>).map(([name, call]) => ({ name, call, outcome: { error: TypeError } }))

const rangeCases: Case[] = ([
  ['levels that do not increase', () => createMemoryMonitor({ ...sim(), levels: { moderate: '90%', high: '80%', critical: '95%' } })],
  ['hysteresis above the moderate level', () => createMemoryMonitor({ ...sim(), levels: true, hysteresis: '80%' })],
  ['cooldownMs -1', () => createMemoryMonitor({ ...sim(), levels: true, tuning: { cooldownMs: -1 } })],
  ['shrinkTimeoutMs NaN', () => createMemoryMonitor({ ...sim(), levels: true, shrinkTimeoutMs: Number.NaN })],
  ['SimulatedBackend limit -1', () => new SimulatedBackend({ limit: -1 })],
  ['SimulatedBackend usage above limit', () => new SimulatedBackend({ usage: 2 * MiB, limit: MiB })],
  ['simulated watchThreshold(0)', () => new SimulatedBackend().watchThreshold(0, noop)],
  ['simulated watchThreshold(2^53)', () => new SimulatedBackend().watchThreshold(2 ** 53, noop)],
  ['PsiTrigger.open windowUs 1', () => PsiTrigger.open('/proc/pressure/memory', { windowUs: 1 })],
  ['PsiTrigger.open stallUs above the window', () => PsiTrigger.open('/proc/pressure/memory', { stallUs: 3_000_000, windowUs: 2_000_000 })],
  ['ProcessBackend budget -1', () => ProcessBackend.open({ budget: -1 })],
  ['ProcessBackend pid 0', () => ProcessBackend.open({ pid: 0 })],
  ['findMemoryCgroup pid -1', () => findMemoryCgroup({ pid: -1 })],
  ['findMemoryCgroup pid 2^53', () => findMemoryCgroup({ pid: 2 ** 53 })],
  ['lruCacheShrinker keep 2', () => lruCacheShrinker(new LRUCache<string, string>({ max: 10 }), { keep: { moderate: 2 } })],
] as Array<[string, () => unknown]>).map(([name, call]) => ({ name, call, outcome: { error: RangeError } }))

const mpe = (code: string, name: string, call: () => unknown, v1 = false): Case => ({ name, call, outcome: { error: MemoryPressureError, code }, v1 })
const codeCases: Case[] = [
  mpe('ERR_NO_LIMIT', 'a percentage without a limit', () => onMemoryThreshold('80%', noop, sim({ limit: Number.POSITIVE_INFINITY }))),
  mpe('ERR_NO_LIMIT', 'levels in percent without a cgroup limit, the heap not watched', () => createMemoryMonitor({ ...sim({ limit: Number.POSITIVE_INFINITY }), levels: { moderate: '70%' }, heapLimit: false })),
  mpe('ERR_INVALID_THRESHOLD', 'a bad threshold in the options', () => createMemoryMonitor({ ...sim(), thresholds: ['50%', 'lots'] })),
  mpe('ERR_NO_CGROUP', 'a cgroup that does not exist', () => createMemoryMonitor({ cgroup: '/sys/fs/cgroup/memory/mp-does-not-exist' })),
  mpe('ERR_NO_CGROUP', 'a cgroup that is a file', () => createMemoryMonitor({ cgroup: path.join(cgPath(), 'memory.stat') }), true),
  mpe('ERR_NO_CGROUP', 'a cgroup outside any cgroup mount', () => createMemoryMonitor({ cgroup: tmp })),
  mpe('ERR_NO_CGROUP', 'a cgroup path escaping the mount with ..', () => createMemoryMonitor({ cgroup: `${cgPath()}/../../../../../../tmp` }), true),
  mpe('ERR_NO_CGROUP', 'a symlink from /tmp to /etc', () => createMemoryMonitor({ cgroup: path.join(tmp, 'to-etc') })),
  mpe('ERR_NO_CGROUP', 'a cgroup of a hierarchy without memory', () => resolveCgroupPath('/sys/fs/cgroup/cpu')),
  mpe('ERR_NO_CGROUP', 'the cgroup of a pid that does not exist', () => cgroupOfPid(4_194_304 + 1)),
  mpe('ERR_BACKEND_UNAVAILABLE', 'a v1 backend on a file', () => CgroupV1Backend.open({ cgroup: '/etc/hostname' })),
  mpe('ERR_BACKEND_UNAVAILABLE', 'the cgroup-v2 backend on a v1 host', () => createMemoryMonitor({ backend: 'cgroup-v2' }), true),
  mpe('ERR_INVALID_THRESHOLD', 'a v1 threshold above the limit', () => createMemoryMonitor({ cgroup: cgPath(), thresholds: ['65MiB'] }), true),
  mpe('ERR_CLOSED', 'addThreshold after close', () => closedMonitor().addThreshold('10%')),
  mpe('ERR_CLOSED', 'register after close', () => closedMonitor().register({ name: 'x', shrink: noop })),
  mpe('ERR_CLOSED', 'snapshot after close', () => closedMonitor().snapshot()),
  mpe('ERR_CLOSED', 'until after close', () => closedMonitor().until('normal')),
  mpe('ERR_CLOSED', 'a v1 backend watchThreshold after close', () => {
    const b = CgroupV1Backend.open({ cgroup: cgPath() })
    b.close()
    return b.watchThreshold(MiB, noop)
  }, true),
]

const noopCases: Case[] = [
  { name: 'close() twice', outcome: { noop: 'idempotent' }, call: async () => { const m = createMemoryMonitor(sim()); await m.close(); await m.close() } },
  {
    name: 'unsubscribe twice', outcome: { noop: 'idempotent' },
    call: async () => { const m = createMemoryMonitor(sim()); const off = m.addThreshold('10%'); off(); off(); await m.close() },
  },
  {
    name: 'events() after close', outcome: { noop: 'an iterator that is done at once' },
    call: async () => { const r = await closedMonitor().events().next(); if (r.done !== true) throw new Error('not done') },
  },
  {
    name: 'onMemoryThreshold with an aborted signal', outcome: { noop: 'nothing is watched' },
    call: () => { const stop = onMemoryThreshold('10%', noop, { ...sim(), signal: AbortSignal.abort() }); stop() },
  },
]

const cliCases: Case[] = ([
  [2, 'an unknown command', ['frobnicate']],
  [2, 'an unknown option', ['doctor', '--bogus']],
  [2, '--pid abc', ['doctor', '--pid', 'abc']],
  [2, '--pid -1', ['doctor', '--pid', '-1']],
  [2, '--pid 0', ['watch', '--pid', '0']],
  [2, '--pid 1e3', ['doctor', '--pid', '1e3']],
  [2, '--pid above 2^53', ['doctor', '--pid', '9007199254740993']],
  [2, '--cgroup with --pid', ['doctor', '--cgroup', '/sys/fs/cgroup/memory', '--pid', '1']],
  [2, '--root without --cgroup', ['doctor', '--root', '/tmp']],
  [2, '--interval-ms 5', ['watch', '--interval-ms', '5']],
  [2, '--interval-ms -100', ['watch', '--interval-ms', '-100']],
  [2, '--json on watch', ['watch', '--json']],
  [2, '--thresholds on doctor', ['doctor', '--thresholds', '50%']],
  [2, 'two commands', ['doctor', 'watch']],
  [3, 'watch --cgroup that does not exist', ['watch', '--cgroup', '/sys/fs/cgroup/memory/mp-does-not-exist']],
  [3, 'watch --cgroup /tmp (outside any cgroup mount)', ['watch', '--cgroup', '/tmp']],
  [3, 'watch --cgroup of a file', ['watch', '--cgroup', '/etc/hostname']],
  [3, 'watch --pid of no process', ['watch', '--pid', '4194305']],
  [1, 'doctor --pid of no process', ['doctor', '--pid', '4194305']],
  [1, 'doctor --cgroup .. escaping the mount', ['doctor', '--cgroup', '/sys/fs/cgroup/memory/../../../tmp']],
  [2, 'watch --thresholds that do not parse', ['watch', '--cgroup', '/sys/fs/cgroup/memory', '--thresholds', 'lots']],
] as Array<[number, string, string[]]>).map(([exit, name, argv]) => ({ name: `node-memory-pressure ${name}`, call: () => cli(...argv), outcome: { exit } }))

/** An error class with a `.code` (TypeError/RangeError codes follow Node's). */
const withCode = (error: ErrorClass, code: string, name: string, call: () => unknown): Case => ({ name, call, outcome: { error, code } })
const shrinker = { name: 'cache', shrink: () => 0 }
/** Questionable input that used to be accepted, and timers Node would clamp to 1 ms. */
const strictCases: Case[] = [
  ...([
    ['"80" (no unit: bytes, MiB or percent?)', '80'], ['"1.9" (no unit)', '1.9'], ['" 100 " (no unit)', ' 100 '], ['"1.5B" (a fraction of a byte)', '1.5B'],
    ['1.5 bytes', 1.5], ['1.9 bytes', 1.9], ['"0.0001%" (268 bytes of 256 MiB: below a page)', '0.0001%'],
  ] as Array<[string, unknown]>).map(([label, value]) => withCode(MemoryPressureError, 'ERR_INVALID_THRESHOLD', `onMemoryThreshold(${label})`,
    () => onMemoryThreshold(value as string, noop, sim()))),
  withCode(MemoryPressureError, 'ERR_INVALID_THRESHOLD', 'a negative hysteresis, at construction', () => createMemoryMonitor({ ...sim(), hysteresis: -1 })),
  withCode(MemoryPressureError, 'ERR_INVALID_THRESHOLD', 'hysteresis "-5%", at construction', () => createMemoryMonitor({ ...sim(), hysteresis: '-5%' })),
  withCode(MemoryPressureError, 'ERR_INVALID_THRESHOLD', 'levels.moderate "70", at construction', () => createMemoryMonitor({ ...sim(), levels: { moderate: '70' } })),
  withCode(TypeError, 'ERR_INVALID_ARG_VALUE', 'an unknown basis without levels, at construction', () => createMemoryMonitor({ ...sim(), basis: 'heap' as 'rss' })),
  withCode(TypeError, 'ERR_UNKNOWN_OPTION', 'monitor option "treshold"', () => createMemoryMonitor({ ...sim(), treshold: '80%' } as object)),
  withCode(TypeError, 'ERR_UNKNOWN_OPTION', 'monitor option "level" (for levels)', () => createMemoryMonitor({ ...sim(), level: true } as object)),
  withCode(TypeError, 'ERR_UNKNOWN_OPTION', 'levels.modrate', () => createMemoryMonitor({ ...sim(), levels: { modrate: '70%' } as object })),
  withCode(TypeError, 'ERR_UNKNOWN_OPTION', 'thresholds[0].treshold', () => createMemoryMonitor({ ...sim(), thresholds: [{ treshold: '80%' } as never] })),
  withCode(TypeError, 'ERR_UNKNOWN_OPTION', 'onMemoryThreshold option "directon"', () => onMemoryThreshold('80%', noop, { ...sim(), directon: 'both' } as object)),
  withCode(TypeError, 'ERR_UNKNOWN_OPTION', 'addThreshold option "handlr"', () => {
    const m = createMemoryMonitor(sim())
    try { return m.addThreshold('50%', { handlr: noop } as object) } finally { void m.close() }
  }),
  withCode(TypeError, 'ERR_UNKNOWN_OPTION', 'events option "maxQueue"', () => closedMonitor().events({ maxQueue: 3 } as object)),
  withCode(RangeError, 'ERR_OUT_OF_RANGE', 'events maxQueued 0', () => closedMonitor().events({ maxQueued: 0 })),
  withCode(RangeError, 'ERR_OUT_OF_RANGE', 'events maxQueued 1.5', () => closedMonitor().events({ maxQueued: 1.5 })),
  withCode(TypeError, 'ERR_INVALID_ARG_VALUE', 'the same shrinker registered twice', () => {
    const m = createMemoryMonitor(sim())
    try { m.register(shrinker); return m.register(shrinker) } finally { void m.close() }
  }),
  withCode(RangeError, 'ERR_OUT_OF_RANGE', 'tuning.cooldownMs 1e12 (past 2^31-1)', () => createMemoryMonitor({ ...sim(), tuning: { cooldownMs: 1e12 } })),
  withCode(RangeError, 'ERR_OUT_OF_RANGE', 'tuning.cooldownMs 2^31', () => createMemoryMonitor({ ...sim(), tuning: { cooldownMs: 2 ** 31 } })),
  withCode(TypeError, 'ERR_UNKNOWN_OPTION', 'cooldownMs at the top (an internal, not an option)', () => createMemoryMonitor({ ...sim(), cooldownMs: 100 } as never)),
  withCode(RangeError, 'ERR_OUT_OF_RANGE', 'shrinkTimeoutMs 3e9', () => createMemoryMonitor({ ...sim(), shrinkTimeoutMs: 3e9 })),
  withCode(RangeError, 'ERR_OUT_OF_RANGE', 'shrinkTimeoutMs 0', () => createMemoryMonitor({ ...sim(), shrinkTimeoutMs: 0 })),
  withCode(RangeError, 'ERR_OUT_OF_RANGE', 'tuning.recheckMs 0 (a busy re-check)', () => createMemoryMonitor({ ...sim(), tuning: { recheckMs: 0 } })),
  withCode(RangeError, 'ERR_OUT_OF_RANGE', 'tuning.recheckMs 99', () => createMemoryMonitor({ ...sim(), tuning: { recheckMs: 99 } })),
  withCode(TypeError, 'ERR_INVALID_ARG_TYPE', 'tuning.cooldownMs "100"', () => createMemoryMonitor({ ...sim(), tuning: { cooldownMs: '100' as unknown as number } })),
  withCode(TypeError, 'ERR_UNKNOWN_OPTION', 'tuning.coolDownMs (misspelled)', () => createMemoryMonitor({ ...sim(), tuning: { coolDownMs: 1 } as never })),
  withCode(RangeError, 'ERR_OUT_OF_RANGE', 'poll.maxIntervalMs 3e9', () => ProcessBackend.open({ poll: { maxIntervalMs: 3e9 } })),
]

const corpus = [...thresholdCases, ...typeCases, ...rangeCases, ...codeCases, ...noopCases, ...cliCases, ...strictCases]

/** Names of this process's own test cgroups, to show none is left behind. */
function leftoverCgroups(): string[] {
  if (!('dir' in own)) return []
  return fs.readdirSync(own.dir).filter((n) => n.startsWith('mp-') && n !== path.basename(cgPath()))
}

describe('bad input corpus', () => {
  it('has at least 50 calls', () => {
    expect(corpus.length).toBeGreaterThanOrEqual(50)
    expect(new Set(corpus.map((c) => c.name)).size).toBe(corpus.length)
  })

  it.each(corpus.map((c) => [c.v1 === true && cg === undefined ? `${c.name} (skipped: ${'reason' in own ? own.reason : ''})` : c.name, c] as const))('%s', async (_, c) => {
    if (c.v1 === true && cg === undefined) return
    const fds = openFdCount()
    const cgroups = leftoverCgroups()
    const warnings: Error[] = []
    const onWarning = (w: Error): void => void warnings.push(w)
    process.on('warning', onWarning)
    let result: { value: unknown } | { error: unknown }
    try {
      result = { value: await c.call() }
    } catch (error) {
      result = { error }
    }
    // Let deferred work (closing a backend, queued microtasks) run before counting.
    await new Promise((r) => setImmediate(r))
    process.off('warning', onWarning)
    const o = c.outcome
    if ('error' in o) {
      expect('error' in result, `${c.name} did not throw`).toBe(true)
      const error = (result as { error: unknown }).error
      expect(error).toBeInstanceOf(o.error)
      if (o.error === TypeError || o.error === RangeError) expect(error).not.toBeInstanceOf(MemoryPressureError)
      if (o.code !== undefined) expect((error as MemoryPressureError).code).toBe(o.code)
    } else if ('exit' in o) {
      expect(result).toEqual({ value: o.exit })
    } else {
      expect(result).toEqual({ value: undefined })
    }
    expect(openFdCount()).toBe(fds)
    expect(leftoverCgroups()).toEqual(cgroups)
    expect(warnings.map((w) => w.name)).toEqual([])
  })
})
