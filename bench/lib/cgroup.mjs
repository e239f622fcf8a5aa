// Bench cgroups under the same rules as the tests: made only below this process's own memory cgroup
// (and, for PSI, its own cgroup v2), unique names, holding only processes spawned here, always removed.

import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { createInterface } from 'node:readline'

const MiB = 2 ** 20
export { MiB }

/** This process's own cgroup v1 memory directory and cgroup v2 directory (v2 may be absent). */
export function ownCgroups() {
  const lines = fs.readFileSync('/proc/self/cgroup', 'utf8').trim().split('\n')
  const mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8').trim().split('\n').map((m) => {
    const [left, right] = m.split(' - ')
    const f = left.split(' ')
    const [fstype, , superOpts] = right.split(' ')
    return { root: f[3], mountPoint: f[4], fstype, superOpts: superOpts.split(',') }
  })
  const join = (mount, rel) => path.join(mount.mountPoint, mount.root === '/' ? rel : rel.slice(mount.root.length))
  let v1
  let v2
  for (const line of lines) {
    const [id, controllers, ...rest] = line.split(':')
    const rel = rest.join(':')
    if (id === '0' && controllers === '') {
      const m = mounts.find((x) => x.fstype === 'cgroup2' && (x.root === '/' || rel.startsWith(x.root)))
      if (m) v2 = join(m, rel)
    } else if (controllers.split(',').includes('memory')) {
      const m = mounts.find((x) => x.fstype === 'cgroup' && x.superOpts.includes('memory') && (x.root === '/' || rel.startsWith(x.root)))
      if (m) v1 = join(m, rel)
    }
  }
  if (!v1) throw new Error('the benches need a cgroup v1 memory controller (none in /proc/self/cgroup)')
  if (!fs.existsSync(path.join(v1, 'cgroup.event_control'))) throw new Error(`no cgroup.event_control in ${v1}`)
  return { v1, v2: v2 && fs.existsSync(path.join(v2, 'memory.pressure')) ? v2 : undefined }
}

const made = new Set()
const live = new Set()

/**
 * A bench cgroup: a v1 memory cgroup below `parent` (default: our own) with an optional limit, and a
 * v2 twin below our own v2 cgroup when `v2` is asked for (PSI of the processes inside).
 */
export function makeCgroup({ parent, limit, v2 = false, tag = 'bench' } = {}) {
  // After removeAll() (a signal) a bench still awaiting its last child must not make the next one.
  if (closing) throw new Error('the bench is stopping: no new cgroups')
  const own = ownCgroups()
  const name = `mp-${tag}-${process.pid}-${randomBytes(3).toString('hex')}`
  const dir = path.join(parent ?? own.v1, name)
  fs.mkdirSync(dir)
  made.add(dir)
  let v2dir
  if (v2 && own.v2) {
    v2dir = path.join(own.v2, name)
    fs.mkdirSync(v2dir)
    made.add(v2dir)
  }
  if (limit !== undefined) fs.writeFileSync(path.join(dir, 'memory.limit_in_bytes'), String(limit))
  const pids = new Set()
  const cg = {
    dir,
    v2: v2dir,
    pids,
    read: (file) => fs.readFileSync(path.join(dir, file), 'utf8'),
    usage: () => Number(fs.readFileSync(path.join(dir, 'memory.usage_in_bytes'), 'utf8')),
    peak: () => Number(fs.readFileSync(path.join(dir, 'memory.max_usage_in_bytes'), 'utf8')),
    oomKills: () => Number(/oom_kill (\d+)/.exec(fs.readFileSync(path.join(dir, 'memory.oom_control'), 'utf8'))?.[1] ?? 0),
    spawn: (argv, options) => spawnIn(cg, argv, options),
    children: [],
    child: (opts) => {
      const c = makeCgroup({ ...opts, parent: dir, v2: false })
      cg.children.push(c)
      return c
    },
    remove: () => removeCgroup(cg),
  }
  live.add(cg)
  return cg
}

async function waitEmpty(dir) {
  for (let i = 0; i < 300; i++) {
    let procs = ''
    try {
      procs = fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').trim()
    } catch {
      return
    }
    if (procs === '') return
    await new Promise((r) => setTimeout(r, 10))
  }
}

async function rmdir(dir) {
  for (let i = 0; i < 100; i++) {
    try {
      fs.rmdirSync(dir)
      made.delete(dir)
      return
    } catch (err) {
      if (err.code === 'ENOENT') return void made.delete(dir)
      await new Promise((r) => setTimeout(r, 20))
    }
  }
  console.error(`could not remove ${dir}`)
}

async function removeCgroup(cg) {
  live.delete(cg)
  for (const c of cg.children) await removeCgroup(c)
  for (const pid of cg.pids) {
    try {
      process.kill(pid, 'SIGKILL')
    } catch {
      // already gone
    }
  }
  // children first: a v1 cgroup with sub-cgroups cannot be removed
  for (const d of [...made].filter((d) => d !== cg.dir && d.startsWith(`${cg.dir}/`)).sort().reverse()) {
    await waitEmpty(d)
    try { fs.writeFileSync(path.join(d, 'memory.force_empty'), '0') } catch { /* rmdir moves charges up anyway */ }
    await rmdir(d)
  }
  await waitEmpty(cg.dir)
  try { fs.writeFileSync(path.join(cg.dir, 'memory.force_empty'), '0') } catch { /* best effort */ }
  await rmdir(cg.dir)
  if (cg.v2) {
    await waitEmpty(cg.v2)
    await rmdir(cg.v2)
  }
}

const spawnedHere = new Set()

/** Spawns `node ...argv` in this process's own cgroup (watchers); see {@link spawnIn}. */
export const spawnNode = (argv, options) => spawnIn(null, argv, options)

let closing = false

/** Removes whatever is left (called on SIGINT and at exit of the runner). */
export async function removeAll() {
  closing = true
  for (const cg of [...live]) await removeCgroup(cg)
  for (const pid of spawnedHere) {
    try { process.kill(pid, 'SIGKILL') } catch { /* gone */ }
  }
  for (const d of [...made].sort().reverse()) {
    await waitEmpty(d)
    try { fs.writeFileSync(path.join(d, 'memory.force_empty'), '0') } catch { /* v2 or gone */ }
    await rmdir(d)
  }
}

/**
 * Spawns `node ...argv` inside the cgroup (and its v2 twin): a shell moves itself there, then execs
 * Node, so only this child is moved and all of its memory is charged there from the start. Lines the
 * child prints go to `onLine(line, ns)` with the parent's CLOCK_MONOTONIC time of arrival.
 */
export function spawnIn(cg, argv, { env = {}, onLine, nodeArgs = [] } = {}) {
  const v2procs = cg?.v2 ? path.join(cg.v2, 'cgroup.procs') : ''
  // `sh -c script v1procs v2procs node ...`: $0 and $1 are the two files, the rest is the command
  const script = 'echo $$ > "$0" && { [ -z "$1" ] || echo $$ > "$1"; } && shift && exec "$@"'
  const command = cg
    ? ['/bin/sh', ['-c', script, path.join(cg.dir, 'cgroup.procs'), v2procs, process.execPath, ...nodeArgs, ...argv]]
    : [process.execPath, [...nodeArgs, ...argv]]
  const proc = spawn(...command, { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] })
  const pids = cg?.pids ?? spawnedHere
  pids.add(proc.pid)
  let stderr = ''
  proc.stderr.on('data', (d) => (stderr += d))
  const exited = new Promise((resolve) =>
    proc.on('exit', (code, signal) => {
      pids.delete(proc.pid)
      resolve({ code, signal, ns: process.hrtime.bigint() })
    }),
  )
  const waiters = []
  createInterface({ input: proc.stdout }).on('line', (line) => {
    const ns = process.hrtime.bigint()
    const i = waiters.findIndex((w) => w.pred(line))
    if (i !== -1) waiters.splice(i, 1)[0].resolve({ line, ns })
    onLine?.(line, ns)
  })
  return {
    proc,
    pid: proc.pid,
    exited,
    stderr: () => stderr,
    /** Resolves with the next line matching `pred` (rejects if the child exits first). */
    waitLine: (pred) =>
      new Promise((resolve, reject) => {
        waiters.push({ pred, resolve })
        exited.then((e) => reject(new Error(`child exited (${e.code ?? e.signal}) while waiting: ${stderr.slice(-2000)}`)))
      }),
    send: (cmd) => proc.stdin.write(`${cmd}\n`),
  }
}
