// A watcher process for the latency, idle-cost and lead-time benches: one strategy a user could pick
// to learn that a cgroup crossed a memory threshold, printing `event <ns> <usage> <up|down>` on each.
//
//   node bench/watcher.mjs <strategy> --cgroup <v1 dir> --threshold <bytes> [--v2 <dir>] [--interval ms]
//   strategies: node-memory-pressure (kernel eventfd threshold through the public API),
//   node-memory-pressure-levels (a monitor with levels on the cgroup and V8's heap), raw-eventfd (the
//   same registration by hand, no SDK: the floor), poll (read
//   memory.usage_in_bytes every --interval ms), psi (a PSI trigger on <v2>/memory.pressure, Bun's
//   `some 150000 2000000`), none (an idle Node process: the baseline of the idle cost).
// The process stays alive while its stdin is open; `ns` is process.hrtime.bigint() (CLOCK_MONOTONIC).

import fs from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    cgroup: { type: 'string' },
    v2: { type: 'string' },
    threshold: { type: 'string' },
    interval: { type: 'string', default: '1000' },
    psi: { type: 'string', default: 'some 150000 2000000' },
  },
})
const strategy = positionals[0]
const threshold = Number(values.threshold)
const usageFile = path.join(values.cgroup, 'memory.usage_in_bytes')
const print = (line) => process.stdout.write(`${line}\n`)
const buf = Buffer.alloc(64)
const readUsage = () => {
  // one fd kept open and re-read from offset 0, as a careful poller would (no open/close per tick)
  const n = fs.readSync(usageFd, buf, 0, buf.length, 0)
  return Number(buf.toString('latin1', 0, n))
}
const usageFd = fs.openSync(usageFile, 'r')

if (strategy === 'node-memory-pressure') {
  const { onMemoryThreshold } = await import('node-memory-pressure')
  // the fifth field: the SDK delivered this crossing together with another (`coalesced`)
  onMemoryThreshold(threshold, (e) => print(`event ${process.hrtime.bigint()} ${e.usage} ${e.direction} ${e.coalesced ? 'coalesced' : ''}`.trimEnd()), {
    cgroup: values.cgroup,
    direction: 'both',
    onError: (err) => print(`error ${err.code}`),
  })
} else if (strategy === 'node-memory-pressure-levels') {
  // a service's monitor: levels on the cgroup and on V8's heap (heapLimit, default), a shrinker
  // registered; idle it should cost what the threshold alone costs (no timer for the heap watch)
  const { createMemoryMonitor } = await import('node-memory-pressure')
  const monitor = createMemoryMonitor({ cgroup: values.cgroup, levels: true })
  monitor.register({ name: 'idle', shrink: () => 0 })
  monitor.on('pressure', (e) => print(`event ${process.hrtime.bigint()} ${e.bytes} ${e.level}`))
  monitor.on('error', (err) => print(`error ${err.code}`))
  globalThis.monitor = monitor
} else if (strategy === 'raw-eventfd') {
  // The same kernel mechanism without the SDK (memory.rst, "Memory thresholds"): what is left of the
  // latency here is the kernel and the scheduler, so the difference to 'node-memory-pressure' is the SDK's.
  const { tryLoadNative } = await import('../dist/native.js')
  const native = tryLoadNative()
  if (native instanceof Error) throw native
  const efd = native.eventfd()
  fs.writeFileSync(path.join(values.cgroup, 'cgroup.event_control'), `${efd} ${usageFd} ${threshold}`)
  let above = readUsage() >= threshold
  const w = native.watch(efd, 'readable', (status) => {
    if (status < 0) return print(`error raw-${status}`)
    while (native.readEventfd(w.fd) > 0);
    const usage = readUsage()
    const now = usage >= threshold
    if (now !== above) {
      above = now
      print(`event ${process.hrtime.bigint()} ${usage} ${now ? 'up' : 'down'}`)
    }
  })
  if (typeof w === 'number') throw new Error(`watch failed: ${w}`)
  globalThis.rawWatcher = w
} else if (strategy === 'poll') {
  const interval = Number(values.interval)
  let above = readUsage() >= threshold
  setInterval(() => {
    const usage = readUsage()
    const now = usage >= threshold
    if (now !== above) {
      above = now
      print(`event ${process.hrtime.bigint()} ${usage} ${now ? 'up' : 'down'}`)
    }
  }, interval)
} else if (strategy === 'psi') {
  // psi.rst: one trigger per open fd, written with its trailing NUL (the kernel overwrites the last
  // byte with NUL); without CAP_SYS_RESOURCE the window must be a multiple of 2 s. POLLPRI wakes us.
  const { tryLoadNative } = await import('../dist/native.js')
  const native = tryLoadNative()
  if (native instanceof Error) throw native
  const file = path.join(values.v2, 'memory.pressure')
  const stallUs = Number(values.psi.split(' ')[1])
  const someTotal = () => Number(/^some .*total=(\d+)/m.exec(fs.readFileSync(file, 'utf8'))[1])
  const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_NONBLOCK)
  // an unprivileged trigger fires once right after arming: count only stall growth since now
  let base = someTotal()
  fs.writeSync(fd, Buffer.from(`${values.psi}\0`))
  const w = native.watch(fd, 'priority', (status) => {
    if (status < 0) return print(`error psi-${status}`)
    const total = someTotal()
    if (total - base >= stallUs) {
      base = total
      print(`event ${process.hrtime.bigint()} ${readUsage()} up`)
    }
  })
  if (typeof w === 'number') throw new Error(`watch failed: ${w}`)
  globalThis.psiWatcher = w
} else if (strategy !== 'none') {
  throw new Error(`unknown strategy ${strategy}`)
}
process.stdin.on('data', () => {})
process.stdin.on('end', () => process.exit(0))
print('ready')
