// Test cgroups that follow the house rules: made only below this process's own memory cgroup, with
// unique names, holding only processes the test spawned, and always removed (force_empty, rmdir).

import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { Collector } from './collect.js'

/** This process's own v1 memory cgroup directory, or a reason why there is none usable. */
export function ownV1MemoryCgroup(): { dir: string } | { reason: string } {
  if (process.platform !== 'linux') return { reason: `not Linux (${process.platform})` }
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return { reason: 'not root' }
  let cgroupText: string
  let mountinfo: string
  try {
    cgroupText = fs.readFileSync('/proc/self/cgroup', 'utf8')
    mountinfo = fs.readFileSync('/proc/self/mountinfo', 'utf8')
  } catch {
    return { reason: 'no /proc/self/cgroup' }
  }
  const line = cgroupText.split('\n').find((l) => l.split(':')[1]?.split(',').includes('memory'))
  if (!line) return { reason: 'no cgroup v1 memory controller' }
  const rel = line.split(':').slice(2).join(':')
  for (const m of mountinfo.split('\n')) {
    const [left, right] = m.split(' - ')
    if (!left || !right) continue
    const fields = left.split(' ')
    const [fstype, , superOpts] = right.split(' ')
    if (fstype !== 'cgroup' || !superOpts?.split(',').includes('memory')) continue
    const root = fields[3] ?? '/'
    const mountPoint = fields[4] ?? ''
    if (root !== '/' && !rel.startsWith(root)) continue
    const dir = path.join(mountPoint, root === '/' ? rel : rel.slice(root.length))
    if (!fs.existsSync(path.join(dir, 'cgroup.event_control'))) return { reason: 'no cgroup.event_control' }
    try {
      fs.accessSync(dir, fs.constants.W_OK)
    } catch {
      return { reason: 'cgroupfs not writable' }
    }
    return { dir }
  }
  return { reason: 'v1 memory hierarchy not mounted' }
}

/** A child cgroup made for one test. */
export interface TestCgroup {
  path: string
  /** Spawned processes inside it, by pid. */
  pids: Set<number>
  /** Kills the processes this test spawned, empties the cgroup and removes it. Never throws. */
  remove(): Promise<void>
}

export function createTestCgroup(parent: string, options: { limit?: number } = {}): TestCgroup {
  const name = `mp-test-${process.pid}-${randomBytes(4).toString('hex')}`
  const dir = path.join(parent, name)
  fs.mkdirSync(dir)
  const cg: TestCgroup = {
    path: dir,
    pids: new Set(),
    remove: async () => removeCgroup(dir, cg.pids),
  }
  try {
    if (options.limit !== undefined) fs.writeFileSync(path.join(dir, 'memory.limit_in_bytes'), String(options.limit))
  } catch (err) {
    fs.rmdirSync(dir)
    throw err
  }
  return cg
}

async function removeCgroup(dir: string, pids: Set<number>): Promise<void> {
  if (!fs.existsSync(dir)) return
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL')
    } catch {
      // already gone
    }
  }
  for (let i = 0; i < 200; i++) {
    let procs = ''
    try {
      procs = fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').trim()
    } catch {
      return
    }
    if (procs === '') break
    await new Promise((r) => setTimeout(r, 10))
  }
  try {
    fs.writeFileSync(path.join(dir, 'memory.force_empty'), '0')
  } catch {
    // best effort: rmdir moves remaining charges to the parent anyway
  }
  for (let i = 0; i < 100; i++) {
    try {
      fs.rmdirSync(dir)
      return
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
      await new Promise((r) => setTimeout(r, 20))
    }
  }
}

/** A spawned Node process living in a test cgroup from its first instruction. */
export interface CgroupChild {
  proc: ChildProcessWithoutNullStreams
  /** Sends one command line and waits for its `ok` answer. */
  send(command: string): Promise<{ held: number; doneNs: bigint }>
  /** Lines the child printed that were not answers, awaitable. */
  output: Collector<string>
  /** What the child wrote on stderr so far. */
  stderr(): string
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

/**
 * Spawns `node <script> ...args` inside `cg`: a shell writes its own pid to `cgroup.procs` and then
 * execs Node, so the child is the only process moved and all its memory is charged there.
 */
export async function spawnInCgroup(cg: TestCgroup, script: string, args: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<CgroupChild> {
  const procsFile = path.join(cg.path, 'cgroup.procs')
  const proc = spawn('/bin/sh', ['-c', 'echo $$ > "$0" && exec "$@"', procsFile, process.execPath, script, ...args], {
    env: { ...process.env, MALLOC_MMAP_THRESHOLD_: '65536', ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  if (proc.pid !== undefined) cg.pids.add(proc.pid)
  const output = new Collector<string>()
  const waiting: Array<(line: string) => void> = []
  let stderr = ''
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.on('exit', (code, signal) => {
      if (proc.pid !== undefined) cg.pids.delete(proc.pid)
      resolve({ code, signal })
    }),
  )
  const lines = createInterface({ input: proc.stdout })
  let isReady = false
  let ready!: () => void
  const readyP = new Promise<void>((r) => (ready = () => ((isReady = true), r())))
  lines.on('line', (line) => {
    if (line === 'ready') return ready()
    if (line.startsWith('ok ') && waiting.length > 0) return waiting.shift()?.(line)
    output.push(line)
  })
  await Promise.race([
    readyP,
    exited.then((e) => {
      if (isReady) return
      throw new Error(`child exited before ready: ${JSON.stringify(e)} ${stderr}`)
    }),
  ])
  return {
    proc,
    output,
    stderr: () => stderr,
    exited,
    send: (command) =>
      new Promise((resolve, reject) => {
        waiting.push((line) => {
          const [, held, done] = line.split(' ')
          resolve({ held: Number(held), doneNs: BigInt(done ?? '0') })
        })
        proc.stdin.write(`${command}\n`, (err) => err && reject(err))
      }),
  }
}

/** Number of open file descriptors of this process. */
export function openFdCount(): number {
  return fs.readdirSync('/proc/self/fd').length
}
