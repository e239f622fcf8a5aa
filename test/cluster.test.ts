// A node:cluster service in one memory cgroup: every worker process gets the kernel's notification,
// and the two ways of sharing the shrinking that docs/cluster-and-workers.md describes both work.

import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { CgroupV1Backend } from '../src/backends/cgroup-v1.js'
import { createMemoryMonitor } from '../src/monitor.js'
import { type TestCgroup, createTestCgroup, ownV1MemoryCgroup, spawnInCgroup } from './helpers/cgroup.js'

const MiB = 2 ** 20
const allocator = fileURLToPath(new URL('./helpers/allocator.mjs', import.meta.url))
const distEntry = fileURLToPath(new URL('../dist/index.js', import.meta.url))
const own = ownV1MemoryCgroup()
const probe = CgroupV1Backend.probe()
const skip = !fs.existsSync(distEntry) ? 'dist/ not built (npm run build)' : 'reason' in own ? own.reason : !probe.available ? probe.reasons.join('; ') : null
const test = skip === null ? it : it.skip
const suffix = skip === null ? '' : ` (skipped: ${skip})`

// The service under test. Primary: forks the workers, relays commands from stdin to them and their
// reports to stdout. Workers hold a cache (touched Buffers) and, by policy:
// - `own`: every worker watches the cgroup and drops its own cache when usage crosses upwards;
// - `primary`: only the primary watches, and asks the worker with the largest cache to drop it.
// Commands: `fill <bytes> <bytes> ...` (one size per worker), `watch <bytes>`. Each is answered
// `ok 0 0` once every worker has done it. Reports: `event <pid> <direction> <threshold>`,
// `shrunk <pid> <bytes>`.
const service = `
import cluster from 'node:cluster'
import { createInterface } from 'node:readline'
import v8 from 'node:v8'
import vm from 'node:vm'
const { createMemoryMonitor } = await import(process.env.MP_DIST)
const policy = process.env.MP_POLICY
const count = Number(process.env.MP_WORKERS)

if (cluster.isPrimary) {
  const workers = []
  const sizes = new Map()
  let pending = 0
  const done = () => { if (--pending === 0) process.stdout.write('ok 0 0\\n') }
  let monitor
  let armed = true
  let ready = 0
  for (let i = 0; i < count; i++) {
    const w = cluster.fork()
    workers.push(w)
    w.on('message', (m) => {
      if (m.type === 'ready' && ++ready === count) process.stdout.write('ready\\n')
      if (m.type === 'ack') done()
      if (m.type === 'size') sizes.set(w, m.bytes)
      if (m.type === 'report') process.stdout.write(m.line + '\\n')
    })
  }
  createInterface({ input: process.stdin }).on('line', (line) => {
    const [cmd, ...args] = line.split(' ')
    if (cmd === 'fill') {
      pending = workers.length
      workers.forEach((w, i) => w.send({ type: 'fill', bytes: Number(args[i]) }))
    } else if (cmd === 'watch' && policy === 'own') {
      pending = workers.length
      for (const w of workers) w.send({ type: 'watch', threshold: Number(args[0]) })
    } else if (cmd === 'watch' && policy === 'primary') {
      monitor = createMemoryMonitor({ cgroup: process.env.MP_CGROUP })
      monitor.addThreshold(Number(args[0]), {
        direction: 'both',
        handler: (e) => {
          process.stdout.write('event ' + process.pid + ' ' + e.direction + ' ' + e.threshold + ' ' + e.usage + ' ' + process.hrtime.bigint() + '\\n')
          // v1 thresholds have no hysteresis: while usage falls through the threshold, per-CPU charge
          // batching can bounce it back above for a moment. Ask for one shrink per episode; a new
          // episode starts once usage was seen well below.
          if (e.direction === 'down' && e.usage < e.threshold - 16 * 2 ** 20) armed = true
          if (e.direction !== 'up' || !armed) return
          armed = false
          const [largest] = [...sizes].sort((a, b) => b[1] - a[1])[0] ?? []
          largest?.send({ type: 'shrink' })
        },
      })
      process.stdout.write('ok 0 0\\n')
    }
  })
} else {
  v8.setFlagsFromString('--expose-gc')
  const gc = vm.runInNewContext('gc')
  let cache = []
  let held = 0
  const report = (line) => process.send({ type: 'report', line })
  const shrink = () => {
    // Stamped before freeing: the crossing back down can only follow from here.
    const started = process.hrtime.bigint()
    const freed = held
    cache = []
    held = 0
    gc()
    process.send({ type: 'size', bytes: 0 })
    report('shrunk ' + process.pid + ' ' + freed + ' ' + started)
  }
  process.on('message', (m) => {
    if (m.type === 'fill') {
      cache.push(Buffer.alloc(m.bytes, 1))
      held += m.bytes
      process.send({ type: 'size', bytes: held })
      process.send({ type: 'ack' })
    } else if (m.type === 'watch') {
      const monitor = createMemoryMonitor({ cgroup: process.env.MP_CGROUP })
      monitor.addThreshold(m.threshold, {
        direction: 'both',
        handler: (e) => {
          report('event ' + process.pid + ' ' + e.direction + ' ' + e.threshold + ' ' + e.usage + ' ' + process.hrtime.bigint())
          if (e.direction === 'up' && held > 0) shrink()
        },
      })
      process.send({ type: 'ack' })
    } else if (m.type === 'shrink') {
      shrink()
    }
  })
  process.send({ type: 'ready' })
}
`

let dir: string
let script: string
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-cluster-'))
  script = path.join(dir, 'service.mjs')
  fs.writeFileSync(script, service)
})
afterAll(() => {
  if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true })
})

const cgroups: TestCgroup[] = []
afterEach(async () => {
  for (const cg of cgroups.reverse()) await cg.remove()
  cgroups.length = 0
})

interface Report {
  kind: 'event' | 'shrunk'
  pid: number
  /** `<direction> <threshold>` for an event, `<bytes>` for a shrink. */
  value: string
  /** For an event, the usage the monitor read. */
  usage?: number
  /** CLOCK_MONOTONIC at the report, the same clock in every process. */
  ns: bigint
}

/**
 * Reports in the order they happened. Lines arrive out of order: workers relay theirs through the
 * primary's IPC channel while the primary writes its own directly.
 */
function parse(lines: string[]): Report[] {
  return lines
    .filter((l) => l.startsWith('event ') || l.startsWith('shrunk '))
    .map((l): Report => {
      const [kind, pid, ...rest] = l.split(' ')
      const ns = BigInt(rest.pop() ?? '0')
      if (kind === 'event') return { kind, pid: Number(pid), value: `${rest[0]} ${rest[1]}`, usage: Number(rest[2]), ns }
      return { kind: 'shrunk', pid: Number(pid), value: rest.join(' '), ns }
    })
    .sort((a, b) => (a.ns < b.ns ? -1 : a.ns > b.ns ? 1 : 0))
}

/**
 * Resolves once the cgroup's usage has gone down through `bytes`, seen by a monitor of the test's
 * own: by then every crossing of a higher threshold has been signalled to its watchers.
 */
function fallsBelow(cgroup: string, bytes: number): { done: Promise<void>; close: () => Promise<void> } {
  const monitor = createMemoryMonitor({ cgroup })
  let resolve!: () => void
  const done = new Promise<void>((r) => (resolve = r))
  monitor.addThreshold(bytes, { direction: 'down', handler: () => resolve() })
  return { done, close: () => monitor.close() }
}

/** Events alternate up and down, starting up and ending down (a bounce adds one more pair). */
function expectEpisode(events: Report[], threshold: number, context: Report[]): void {
  const directions = events.map((e) => e.value)
  const message = JSON.stringify(context, (_, v: unknown) => (typeof v === 'bigint' ? String(v) : v))
  expect(directions.length % 2, message).toBe(0)
  expect(directions, message).toEqual(directions.map((_, i) => `${i % 2 === 0 ? 'up' : 'down'} ${threshold}`))
}

// Four Node processes start per test, and on a loaded 2-core machine that alone can take many
// seconds. One run in about ten stalled past 30 s on Node 24 in CI (03:46 UTC, cause not found: see
// the issue 7 note); a second attempt is allowed so that a stall shows in the log without failing
// the run, while a broken feature still fails both attempts.
describe('node:cluster in one memory cgroup', { timeout: 60_000, retry: 1 }, () => {
  test(`every worker is notified and drops its own cache, then is notified of the way back down${suffix}`, async () => {
    if (!('dir' in own)) return
    const cg = createTestCgroup(own.dir, { limit: 1024 * MiB })
    cgroups.push(cg)
    const env = { MP_DIST: pathToFileURL(distEntry).href, MP_POLICY: 'own', MP_WORKERS: '3', MP_CGROUP: cg.path }
    const svc = await spawnInCgroup(cg, script, [], env)
    const pusher = await spawnInCgroup(cg, allocator)
    await svc.send(`fill ${96 * MiB} ${96 * MiB} ${96 * MiB}`)
    // Margins of 32 MiB and more either side of the threshold stay clear of the few MiB that freshly
    // started Node processes give back by themselves. One worker's 96 MiB is enough to go back
    // below; the others were notified of the same crossing and shrink too, however late they read
    // it (a late reader gets up and down together).
    const threshold = Number(fs.readFileSync(path.join(cg.path, 'memory.usage_in_bytes'), 'utf8')) + 64 * MiB
    await svc.send(`watch ${threshold}`)
    const below = fallsBelow(cg.path, threshold - 16 * MiB)
    try {
      await pusher.send(`alloc ${128 * MiB}`)
      await below.done
    } finally {
      await below.close()
    }
    // Worker lines travel through the primary's IPC channel: wait for each worker's last word.
    const settled = (lines: string[]): boolean => {
      const r = parse(lines)
      const pids = new Set(r.map((x) => x.pid))
      return pids.size === 3 && [...pids].every((pid) => r.filter((x) => x.pid === pid).at(-1)?.value.startsWith('down') === true)
    }
    await svc.output.until(settled, 20_000)
    const reports = parse(svc.output.items)
    const pids = [...new Set(reports.map((r) => r.pid))]
    expect(pids).toHaveLength(3)
    for (const pid of pids) {
      const mine = reports.filter((r) => r.pid === pid)
      // Within a worker: notified up, shrank once (everything it held), notified down.
      expect(mine[0]).toMatchObject({ kind: 'event', value: `up ${threshold}` })
      expect(mine.filter((r) => r.kind === 'shrunk').map((r) => r.value)).toEqual([String(96 * MiB)])
      expectEpisode(mine.filter((r) => r.kind === 'event'), threshold, reports)
    }
  })

  test(`only the primary watches, and only the worker it picks (the largest cache) shrinks${suffix}`, async () => {
    if (!('dir' in own)) return
    const cg = createTestCgroup(own.dir, { limit: 1024 * MiB })
    cgroups.push(cg)
    const env = { MP_DIST: pathToFileURL(distEntry).href, MP_POLICY: 'primary', MP_WORKERS: '3', MP_CGROUP: cg.path }
    const svc = await spawnInCgroup(cg, script, [], env)
    const pusher = await spawnInCgroup(cg, allocator)
    await svc.send(`fill ${16 * MiB} ${160 * MiB} ${16 * MiB}`)
    const threshold = Number(fs.readFileSync(path.join(cg.path, 'memory.usage_in_bytes'), 'utf8')) + 64 * MiB
    await svc.send(`watch ${threshold}`)
    const below = fallsBelow(cg.path, threshold - 16 * MiB)
    try {
      await pusher.send(`alloc ${128 * MiB}`)
      await below.done
    } finally {
      await below.close()
    }
    await svc.output.until((lines) => parse(lines).at(-1)?.value.startsWith('down') === true && parse(lines).some((r) => r.kind === 'shrunk'), 20_000)
    const reports = parse(svc.output.items)
    const primary = svc.proc.pid
    const shrinks = reports.filter((r) => r.kind === 'shrunk')
    // One shrink, by a worker (not the primary), of the largest cache; the others kept theirs.
    expect(shrinks.map((r) => r.value)).toEqual([String(160 * MiB)])
    expect(shrinks[0]?.pid).not.toBe(primary)
    const events = reports.filter((r) => r.kind === 'event')
    expect(new Set(events.map((r) => r.pid))).toEqual(new Set([primary]))
    expect(reports[0]).toMatchObject({ kind: 'event', value: `up ${threshold}` })
    expectEpisode(events, threshold, reports)
  })
})
