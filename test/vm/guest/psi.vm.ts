// In the VM: PSI triggers on a cgroup's memory.pressure as the kernel grants them: any window from
// 500 ms with CAP_SYS_RESOURCE (root here), only multiples of 2 s without; a trigger fires when
// memory.high stalls a child; removing the cgroup wakes the watcher once and never again.

import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { POLL_PRIORITIZED, type PollWatcher, loadNative } from '../../../src/native.js'
import { Collector, turns } from '../../helpers/collect.js'
import { type TestCgroup, spawnInCgroup } from '../../helpers/cgroup.js'
import { makeV2Cgroup, testParent } from './cgroup2.js'

const MiB = 2 ** 20
const allocator = fileURLToPath(new URL('../../helpers/allocator.mjs', import.meta.url))
const native = loadNative()
const CAP_SYS_RESOURCE = 24n
const NOBODY = 65534

const made: TestCgroup[] = []
const watchers: PollWatcher[] = []
afterEach(async () => {
  for (const w of watchers.splice(0)) w.close()
  for (const cg of made.splice(0).reverse()) await cg.remove()
})

function cgroup(): TestCgroup {
  const cg = makeV2Cgroup(testParent())
  made.push(cg)
  return cg
}

/**
 * Tries each window (microseconds) on its own fd, as `uid` (0 = this process's privileges), and
 * says `ok` or the errno code for each. psi.rst: the trigger text goes in with its trailing NUL.
 */
const probeScript = `
const fs = require('node:fs')
const [file, ...windows] = process.argv.slice(1)
const capEff = fs.readFileSync('/proc/self/status', 'utf8').match(/^CapEff:\\s*(\\w+)/m)[1]
const results = windows.map((w) => {
  const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_NONBLOCK)
  try {
    fs.writeSync(fd, Buffer.from('some 100000 ' + w + '\\0'))
    return 'ok'
  } catch (err) {
    return err.code
  } finally {
    fs.closeSync(fd)
  }
})
process.stdout.write(JSON.stringify({ uid: process.getuid(), capEff, results }))
`

function probeWindows(file: string, windowsUs: number[], uid: number): Promise<{ uid: number; capEff: string; results: string[] }> {
  const proc = spawn(process.execPath, ['-e', probeScript, file, ...windowsUs.map(String)], {
    uid, gid: uid, stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  let err = ''
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()))
  proc.stderr.on('data', (d: Buffer) => (err += d.toString()))
  return new Promise((resolve, reject) => proc.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`probe exited ${code}: ${err}`)))))
}

const hasCap = (capEffHex: string, bit: bigint): boolean => ((BigInt(`0x${capEffHex}`) >> bit) & 1n) === 1n

/** Arms `some <stallUs> <windowUs>` on the cgroup's memory.pressure and watches it for POLLPRI. */
function arm(cg: TestCgroup, stallUs: number, windowUs: number): Collector<{ status: number; events: number }> {
  const fd = fs.openSync(path.join(cg.path, 'memory.pressure'), fs.constants.O_RDWR | fs.constants.O_NONBLOCK)
  const wakes = new Collector<{ status: number; events: number }>()
  try {
    fs.writeSync(fd, Buffer.from(`some ${stallUs} ${windowUs}\0`))
    const w = native.watch(fd, 'priority', (status, events) => wakes.push({ status, events }))
    if (typeof w === 'number') throw new Error(`watch(memory.pressure) failed: ${w}`)
    watchers.push(w)
  } catch (err) {
    fs.closeSync(fd)
    throw err
  }
  return wakes
}

function someTotalUs(cg: TestCgroup): number {
  const m = /^some .* total=(\d+)$/m.exec(fs.readFileSync(path.join(cg.path, 'memory.pressure'), 'utf8'))
  return Number(m?.[1])
}

describe('PSI triggers on a real cgroup v2 kernel', () => {
  it('root holds CAP_SYS_RESOURCE: any window up to 10 s is accepted, 1 s and 3 s included', async () => {
    const cg = cgroup()
    const got = await probeWindows(path.join(cg.path, 'memory.pressure'), [1_000_000, 3_000_000, 10_000_000, 11_000_000], 0)
    expect(hasCap(got.capEff, CAP_SYS_RESOURCE)).toBe(true)
    expect(got.results).toEqual(['ok', 'ok', 'ok', 'EINVAL'])
  })

  it('without CAP_SYS_RESOURCE (uid 65534 on a delegated file) only multiples of 2 s are accepted', async () => {
    const cg = cgroup()
    const file = path.join(cg.path, 'memory.pressure')
    // Delegation (cgroup-v2.rst "Delegation Containment"): the file belongs to the unprivileged user.
    fs.chownSync(file, NOBODY, NOBODY)
    const got = await probeWindows(file, [1_000_000, 2_000_000, 3_000_000, 4_000_000], NOBODY)
    expect(got.uid).toBe(NOBODY)
    expect(hasCap(got.capEff, CAP_SYS_RESOURCE)).toBe(false)
    expect(got.results).toEqual(['EINVAL', 'ok', 'EINVAL', 'ok'])
  })

  it('a 1 s trigger fires (POLLPRI) once memory.high stalls a child in the cgroup', async () => {
    const cg = cgroup()
    const child = await spawnInCgroup(cg, allocator)
    const stallUs = 100_000
    const wakes = arm(cg, stallUs, 1_000_000)
    const before = someTotalUs(cg)
    const usage = Number(fs.readFileSync(path.join(cg.path, 'memory.current'), 'utf8'))
    fs.writeFileSync(path.join(cg.path, 'memory.high'), String(usage + 8 * MiB))
    child.proc.stdin.on('error', () => {}) // EPIPE if the child is killed at cleanup mid-command
    const climbing = (async () => {
      // Not awaited to the end: the step past memory.high can stay throttled for tens of seconds,
      // and the trigger fires long before it returns.
      for (let i = 0; i < 24 && wakes.items.length === 0; i++) await child.send(`alloc ${4 * MiB}`)
    })()
    const [first] = await Promise.race([wakes.count(1, 60_000), climbing.then(() => wakes.count(1, 60_000))])
    expect(child.proc.exitCode).toBeNull()
    expect(first?.status).toBe(0)
    expect((first?.events ?? 0) & POLL_PRIORITIZED).toBe(POLL_PRIORITIZED)
    // Not a false wake-up: the cgroup really stalled for at least the trigger's threshold. The
    // trigger works on live stall time, `total=` on the periodic aggregation (psi.c), so the total
    // can lag the wake-up (seen: 52 ms of 100 ms right after it): allow it a few seconds to catch up.
    let grown = someTotalUs(cg) - before
    for (let i = 0; i < 50 && grown < stallUs; i++) {
      await new Promise((r) => setTimeout(r, 100))
      grown = someTotalUs(cg) - before
    }
    expect(grown).toBeGreaterThanOrEqual(stallUs)
  })

  it('a removed cgroup leaves its PSI fd signalled on every loop turn until the watcher is closed', async () => {
    // Polling a removed cgroup's file answers POLLERR|POLLPRI every time (fs/kernfs/file.c
    // kernfs_fop_poll, kernel/sched/psi.c psi_trigger_poll). libuv reports that as POLLPRI (status
    // 0), not as an error, so only closing the watcher stops it; a watcher that checks on its first
    // wake-up whether the cgroup still exists, and closes, is woken exactly once.
    const kept = cgroup()
    const spinning = arm(kept, 100_000, 1_000_000)
    const closing = cgroup()
    const gone: boolean[] = []
    const fd = fs.openSync(path.join(closing.path, 'memory.pressure'), fs.constants.O_RDWR | fs.constants.O_NONBLOCK)
    fs.writeSync(fd, Buffer.from('some 100000 1000000\0'))
    let self: PollWatcher | undefined
    const w = native.watch(fd, 'priority', () => {
      gone.push(!fs.existsSync(closing.path))
      if (gone.at(-1) === true) self?.close()
    })
    if (typeof w === 'number') {
      fs.closeSync(fd)
      throw new Error(`watch(memory.pressure) failed: ${w}`)
    }
    self = w
    watchers.push(w)
    await kept.remove()
    await closing.remove()
    await spinning.count(1, 30_000)
    for (let i = 0; i < 20; i++) await turns(5)
    expect(spinning.items.length).toBeGreaterThan(10)
    expect(spinning.items.every((x) => x.status === 0 && (x.events & POLL_PRIORITIZED) !== 0)).toBe(true)
    expect(gone).toEqual([true])
    expect(w.closed).toBe(true)
  })
})
