// PSI triggers: the write format and window arithmetic as unit tests, then arming, the false-first-
// event filter and cgroup removal on this machine's cgroup v2 tree (memory.pressure without memory).

import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { PsiTrigger, parsePressure, triggerBytes, unprivilegedWindowUs } from '../src/backends/psi.js'
import { parseMountInfo } from '../src/cgroup/mountinfo.js'
import { MemoryPressureError } from '../src/errors.js'
import { type NativeBinding, tryLoadNative } from '../src/native.js'
import { Collector, turns } from './helpers/collect.js'

describe('PSI arithmetic', () => {
  it('writes the trigger with a trailing NUL', () => {
    const b = triggerBytes('some', 100000, 2000000)
    expect(b.at(-1)).toBe(0)
    expect(b.subarray(0, -1).toString()).toBe('some 100000 2000000')
  })

  it('rounds windows up to multiples of 2 s for unprivileged triggers', () => {
    expect([500_000, 1_000_000, 2_000_000, 2_000_001, 3_000_000, 4_000_000, 10_000_000].map(unprivilegedWindowUs))
      .toEqual([2_000_000, 2_000_000, 2_000_000, 4_000_000, 4_000_000, 4_000_000, 10_000_000])
  })

  it('parses some and full lines, totals in microseconds', () => {
    const r = parsePressure('some avg10=1.50 avg60=0.20 avg300=0.00 total=131072\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=7\n')
    expect(r.some).toEqual({ avg10: 1.5, avg60: 0.2, avg300: 0, totalUs: 131072 })
    expect(r.full?.totalUs).toBe(7)
  })

  it('rejects a malformed file with ERR_PARSE', () => {
    let err: unknown
    try {
      parsePressure('some avg10=x total=1\n', '/x/memory.pressure')
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(MemoryPressureError)
    expect((err as MemoryPressureError).code).toBe('ERR_PARSE')
    expect((err as MemoryPressureError).path).toBe('/x/memory.pressure')
  })

  it('rejects bad options naming the option', () => {
    expect(() => PsiTrigger.open('/proc/pressure/memory', { windowUs: 100 })).toThrow(/windowUs/)
    expect(() => PsiTrigger.open('/proc/pressure/memory', { stallUs: 0 })).toThrow(/stallUs/)
    expect(() => PsiTrigger.open('/proc/pressure/memory', { kind: 'most' as 'some' })).toThrow(/kind/)
  })
})

describe('PSI trigger wake-ups (a fake poll and a PSI file in a temp dir)', () => {
  const psiText = (total: number): string =>
    `some avg10=0.00 avg60=0.00 avg300=0.00 total=${total}\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n`
  const setup = () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-psi-'))
    const file = path.join(dir, 'memory.pressure')
    fs.writeFileSync(file, psiText(5_000))
    let wake: ((status: number, events: number) => void) | undefined
    let closedFd = -1
    const real = tryLoadNative()
    const fake = {
      ...(real instanceof MemoryPressureError ? {} : real),
      platformSupported: true,
      watch: (fd: number, mode: string, cb: (status: number, events: number) => void) => {
        expect(mode).toBe('priority')
        wake = cb
        return { fd, closed: false, ref() {}, unref() {}, hasRef: () => false, close: () => { closedFd = fd; fs.closeSync(fd) } }
      },
    } as unknown as NativeBinding
    const t = PsiTrigger.open(file, { stallUs: 100_000, windowUs: 2_000_000 }, fake)
    // A regular file keeps the trigger written over its start: restore the PSI text.
    expect(fs.readFileSync(file, 'latin1').startsWith('some 100000 2000000\0')).toBe(true)
    fs.writeFileSync(file, psiText(5_000))
    return { t, file, dir, wake: (status = 0, events = 8) => wake?.(status, status < 0 ? 0 : events), closedFd: () => closedFd }
  }

  it('drops a wake-up without growth of total (the false first event), reports one with growth', () => {
    const { t, file, dir, wake } = setup()
    const stalls: number[] = []
    const dropped: number[] = []
    t.on('stall', (e) => stalls.push(e.stallUs))
    t.on('filtered', (g) => dropped.push(g))
    wake()
    fs.writeFileSync(file, psiText(5_000 + 40_000))
    wake()
    fs.writeFileSync(file, psiText(5_000 + 150_000))
    wake()
    fs.writeFileSync(file, psiText(5_000 + 160_000))
    wake()
    expect(dropped).toEqual([0, 40_000, 10_000])
    expect(stalls).toEqual([150_000])
    expect(t.filtered).toBe(3)
    t.close()
    fs.rmSync(dir, { recursive: true })
  })

  it('POLLERR (status -9) closes the trigger once with removed and closes its fd', () => {
    const { t, dir, wake, closedFd } = setup()
    const closes: string[] = []
    t.on('close', (r) => closes.push(r))
    wake(-9)
    wake(-9)
    t.close()
    expect(closes).toEqual(['removed'])
    expect(closedFd()).toBeGreaterThanOrEqual(0)
    fs.rmSync(dir, { recursive: true })
  })

  it('POLLPRI again and again after the file is gone (a removed cgroup on a 6.1 kernel) closes once, no spin', () => {
    const { t, file, dir, wake } = setup()
    const closes: string[] = []
    t.on('close', (r) => closes.push(r))
    fs.rmSync(file)
    for (let i = 0; i < 3; i++) wake(0, 8)
    expect(closes).toEqual(['removed'])
    expect(t.closed).toBe(true)
    fs.rmSync(dir, { recursive: true })
  })

  it('a hang-up (POLL_DISCONNECT) closes with removed', () => {
    const { t, dir, wake } = setup()
    const closes: string[] = []
    t.on('close', (r) => closes.push(r))
    wake(0, 4)
    expect(closes).toEqual(['removed'])
    fs.rmSync(dir, { recursive: true })
  })
})

/** This process's cgroup v2 directory, when the v2 tree is mounted with PSI files and writable. */
function ownV2Dir(): { dir: string } | { reason: string } {
  if (process.platform !== 'linux') return { reason: 'not Linux' }
  if (tryLoadNative() instanceof MemoryPressureError) return { reason: 'no native addon' }
  const mounts = parseMountInfo(fs.readFileSync('/proc/self/mountinfo', 'utf8')).filter((m) => m.fsType === 'cgroup2')
  const line = fs.readFileSync('/proc/self/cgroup', 'utf8').split('\n').find((l) => l.startsWith('0::'))
  const mount = mounts.find((m) => m.root === '/')
  if (line === undefined || mount === undefined) return { reason: 'no cgroup v2 mount' }
  const dir = path.join(mount.mountPoint, line.slice(3))
  if (!fs.existsSync(path.join(dir, 'memory.pressure'))) return { reason: 'no memory.pressure (PSI off)' }
  try {
    fs.accessSync(dir, fs.constants.W_OK)
  } catch {
    return { reason: 'the cgroup v2 tree is not writable' }
  }
  return { dir }
}

const own = ownV2Dir()
const skip = 'reason' in own ? ` (skipped: ${own.reason})` : ''
const real = 'reason' in own ? it.skip : it

describe('PSI triggers on this machine', () => {
  const made: string[] = []
  const triggers: PsiTrigger[] = []
  afterEach(() => {
    for (const t of triggers.splice(0)) t.close()
    for (const d of made.splice(0)) {
      try {
        fs.rmdirSync(d)
      } catch {
        // removed by the test itself
      }
    }
  })
  const child = (): string => {
    if (!('dir' in own)) throw new Error('unreachable')
    const d = path.join(own.dir, `mp-psi-${process.pid}-${randomBytes(4).toString('hex')}`)
    fs.mkdirSync(d)
    made.push(d)
    return d
  }

  real(`arms a trigger; a window refused with EINVAL is retried as a multiple of 2 s${skip}`, () => {
    const t = PsiTrigger.open(path.join(child(), 'memory.pressure'), { stallUs: 100_000, windowUs: 1_000_000 })
    triggers.push(t)
    const privileged = (BigInt(`0x${/CapEff:\s*([0-9a-f]+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))?.[1] ?? '0'}`) >> 24n) & 1n
    if (privileged === 1n) {
      expect(t.windowUs).toBe(1_000_000)
      expect(t.notes).toEqual([])
    } else {
      expect(t.windowUs).toBe(2_000_000)
      expect(t.notes.length).toBe(1)
    }
  })

  real(`a window that is a multiple of 2 s is used as given${skip}`, () => {
    const t = PsiTrigger.open(path.join(child(), 'memory.pressure'), { stallUs: 150_000, windowUs: 4_000_000 })
    triggers.push(t)
    expect([t.windowUs, t.stallUs, t.kind, t.notes.length]).toEqual([4_000_000, 150_000, 'some', 0])
  })

  real(`removing the cgroup closes the trigger with 'removed' once, without spinning${skip}`, async () => {
    const dir = child()
    const t = PsiTrigger.open(path.join(dir, 'memory.pressure'), { stallUs: 100_000, windowUs: 2_000_000 })
    triggers.push(t)
    const closes = new Collector<string>()
    t.on('close', closes.push)
    fs.rmdirSync(dir)
    await closes.count(1)
    await turns(20)
    expect(closes.items).toEqual(['removed'])
    expect(t.closed).toBe(true)
  })

  real(`a missing PSI file is ERR_NO_CGROUP with the path, and no fd stays open${skip}`, () => {
    const fds = fs.readdirSync('/proc/self/fd').length
    let err: unknown
    try {
      PsiTrigger.open(path.join((own as { dir: string }).dir, `mp-missing-${randomBytes(4).toString('hex')}`, 'memory.pressure'))
    } catch (e) {
      err = e
    }
    expect((err as MemoryPressureError).code).toBe('ERR_NO_CGROUP')
    expect((err as MemoryPressureError).syscall).toBe('open')
    expect(fs.readdirSync('/proc/self/fd').length).toBe(fds)
  })
})
