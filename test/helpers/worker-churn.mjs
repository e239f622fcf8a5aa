// A child process for the worker-teardown test: creates worker threads that each open a monitor on
// a real cgroup (thresholds and levels), and terminates every one at a random moment of its setup.
// Usage: node worker-churn.mjs <dist/index.js> <cgroup> <workers> <seed>
// Prints `baseline` once the addon is loaded here (the parent counts this process's fds then), and
// `churned <terminated>` when every worker has exited; then waits for a line on stdin and exits 0.
import { createInterface } from 'node:readline'
import { Worker } from 'node:worker_threads'

const [dist, cgroup, count, seedArg] = process.argv.slice(2)
const sdk = await import(dist)
sdk.nativeStatus()
let seed = Number(seedArg) >>> 0 || 1
// A small deterministic generator, so a failing seed can be run again.
const random = () => {
  seed = (seed * 1103515245 + 12345) >>> 0
  return seed / 2 ** 32
}
process.stdout.write('baseline\n')
await new Promise((resolve) => createInterface({ input: process.stdin }).once('line', resolve))

const source = `
  const { workerData } = require('node:worker_threads')
  import(workerData.dist).then((mp) => {
    const monitor = mp.createMemoryMonitor({ backend: 'cgroup-v1', cgroup: workerData.cgroup, thresholds: ['10%', '50%', { threshold: '90%', direction: 'both' }], levels: true })
    monitor.register({ name: 'cache', shrink: () => 0 })
    monitor.addThreshold('60%')
  }, () => {})
`
let terminated = 0
for (let i = 0; i < Number(count); i++) {
  const worker = new Worker(source, { eval: true, workerData: { dist, cgroup } })
  worker.on('error', () => {})
  const exited = new Promise((resolve) => worker.once('exit', resolve))
  // Anywhere from before the SDK is imported to after the monitor is up (setup takes 20-150 ms).
  await new Promise((resolve) => setTimeout(resolve, Math.floor(random() * 150)))
  await worker.terminate()
  await exited
  terminated++
}
process.stdout.write(`churned ${terminated}\n`)
await new Promise((resolve) => createInterface({ input: process.stdin }).once('line', resolve))
process.exit(0)
