// `npm run example:worker-queue`: a job queue on worker threads, each worker keeping a pool of 8 MiB
// scratch buffers that only grows. One monitor in the main thread watches the cgroup; its shrinker
// asks every worker to trim its pool by the requested share, and the workers report what they freed.
// Levels are set at fixed steps above the working set at start, so no memory limit is needed; where
// no cgroup can be watched (macOS, no cgroup access) the queue runs on the simulated backend.
//
//   node examples/worker-queue.mjs [--simulated]

import { once } from 'node:events'
import v8 from 'node:v8'
import { Worker } from 'node:worker_threads'
import { SimulatedBackend, createMemoryMonitor, formatBytes } from 'node-memory-pressure'

const MiB = 2 ** 20
const BUFFER = 8 * MiB
const WORKERS = 2
const JOBS = 120

// Process-wide: lets each worker get a gc() function after it drops buffers (see the worker code).
v8.setFlagsFromString('--expose-gc')

// The worker: jobs take buffers from the pool (allocating when it is empty) and give them back.
// Asked to trim, it drops that share of its pool and collects, so the memory really goes.
const workerSource = `
const { parentPort, workerData } = require('node:worker_threads')
const collect = require('node:vm').runInNewContext('gc')
const pool = []
parentPort.on('message', (m) => {
  if (m.type === 'job') {
    const taken = []
    let allocated = 0
    for (let i = 0; i < m.buffers; i++) {
      let b = pool.pop()
      if (b === undefined) { b = Buffer.alloc(workerData.size, 1); allocated++ }
      b[0] = m.id & 255
      taken.push(b)
    }
    pool.push(...taken)
    parentPort.postMessage({ type: 'done', id: m.id, allocated, pooled: pool.length * workerData.size })
  } else if (m.type === 'trim') {
    const drop = Math.ceil(pool.length * m.fraction)
    pool.splice(0, drop)
    collect()
    parentPort.postMessage({ type: 'trimmed', freed: drop * workerData.size, pooled: pool.length * workerData.size })
  }
})
`

const simulated = process.argv.includes('--simulated')
let sim
let base
let reason = 'asked for with --simulated'
if (!simulated) {
  try {
    // A first look at the working set, to put the levels at fixed steps above it.
    const probe = createMemoryMonitor()
    base = probe.snapshot().workingSet
    await probe.close()
  } catch (err) {
    reason = `no usable cgroup backend: ${err.code}`
  }
}
if (base === undefined) {
  console.log(`Simulated backend (${reason}).`)
  base = 40 * MiB
  sim = new SimulatedBackend({ limit: 1024 * MiB, usage: base })
}
const levels = { moderate: base + 96 * MiB, high: base + 160 * MiB, critical: base + 224 * MiB }
const monitor = createMemoryMonitor({ backend: sim ?? 'auto', levels })
console.log(`backend ${monitor.backend}, levels at ${Object.entries(levels).map(([k, v]) => `${k} ${formatBytes(v)}`).join(', ')}`)

const workers = Array.from({ length: WORKERS }, () => new Worker(workerSource, { eval: true, workerData: { size: BUFFER } }))
const pooled = new Map(workers.map((w) => [w, 0]))
const ask = async (w, message, type) => {
  w.postMessage(message)
  for (;;) {
    const [reply] = await once(w, 'message')
    if (reply.type === type) return reply
  }
}

monitor.register({
  name: 'worker buffer pools',
  size: () => [...pooled.values()].reduce((a, b) => a + b, 0),
  shrink: async (request) => {
    const replies = await Promise.all(workers.map((w) => ask(w, { type: 'trim', fraction: request.fraction }, 'trimmed')))
    replies.forEach((r, i) => pooled.set(workers[i], r.pooled))
    const freed = replies.reduce((a, r) => a + r.freed, 0)
    sim?.free(freed)
    return freed
  },
})
monitor.on('pressure', (e) => console.log(`  pressure ${e.previous} → ${e.level} (working set ${formatBytes(e.bytes)})`))
monitor.on('shrink', (r) => console.log(`  shrink #${r.cycle} at ${r.level}: workers trimmed ${formatBytes(r.reportedBytes)}, measured ${formatBytes(r.freedBytes)} freed`))

// The queue: jobs go to the workers in turn, one at a time each; a job needs 1 to 16 buffers.
let peak = 0
for (let id = 0; id < JOBS; id++) {
  const w = workers[id % WORKERS]
  const done = await ask(w, { type: 'job', id, buffers: 1 + ((id * 7) % 16) }, 'done')
  sim?.allocate(done.allocated * BUFFER)
  pooled.set(w, done.pooled)
  peak = Math.max(peak, monitor.snapshot().workingSet)
}
await monitor.until('normal')
const total = [...pooled.values()].reduce((a, b) => a + b, 0)
console.log(`${JOBS} jobs done; the pools hold ${formatBytes(total)} now; peak working set ${formatBytes(peak)}, level ${monitor.level}`)
await Promise.all(workers.map((w) => w.terminate()))
await monitor.close()
