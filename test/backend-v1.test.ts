// cgroup v1 on this machine beyond the contract: the polled fallback seen by a child in a read-only
// cgroupfs and by a child that is not root, 'oom' events, memsw thresholds and pressure levels.

import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { CgroupV1Backend } from '../src/backends/cgroup-v1.js'
import type { Crossing, OomEvent } from '../src/backends/types.js'
import { findMemoryCgroup } from '../src/cgroup/discover.js'
import { MemoryPressureError } from '../src/errors.js'
import { type TestCgroup, createTestCgroup, ownV1MemoryCgroup, spawnInCgroup } from './helpers/cgroup.js'
import { Collector } from './helpers/collect.js'

const MiB = 2 ** 20
const root = fileURLToPath(new URL('..', import.meta.url))
const allocator = fileURLToPath(new URL('./helpers/allocator.mjs', import.meta.url))
const own = ownV1MemoryCgroup()
const v1Skip = 'reason' in own ? own.reason : null
const distBuilt = fs.existsSync(path.join(root, 'dist', 'index.js'))

/** A child that watches its own cgroup with the public API (auto backend) and allocates on command. */
const childCode = `
import { createInterface } from 'node:readline'
import v8 from 'node:v8'
import vm from 'node:vm'
const { createMemoryMonitor } = await import('node-memory-pressure')
v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc')
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n')
const m = createMemoryMonitor()
out({ type: 'diag', ...m.diagnostics(), precision: m.precision, usage: m.snapshot().usage, uid: process.getuid() })
m.on('threshold', (e) => out({ type: 'event', threshold: e.threshold, direction: e.direction, usage: e.usage, signal: e.signal }))
m.on('error', (e) => out({ type: 'error', code: e.code }))
const held = []
createInterface({ input: process.stdin }).on('line', (line) => {
  const [cmd, arg] = line.split(' ')
  if (cmd === 'watch') m.addThreshold(Number(arg), { direction: 'both' })
  if (cmd === 'alloc') held.push(Buffer.alloc(Number(arg), 1))
  if (cmd === 'free') { held.length = 0; gc() }
  out({ type: 'ok', usage: m.snapshot().usage })
})
`

interface Line {
  type: string
  [key: string]: unknown
}

/**
 * Installs the built package (dist, the addon, runtime dependencies) into a world-readable temporary
 * directory, for a child that runs as another user: the checkout may sit where that user cannot
 * enter (a /root home, a `mktemp -d` directory). Returns the directory to run the child in.
 */
function worldReadableInstall(): { dir: string; remove: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-nobody-'))
  const pkg = path.join(dir, 'node_modules', 'node-memory-pressure')
  fs.mkdirSync(path.join(pkg, 'build', 'Release'), { recursive: true })
  fs.cpSync(path.join(root, 'package.json'), path.join(pkg, 'package.json'))
  fs.cpSync(path.join(root, 'dist'), path.join(pkg, 'dist'), { recursive: true })
  const addon = path.join(root, 'build', 'Release', 'memory_pressure.node')
  if (fs.existsSync(addon)) fs.cpSync(addon, path.join(pkg, 'build', 'Release', 'memory_pressure.node'))
  for (const dep of ['eventemitter3', 'node-gyp-build']) {
    fs.cpSync(path.join(root, 'node_modules', dep), path.join(dir, 'node_modules', dep), { recursive: true, dereference: true })
  }
  // a+rX on everything: mkdtemp makes the top 0700, and a umask may have narrowed the rest.
  const open = (p: string): void => {
    const st = fs.statSync(p)
    fs.chmodSync(p, st.mode | (st.isDirectory() || (st.mode & 0o111) !== 0 ? 0o555 : 0o444))
    if (st.isDirectory()) for (const e of fs.readdirSync(p)) open(path.join(p, e))
  }
  open(dir)
  return { dir, remove: () => fs.rmSync(dir, { recursive: true, force: true }) }
}

/** Spawns the child inside `cg` through `wrapper` (argv prefix run after joining the cgroup), in `cwd` (default the checkout). */
function spawnWatcher(cg: TestCgroup, wrapper: string[], cwd = root) {
  const procs = path.join(cg.path, 'cgroup.procs')
  const proc = spawn('/bin/sh', ['-c', 'echo $$ > "$0" && exec "$@"', procs, ...wrapper, process.execPath, '--input-type=module', '-e', childCode], {
    cwd,
    env: { ...process.env, MALLOC_MMAP_THRESHOLD_: '65536' },
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  if (proc.pid !== undefined) cg.pids.add(proc.pid)
  let stderr = ''
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  const lines = new Collector<Line>()
  createInterface({ input: proc.stdout }).on('line', (l) => lines.push(JSON.parse(l) as Line))
  const exited = new Promise<void>((resolve) => proc.on('exit', () => resolve()))
  const send = async (cmd: string): Promise<number> => {
    const before = lines.items.filter((l) => l.type === 'ok').length
    proc.stdin.write(`${cmd}\n`)
    const got = await lines.until((items) => items.filter((l) => l.type === 'ok').length > before).catch((err: Error) => {
      throw new Error(`${err.message}; stderr: ${stderr}`)
    })
    return got.filter((l) => l.type === 'ok').at(-1)?.usage as number
  }
  return { proc, lines, send, stderr: () => stderr, exited }
}

/** Runs the fallback scenario: thresholds up and down delivered by polling, and the reason given. */
async function fallbackScenario(cg: TestCgroup, wrapper: string[], cwd?: string) {
  const child = spawnWatcher(cg, wrapper, cwd)
  try {
    const [diag] = await child.lines.until((items) => items.some((l) => l.type === 'diag'), 20_000).catch((err: Error) => {
      throw new Error(`${err.message}; stderr: ${child.stderr()}`)
    })
    const d = diag as Line
    const threshold = (d.usage as number) + 24 * MiB
    await child.send(`watch ${threshold}`)
    let usage = 0
    while (usage < threshold + MiB) usage = await child.send(`alloc ${4 * MiB}`)
    await child.lines.until((items) => items.some((l) => l.type === 'event'))
    await child.send('free')
    await child.lines.until((items) => items.filter((l) => l.type === 'event').length >= 2)
    const events = child.lines.items.filter((l) => l.type === 'event')
    return { diag: d, events, threshold, errors: child.lines.items.filter((l) => l.type === 'error') }
  } finally {
    child.proc.kill('SIGKILL')
    await child.exited
  }
}

const hasUnshare = fs.existsSync('/usr/bin/unshare') || fs.existsSync('/bin/unshare')
const hasSetpriv = fs.existsSync('/usr/bin/setpriv') || fs.existsSync('/bin/setpriv')

describe('cgroup v1 when cgroup.event_control cannot be written', () => {
  let cg: TestCgroup | undefined
  afterEach(async () => {
    await cg?.remove()
    cg = undefined
  })
  const roSkip = v1Skip ?? (!hasUnshare ? 'no unshare' : !distBuilt ? 'dist/ not built (npm run build)' : null)
  const userSkip = v1Skip ?? (!hasSetpriv ? 'no setpriv' : !distBuilt ? 'dist/ not built (npm run build)' : null)

  it.skipIf(roSkip !== null)(`read-only cgroupfs (private mount namespace): polls, says EROFS, still delivers up and down${roSkip ? ` (skipped: ${roSkip})` : ''}`, async () => {
    if (!('dir' in own)) return
    cg = createTestCgroup(own.dir, { limit: 256 * MiB })
    const mount = findMemoryCgroup().mountPoint
    const wrapper = ['unshare', '--mount', '--propagation', 'private', '/bin/sh', '-c', 'mount --bind -o ro "$0" "$0" && exec "$@"', mount]
    const r = await fallbackScenario(cg, wrapper)
    expect(r.diag.backend).toBe('cgroup-v1')
    expect(r.diag.cgroup).toBe(cg.path)
    expect((r.diag.precision as { kind: string }).kind).toBe('polled')
    expect((r.diag.reasons as string[]).some((s) => s.startsWith('cgroup-v1:') && s.includes('EROFS'))).toBe(true)
    expect(r.events.map((e) => [e.threshold, e.direction, e.signal])).toEqual([
      [r.threshold, 'up', 'poll'],
      [r.threshold, 'down', 'poll'],
    ])
    expect(r.errors).toEqual([])
  })

  it.skipIf(userSkip !== null)(`not root (a child as nobody): polls, says EACCES, still delivers up and down${userSkip ? ` (skipped: ${userSkip})` : ''}`, async () => {
    if (!('dir' in own)) return
    cg = createTestCgroup(own.dir, { limit: 256 * MiB })
    // The child runs the package from a copy it can read, wherever the checkout is.
    const install = worldReadableInstall()
    let r: Awaited<ReturnType<typeof fallbackScenario>>
    try {
      r = await fallbackScenario(cg, ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'], install.dir)
    } finally {
      install.remove()
    }
    expect(r.diag.uid).toBe(65534)
    expect(r.diag.backend).toBe('cgroup-v1')
    expect((r.diag.precision as { kind: string }).kind).toBe('polled')
    expect((r.diag.reasons as string[]).some((s) => s.startsWith('cgroup-v1:') && s.includes('EACCES'))).toBe(true)
    expect(r.events.map((e) => [e.threshold, e.direction, e.signal])).toEqual([
      [r.threshold, 'up', 'poll'],
      [r.threshold, 'down', 'poll'],
    ])
  })
})

/** A child that opens the v1 backend while cgroupfs is writable, then remounts it read-only. */
const switchCode = `
import { execFileSync } from 'node:child_process'
const { CgroupV1Backend, findMemoryCgroup } = await import('node-memory-pressure')
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n')
const cg = process.argv[1]
const b = CgroupV1Backend.open({ cgroup: cg, poll: { minIntervalMs: 2, maxIntervalMs: 50 } })
const before = { polling: b.polling, kind: b.precision.kind }
const mount = findMemoryCgroup().mountPoint
execFileSync('mount', ['--bind', '-o', 'ro', mount, mount])
const w = b.watchThreshold(b.readUsage() + 8 * 2 ** 20, (c) => { out({ type: 'event', direction: c.direction, signal: c.signal }); process.exit(0) })
out({ type: 'switched', before, after: { polling: b.polling, kind: b.precision.kind }, notes: b.notes, threshold: w.threshold })
const held = []
setInterval(() => held.push(Buffer.alloc(2 ** 20, 1)), 5)
`

describe('cgroup v1 when cgroupfs turns read-only after opening', () => {
  let cg: TestCgroup | undefined
  afterEach(async () => {
    await cg?.remove()
    cg = undefined
  })
  const skip = v1Skip ?? (!hasUnshare ? 'no unshare' : !distBuilt ? 'dist/ not built (npm run build)' : null)
  it.skipIf(skip !== null)(`a threshold refused with EROFS switches the backend to polling, says so, and still delivers${skip ? ` (skipped: ${skip})` : ''}`, async () => {
    if (!('dir' in own)) return
    cg = createTestCgroup(own.dir, { limit: 256 * MiB })
    const procs = path.join(cg.path, 'cgroup.procs')
    const proc = spawn('/bin/sh', ['-c', 'echo $$ > "$0" && exec "$@"', procs, 'unshare', '--mount', '--propagation', 'private',
      process.execPath, '--input-type=module', '-e', switchCode, cg.path], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] })
    if (proc.pid !== undefined) cg.pids.add(proc.pid)
    let stderr = ''
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    const lines = new Collector<Line>()
    createInterface({ input: proc.stdout }).on('line', (l) => lines.push(JSON.parse(l) as Line))
    await lines.until((items) => items.some((l) => l.type === 'event'), 20_000).catch((err: Error) => {
      throw new Error(`${err.message}; stderr: ${stderr}`)
    })
    const switched = lines.items.find((l) => l.type === 'switched') as Line
    expect(switched.before).toEqual({ polling: false, kind: 'kernel' })
    expect(switched.after).toEqual({ polling: true, kind: 'polled' })
    expect((switched.notes as string[]).some((n) => n.includes('EROFS') && n.includes('polled'))).toBe(true)
    expect(lines.items.filter((l) => l.type === 'event')).toEqual([{ type: 'event', direction: 'up', signal: 'poll' }])
  })
})

describe('cgroup v1 extras on this machine', () => {
  let cg: TestCgroup | undefined
  let backend: CgroupV1Backend | undefined
  afterEach(async () => {
    backend?.close()
    backend = undefined
    await cg?.remove()
    cg = undefined
  })
  const skip = v1Skip === null ? '' : ` (skipped: ${v1Skip})`

  for (const thresholds of ['auto', 'poll'] as const) {
    it.skipIf(v1Skip !== null)(`'oom' reports the OOM kill of a child (${thresholds === 'auto' ? 'memory.oom_control eventfd' : 'polled oom_kill count'})${skip}`, async () => {
      if (!('dir' in own)) return
      cg = createTestCgroup(own.dir, { limit: 64 * MiB })
      const child = await spawnInCgroup(cg, allocator)
      backend = CgroupV1Backend.open({ cgroup: cg.path, thresholds, poll: { minIntervalMs: 2, maxIntervalMs: 50 } })
      const ooms = new Collector<OomEvent>()
      backend.on('oom', ooms.push)
      // Polling reads oom_kill only while a threshold is watched.
      backend.watchThreshold(32 * MiB, () => {})
      for (;;) {
        const sent = await Promise.race([child.send(`alloc ${4 * MiB}`).then(() => 'ok'), child.exited.then(() => 'exited')])
        if (sent === 'exited') break
      }
      const exit = await child.exited
      expect(exit.signal).toBe('SIGKILL')
      await ooms.count(1)
      const first = ooms.items[0] as OomEvent
      expect(first.source).toBe('memory.oom_control')
      // The eventfd fires as the OOM starts, before the kill is counted; polling sees the count.
      if (thresholds === 'auto') expect(first.oom).toBeGreaterThanOrEqual(1)
      else expect([first.oom, first.oomKill]).toEqual([0, 1])
    })
  }

  it.skipIf(v1Skip !== null)(`memsw thresholds fire on memory.memsw.usage_in_bytes${skip}`, async () => {
    if (!('dir' in own)) return
    cg = createTestCgroup(own.dir, { limit: 256 * MiB })
    const child = await spawnInCgroup(cg, allocator)
    backend = CgroupV1Backend.open({ cgroup: cg.path })
    const b = backend
    const got = new Collector<Crossing>()
    const threshold = b.readMemswUsage() + 16 * MiB
    b.watchMemswThreshold(threshold, got.push)
    while (b.readMemswUsage() < threshold + 4 * MiB) await child.send(`alloc ${MiB}`)
    await got.count(1)
    expect(got.items.map((c) => [c.threshold, c.direction, c.signal])).toEqual([[threshold, 'up', 'eventfd']])
    expect(got.items[0]?.usage).toBeGreaterThanOrEqual(threshold)
  })

  it.skipIf(v1Skip !== null)(`pressure levels register through the eventfd, and are refused with ERR_PERMISSION when polling${skip}`, async () => {
    if (!('dir' in own)) return
    cg = createTestCgroup(own.dir, { limit: 64 * MiB })
    backend = CgroupV1Backend.open({ cgroup: cg.path })
    const w = backend.watchPressureLevel('medium', 'local')
    expect([w.level, w.mode]).toEqual(['medium', 'local'])
    w.close()
    expect(() => backend?.watchPressureLevel('severe' as 'low')).toThrow(TypeError)
    backend.close()
    backend = CgroupV1Backend.open({ cgroup: cg.path, thresholds: 'poll' })
    let err: unknown
    try {
      backend.watchPressureLevel('critical')
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(MemoryPressureError)
    expect((err as MemoryPressureError).code).toBe('ERR_PERMISSION')
    expect(backend.polling).toBe(true)
    expect(backend.notes.some((n) => n.includes('poll'))).toBe(true)
  })
})
