// V8's heap limit next to the cgroup's, on real cgroups: doctor flags a cgroup smaller than V8's
// default heap, exec starts Node with a heap that fits, heap-flags prints the same flags; and exec
// stands in for its command (exit code, signal, stdio).

import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import type { DoctorReport } from '../src/cli/doctor.js'
import type { HeapFlagsResult } from '../src/cli/exec.js'
import { findMemoryCgroup } from '../src/cgroup/discover.js'
import { effectiveLimit } from '../src/cgroup/limit.js'
import { heapRecipe, parseHeapFlags, splitNodeOptions, youngGenerationBytes } from '../src/cli/heap.js'
import { type TestCgroup, createTestCgroup, ownV1MemoryCgroup } from './helpers/cgroup.js'

const MiB = 2 ** 20
const root = fileURLToPath(new URL('..', import.meta.url))
const bin = path.join(root, 'dist', 'cli', 'main.js')
const built = fs.existsSync(bin)
const own = ownV1MemoryCgroup()
const skip = !built ? 'dist/ not built (npm run build)' : 'reason' in own ? own.reason : null
const printHeap = 'console.log(JSON.stringify({ heap: require("v8").getHeapStatistics().heap_size_limit, options: process.env.NODE_OPTIONS ?? null }))'

interface Run { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }

/**
 * Runs `node <args>` inside `cg` (a shell moves itself into the cgroup, then execs Node: the only
 * process moved is the one spawned here), or here when `cg` is undefined.
 */
function run(cg: TestCgroup | undefined, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  const argv = cg === undefined ? [process.execPath, ...args] : ['/bin/sh', '-c', 'echo $$ > "$0" && exec "$@"', path.join(cg.path, 'cgroup.procs'), process.execPath, ...args]
  const child = spawn(argv[0] as string, argv.slice(1), { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  if (cg !== undefined && child.pid !== undefined) cg.pids.add(child.pid)
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  return new Promise((resolve) => child.on('close', (code, signal) => {
    if (child.pid !== undefined) cg?.pids.delete(child.pid)
    resolve({ code, signal, stdout, stderr })
  }))
}

const withoutNodeOptions = { NODE_OPTIONS: '' }

describe('heap flags (no cgroup needed)', () => {
  it('parseHeapFlags reads both spellings and both value forms; the percentage is kept apart', () => {
    expect(parseHeapFlags(['--max-old-space-size=512', 'app.js'])).toEqual({ maxOldSpaceMiB: 512, tokens: ['--max-old-space-size=512'] })
    expect(parseHeapFlags(['--max_old_space_size', '300', '--max-semi-space-size=8'])).toEqual({ maxOldSpaceMiB: 300, semiSpaceMiB: 8, tokens: ['--max_old_space_size', '300', '--max-semi-space-size=8'] })
    expect(parseHeapFlags(['--max-old-space-size-percentage=50%'])).toEqual({ percentage: 50, tokens: ['--max-old-space-size-percentage=50%'] })
    expect(parseHeapFlags(['--max-old-space-size=abc', '--inspect']).tokens).toEqual([])
    expect(splitNodeOptions('--require "a b.js"  --max-old-space-size=64')).toEqual(['--require', 'a b.js', '--max-old-space-size=64'])
  })

  it('heapRecipe: 75% of the limit, less the young generation; the young generation capped at a quarter', () => {
    expect(heapRecipe(1024 * MiB, { percentage: false, youngBytes: 48 * MiB })).toEqual({ flags: ['--max-old-space-size=720'], heapSizeLimit: 768 * MiB, kind: 'mib' })
    // 96 MiB of heap: 48 MiB of young generation is more than a quarter, so the semi-space is capped at 8 MiB.
    expect(heapRecipe(128 * MiB, { percentage: false, youngBytes: 48 * MiB })).toEqual({ flags: ['--max-old-space-size=72', '--max-semi-space-size=8'], heapSizeLimit: 96 * MiB, kind: 'mib' })
    expect(heapRecipe(1024 * MiB, { percentage: true, youngBytes: 48 * MiB }).flags).toEqual(['--max-old-space-size-percentage=70'])
  })

  it.skipIf(!built)(`a command line that is not right for exec or heap-flags exits 2${built ? '' : ' (skipped: dist/ not built)'}`, async () => {
    expect((await run(undefined, [bin, 'exec'])).code).toBe(2)
    expect((await run(undefined, [bin, 'exec', 'node', 'app.js'])).code).toBe(2)
    expect((await run(undefined, [bin, 'exec', '--json', '--', 'node'])).code).toBe(2)
    expect((await run(undefined, [bin, 'doctor', '--', 'node'])).code).toBe(2)
    expect((await run(undefined, [bin, 'heap-flags', '--thresholds', '1'])).code).toBe(2)
    expect((await run(undefined, [bin, 'exec', '--', `no-such-command-${randomBytes(3).toString('hex')}`])).code).toBe(127)
  })

  it.skipIf(!built)(`exec exits with the command's code, dies of its signal, and passes stdio through${built ? '' : ' (skipped: dist/ not built)'}`, async () => {
    const code = await run(undefined, [bin, 'exec', '--', process.execPath, '-e', 'console.log("out"); console.error("err"); process.exit(7)'])
    expect([code.code, code.stdout, code.stderr.includes('err\n')]).toEqual([7, 'out\n', true])
    const killed = await run(undefined, [bin, 'exec', '--', process.execPath, '-e', 'process.kill(process.pid, "SIGTERM")'])
    expect([killed.code, killed.signal]).toEqual([null, 'SIGTERM'])
  })

  it.skipIf(!built)(`exec forwards SIGTERM to the command${built ? '' : ' (skipped: dist/ not built)'}`, async () => {
    // The command reports the signal it got and exits 3: the exit code proves it was forwarded.
    const child = spawn(process.execPath, [bin, 'exec', '--', process.execPath, '-e', 'process.on("SIGTERM", () => process.exit(3)); console.log("ready"); setInterval(() => {}, 1000)'], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] })
    try {
      await new Promise<void>((resolve) => child.stdout.on('data', (d: Buffer) => d.toString().includes('ready') && resolve()))
      const exit = new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)))
      child.kill('SIGTERM')
      expect(await exit).toBe(3)
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    }
  })
})

describe('V8 heap limit against a real cgroup limit', () => {
  let cg: TestCgroup | undefined
  let inner: string | undefined
  afterEach(async () => {
    if (inner !== undefined) fs.rmdirSync(inner)
    inner = undefined
    await cg?.remove()
    cg = undefined
  })
  const reason = skip === null ? '' : ` (skipped: ${skip})`

  it.skipIf(skip !== null)(`in a 128 MiB cgroup (below Node's default heap) doctor says HEAP_ABOVE_LIMIT; exec and heap-flags give a heap that fits${reason}`, async () => {
    if (!('dir' in own)) return
    cg = createTestCgroup(own.dir, { limit: 128 * MiB })
    const plain = await run(cg, ['-e', printHeap], withoutNodeOptions)
    const defaultHeap = (JSON.parse(plain.stdout) as { heap: number }).heap
    // The premise: Node's own default does not fit (259 MiB measured on Node 20).
    expect(defaultHeap).toBeGreaterThan(128 * MiB)

    const doc = await run(cg, [bin, 'doctor', '--json'], withoutNodeOptions)
    const report = JSON.parse(doc.stdout) as DoctorReport
    expect(report.limit?.bytes).toBe(128 * MiB)
    expect(report.heap.limit).toBe(defaultHeap)
    expect(report.heap.source).toBe('this process')
    expect(report.advice.map((a) => a.code)).toContain('HEAP_ABOVE_LIMIT')
    expect(report.advice.map((a) => a.code)).not.toContain('NO_LIMIT')
    expect(report.heap.recommended?.heapSizeLimit).toBe(96 * MiB)

    const exec = await run(cg, [bin, 'exec', '--', process.execPath, '-e', printHeap], withoutNodeOptions)
    expect(exec.code).toBe(0)
    const child = JSON.parse(exec.stdout) as { heap: number; options: string }
    expect(child.heap).toBeLessThan(128 * MiB)
    expect(child.heap).toBeLessThanOrEqual(96 * MiB)
    // exec always sizes in MiB for the node it starts (the percentage flag doctor may recommend
    // depends on that node's version and on which cgroup holds the limit).
    expect(child.options).toMatch(/^--max-old-space-size=\d+( --max-semi-space-size=\d+)?$/)

    const flags = await run(cg, [bin, 'heap-flags', '--json'], withoutNodeOptions)
    const r = JSON.parse(flags.stdout) as HeapFlagsResult
    expect([r.limit, r.holder]).toEqual([128 * MiB, cg.path])
    // A Node started with the printed flags has the heap exec gave its command.
    const withFlags = await run(cg, ['-e', printHeap], { NODE_OPTIONS: (r.recipe?.flags ?? []).join(' ') })
    expect((JSON.parse(withFlags.stdout) as { heap: number }).heap).toBeLessThan(128 * MiB)

    // The doctor run with those flags has nothing more to say about the heap.
    const after = JSON.parse((await run(cg, [bin, 'doctor', '--json'], { NODE_OPTIONS: (r.recipe?.flags ?? []).join(' ') })).stdout) as DoctorReport
    expect(after.advice.map((a) => a.code).filter((c) => c.startsWith('HEAP_'))).toEqual([])
  })

  it.skipIf(skip !== null)(`in a 512 MiB cgroup Node 20's default heap (259 MiB) is far below: HEAP_FAR_BELOW_LIMIT, with the flag that fixes it${reason}`, async () => {
    if (!('dir' in own)) return
    cg = createTestCgroup(own.dir, { limit: 512 * MiB })
    const plain = JSON.parse((await run(cg, ['-e', printHeap], withoutNodeOptions)).stdout) as { heap: number }
    const report = JSON.parse((await run(cg, [bin, 'doctor', '--json'], withoutNodeOptions)).stdout) as DoctorReport
    const codes = report.advice.map((a) => a.code).filter((c) => c.startsWith('HEAP_'))
    // The band is 60% to 90% of the limit; Node's default decides which side this machine is on.
    const share = plain.heap / (512 * MiB)
    expect(codes).toEqual(share < 0.6 ? ['HEAP_FAR_BELOW_LIMIT'] : share > 0.9 ? ['HEAP_ABOVE_LIMIT'] : [])
    if (process.versions.node.startsWith('20.')) expect(codes).toEqual(['HEAP_FAR_BELOW_LIMIT'])
    const fix = report.advice.find((a) => a.code === 'HEAP_FAR_BELOW_LIMIT')?.change ?? ''
    expect(fix).toContain(report.heap.recommended?.flags.join(' '))
  })

  it.skipIf(skip !== null)(`below a 128 MiB cgroup, in a child without a limit of its own (Node sees none), exec still fits the heap${reason}`, async () => {
    if (!('dir' in own)) return
    cg = createTestCgroup(own.dir, { limit: 128 * MiB })
    inner = path.join(cg.path, `mp-inner-${randomBytes(3).toString('hex')}`)
    fs.mkdirSync(inner)
    const innerCg: TestCgroup = { path: inner, pids: cg.pids, remove: async () => {} }
    const plain = JSON.parse((await run(innerCg, ['-e', printHeap], withoutNodeOptions)).stdout) as { heap: number }
    expect(plain.heap).toBeGreaterThan(128 * MiB)
    const exec = await run(innerCg, [bin, 'exec', '--', process.execPath, '-e', printHeap], withoutNodeOptions)
    const child = JSON.parse(exec.stdout) as { heap: number; options: string }
    expect(child.heap).toBeLessThanOrEqual(96 * MiB)
    // The percentage flag would be read against the machine's memory here: never offered.
    expect(child.options).not.toMatch(/percentage/)
  })

  it.skipIf(skip !== null)(`doctor --pid reads another Node's heap flags from its command line and NODE_OPTIONS${reason}`, async () => {
    if (!('dir' in own)) return
    cg = createTestCgroup(own.dir, { limit: 512 * MiB })
    const script = `${printHeap}; setInterval(() => {}, 1000)`
    for (const [args, env] of [[['--max-old-space-size=100', '-e', script], withoutNodeOptions], [['-e', script], { NODE_OPTIONS: '--max-old-space-size=600' }]] as const) {
      const procsFile = path.join(cg.path, 'cgroup.procs')
      const child = spawn('/bin/sh', ['-c', 'echo $$ > "$0" && exec "$@"', procsFile, process.execPath, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] })
      if (child.pid !== undefined) cg.pids.add(child.pid)
      try {
        const line = await new Promise<string>((resolve) => child.stdout.once('data', (d: Buffer) => resolve(d.toString())))
        const actual = (JSON.parse(line) as { heap: number }).heap
        const report = JSON.parse((await run(undefined, [bin, 'doctor', '--json', '--pid', String(child.pid)], withoutNodeOptions)).stdout) as DoctorReport
        expect(report.heap.source).toBe('flags')
        // Read with the same flags outside the process's cgroup: exact but for the young generation.
        expect(Math.abs((report.heap.limit ?? 0) - actual)).toBeLessThanOrEqual(youngGenerationBytes())
        expect(report.heap.flags).toEqual(args[0] === '-e' ? ['--max-old-space-size=600'] : ['--max-old-space-size=100'])
        const codes = report.advice.map((a) => a.code)
        // 100 MiB (+ young generation) of 512 is far below; 600 MiB is above.
        expect(codes).toContain(actual < 256 * MiB ? 'HEAP_FAR_BELOW_LIMIT' : 'HEAP_ABOVE_LIMIT')
      } finally {
        child.kill('SIGKILL')
        await new Promise((r) => child.once('close', r))
      }
    }
  })

  it.skipIf(skip !== null)(`no limit: doctor says NO_LIMIT${reason}`, async () => {
    if (!('dir' in own)) return
    cg = createTestCgroup(own.dir)
    const report = JSON.parse((await run(undefined, [bin, 'doctor', '--json', '--cgroup', cg.path])).stdout) as DoctorReport
    expect(report.limit?.bytes ?? null).toBeNull()
    expect(report.advice.map((a) => a.code)).toContain('NO_LIMIT')
  })

  // exec sizes for the effective limit, ancestors included: only limitless if the runner's cgroup is.
  const limitedHere = skip === null && Number.isFinite(effectiveLimit(findMemoryCgroup()).limit)
  const noLimitSkip = skip ?? (limitedHere ? 'this test process\'s cgroup has a limit' : null)
  it.skipIf(noLimitSkip !== null)(`no limit: exec runs the command with NODE_OPTIONS unchanged; heap-flags prints nothing${noLimitSkip === null ? '' : ` (skipped: ${noLimitSkip})`}`, async () => {
    if (!('dir' in own)) return
    cg = createTestCgroup(own.dir)
    const exec = await run(cg, [bin, 'exec', '--', process.execPath, '-e', printHeap], { NODE_OPTIONS: '--no-warnings' })
    expect((JSON.parse(exec.stdout) as { options: string }).options).toBe('--no-warnings')
    const flags = await run(cg, [bin, 'heap-flags'])
    expect([flags.code, flags.stdout]).toEqual([0, ''])
  })

  it.skipIf(skip !== null)(`exec leaves a heap flag already in NODE_OPTIONS alone${reason}`, async () => {
    if (!('dir' in own)) return
    cg = createTestCgroup(own.dir, { limit: 256 * MiB })
    const exec = await run(cg, [bin, 'exec', '--', process.execPath, '-e', printHeap], { NODE_OPTIONS: '--max-old-space-size=150' })
    expect((JSON.parse(exec.stdout) as { options: string }).options).toBe('--max-old-space-size=150')
  })
})

