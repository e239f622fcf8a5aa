// Faults a service meets in production, on real cgroup v1 cgroups below this test's own: a limit
// lowered or raised under a running monitor, a cgroup removed and made again at the same path,
// worker threads terminated while they create monitors, a process moved to another cgroup, and the
// registration's write kept off the event loop.

import { spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { CgroupV1Backend } from '../../src/backends/cgroup-v1.js'
import type { Crossing } from '../../src/backends/types.js'
import { MemoryPressureError } from '../../src/errors.js'
import { createMemoryMonitor } from '../../src/monitor.js'
import { Collector, turns } from '../helpers/collect.js'
import { type CgroupChild, type TestCgroup, createTestCgroup, ownV1MemoryCgroup, spawnInCgroup } from '../helpers/cgroup.js'

const MiB = 2 ** 20
const own = ownV1MemoryCgroup()
const root = fileURLToPath(new URL('../../', import.meta.url))
const dist = path.join(root, 'dist/index.js')
const sdkChild = path.join(root, 'test/helpers/sdk-child.mjs')
const allocator = path.join(root, 'test/helpers/allocator.mjs')
const churn = path.join(root, 'test/helpers/worker-churn.mjs')
const skip = 'reason' in own ? own.reason : !CgroupV1Backend.probe().available ? 'no usable cgroup v1' : !fs.existsSync(dist) ? 'dist/ not built (npm run build)' : null
const suffix = skip === null ? '' : ` (skipped: ${skip})`
const parent = 'dir' in own ? own.dir : ''

const cleanup: Array<() => unknown> = []
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f()
})
function cgroup(limit: number): TestCgroup {
  const cg = createTestCgroup(parent, { limit })
  cleanup.push(() => cg.remove())
  return cg
}

type ChildEvent = { type: string; [key: string]: unknown }
function events(child: CgroupChild): ChildEvent[] {
  return child.output.items.filter((l) => l.startsWith('event ')).map((l) => JSON.parse(l.slice(6)) as ChildEvent)
}
function waitEvent(child: CgroupChild, pred: (e: ChildEvent) => boolean, ms = 20_000): Promise<unknown> {
  return child.output.until((lines) => lines.some((l) => l.startsWith('event ') && pred(JSON.parse(l.slice(6)) as ChildEvent)), ms)
}
const read = (cg: TestCgroup, file: string): string => fs.readFileSync(path.join(cg.path, file), 'utf8')
const oomKills = (cg: TestCgroup): number => Number(/^oom_kill (\d+)$/m.exec(read(cg, 'memory.oom_control'))?.[1])

/** Sets the limit just above usage, as a user would: v1 refuses one below usage (EBUSY). */
function lowerLimit(cg: TestCgroup, room: number): number {
  for (let i = 0; ; i++) {
    const limit = Number(read(cg, 'memory.usage_in_bytes')) + room + i * MiB
    try {
      fs.writeFileSync(path.join(cg.path, 'memory.limit_in_bytes'), String(limit))
      return Number(read(cg, 'memory.limit_in_bytes'))
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EBUSY' || i >= 8) throw err
    }
  }
}

const rank = (level: unknown): number => ['normal', 'moderate', 'high', 'critical'].indexOf(level as string)

describe.skipIf(skip !== null)(`a limit changed under a running monitor${suffix}`, () => {
  it('lowered to just above usage: growth wakes the monitor, which shrinks before any OOM kill; raised again: levels only fall', async () => {
    const cg = cgroup(256 * MiB)
    const child = await spawnInCgroup(cg, sdkChild, [dist, '--levels'])
    await child.send(`fill ${107 * MiB}`)
    expect(events(child).filter((e) => e.type === 'pressure')).toEqual([])
    const limit = lowerLimit(cg, 3 * MiB)
    // Memory grows past what the old limit's levels were armed for; nothing but the watch kept
    // just above usage can wake the monitor before the kernel's OOM kill at the new limit.
    const grown = await Promise.race([
      child.send('grow 12').then(() => 'grown'),
      child.exited.then((e) => `exited ${JSON.stringify(e)}`),
    ])
    expect(grown).toBe('grown')
    expect(oomKills(cg)).toBe(0)
    const pressure = events(child).filter((e) => e.type === 'pressure')
    expect(pressure[0]).toMatchObject({ previous: 'normal', limit })
    expect(rank(pressure[0]?.level)).toBeGreaterThanOrEqual(2)
    expect(events(child).some((e) => e.type === 'shrink' && (e.reported as number) > 0)).toBe(true)
    expect(events(child).filter((e) => e.type === 'oom' || e.type === 'error' || e.type === 'close')).toEqual([])

    // Raised: the next wake-up resolves the levels against 256 MiB; nothing rises.
    const before = events(child).length
    fs.writeFileSync(path.join(cg.path, 'memory.limit_in_bytes'), String(256 * MiB))
    await child.send('usage')
    await child.send('grow 4')
    await turns()
    const after = events(child).slice(before).filter((e) => e.type === 'pressure')
    for (const e of after) expect(rank(e.level)).toBeLessThan(rank(e.previous))
    expect(events(child).filter((e) => e.type === 'oom' || e.type === 'error' || e.type === 'close')).toEqual([])
  }, 60_000)

  it('a percentage threshold: lowered, the move across usage is one \'limit\' crossing; raised, a kernel crossing of the old bytes is not delivered', async () => {
    const cg = cgroup(256 * MiB)
    const child = await spawnInCgroup(cg, sdkChild, [dist, '--threshold', '60%'])
    await child.send(`fill ${100 * MiB}`)
    const low = lowerLimit(cg, 3 * MiB)
    await child.send('usage')
    await waitEvent(child, (e) => e.type === 'threshold')
    const oldBytes = Math.floor(low * 0.6)
    expect(events(child).filter((e) => e.type === 'threshold').map((e) => [e.direction, e.threshold, e.signal])).toEqual([['up', oldBytes, 'limit']])
    await child.send('registered')
    // Raised with nothing to wake the monitor; then usage falls across the old bytes, which the
    // kernel still reports: that crossing is of a threshold that no longer exists.
    const before = events(child).length
    fs.writeFileSync(path.join(cg.path, 'memory.limit_in_bytes'), String(256 * MiB))
    const { held: usage } = await child.send('freeall')
    expect(usage).toBeLessThan(oldBytes)
    await waitEvent(child, (e) => e.type === 'threshold' && e.threshold !== oldBytes)
    await child.send('usage')
    await turns()
    const newBytes = Math.floor(256 * MiB * 0.6)
    expect(events(child).slice(before).filter((e) => e.type === 'threshold').map((e) => [e.direction, e.threshold, e.signal])).toEqual([['down', newBytes, 'limit']])
  }, 60_000)
})

describe.skipIf(skip !== null)(`a cgroup removed and made again at the same path${suffix}`, () => {
  it('the monitor closes with reason removed: no oom, no error, no crossing', async () => {
    const cg = cgroup(64 * MiB)
    const monitor = createMemoryMonitor({ backend: 'cgroup-v1', cgroup: cg.path, thresholds: [{ threshold: '10%', direction: 'both' }, '90%'], levels: true })
    cleanup.push(() => monitor.close())
    await monitor.registered()
    const got = new Collector<string>()
    monitor.on('threshold', (e) => got.push(`threshold ${e.direction}`))
    monitor.on('close', (e) => got.push(`close ${e.reason}`))
    monitor.on('error', (e) => got.push(`error ${e.code}`))
    monitor.on('oom', () => got.push('oom'))
    fs.rmdirSync(cg.path)
    fs.mkdirSync(cg.path)
    await got.until((items) => items.some((e) => e.startsWith('close')))
    await turns()
    expect(got.items).toEqual(['close removed'])
    expect(() => monitor.snapshot()).toThrow(expect.objectContaining({ code: 'ERR_CLOSED' }))
  })

  it('snapshot() does not read the new cgroup: ERR_NO_CGROUP, and the backend closes with reason removed', () => {
    const cg = cgroup(64 * MiB)
    const backend = CgroupV1Backend.open({ cgroup: cg.path, oom: false })
    cleanup.push(() => backend.close())
    const reasons: string[] = []
    backend.on('close', (r) => reasons.push(r))
    expect(backend.snapshot().limit).toBe(64 * MiB)
    fs.rmdirSync(cg.path)
    fs.mkdirSync(cg.path)
    fs.writeFileSync(path.join(cg.path, 'memory.limit_in_bytes'), String(128 * MiB))
    let error: unknown
    try {
      backend.snapshot()
    } catch (err) {
      error = err
    }
    expect(error).toBeInstanceOf(MemoryPressureError)
    expect((error as MemoryPressureError).code).toBe('ERR_NO_CGROUP')
    expect([backend.closed, reasons]).toEqual([true, ['removed']])
  })
})

describe.skipIf(skip !== null)(`worker threads terminated while creating monitors${suffix}`, () => {
  it('200 workers terminated at random moments: no eventfd or cgroup file left open, the process exits 0', async () => {
    const cg = cgroup(256 * MiB)
    const proc = spawn(process.execPath, [churn, dist, cg.path, '200', '25'], { stdio: ['pipe', 'pipe', 'pipe'] })
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })))
    cleanup.push(() => proc.exitCode === null && proc.signalCode === null && proc.kill('SIGKILL'))
    let stderr = ''
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    const lines = new Collector<string>()
    createInterface({ input: proc.stdout }).on('line', lines.push)
    // What the SDK can leave open in that process: eventfds, and files of the test's cgroup.
    const sdkFds = (): string[] => fs.readdirSync(`/proc/${proc.pid}/fd`).flatMap((fd) => {
      try {
        const target = fs.readlinkSync(`/proc/${proc.pid}/fd/${fd}`)
        return target === 'anon_inode:[eventfd]' || target.startsWith(cg.path) ? [target] : []
      } catch {
        return []
      }
    }).sort()
    await lines.until((l) => l.includes('baseline'), 30_000)
    const before = sdkFds()
    proc.stdin.write('go\n')
    await lines.until((l) => l.some((x) => x.startsWith('churned ')), 200_000).catch((err: Error) => {
      throw new Error(`${err.message}; stderr: ${stderr}`)
    })
    expect(lines.items.find((l) => l.startsWith('churned '))).toBe('churned 200')
    expect(sdkFds()).toEqual(before)
    proc.stdin.write('exit\n')
    expect(await exited).toEqual({ code: 0, signal: null })
    expect(stderr).not.toMatch(/FATAL/)
  }, 240_000)
})

const addon = path.join(root, 'build/Release/memory_pressure.node')
const noAddon = process.platform !== 'linux' ? `not Linux (${process.platform})` : !fs.existsSync(addon) ? 'addon not built (build/Release)' : null

describe.skipIf(noAddon !== null)(`the addon in a worker being terminated${noAddon === null ? '' : ` (skipped: ${noAddon})`}`, () => {
  it('100 workers terminated while calling watch() in a loop: the process is not aborted (a throw into a terminating environment is dropped)', () => {
    // In a child: node-addon-api's fatal error would abort the test runner itself.
    const script = `
      const { Worker } = require('node:worker_threads')
      const source = \`
        const native = require(require('node:worker_threads').workerData)
        for (;;) {
          const efd = native.eventfd()
          const w = native.watch(efd, 'readable', () => {})
          if (typeof w === 'number') native.close(efd)
          else w.close()
        }
      \`
      ;(async () => {
        let seed = 7
        for (let i = 0; i < 100; i++) {
          const worker = new Worker(source, { eval: true, workerData: process.argv[1] })
          worker.on('error', () => {})
          seed = (seed * 1103515245 + 12345) >>> 0
          await new Promise((r) => setTimeout(r, 20 + (seed % 60)))
          await worker.terminate()
        }
        console.log('terminated 100')
      })()
    `
    const r = spawnSync(process.execPath, ['-e', script, addon], { encoding: 'utf8', timeout: 120_000 })
    expect({ status: r.status, signal: r.signal, stdout: r.stdout.trim() }).toEqual({ status: 0, signal: null, stdout: 'terminated 100' })
    expect(r.stderr).not.toMatch(/FATAL/)
  }, 150_000)

  it('fds from eventfd() and open() that JS never closed are closed when their worker is terminated', async () => {
    const fds = (): number => fs.readdirSync('/proc/self/fd').length
    const before = fds()
    const worker = new Worker(`
      const { parentPort, workerData } = require('node:worker_threads')
      const native = require(workerData)
      for (let i = 0; i < 20; i++) { native.eventfd(); native.open('/proc/self/status', 'r') }
      parentPort.postMessage('opened')
      setInterval(() => {}, 1000)
    `, { eval: true, workerData: addon })
    const exited = new Promise((resolve) => worker.once('exit', resolve))
    await new Promise((resolve) => worker.once('message', resolve))
    expect(fds()).toBeGreaterThanOrEqual(before + 40)
    await worker.terminate()
    await exited
    await turns()
    expect(fds()).toBe(before)
  })
})

describe.skipIf(skip !== null)(`a process moved to another cgroup${suffix}`, () => {
  it('its monitor on its own cgroup closes with reason moved at the next wake-up, and diagnostics() says from where to where', async () => {
    const a = cgroup(256 * MiB)
    const b = cgroup(256 * MiB)
    const child = await spawnInCgroup(a, sdkChild, [dist, '--levels'])
    await child.send(`fill ${80 * MiB}`)
    await child.send('registered')
    fs.writeFileSync(path.join(b.path, 'cgroup.procs'), String(child.proc.pid))
    b.pids.add(child.proc.pid as number)
    // Freeing what was charged to a before the move is a wake-up there (v1 leaves charges behind).
    await child.send('freeall')
    await waitEvent(child, (e) => e.type === 'close')
    await child.send('diagnostics')
    await waitEvent(child, (e) => e.type === 'diagnostics')
    expect(events(child).filter((e) => e.type === 'close')).toEqual([{ type: 'close', reason: 'moved' }])
    const diagnostics = events(child).find((e) => e.type === 'diagnostics')
    expect(diagnostics?.moved).toEqual({ from: fs.realpathSync(a.path), to: fs.realpathSync(b.path) })
  }, 60_000)
})

describe.skipIf(skip !== null)(`the registration's write is off the event loop${suffix}`, () => {
  it('20 registrations: nothing written synchronously, 20 writes through the threadpool (fs.write) once the loop turns', async () => {
    const cg = cgroup(256 * MiB)
    const backend = CgroupV1Backend.open({ cgroup: cg.path, oom: false })
    cleanup.push(() => backend.close())
    const registration = (args: unknown[]): boolean => typeof args[1] === 'string' && /^\d+ \d+ \d+$/.test(args[1])
    const writeSync = vi.spyOn(fs, 'writeSync')
    const write = vi.spyOn(fs, 'write')
    cleanup.push(() => vi.restoreAllMocks())
    const usage = backend.readUsage()
    for (let i = 1; i <= 20; i++) backend.watchThreshold(usage + i * MiB, () => {})
    expect(writeSync.mock.calls.filter(registration)).toHaveLength(0)
    expect(write.mock.calls.filter(registration)).toHaveLength(0)
    await backend.idle()
    expect(write.mock.calls.filter(registration).map((c) => Number((c[1] as string).split(' ')[2]))).toEqual(Array.from({ length: 20 }, (_, i) => usage + (i + 1) * MiB))
    expect(writeSync.mock.calls.filter(registration)).toHaveLength(0)
  })

  it('a crossing while the registration is on its way is delivered once, in order with the kernel\'s', async () => {
    const cg = cgroup(256 * MiB)
    const child = await spawnInCgroup(cg, allocator)
    const backend = CgroupV1Backend.open({ cgroup: cg.path, oom: false })
    cleanup.push(() => backend.close())
    const got = new Collector<Crossing>()
    const threshold = backend.readUsage() + 8 * MiB
    backend.watchThreshold(threshold, got.push)
    await child.send(`alloc ${16 * MiB}`)
    await backend.idle()
    await got.count(1)
    await child.send('freeall')
    await got.count(2)
    await turns()
    expect(got.items.map((c) => c.direction)).toEqual(['up', 'down'])
    expect(got.items[1]?.signal).toBe('eventfd')
  })
})
