// Kernel crossing to JS handler, on cgroup v1: a child in a limited cgroup allocates in 1 MiB steps
// across a threshold and back; the parent watches the child's cgroup through the public API. Latency
// is the time from the child's allocation completing to the parent's handler running, both read from
// CLOCK_MONOTONIC (process.hrtime), which every process on the machine shares.
//
//   node bench/threshold-latency.mjs [--rounds 200] [--out bench/results]
//
// Writes <out>/threshold-latency.json and .md. Needs root and a writable v1 memory hierarchy.

import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { createMemoryMonitor, findMemoryCgroup } from 'memory-pressure'

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '200' }, out: { type: 'string', default: 'bench/results' } } })
const rounds = Number(values.rounds)
const MiB = 2 ** 20
const allocator = fileURLToPath(new URL('../test/helpers/allocator.mjs', import.meta.url))

const own = findMemoryCgroup()
if (own.version !== 1) throw new Error(`needs cgroup v1; this process is in a v${own.version} cgroup`)
const dir = path.join(own.path, `mp-bench-${process.pid}-${randomBytes(3).toString('hex')}`)
fs.mkdirSync(dir)
let child
try {
  fs.writeFileSync(path.join(dir, 'memory.limit_in_bytes'), String(512 * MiB))
  child = spawn('/bin/sh', ['-c', 'echo $$ > "$0" && exec "$@"', path.join(dir, 'cgroup.procs'), process.execPath, allocator], {
    env: { ...process.env, MALLOC_MMAP_THRESHOLD_: '65536' },
    stdio: ['pipe', 'pipe', 'inherit'],
  })
  const replies = []
  const waiters = []
  createInterface({ input: child.stdout }).on('line', (line) => {
    if (line === 'ready') return waiters.shift()?.(line)
    const [, held, ns, startNs] = line.split(' ')
    const r = { held: Number(held), ns: BigInt(ns), startNs: BigInt(startNs) }
    replies.push(r)
    waiters.shift()?.(r)
  })
  const next = () => new Promise((resolve) => waiters.push(resolve))
  await next()
  const send = (cmd) => {
    const p = next()
    child.stdin.write(`${cmd}\n`)
    return p
  }

  const monitor = createMemoryMonitor({ cgroup: dir })
  const usage = () => Number(fs.readFileSync(path.join(dir, 'memory.usage_in_bytes'), 'utf8'))
  const threshold = usage() + 32 * MiB
  const deliveries = []
  monitor.addThreshold(threshold, { direction: 'both', handler: (e) => deliveries.push({ ns: process.hrtime.bigint(), direction: e.direction, usage: e.usage }) })

  // The kernel sees the crossing somewhere inside the step that crossed: latency lies between
  // "handler minus step end" (can be negative: the handler ran while the child was still filling
  // its buffer) and "handler minus step start".
  const samples = { up: [], down: [] }
  const fromStart = { up: [], down: [] }
  const overshoot = []
  for (let i = 0; i < rounds; i++) {
    for (const direction of ['up', 'down']) {
      const seen = deliveries.length
      let last
      // step until the handler has run; the last completed step is the one that crossed
      while (deliveries.length === seen) {
        last = await send(direction === 'up' ? `alloc ${MiB}` : 'free')
        await new Promise((r) => setImmediate(r))
        if (direction === 'down' && last.held === 0) break
      }
      const d = deliveries[seen]
      if (!d) continue
      samples[direction].push(Number(d.ns - last.ns) / 1e6)
      fromStart[direction].push(Number(d.ns - last.startNs) / 1e6)
      if (direction === 'up') overshoot.push(d.usage - threshold)
    }
  }
  await monitor.close()

  const pct = (xs, p) => {
    const s = [...xs].sort((a, b) => a - b)
    return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]
  }
  const summary = (xs) => ({ n: xs.length, p50: pct(xs, 50), p99: pct(xs, 99), max: Math.max(...xs) })
  const result = {
    machine: { cores: os.availableParallelism(), kernel: os.release(), node: process.version, date: new Date().toISOString() },
    rounds,
    threshold,
    latencyFromStepEndMs: { up: summary(samples.up), down: summary(samples.down) },
    latencyFromStepStartMs: { up: summary(fromStart.up), down: summary(fromStart.down) },
    overshootBytesUp: summary(overshoot),
    kernelGranularityBytes: 128 * 4096 * os.availableParallelism(),
    missed: rounds * 2 - samples.up.length - samples.down.length,
  }
  fs.mkdirSync(values.out, { recursive: true })
  fs.writeFileSync(path.join(values.out, 'threshold-latency.json'), `${JSON.stringify(result, null, 2)}\n`)
  const f = (x) => x.toFixed(3)
  const md = [
    `# Kernel crossing to handler (cgroup v1 eventfd)`,
    '',
    `${result.machine.cores} cores, Linux ${result.machine.kernel}, Node ${result.machine.node}, ${result.machine.date}; ${rounds} rounds of 1 MiB steps across a threshold and back.`,
    '',
    'Latency lies between the two columns: the kernel notices the crossing inside the step that crossed.',
    '',
    '| direction | crossings seen | from step end p50 / p99 / max ms | from step start p50 / p99 / max ms |',
    '| --- | --- | --- | --- |',
    ...['up', 'down'].map((d) => {
      const a = result.latencyFromStepEndMs[d]
      const b = result.latencyFromStepStartMs[d]
      return `| ${d} | ${a.n} of ${rounds} | ${f(a.p50)} / ${f(a.p99)} / ${f(a.max)} | ${f(b.p50)} / ${f(b.p99)} / ${f(b.max)} |`
    }),
    '',
    `Usage past the threshold at delivery (up): p50 ${(result.overshootBytesUp.p50 / MiB).toFixed(2)} MiB, max ${(result.overshootBytesUp.max / MiB).toFixed(2)} MiB; the kernel checks every 128 pages per CPU (${(result.kernelGranularityBytes / MiB).toFixed(1)} MiB here) and the step is 1 MiB.`,
    '',
  ].join('\n')
  fs.writeFileSync(path.join(values.out, 'threshold-latency.md'), md)
  console.log(md)
} finally {
  if (child?.pid) {
    try { process.kill(child.pid, 'SIGKILL') } catch { /* gone */ }
  }
  for (let i = 0; i < 200; i++) {
    try {
      if (fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').trim() === '') break
    } catch { break }
    await new Promise((r) => setTimeout(r, 10))
  }
  try { fs.writeFileSync(path.join(dir, 'memory.force_empty'), '0') } catch { /* best effort */ }
  try { fs.rmdirSync(dir) } catch (err) { console.error(`could not remove ${dir}: ${err.code}`) }
}
