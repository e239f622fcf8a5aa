// The cgroup v2 bench stage, inside the VM that bench/vm.mjs boots (a real v2 memory controller):
// latency, idle cost, lead time before the OOM kill and the CRAMM sweep, every strategy side by side
// in this one run. Prints one `@@mp-vm result <base64 JSON>` line per experiment for the host.
//
//   node bench/vm-guest.mjs [--quick] [--only latency,idle,lead-time,cramm] [--ab-build <dist> [--ab-pairs n]]
//   node bench/vm-guest.mjs --watcher poll|psi|none --cgroup <dir> --thresholds <b,b,...> [--interval ms]
// A watcher (one strategy per process, in a cgroup of its own) prints `event <ns> <threshold> <usage>
// <up|down>`; `ns` is process.hrtime.bigint(), CLOCK_MONOTONIC, shared by every process here.

import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { runWorkload } from './lib/workload.mjs'

const MiB = 2 ** 20
const here = path.dirname(fileURLToPath(import.meta.url))
const self = fileURLToPath(import.meta.url)
const service = path.join(here, 'vm-service.mjs')
const ramp = path.join(here, 'ramp.mjs')
const countFiles = path.join(here, 'lib', 'count-files.mjs')
const { values: o } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    smoke: { type: 'boolean', default: false },
    only: { type: 'string' },
    watcher: { type: 'string' },
    cgroup: { type: 'string' },
    thresholds: { type: 'string' },
    interval: { type: 'string', default: '1000' },
    // Another build's dist/ (relative to the project): its SDK runs side by side with this one's in
    // the CRAMM sweep, `pairs` times per limit, to tell whether a change pays.
    'ab-build': { type: 'string' },
    'ab-pairs': { type: 'string' },
  },
})
const print = (line) => process.stdout.write(`${line}\n`)

// ---- a watcher process: one strategy a user could pick instead of the SDK ----
async function watcher() {
  const thresholds = (o.thresholds ?? '').split(',').filter(Boolean).map(Number)
  const fd = fs.openSync(path.join(o.cgroup, 'memory.current'), 'r')
  const buf = Buffer.alloc(64)
  const read = () => Number(buf.toString('latin1', 0, fs.readSync(fd, buf, 0, buf.length, 0)))
  const above = new Map(thresholds.map((t) => [t, read() >= t]))
  const compare = () => {
    const usage = read()
    const ns = process.hrtime.bigint()
    for (const [t, was] of above) {
      const now = usage >= t
      if (now !== was) {
        above.set(t, now)
        print(`event ${ns} ${t} ${usage} ${now ? 'up' : 'down'}`)
      }
    }
  }
  if (o.watcher === 'poll') setInterval(compare, Number(o.interval))
  else if (o.watcher === 'psi') {
    const { PsiTrigger } = await import('node-memory-pressure')
    // Bun's trigger, as in the v1 bench: 150 ms of `some` stall in a 2 s window.
    const psi = PsiTrigger.open(path.join(o.cgroup, 'memory.pressure'), { kind: 'some', stallUs: 150_000, windowUs: 2_000_000 })
    psi.on('stall', compare)
  } else if (o.watcher !== 'none') throw new RangeError(`--watcher: unknown ${o.watcher}`)
  process.stdin.on('data', () => {})
  process.stdin.on('end', () => process.exit(0))
  print('ready')
}

// ---- the orchestrator ----
function ownCgroup() {
  const line = fs.readFileSync('/proc/self/cgroup', 'utf8').split('\n').find((l) => l.startsWith('0::'))
  if (line === undefined) throw new Error('not in a cgroup v2 hierarchy')
  return path.join('/sys/fs/cgroup', line.slice(3))
}
const parent = o.watcher === undefined ? path.dirname(ownCgroup()) : ''
const made = []
let seq = 0

/** A v2 memory cgroup beside this process's, with `memory.max` when `max` is given. */
function makeCg(tag, max) {
  const dir = path.join(parent, `bench-${tag}-${++seq}`)
  fs.mkdirSync(dir)
  made.push(dir)
  if (max !== undefined) fs.writeFileSync(path.join(dir, 'memory.max'), String(max))
  const file = (f) => fs.readFileSync(path.join(dir, f), 'utf8')
  const events = () => Object.fromEntries(file('memory.events').trim().split('\n').map((l) => l.split(' ')).map(([k, v]) => [k, Number(v)]))
  return {
    dir,
    remove: async () => {
      const i = made.indexOf(dir)
      if (i !== -1) made.splice(i, 1)
      await rmdirRetry(dir)
    },
    usage: () => Number(file('memory.current')),
    peak: () => (fs.existsSync(path.join(dir, 'memory.peak')) ? Number(file('memory.peak')) : null),
    oomKills: () => events().oom_kill ?? 0,
    spawn: (argv, opts = {}) => spawnIn(dir, argv, opts),
  }
}

/** rmdir, retried while the last process of the cgroup is still exiting (EBUSY). */
async function rmdirRetry(dir) {
  for (let i = 0; i < 50; i++) {
    try {
      fs.rmdirSync(dir)
      return
    } catch (err) {
      if (err.code === 'ENOENT') return
      await sleep(100)
    }
  }
}

async function removeCgs() {
  for (const dir of made.splice(0).reverse()) await rmdirRetry(dir)
}

const children = new Set()

/** `node ...argv` started inside `dir` (a shell moves itself there, then execs Node). */
function spawnIn(dir, argv, { env = {}, onLine, nodeArgs = [] } = {}) {
  const proc = spawn('/bin/sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', dir, process.execPath, ...nodeArgs, ...argv], {
    env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'],
  })
  children.add(proc)
  let stderr = ''
  proc.stderr.on('data', (d) => (stderr += d))
  proc.stdin.on('error', () => {})
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => {
    children.delete(proc)
    resolve({ code, signal, ns: process.hrtime.bigint() })
  }))
  const waiters = []
  const lines = []
  createInterface({ input: proc.stdout }).on('line', (line) => {
    const ns = process.hrtime.bigint()
    lines.push({ line, ns })
    const i = waiters.findIndex((w) => w.pred(line))
    if (i !== -1) waiters.splice(i, 1)[0].resolve({ line, ns })
    onLine?.(line, ns)
  })
  const waitLine = (pred) => new Promise((resolve, reject) => {
    waiters.push({ pred, resolve })
    exited.then((e) => reject(new Error(`child exited (${e.code ?? e.signal}) while waiting: ${stderr.slice(-2000)}`)))
  })
  return {
    proc, pid: proc.pid, exited, lines, waitLine, stderr: () => stderr,
    send: (cmd) => proc.stdin.write(`${cmd}\n`),
    /** Sends a command and resolves with the lines it printed up to its `ok`. */
    command: async (cmd) => {
      const from = lines.length
      const name = cmd.split(' ')[0]
      proc.stdin.write(`${cmd}\n`)
      await waitLine((l) => l === `ok ${name}`)
      return lines.slice(from).map((x) => x.line)
    },
  }
}

const stop = async (c) => {
  c.proc.stdin.end()
  const t = setTimeout(() => c.proc.kill('SIGKILL'), 3000)
  await c.exited
  clearTimeout(t)
}

/** CPU (user + system, all threads) in ms and voluntary context switches (all threads) of a pid. */
function costs(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const cpuMs = ((Number(f[11]) + Number(f[12])) * 1000) / 100
  let switches = 0
  for (const t of fs.readdirSync(`/proc/${pid}/task`)) {
    const m = /voluntary_ctxt_switches:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/task/${t}/status`, 'utf8'))
    switches += Number(m?.[1] ?? 0)
  }
  return { cpuMs, switches }
}

const median = (xs) => {
  const s = xs.filter((x) => x !== null && Number.isFinite(x)).sort((a, b) => a - b)
  if (s.length === 0) return null
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}
const pct = (xs, p) => {
  const s = xs.filter((x) => x !== null).sort((a, b) => a - b)
  return s.length === 0 ? null : s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]
}

async function startWatchers(cg, thresholds, kinds) {
  const wcg = makeCg('watchers')
  const ws = []
  for (const k of kinds) {
    const args = [self, '--watcher', k.kind, '--cgroup', cg.dir, '--thresholds', thresholds.join(','), '--interval', String(k.interval ?? 1000)]
    const events = []
    const c = spawnIn(wcg.dir, args, {
      onLine: (line) => {
        if (!line.startsWith('event ')) return
        const [, ns, t, usage, dir] = line.split(' ')
        events.push({ ns: BigInt(ns), threshold: Number(t), usage: Number(usage), direction: dir })
      },
    })
    await c.waitLine((l) => l === 'ready')
    ws.push({ name: k.name, child: c, events })
  }
  return ws
}

const serviceEvents = (svc) => svc.lines.filter((x) => x.line.startsWith('event ')).map((x) => {
  const [, ns, t, usage, dir, signal] = x.line.split(' ')
  return { ns: BigInt(ns), threshold: Number(t), usage: Number(usage), direction: dir, signal }
})

const page = (b) => Math.floor(b / 4096) * 4096

/** Latency and overshoot of crossings made by JavaScript allocation in the SDK's own process. */
async function latency(s) {
  const cg = makeCg('latency', 768 * MiB)
  const svc = cg.spawn([service, cg.dir], { nodeArgs: ['--max-old-space-size=2048'] })
  const ready = await svc.waitLine((l) => l.startsWith('ready'))
  const base = cg.usage()
  const thresholds = Array.from({ length: s.crossings }, (_, k) => page(base + (k + 1) * 8 * MiB))
  const kinds = [
    { name: 'poll 10 ms', kind: 'poll', interval: 10 }, { name: 'poll 100 ms', kind: 'poll', interval: 100 },
    { name: 'poll 1 s', kind: 'poll', interval: 1000 }, { name: 'PSI some 150 ms / 2 s', kind: 'psi' }, { name: 'idle Node (none)', kind: 'none' },
  ]
  const ws = await startWatchers(cg, thresholds, kinds)
  await svc.command(`watch ${thresholds.join(' ')}`)
  // The SDK's timer slows down while usage is steady: the first crossing comes after a quiet spell.
  await sleep(s.quietMs)
  const steps = []
  const last = thresholds.at(-1)
  while (steps.length < 600 && (steps.at(-1)?.usage ?? 0) < last + 2 * MiB) {
    const out = await svc.command(`js ${s.stepBytes}`)
    const done = out.find((l) => l.startsWith('done ')).split(' ')
    steps.push({ ns: BigInt(done[1]), usage: Number(done[2]) })
    await sleep(s.stepEveryMs)
  }
  await sleep(2500)
  const sdk = { name: 'node-memory-pressure (in the allocating process)', events: serviceEvents(svc) }
  const strategies = [sdk, ...ws.filter((w) => w.name !== 'idle Node (none)')]
  const rows = strategies.map((w) => {
    const lat = []
    const over = []
    const signals = {}
    let seen = 0
    for (const t of thresholds) {
      const step = steps.find((x) => x.usage >= t)
      const e = w.events.find((x) => x.threshold === t && x.direction === 'up')
      if (!e || !step) continue
      seen++
      lat.push(Number(e.ns - step.ns) / 1e6)
      over.push((e.usage - t) / MiB)
      if (e.signal) signals[e.signal] = (signals[e.signal] ?? 0) + 1
    }
    return { strategy: w.name, seen, of: thresholds.length, p50Ms: median(lat), p99Ms: pct(lat, 99), maxMs: lat.length ? Math.max(...lat) : null, overshootP50MiB: median(over), overshootMaxMiB: over.length ? Math.max(...over) : null, signals, latenciesMs: lat }
  })
  const latency = { bench: 'vm-latency', signals: ready.line.slice(6), base, thresholds, stepBytes: s.stepBytes, stepEveryMs: s.stepEveryMs, quietMs: s.quietMs, steps: steps.length, rows }
  for (const w of ws) await stop(w.child)
  await stop(svc)
  return latency
}

/**
 * Idle cost: fresh processes, memory steady. The SDK with levels armed (limit 256 MiB), as shipped
 * and clock-driven (as before sampling followed allocation), beside the watchers and an idle Node.
 */
async function idle(s) {
  const sdks = []
  for (const [name, opts] of [['node-memory-pressure, levels armed', {}], ['node-memory-pressure, levels armed, clock-driven (gc: null)', { gc: null }]]) {
    const cg = makeCg('idle', 256 * MiB)
    const svc = cg.spawn([service, cg.dir, JSON.stringify(opts)])
    await svc.waitLine((l) => l.startsWith('ready'))
    await svc.command('levels')
    sdks.push({ name, cg, svc })
  }
  const cg = sdks[0].cg
  const ws = await startWatchers(cg, [page(cg.usage() + 64 * MiB)], [
    { name: 'poll 10 ms', kind: 'poll', interval: 10 }, { name: 'poll 100 ms', kind: 'poll', interval: 100 },
    { name: 'poll 1 s', kind: 'poll', interval: 1000 }, { name: 'PSI some 150 ms / 2 s', kind: 'psi' }, { name: 'idle Node (none)', kind: 'none' },
  ])
  await sleep(s.idleSettleMs)
  const procs = [...sdks.map((x) => ({ name: x.name, pid: x.svc.pid })), ...ws.map((w) => ({ name: w.name, pid: w.child.pid }))]
  const stats = async () => Promise.all(sdks.map(async (x) => JSON.parse((await x.svc.command('stats')).find((l) => l.startsWith('stats ')).slice(6))))
  const before = procs.map((p) => costs(p.pid))
  const statsBefore = await stats()
  const u0 = cg.usage()
  const t0 = process.hrtime.bigint()
  await sleep(s.idleMs)
  const minutes = Number(process.hrtime.bigint() - t0) / 6e10
  const statsAfter = await stats()
  const after = procs.map((p) => costs(p.pid))
  const result = {
    bench: 'vm-idle', settleMs: s.idleSettleMs, minutes, usageMiB: [u0 / MiB, cg.usage() / MiB], level: statsAfter[0].level,
    sdkOwn: sdks.map((x, i) => ({ strategy: x.name, timedReadsPerMin: (statsAfter[i].timedReads - statsBefore[i].timedReads) / minutes, policyTimersPerMin: (statsAfter[i].policyTimers - statsBefore[i].policyTimers) / minutes })),
    rows: procs.map((p, i) => ({ strategy: p.name, cpuMsPerMin: (after[i].cpuMs - before[i].cpuMs) / minutes, wakeupsPerMin: (after[i].switches - before[i].switches) / minutes })),
  }
  for (const w of ws) await stop(w.child)
  for (const x of sdks) await stop(x.svc)
  return result
}


/** A steady leak to the OOM kill: lead time of each strategy's first warning at 80% of the limit. */
async function leadTime(s, kind, options = {}) {
  const limit = 256 * MiB
  const cg = makeCg(`lead-${kind}`, limit)
  const threshold = page(0.8 * limit)
  const svc = cg.spawn([service, cg.dir, JSON.stringify(options)], { nodeArgs: ['--max-old-space-size=2048'] })
  await svc.waitLine((l) => l.startsWith('ready'))
  const ws = await startWatchers(cg, [threshold], [{ name: 'poll 10 ms', kind: 'poll', interval: 10 }])
  await svc.command(`watch ${threshold}`)
  await sleep(s.quietMs)
  let killed
  let leaker = null
  const u0 = cg.usage()
  const t0 = process.hrtime.bigint()
  if (kind === 'native') {
    // Another process of the cgroup leaks (a native library would look the same): V8 collects nothing.
    leaker = cg.spawn([ramp, '--step', String(MiB), '--every', '50'], { env: { MALLOC_MMAP_THRESHOLD_: '65536' } })
    const first = await Promise.race([leaker.exited.then((e) => ({ who: 'leaker', e })), svc.exited.then((e) => ({ who: 'service', e }))])
    killed = first
  } else {
    svc.send(`leak ${kind} ${s.leakMiBps}`)
    killed = { who: 'service', e: await svc.exited }
  }
  const killNs = killed.e.ns
  const oomKills = cg.oomKills()
  const sdkFirst = serviceEvents(svc).find((e) => e.direction === 'up')
  const pollFirst = ws[0].events.find((e) => e.direction === 'up')
  const lead = (e) => (e && e.ns <= killNs ? Number(killNs - e.ns) / 1e6 : null)
  const result = {
    kind, options, killed: killed.who, signal: killed.e.signal, oomKills, threshold, limit, killAtS: Number(killNs - t0) / 1e9,
    // What the emulated CPU achieved: from usage at the start to the limit.
    achievedMiBps: (limit - u0) / MiB / (Number(killNs - t0) / 1e9),
    rows: [
      { strategy: 'node-memory-pressure', leadMs: lead(sdkFirst), usageAtWarningMiB: sdkFirst ? sdkFirst.usage / MiB : null, signal: sdkFirst?.signal ?? null },
      { strategy: 'poll 10 ms', leadMs: lead(pollFirst), usageAtWarningMiB: pollFirst ? pollFirst.usage / MiB : null, signal: 'poll' },
    ],
  }
  for (const w of ws) await stop(w.child)
  if (leaker) {
    leaker.proc.kill('SIGKILL')
    await leaker.exited
  }
  svc.proc.kill('SIGKILL')
  await svc.exited
  return result
}

/**
 * The workloads of the CRAMM sweep. The JavaScript-object workload of the policy work goes here as
 * another entry once bench/workload.mjs (or its own script) offers it: `{ name, script?, args }`.
 */
const WORKLOADS = [{ name: 'buffer', args: {} }]

/** Where a cell's CPU went in its measured window: collections, shrink cycles, page faults, file reads. */
function costsOf(r, filesOut, warmupMs) {
  let files = null
  try {
    files = JSON.parse(fs.readFileSync(filesOut, 'utf8'))
    fs.rmSync(filesOut)
  } catch {}
  const log = (r.shrinkLog ?? []).filter((x) => x.t >= warmupMs)
  const sum = (k) => log.reduce((n, x) => n + (x[k] ?? 0), 0)
  return {
    requests: r.requests, cpuSeconds: r.cpuSeconds, computeCpuMs: r.computeCpuMs, mainThreadShare: r.mainThreadShare, resources: r.resources ?? null, gc: r.gc ?? null,
    shrinkCycles: { n: log.length, durationMs: sum('durationMs'), gcMs: sum('gcMs'), mallocTrimMs: sum('mallocTrimMs'), heapMs: sum('heapMs') },
    files,
  }
}

async function cramm(s) {
  const out = []
  for (const wl of WORKLOADS) {
    for (const limitMib of s.limits) {
      const cell = async (args, env = {}) => {
        const cg = makeCg(`cramm-${limitMib}`, limitMib * MiB)
        // Files opened and the time spent on them in the measured window (the backend's sampling).
        const filesOut = `/tmp/mp-files-${++seq}.json`
        try {
          const r = await runWorkload(cg, { warmup: s.warmup, seconds: s.seconds, cost: s.cost, ...wl.args, ...args }, {
            env: { ...env, NODE_OPTIONS: `--import=${countFiles}`, MP_COUNT_FILES: filesOut, MP_COUNT_AFTER_MS: String(s.warmup * 1000) },
          })
          return { label: args.strategy === 'fixed' ? `fixed ${args['cache-mib']} MiB` : args.strategy, scaled: r.scaled, perCpuSecond: r.perCpuSecond, throughput: r.throughput, hitRatio: r.hitRatio, killed: r.killed, oomKills: r.oomKills, peakMiB: r.peakUsage === null ? null : r.peakUsage / MiB, shrinks: r.shrinks, ...costsOf(r, filesOut, s.warmup * 1000) }
        } finally {
          await cg.remove()
        }
      }
      const grid = s.grid(limitMib)
      const rep0 = []
      for (const size of grid) rep0.push(await cell({ strategy: 'fixed', 'cache-mib': size }))
      rep0.push(await cell({ strategy: 'node-memory-pressure' }))
      const fixed = rep0.filter((r) => r.label.startsWith('fixed') && !r.killed && r.scaled !== null)
      const best = fixed.length ? fixed.reduce((b, r) => (r.scaled > b.scaled ? r : b)) : null
      const pairs = []
      if (best) {
        const size = Number(best.label.split(' ')[1])
        for (let i = 0; i < s.pairs; i++) {
          // Side by side: two cgroups with the same limit, started together.
          const [a, b] = await Promise.all([cell({ strategy: 'node-memory-pressure' }), cell({ strategy: 'fixed', 'cache-mib': size })])
          pairs.push({ sdk: a, fixed: b, ratio: b.scaled > 0 && a.scaled !== null ? a.scaled / b.scaled : null, ratioHit: b.hitRatio ? a.hitRatio / b.hitRatio : null })
        }
      }
      const ab = []
      if (o['ab-build']) {
        const build = path.resolve(here, '..', o['ab-build'])
        for (let i = 0; i < Number(o['ab-pairs'] ?? s.pairs); i++) {
          const [a, b] = await Promise.all([cell({ strategy: 'node-memory-pressure' }), cell({ strategy: 'node-memory-pressure' }, { MP_BUILD_DIR: build })])
          ab.push({ build: o['ab-build'], sdk: a, other: b, ratio: b.scaled > 0 && a.scaled !== null ? a.scaled / b.scaled : null })
        }
      }
      out.push({ workload: wl.name, limitMib, rep0, best: best?.label ?? null, pairs, ab, ratio: median(pairs.map((p) => p.ratio)), sdkKills: [...rep0, ...pairs.map((p) => p.sdk)].filter((r) => r.label === 'node-memory-pressure' && r.killed).length })
    }
  }
  return { bench: 'vm-cramm', warmup: s.warmup, seconds: s.seconds, cost: s.cost, pairs: s.pairs, rows: out }
}

function report(name, value) {
  print(`@@mp-vm result ${Buffer.from(JSON.stringify({ name, value }, (k, v) => (typeof v === 'bigint' ? String(v) : v))).toString('base64')}`)
}

async function main() {
  const quick = o.quick
  const s = quick
    // Quick: what `npm run bench` can afford (about 7 minutes here). The quiet spells are long enough
    // for the SDK's timer to have slowed down (its growth guess halves every 15 s), the idle window
    // holds one idle period of the timer, the plain native leak (seen only at the limit after a
    // quiet spell) is left to the full run, and the CRAMM sweep runs at one limit with one pair.
    ? { crossings: 6, stepBytes: MiB, stepEveryMs: 100, quietMs: 20_000, idleSettleMs: 45_000, idleMs: 60_000, leakMiBps: 20, leaks: ['js', 'buf', 'native-1s'], limits: [256], grid: (l) => [l / 4, l / 2, (5 * l) / 8], warmup: 30, seconds: 15, cost: 20, pairs: 1 }
    : { crossings: 12, stepBytes: MiB, stepEveryMs: 100, quietMs: 90_000, idleSettleMs: 90_000, idleMs: 180_000, leakMiBps: 20, leaks: ['js', 'buf', 'native', 'native-1s'], limits: [128, 256], grid: (l) => [l / 4, (3 * l) / 8, l / 2, (5 * l) / 8, (3 * l) / 4], warmup: 40, seconds: 20, cost: 20, pairs: 3 }
  // A few seconds of each, to check that the stage runs (not for figures).
  if (o.smoke) Object.assign(s, { crossings: 2, quietMs: 2000, idleSettleMs: 2000, idleMs: 4000, limits: [128], grid: (l) => [l / 2], warmup: 2, seconds: 2 })
  const only = o.only ? o.only.split(',') : ['latency', 'idle', 'lead-time', 'cramm']
  const t0 = Date.now()
  try {
    if (only.includes('latency')) {
      report('latency', await latency(s))
      await removeCgs()
    }
    if (only.includes('idle')) {
      report('idle', await idle(s))
      await removeCgs()
    }
    if (only.includes('lead-time')) {
      const runs = []
      // The native leak again with the timer's idle sleep at 1 s (poll.idleIntervalMs): what a
      // service expecting growth outside V8 and without memory.high would choose.
      const leaks = { js: ['js', {}], buf: ['buf', {}], native: ['native', {}], 'native-1s': ['native', { poll: { idleIntervalMs: 1000 } }] }
      for (const [kind, options] of s.leaks.map((k) => leaks[k])) {
        runs.push(await leadTime(s, kind, options))
        await removeCgs()
      }
      report('lead-time', { bench: 'vm-lead-time', leakMiBps: s.leakMiBps, quietMs: s.quietMs, runs })
    }
    if (only.includes('cramm')) report('cramm', await cramm(s))
  } catch (err) {
    report('error', { message: String(err?.stack ?? err) })
  } finally {
    for (const c of children) c.kill('SIGKILL')
    await removeCgs()
    report('done', { seconds: (Date.now() - t0) / 1000, mode: quick ? 'quick' : 'full' })
  }
}

if (o.watcher !== undefined) await watcher()
else await main()
