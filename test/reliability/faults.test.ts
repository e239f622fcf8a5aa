// Faults and their defined outcomes: the limit changed while running (percentages follow it), the
// watched cgroup removed, the process moved to another cgroup, shrinkers that hang, throw or free
// nothing, a garbage collector that fails, and the native addon failing to load.

import { spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { SimulatedBackend } from '../../src/backends/simulated.js'
import { MemoryPressureError } from '../../src/errors.js'
import { createMemoryMonitor, type MemoryMonitor, type ThresholdEvent } from '../../src/monitor.js'
import { loadNative } from '../../src/native.js'
import type { PressureEvent } from '../../src/policy/engine.js'
import type { ShrinkReport } from '../../src/policy/shrinker.js'
import { Collector } from '../helpers/collect.js'
import { createTestCgroup, ownV1MemoryCgroup, spawnInCgroup, type TestCgroup } from '../helpers/cgroup.js'

const MiB = 2 ** 20
const own = ownV1MemoryCgroup()
const v1 = 'dir' in own
const skipV1 = v1 ? '' : ` (skipped: ${(own as { reason: string }).reason})`
const root = fileURLToPath(new URL('../../', import.meta.url))
const allocator = path.join(root, 'test/helpers/allocator.mjs')
const built = fs.existsSync(path.join(root, 'dist/index.js'))

const cleanup: Array<() => unknown> = []
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f()
})
function track<T extends MemoryMonitor | TestCgroup>(x: T): T {
  cleanup.push(() => ('close' in x ? x.close() : x.remove()))
  return x
}

describe('the limit changes while running', () => {
  it('a percentage threshold is resolved again at the next snapshot and the move across usage is delivered (simulated)', async () => {
    const backend = new SimulatedBackend({ limit: 256 * MiB, usage: 100 * MiB })
    const monitor = track(createMemoryMonitor({ backend }))
    const got = new Collector<ThresholdEvent>()
    monitor.addThreshold('50%', { direction: 'both', handler: got.push })
    backend.setLimit(150 * MiB)
    monitor.snapshot()
    await got.count(1)
    expect(got.items.map((e) => [e.direction, e.threshold / MiB, e.signal, e.initial])).toEqual([['up', 75, 'limit', false]])
    // The new threshold is armed: falling below 75 MiB is a kernel-style crossing again.
    backend.setUsage(70 * MiB)
    await got.count(2)
    expect(got.items.map((e) => [e.direction, e.threshold / MiB, e.signal])).toEqual([['up', 75, 'limit'], ['down', 75, expect.any(String)]])
    expect(got.items[1]?.signal).not.toBe('limit')
    // Raised: 50% is now 256 MiB; usage (70 MiB) was below the old and is below the new one, so
    // nothing is delivered, but the kernel-style threshold is the new one.
    backend.setLimit(512 * MiB)
    monitor.snapshot()
    backend.setUsage(300 * MiB)
    await got.count(3)
    expect(got.items.map((e) => [e.direction, e.threshold / MiB])).toEqual([['up', 75], ['down', 75], ['up', 256]])
    expect(got.items[2]?.signal).not.toBe('limit')
  })

  it('levels in percent follow the limit at the next wake-up (simulated)', async () => {
    const backend = new SimulatedBackend({ limit: 256 * MiB, usage: 100 * MiB })
    const monitor = track(createMemoryMonitor({ backend, levels: { moderate: '50%', high: '70%', critical: '90%' }, reduceHeap: false }))
    expect(monitor.levels?.moderate).toBe(128 * MiB)
    const pressure = new Collector<PressureEvent>()
    monitor.on('pressure', pressure.push)
    backend.setLimit(128 * MiB)
    // No armed point lies between usage and the new limit: the next snapshot read notices it.
    monitor.snapshot()
    await pressure.count(1)
    expect(monitor.levels?.moderate).toBe(64 * MiB)
    expect(pressure.items.map((e) => [e.previous, e.level])).toEqual([['normal', 'high']])
  })

  it.skipIf(!v1)(`on a real v1 cgroup: lowering memory.limit_in_bytes moves a percentage threshold below usage${skipV1}`, async () => {
    const cg = track(createTestCgroup((own as { dir: string }).dir, { limit: 256 * MiB }))
    const child = await spawnInCgroup(cg, allocator, [], { MALLOC_MMAP_THRESHOLD_: '65536' })
    await child.send(`alloc ${60 * MiB}`)
    const monitor = track(createMemoryMonitor({ backend: 'cgroup-v1', cgroup: cg.path }))
    const got = new Collector<ThresholdEvent>()
    monitor.addThreshold('50%', { direction: 'both', handler: got.push })
    const usage = monitor.snapshot().usage
    expect(usage).toBeLessThan(100 * MiB)
    expect(usage).toBeGreaterThan(60 * MiB)
    // 50% of 100 MiB is 50 MiB, below usage: the threshold moved across it.
    fs.writeFileSync(path.join(cg.path, 'memory.limit_in_bytes'), String(100 * MiB))
    monitor.snapshot()
    await got.count(1)
    expect(got.items.map((e) => [e.direction, e.threshold / MiB, e.signal])).toEqual([['up', 50, 'limit']])
    // The kernel threshold is the new one: freeing the allocation crosses 50 MiB downwards.
    await monitor.registered()
    await child.send('freeall')
    await got.count(2)
    expect(got.items.map((e) => [e.direction, e.threshold / MiB])).toEqual([['up', 50], ['down', 50]])
    expect(got.items[1]?.signal).toBe('eventfd')
  })
})

describe.skipIf(!v1)(`the watched cgroup is removed${skipV1}`, () => {
  it('closes the monitor once with reason removed, delivers no crossing and releases every fd', async () => {
    // Only the SDK's kind of fds are counted: pipes of children from earlier tests close meanwhile.
    const sdkFds = (): string[] => fs.readdirSync('/proc/self/fd').flatMap((fd) => {
      try {
        const target = fs.readlinkSync(`/proc/self/fd/${fd}`)
        return target.includes('[eventfd]') || target.startsWith((own as { dir: string }).dir) ? [target] : []
      } catch {
        return []
      }
    }).sort()
    const fds = sdkFds()
    const cg = createTestCgroup((own as { dir: string }).dir, { limit: 64 * MiB })
    const monitor = createMemoryMonitor({ backend: 'cgroup-v1', cgroup: cg.path, thresholds: [{ threshold: '10%', direction: 'both' }, '90%'], levels: true })
    const events = new Collector<string>()
    monitor.on('threshold', (e) => events.push(`threshold ${e.direction}`))
    monitor.on('close', (e) => events.push(`close ${e.reason}`))
    monitor.on('error', (e) => events.push(`error ${e.code}`))
    await cg.remove()
    await events.until((items) => items.some((e) => e.startsWith('close')))
    expect(events.items).toEqual(['close removed'])
    expect(monitor.closed).toBe(true)
    expect(() => monitor.snapshot()).toThrow(expect.objectContaining({ code: 'ERR_CLOSED' }))
    await monitor.close()
    expect(events.items).toEqual(['close removed'])
    expect(sdkFds()).toEqual(fds)
  })
})

describe.skipIf(!v1 || !built)(`the process is moved to another cgroup${v1 && built ? '' : ' (skipped: needs a v1 cgroup and dist/)'}`, () => {
  it('its monitor goes on watching the cgroup it opened (charges stay behind), not the new one', async () => {
    const parent = (own as { dir: string }).dir
    const a = track(createTestCgroup(parent, { limit: 128 * MiB }))
    const b = track(createTestCgroup(parent, { limit: 256 * MiB }))
    const child = await spawnInCgroup(a, allocator, ['--watch', '64MiB'], { MALLOC_MMAP_THRESHOLD_: '65536' })
    await child.send(`alloc ${72 * MiB}`)
    await child.output.until((lines) => lines.some((l) => l.startsWith('event ')))
    const first = JSON.parse((child.output.items.find((l) => l.startsWith('event ')) as string).slice(6)) as ThresholdEvent
    expect([first.direction, first.cgroup]).toEqual(['up', fs.realpathSync(a.path)])
    await child.send('freeall')
    await child.output.until((lines) => lines.some((l) => l.startsWith('event ') && l.includes('"down"')))
    const before = child.output.items.filter((l) => l.startsWith('event ')).length
    // Move the child (a process this test spawned) to b; v1 leaves its old charges in a
    // (memory.move_charge_at_immigrate is 0 by default, cgroup-v1/memory.rst 8).
    fs.writeFileSync(path.join(b.path, 'cgroup.procs'), String(child.proc.pid))
    b.pids.add(child.proc.pid as number)
    await child.send(`alloc ${96 * MiB}`)
    // A second command makes the child's loop turn after the allocation: any event would be out.
    await child.send(`alloc ${MiB}`)
    expect(Number(fs.readFileSync(path.join(b.path, 'memory.usage_in_bytes'), 'utf8'))).toBeGreaterThan(96 * MiB)
    expect(Number(fs.readFileSync(path.join(a.path, 'memory.usage_in_bytes'), 'utf8'))).toBeLessThan(64 * MiB)
    expect(child.output.items.filter((l) => l.startsWith('event ')).length).toBe(before)
    expect(child.output.items.filter((l) => l.startsWith('close ') || l.startsWith('error '))).toEqual([])
  })
})

describe('shrinkers that misbehave', () => {
  it('one that hangs times out, one that throws is reported, one that frees nothing reports 0; the next cycle still runs', async () => {
    const backend = new SimulatedBackend({ limit: 256 * MiB, usage: 10 * MiB })
    const monitor = track(createMemoryMonitor({ backend, levels: { moderate: '50%', high: '70%', critical: '90%' }, shrinkTimeoutMs: 30, tuning: { cooldownMs: 0 }, reduceHeap: false }))
    const errors = new Collector<MemoryPressureError>()
    monitor.on('error', errors.push)
    const reports = new Collector<ShrinkReport>()
    monitor.on('shrink', reports.push)
    let hung = 0
    monitor.register({ name: 'hangs', priority: 0, shrink: () => { hung++; return new Promise<number>(() => {}) } })
    monitor.register({ name: 'throws', priority: 1, shrink: () => { throw new Error('cache is gone') } })
    monitor.register({ name: 'nothing', priority: 2, shrink: () => 0 })
    backend.setUsage(240 * MiB)
    await reports.count(1)
    const results = reports.items[0]?.shrinkers ?? []
    expect(results.map((r) => [r.name, r.reported, r.timedOut === true, r.error instanceof Error])).toEqual([
      ['hangs', null, true, false],
      ['throws', null, false, true],
      ['nothing', 0, false, false],
    ])
    // The level is still critical; falling and rising again starts another cycle with all three.
    backend.setUsage(10 * MiB)
    backend.setUsage(240 * MiB)
    await reports.count(2)
    expect(hung).toBe(2)
    expect(errors.items).toEqual([])
  })

  it('a garbage collector that throws: the cycle reports heap null and the error in heapError, and levels go on', async () => {
    const backend = new SimulatedBackend({ limit: 256 * MiB, usage: 10 * MiB })
    const gcError = new Error('gc is not available')
    const monitor = track(createMemoryMonitor({
      backend, levels: { moderate: '50%', high: '70%', critical: '90%' },
      reduceHeap: { gc: () => { throw gcError }, mallocTrim: false },
    }))
    const errors = new Collector<MemoryPressureError>()
    monitor.on('error', errors.push)
    const pressure = new Collector<PressureEvent>()
    monitor.on('pressure', pressure.push)
    const reports = new Collector<ShrinkReport>()
    monitor.on('shrink', reports.push)
    monitor.register({ name: 'cache', shrink: () => MiB })
    backend.setUsage(200 * MiB)
    await reports.count(1)
    expect(reports.items.map((r) => [r.heap, r.heapError, r.shrinkers.map((x) => x.reported)])).toEqual([[null, gcError, [MiB]]])
    backend.setUsage(10 * MiB)
    await pressure.until((items) => items.some((e) => e.level === 'normal'))
    expect(pressure.items.map((e) => e.level)).toEqual(['high', 'normal'])
    expect(errors.items).toEqual([])
  })
})

describe('the native addon fails to load', () => {
  it('loadNative with paths that are missing or not addons is ERR_NATIVE_UNAVAILABLE listing every path tried', () => {
    let error: unknown
    try {
      loadNative({ paths: ['/nonexistent/memory_pressure.node', '/etc/hostname'] })
    } catch (err) {
      error = err
    }
    expect(error).toBeInstanceOf(MemoryPressureError)
    expect((error as MemoryPressureError).code).toBe('ERR_NATIVE_UNAVAILABLE')
    const tried = (error as MemoryPressureError).tried ?? []
    expect(tried).toHaveLength(2)
    expect(tried[0]?.startsWith('/nonexistent/memory_pressure.node')).toBe(true)
    expect(tried[1]?.startsWith('/etc/hostname')).toBe(true)
  })

  it.skipIf(!built || !v1)(`a process whose dlopen fails: one warning, and 'auto' still watches (polled)${built && v1 ? '' : ' (skipped: needs dist/ and a v1 cgroup)'}`, () => {
    const script = `
      process.dlopen = () => { throw new Error('dlopen refused') }
      const warnings = []
      process.on('warning', (w) => warnings.push(w.code))
      const sdk = await import(${JSON.stringify(path.join(root, 'dist/index.js'))})
      const status = sdk.nativeStatus()
      const m = sdk.createMemoryMonitor({ thresholds: ['1GiB'] })
      const out = { loaded: status.loaded, code: status.error?.code, backend: m.backend, precision: m.precision.kind }
      await m.close()
      await new Promise((r) => setImmediate(r))
      console.log(JSON.stringify({ ...out, warnings }))
    `
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' })
    expect(r.status).toBe(0)
    expect(JSON.parse(r.stdout)).toEqual({ loaded: false, code: 'ERR_NATIVE_UNAVAILABLE', backend: 'cgroup-v1', precision: 'polled', warnings: ['ERR_NATIVE_UNAVAILABLE'] })
  })
})

describe.skipIf(!v1 || !built)(`the reader of watch goes away${v1 && built ? '' : ' (skipped: needs a v1 cgroup and dist/)'}`, () => {
  it('watch whose stdout pipe is closed (watch | head) stops with exit 0 instead of dying on EPIPE', async () => {
    const cg = track(createTestCgroup((own as { dir: string }).dir, { limit: 64 * MiB }))
    const child = spawn(process.execPath, [path.join(root, 'dist/cli/main.js'), 'watch', '--cgroup', cg.path, '--interval-ms', '10'], { stdio: ['ignore', 'pipe', 'pipe'] })
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()))
    child.stdout.destroy()
    // Off a terminal watch prints only when the figures move: move them, so that it writes again.
    const mover = await spawnInCgroup(cg, allocator)
    try {
      for (let i = 0; i < 8; i++) await mover.send(`alloc ${2 * MiB}`)
      expect(await exited).toEqual({ code: 0, signal: null })
    } finally {
      mover.proc.kill('SIGKILL')
      await mover.exited
    }
  })
})
