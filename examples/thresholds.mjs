// The example `npm run example` runs: a Node process inside a memory-limited cgroup grows its memory
// and the kernel tells it when usage crosses 50%, 75% and 90% of the limit (and back down).
// Where no writable cgroup v1 memory controller exists (not root, cgroup v2 only, macOS, a
// read-only /sys/fs/cgroup), the same program runs on the simulated backend and says so.
//
//   node examples/thresholds.mjs            (what `npm run example` runs)
//   node examples/thresholds.mjs --simulated

import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { setImmediate as turn } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { SimulatedBackend, createMemoryMonitor, findMemoryCgroup, formatBytes, onMemoryThreshold } from 'node-memory-pressure'

const MiB = 2 ** 20
const LIMIT = 256 * MiB
const STEP = 8 * MiB
const self = fileURLToPath(import.meta.url)

if (process.argv.includes('--child')) await child()
else if (process.argv.includes('--simulated')) await simulated('asked for with --simulated')
else await parent()

/** Runs inside the limited cgroup: watch the own cgroup, grow, shrink, print what the kernel said. */
async function child() {
  const monitor = createMemoryMonitor()
  const s = monitor.snapshot()
  console.log(`[child] backend ${monitor.backend}, cgroup ${monitor.cgroup}`)
  console.log(`[child] limit ${formatBytes(s.limit)}, usage ${formatBytes(s.usage)} at start`)
  let stepDone = performance.now()
  const stops = ['50%', '75%', '90%'].map((t) =>
    onMemoryThreshold(t, (e) => {
      const ms = (e.time - stepDone).toFixed(3)
      console.log(`  ${e.direction === 'up' ? '▲' : '▼'} ${t.padStart(3)} crossed ${e.direction.padEnd(4)} usage ${formatBytes(e.usage).padStart(9)}, working set ${formatBytes(e.workingSet).padStart(9)}, ${ms} ms after the step${e.initial ? ' (already above at start)' : ''}`)
    }, { monitor, direction: 'both' }),
  )
  const held = []
  while (monitor.snapshot().usage + STEP < LIMIT * 0.93) {
    held.push(Buffer.alloc(STEP, 1)) // fill touches the pages, so the cgroup is charged now
    stepDone = performance.now()
    await turn()
  }
  console.log(`[child] grew to ${formatBytes(monitor.snapshot().usage)}; now giving it back`)
  const gc = (await import('node:vm')).runInNewContext('gc')
  while (held.length > 0) {
    held.length -= Math.min(held.length, 2)
    gc()
    stepDone = performance.now()
    await turn()
  }
  await turn()
  console.log(`[child] back at ${formatBytes(monitor.snapshot().usage)}`)
  for (const stop of stops) stop()
  await monitor.close()
}

/** Makes a limited cgroup below our own, runs the child there, removes the cgroup whatever happens. */
async function parent() {
  const where = writableV1Cgroup()
  if ('reason' in where) return simulated(`no writable cgroup v1 memory controller here (${where.reason})`)
  const dir = path.join(where.dir, `node-memory-pressure-example-${process.pid}-${randomBytes(3).toString('hex')}`)
  fs.mkdirSync(dir)
  let pid
  const cleanup = () => {
    if (pid !== undefined) {
      try { process.kill(pid, 'SIGKILL') } catch { /* already gone */ }
    }
    for (let i = 0; i < 100; i++) {
      try {
        if (fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').trim() === '') break
      } catch { break }
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10)
    }
    try { fs.writeFileSync(path.join(dir, 'memory.force_empty'), '0') } catch { /* best effort */ }
    try { fs.rmdirSync(dir) } catch { /* reported below if it stays */ }
    if (fs.existsSync(dir)) console.error(`could not remove ${dir}; remove it with: rmdir ${dir}`)
  }
  process.once('SIGINT', () => { cleanup(); process.exit(130) })
  try {
    fs.writeFileSync(path.join(dir, 'memory.limit_in_bytes'), String(LIMIT))
    console.log(`Made cgroup ${dir} with a ${formatBytes(LIMIT)} limit; starting a child in it.`)
    // The shell moves itself into the cgroup and then becomes Node, so all of the child's memory is
    // charged there. MALLOC_MMAP_THRESHOLD_ makes freed Buffers go back to the kernel at once.
    const proc = spawn('/bin/sh', ['-c', 'echo $$ > "$0" && exec "$@"', path.join(dir, 'cgroup.procs'), process.execPath, '--expose-gc', self, '--child'], {
      stdio: 'inherit',
      env: { ...process.env, MALLOC_MMAP_THRESHOLD_: '131072' },
    })
    pid = proc.pid
    const code = await new Promise((resolve) => proc.on('exit', (c, signal) => resolve(c ?? signal)))
    if (code !== 0) {
      console.error(`the child ended with ${code}`)
      process.exitCode = 1
    }
  } finally {
    cleanup()
  }
}

/** Same story on a virtual cgroup: the simulated backend has the kernel's threshold semantics. */
async function simulated(reason) {
  console.log(`Using the simulated backend, a virtual cgroup with the kernel's threshold semantics: ${reason}.`)
  const sim = new SimulatedBackend({ limit: LIMIT, usage: 40 * MiB })
  const monitor = createMemoryMonitor({ backend: sim })
  for (const t of ['50%', '75%', '90%']) {
    onMemoryThreshold(t, (e) => console.log(`  ${e.direction === 'up' ? '▲' : '▼'} ${t.padStart(3)} crossed ${e.direction.padEnd(4)} usage ${formatBytes(e.usage).padStart(9)}`), { monitor, direction: 'both' })
  }
  while (sim.usage + STEP < LIMIT * 0.93) {
    sim.allocate(STEP)
    await turn()
  }
  console.log(`[simulated] grew to ${formatBytes(sim.usage)}; now giving it back`)
  while (sim.usage > 48 * MiB) {
    sim.free(2 * STEP)
    await turn()
  }
  await monitor.close()
}

/** Our own v1 memory cgroup if we may create children in it, or why not. */
function writableV1Cgroup() {
  if (process.platform !== 'linux') return { reason: `${process.platform} has no cgroups` }
  if (process.getuid?.() !== 0) return { reason: 'not running as root' }
  let own
  try {
    own = findMemoryCgroup()
  } catch (err) {
    return { reason: `${err.code}: ${err.message}` }
  }
  if (own.version !== 1) return { reason: `the memory cgroup is cgroup v${own.version}; this example makes v1 cgroups` }
  try {
    fs.accessSync(own.path, fs.constants.W_OK)
    fs.accessSync(path.join(own.path, 'cgroup.event_control'), fs.constants.W_OK)
  } catch (err) {
    return { reason: `${own.path} is not writable (${err.code})` }
  }
  return { dir: own.path }
}
