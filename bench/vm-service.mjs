// A service with the SDK, inside a cgroup v2 memory cgroup of the bench VM (bench/vm-guest.mjs):
// the cgroup-v2 backend on its own cgroup (so it reads after V8's collections), commanded on stdin.
//
//   watch <bytes>...   watch thresholds; prints `event <ns> <threshold> <usage> <up|down> <signal>`
//   levels             createMemoryMonitor({ backend, levels: true }) with a clock that counts timers
//   js <bytes>         keep <bytes> more of JavaScript arrays; prints `done <ns> <usage>`
//   buf <bytes>        keep a touched Buffer of <bytes>; prints `done <ns> <usage>`
//   leak <js|buf> <MiB/s>  keep growing at that rate in 50 ms steps until killed
//   unwatch            close every watch and the monitor
//   (argv: <cgroup dir> [backend options as JSON])
//   stats              prints `stats <json>`: the SDK's timed reads, all reads, policy timers fired
// Every line is answered with `ok <command>` once done; `ns` is process.hrtime.bigint().

import fs from 'node:fs'
import path from 'node:path'
import readline from 'node:readline'
import v8 from 'node:v8'
import { CgroupV2Backend, createMemoryMonitor } from 'node-memory-pressure'

const print = (line) => process.stdout.write(`${line}\n`)
// argv[3]: more backend options as JSON, e.g. '{"gc":null}' (clock-driven, as before sampling
// followed allocation) or '{"poll":{"idleIntervalMs":1000}}'.
const backend = CgroupV2Backend.open({ cgroup: process.argv[2], ...JSON.parse(process.argv[3] ?? '{}') })
const current = path.join(backend.cgroup, 'memory.current')
const usage = () => Number(fs.readFileSync(current, 'latin1'))
const kept = []
let watches = []
let monitor = null
let policyTimers = 0
// The policy's own timers, counted: the monitor's wake-ups besides the backend's.
const countingClock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(() => {
    policyTimers++
    fn()
  }, ms).unref(),
  clearTimeout: (t) => clearTimeout(t),
}

function keepJs(bytes) {
  const heap = () => v8.getHeapStatistics().used_heap_size
  const start = heap()
  const chunk = []
  // Arrays of 1024 numbers (8 KiB each): young-generation objects, promoted as they survive, fast
  // enough to leak 20 MiB/s under emulation.
  for (let i = 0; heap() - start < bytes; i++) {
    for (let j = 0; j < 16; j++) chunk.push(new Array(1024).fill(i + j + 0.5))
  }
  kept.push(chunk)
}

function keepBuf(bytes) {
  kept.push(Buffer.alloc(bytes, 1))
}

const commands = {
  watch: (...values) => {
    for (const v of values.map(Number)) {
      watches.push(backend.watchThreshold(v, (c) => print(`event ${process.hrtime.bigint()} ${c.threshold} ${c.usage} ${c.direction} ${c.signal}`)))
    }
  },
  levels: () => {
    monitor = createMemoryMonitor({ backend, levels: true, clock: countingClock })
  },
  js: (bytes) => {
    keepJs(Number(bytes))
    print(`done ${process.hrtime.bigint()} ${usage()}`)
  },
  buf: (bytes) => {
    keepBuf(Number(bytes))
    print(`done ${process.hrtime.bigint()} ${usage()}`)
  },
  leak: (kind, rate) => {
    const step = (Number(rate) * 2 ** 20) / 20
    setInterval(() => {
      if (kind === 'js') keepJs(step)
      else keepBuf(step)
    }, 50)
  },
  unwatch: async () => {
    for (const w of watches) w.close()
    watches = []
    await monitor?.close()
    monitor = null
  },
  stats: () => print(`stats ${JSON.stringify({ timedReads: backend.timedReads, precision: backend.precision, policyTimers, level: monitor?.level ?? null })}`),
}

print(`ready ${backend.precision.signals.join(',')}`)
readline.createInterface({ input: process.stdin }).on('line', async (line) => {
  const [name, ...args] = line.trim().split(/\s+/)
  const fn = commands[name]
  if (fn === undefined) return print(`error unknown command ${name}`)
  await fn(...args)
  print(`ok ${name}`)
})
