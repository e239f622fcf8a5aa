// A run of a "threshold probe": a script, started in a package as a user would install it, that
// registers a cgroup v1 threshold 32 MiB above usage and prints JSON lines (one once registered,
// one per crossing, one when its stdin ends), while an allocator child in the same cgroup takes
// 64 MiB and gives it back. Used by the tarball and prebuild tests.

import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import { type TestCgroup, spawnInCgroup } from './cgroup.js'
import { Collector } from './collect.js'

const allocator = fileURLToPath(new URL('./allocator.mjs', import.meta.url))

type Line = Record<string, unknown>

/**
 * Runs `command args` (the probe, given `cg.path` as its last argument by the caller) and returns
 * its lines: `hello` (after registration), `up` and `down` (the crossings), `end` (after stdin
 * ended). Each step waits at most `ms`; the probe's stderr is in the error of a step that times out.
 */
export async function runThresholdProbe(cg: TestCgroup, command: string, args: string[], options: { cwd: string; env: NodeJS.ProcessEnv }, ms: number): Promise<{ hello: Line; up: Line; down: Line; end: Line }> {
  let probe: ChildProcessWithoutNullStreams | undefined
  try {
    const child = await spawnInCgroup(cg, allocator)
    probe = spawn(command, args, { ...options, stdio: ['pipe', 'pipe', 'pipe'] })
    let stderr = ''
    probe.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    const lines = new Collector<Line>()
    createInterface({ input: probe.stdout }).on('line', (line) => lines.push(JSON.parse(line) as Line))
    const step = (n: number): Promise<Line[]> => lines.count(n, ms).catch((err: Error) => {
      throw new Error(`${err.message}\n${stderr}`)
    })
    const [hello] = await step(1)
    await child.send(`alloc ${64 * 2 ** 20}`)
    await step(2)
    await child.send('freeall')
    await step(3)
    probe.stdin.end()
    const [, up, down, end] = await step(4)
    return { hello: hello!, up: up!, down: down!, end: end! }
  } finally {
    if (probe?.pid !== undefined && probe.exitCode === null) probe.kill('SIGKILL')
  }
}
