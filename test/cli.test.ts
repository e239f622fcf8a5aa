// The node-memory-pressure command as a user runs it (the built bin in dist/): doctor --json against
// cgroups and trees the tests set up, usage errors, and watch as plain lines and under tmux.

import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import type { DoctorReport } from '../src/cli/doctor.js'
import { findMemoryCgroup } from '../src/cgroup/discover.js'
import { type CgroupChild, type TestCgroup, createTestCgroup, ownV1MemoryCgroup, spawnInCgroup } from './helpers/cgroup.js'
import { Collector } from './helpers/collect.js'

/** Writes a fixture file as the kernel shows one: all at once (a reader never sees it half-written). */
function writeAtomic(file: string, text: string): void {
  fs.writeFileSync(`${file}.tmp`, text)
  fs.renameSync(`${file}.tmp`, file)
}

const MiB = 2 ** 20
const root = fileURLToPath(new URL('..', import.meta.url))
const bin = path.join(root, 'dist', 'cli', 'main.js')
const allocator = fileURLToPath(new URL('./helpers/allocator.mjs', import.meta.url))
const v2Fixture = fileURLToPath(new URL('./fixtures/v2/k8s-pod', import.meta.url))
const built = fs.existsSync(bin)
const own = ownV1MemoryCgroup()
const v1Skip = !built ? 'dist/ not built (npm run build)' : 'reason' in own ? own.reason : null
const tmux = spawnSync('tmux', ['-V']).status === 0
const tmuxSkip = v1Skip ?? (tmux ? null : 'tmux is not installed')

/**
 * A tmux server of its own (`socket`): `tm` runs a tmux command on it, `capture` reads the pane
 * (-J joins rows the terminal wrapped, so a joined row longer than the pane is a line that wrapped;
 * -S - includes the history, where tmux moves rows when a shrink reflows the screen), and `screen`
 * reads it until `pred` holds (tmux has no event for "the screen shows X").
 */
function tmuxPane(socket: string) {
  const tm = (...args: string[]): string => execFileSync('tmux', ['-L', socket, ...args], { encoding: 'utf8' })
  const capture = (): string[] => tm('capture-pane', '-p', '-J', '-S', '-', '-t', 'w').split('\n').filter((r) => r.trim() !== '')
  const screen = async (pred: (rows: string[]) => boolean): Promise<string[]> => {
    for (let i = 0; i < 400; i++) {
      const rows = capture()
      if (pred(rows)) return rows
      await new Promise((r) => setTimeout(r, 50))
    }
    throw new Error(`screen never matched; last:\n${capture().join('\n')}`)
  }
  return { tm, capture, screen }
}

function run(args: string[], wrapper: string[] = []): { code: number | null; stdout: string; stderr: string } {
  const argv = [...wrapper, process.execPath, bin, ...args]
  const r = spawnSync(argv[0] as string, argv.slice(1), { cwd: root, encoding: 'utf8', timeout: 60_000 })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

function doctorJson(args: string[], wrapper: string[] = []): { code: number | null; report: DoctorReport } {
  const r = run(['doctor', '--json', ...args], wrapper)
  if (r.stdout === '') throw new Error(`no output (exit ${r.code}): ${r.stderr}`)
  return { code: r.code, report: JSON.parse(r.stdout) as DoctorReport }
}

describe.skipIf(!built)(`node-memory-pressure command line${built ? '' : ' (skipped: dist/ not built)'}`, () => {
  it('--help exits 0; a bad command line exits 2', () => {
    expect(run(['--help']).code).toBe(0)
    expect(run([]).code).toBe(2)
    expect(run(['frobnicate']).code).toBe(2)
    expect(run(['doctor', '--pid', 'abc']).code).toBe(2)
    expect(run(['doctor', '--pid', '1', '--cgroup', '/']).code).toBe(2)
    expect(run(['doctor', '--no-such-option']).code).toBe(2)
    expect(run(['watch', '--json']).code).toBe(2)
    expect(run(['watch', '--interval-ms', '0']).code).toBe(2)
  })

  it('doctor --cgroup on a path that is not a cgroup: exit 1, ERR_NO_CGROUP, no backend chosen', () => {
    const { code, report } = doctorJson(['--cgroup', os.tmpdir()])
    expect(code).toBe(1)
    expect(report.cgroupError?.code).toBe('ERR_NO_CGROUP')
    expect(report.chosen).toBeNull()
    expect(report.backends.map((b) => [b.name, b.available])).toEqual([['cgroup-v2', false], ['cgroup-v1', false], ['process', false]])
  })

  it('doctor --json on a fake cgroup v2 tree: limit held by the pod (memory.high), emulated v2 backend', () => {
    const tree = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-cli-v2-'))
    try {
      fs.cpSync(v2Fixture, tree, { recursive: true })
      const container = path.join(tree, 'kubepods.slice', 'pod-a.slice', 'container')
      const { code, report } = doctorJson(['--cgroup', container, '--root', tree])
      expect(code).toBe(0)
      expect(report.cgroup).toEqual({ version: 2, path: container, relativePath: '/kubepods.slice/pod-a.slice/container', mountPoint: tree })
      expect(report.limit).toEqual({ bytes: 240 * MiB, holder: path.join(tree, 'kubepods.slice', 'pod-a.slice'), source: 'memory.high' })
      expect(report.memory).toEqual({ usage: 100 * MiB, rss: 64 * MiB, cache: 32 * MiB, inactiveFile: 16 * MiB, workingSet: 84 * MiB })
      expect(report.chosen).toBe('cgroup-v2')
      expect(report.kernelExact).toBe(false)
      expect(report.backends.find((b) => b.name === 'process')?.available).toBe(false)
      expect(report.files.map((f) => [path.basename(f.path), f.exists])).toContainEqual(['memory.events', true])
      expect(report.advice.map((a) => a.code)).toContain('V2_EMULATED')
      expect(report.advice.map((a) => a.code)).not.toContain('NO_LIMIT')
    } finally {
      fs.rmSync(tree, { recursive: true, force: true })
    }
  })
})

describe.skipIf(!built)(`watch on a fake cgroup v2 tree${built ? '' : ' (skipped: dist/ not built)'}`, () => {
  it('prints a polled crossing, an OOM from memory.events, and exits 1 when the cgroup goes away', async () => {
    const tree = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-cli-watch-v2-'))
    try {
      fs.cpSync(v2Fixture, tree, { recursive: true })
      const container = path.join(tree, 'kubepods.slice', 'pod-a.slice', 'container')
      const watcher = spawn(process.execPath, [bin, 'watch', '--cgroup', container, '--root', tree, '--thresholds', '150MiB', '--interval-ms', '50'],
        { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] })
      const lines = new Collector<string>()
      createInterface({ input: watcher.stdout }).on('line', lines.push)
      const exit = new Promise<number | null>((resolve) => watcher.on('exit', (c) => resolve(c)))
      try {
        await lines.until((l) => l.some((x) => x.startsWith('limit 240 MiB')), 30_000)
        expect(lines.items[0]).toMatch(/ with cgroup-v2 \(polled, /)
        writeAtomic(path.join(container, 'memory.current'), `${200 * MiB}\n`)
        await lines.until((l) => l.some((x) => / threshold up 150 MiB .* via poll$/.test(x)))
        writeAtomic(path.join(container, 'memory.events'), 'low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n')
        await lines.until((l) => l.some((x) => / OOM in .*memory\.events: oom 1, killed 1/.test(x)))
        fs.rmSync(container, { recursive: true })
        expect(await exit).toBe(1)
      } finally {
        watcher.kill('SIGKILL')
      }
    } finally {
      fs.rmSync(tree, { recursive: true, force: true })
    }
  })
})

describe('doctor and watch on this machine\'s cgroups', () => {
  let cg: TestCgroup | undefined
  const children: ChildProcess[] = []
  afterEach(async () => {
    for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
    await cg?.remove()
    cg = undefined
  })
  const skip = v1Skip === null ? '' : ` (skipped: ${v1Skip})`

  it.skipIf(v1Skip !== null)(`doctor --json --cgroup: v1, the limit set here, kernel-exact${skip}`, () => {
    if (!('dir' in own)) return
    cg = createTestCgroup(own.dir, { limit: 128 * MiB })
    const { code, report } = doctorJson(['--cgroup', cg.path])
    expect(code).toBe(0)
    expect(report.cgroup?.version).toBe(1)
    expect(report.cgroup?.path).toBe(cg.path)
    expect(report.watched).toBe(cg.path)
    expect(report.limit).toEqual({ bytes: 128 * MiB, holder: cg.path, source: 'memory.limit_in_bytes' })
    expect(report.backends.map((b) => [b.name, b.available, b.kernelExact])).toEqual([
      ['cgroup-v2', false, false],
      ['cgroup-v1', true, true],
      ['process', false, false],
    ])
    expect([report.chosen, report.kernelExact]).toEqual(['cgroup-v1', true])
    expect(report.files.find((f) => f.path === path.join(cg?.path ?? '', 'cgroup.event_control'))).toMatchObject({ exists: true, write: true, error: null })
    // Kernel-exact, with a limit and the addon: nothing about the cgroup to change.
    expect(report.advice.map((a) => a.code).filter((c) => !c.startsWith('HEAP_'))).toEqual([])
    expect(report.addon.loaded).toBe(true)
  })

  it.skipIf(v1Skip !== null)(`doctor --json --pid: the child's cgroup, the ancestor holding the limit is what would be watched${skip}`, async () => {
    if (!('dir' in own)) return
    cg = createTestCgroup(own.dir, { limit: 96 * MiB })
    // A child cgroup without a limit below the one with it: the limit is the parent's.
    const inner = path.join(cg.path, `mp-inner-${randomBytes(3).toString('hex')}`)
    fs.mkdirSync(inner)
    const innerCg: TestCgroup = { path: inner, pids: new Set(), remove: async () => {} }
    let child: CgroupChild | undefined
    try {
      child = await spawnInCgroup(innerCg, allocator)
      const pid = child.proc.pid as number
      const { code, report } = doctorJson(['--pid', String(pid)])
      expect(code).toBe(0)
      expect(report.target).toEqual({ kind: 'pid', pid })
      expect(report.cgroup?.path).toBe(inner)
      expect(report.watched).toBe(cg.path)
      expect(report.limit).toEqual({ bytes: 96 * MiB, holder: cg.path, source: 'memory.limit_in_bytes' })
      expect(report.backends.find((b) => b.name === 'process')?.available).toBe(true)
    } finally {
      child?.proc.kill('SIGKILL')
      await child?.exited
      fs.rmdirSync(inner)
    }
  })

  it.skipIf(v1Skip !== null || !fs.existsSync('/usr/bin/unshare'))(`doctor in a read-only cgroupfs: v1 usable but polled, event_control EROFS, advice given${skip}`, () => {
    if (!('dir' in own)) return
    cg = createTestCgroup(own.dir, { limit: 128 * MiB })
    const mount = findMemoryCgroup().mountPoint
    const wrapper = ['unshare', '--mount', '--propagation', 'private', '/bin/sh', '-c', 'mount --bind -o ro "$0" "$0" && exec "$@"', mount]
    const { code, report } = doctorJson(['--cgroup', cg.path], wrapper)
    expect(code).toBe(0)
    expect(report.chosen).toBe('cgroup-v1')
    expect(report.kernelExact).toBe(false)
    expect(report.files.find((f) => f.path.endsWith('/cgroup.event_control'))).toMatchObject({ needs: 'write', exists: true, write: false, error: 'EROFS' })
    // Files that are only read are fine on a read-only mount.
    expect(report.files.find((f) => f.path.endsWith('/memory.usage_in_bytes'))).toMatchObject({ needs: 'read', read: true, write: false, error: null })
    expect(report.advice.map((a) => a.code)).toContain('READ_ONLY_CGROUPFS')
  })

  it.skipIf(v1Skip !== null)(`watch (plain lines): a child growing into a 100 MiB limit shows the thresholds, then the OOM; removal ends it with exit 1${skip}`, async () => {
    if (!('dir' in own)) return
    cg = createTestCgroup(own.dir, { limit: 100 * MiB })
    const watcher = spawn(process.execPath, [bin, 'watch', '--cgroup', cg.path, '--thresholds', '50%,80%', '--interval-ms', '100'], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] })
    children.push(watcher)
    const lines = new Collector<string>()
    createInterface({ input: watcher.stdout as NodeJS.ReadableStream }).on('line', lines.push)
    let stderr = ''
    watcher.stderr?.on('data', (d: Buffer) => (stderr += d.toString()))
    const exit = new Promise<number | null>((resolve) => watcher.on('exit', (c) => resolve(c)))
    await lines.until((l) => l.some((x) => x.startsWith('limit ')), 30_000).catch((e: Error) => {
      throw new Error(`${e.message}; stderr ${stderr}`)
    })
    // The seed's scenario: `stress --vm-bytes 101m` in a 100 MiB cgroup, here in 4 MiB steps.
    const child = await spawnInCgroup(cg, allocator)
    for (;;) {
      const r = await Promise.race([child.send(`alloc ${4 * MiB}`).then(() => 'ok'), child.exited.then(() => 'exited')])
      if (r === 'exited') break
    }
    await lines.until((l) => l.some((x) => / OOM in /.test(x)))
    const events = lines.items.filter((x) => / threshold (up|down) | OOM in /.test(x))
    const kinds = events.map((x) => (/ OOM in /.test(x) ? 'oom' : `${/ threshold (up|down) /.exec(x)?.[1]} ${/threshold \w+ ([\d.]+ MiB)/.exec(x)?.[1]}`))
    expect(kinds.slice(0, 2)).toEqual(['up 50.0 MiB', 'up 80.0 MiB'])
    expect(kinds.indexOf('oom')).toBeGreaterThan(1)
    expect(events.slice(0, 2).every((x) => x.endsWith('via eventfd'))).toBe(true)
    await cg.remove()
    cg = undefined
    expect(await exit).toBe(1)
    expect(lines.items.at(-1)).toMatch(/was removed$/)
  })

  it.skipIf(v1Skip !== null)(`watch on a cgroup without a limit drops the default percentages, and SIGINT exits 0${skip}`, async () => {
    if (!('dir' in own)) return
    cg = createTestCgroup(own.dir)
    const watcher = spawn(process.execPath, [bin, 'watch', '--cgroup', cg.path, '--interval-ms', '50'], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] })
    children.push(watcher)
    const lines = new Collector<string>()
    createInterface({ input: watcher.stdout as NodeJS.ReadableStream }).on('line', lines.push)
    const exit = new Promise<number | null>((resolve) => watcher.on('exit', (c) => resolve(c)))
    await lines.until((l) => l.some((x) => x === 'limit none; thresholds none'), 30_000)
    await lines.until((l) => l.some((x) => / usage \d+ limit max /.test(x)))
    watcher.kill('SIGINT')
    expect(await exit).toBe(0)
  })

  it.skipIf(v1Skip !== null)(`doctor without the native addon: NO_ADDON, what is lost listed, thresholds polled${skip}`, () => {
    if (!('dir' in own)) return
    cg = createTestCgroup(own.dir, { limit: 128 * MiB })
    // The package as installed without its addon: dist/ and package.json, no build/ and no prebuilds/.
    const copy = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-cli-noaddon-'))
    try {
      fs.cpSync(path.join(root, 'dist'), path.join(copy, 'dist'), { recursive: true })
      fs.copyFileSync(path.join(root, 'package.json'), path.join(copy, 'package.json'))
      fs.symlinkSync(path.join(root, 'node_modules'), path.join(copy, 'node_modules'))
      const r = spawnSync(process.execPath, [path.join(copy, 'dist', 'cli', 'main.js'), 'doctor', '--json', '--cgroup', cg.path], { encoding: 'utf8', timeout: 60_000 })
      const report = JSON.parse(r.stdout) as DoctorReport
      expect(report.addon.loaded).toBe(false)
      expect(report.addon.lost.length).toBe(3)
      expect(report.advice.map((a) => a.code)).toContain('NO_ADDON')
      expect([report.chosen, report.kernelExact]).toEqual(['cgroup-v1', false])
    } finally {
      fs.rmSync(copy, { recursive: true, force: true })
    }
  })

  it.skipIf(v1Skip !== null)(`watch (plain lines): each event line has the working set read at the event; repeats are counted, not printed${skip}`, async () => {
    if (!('dir' in own)) return
    cg = createTestCgroup(own.dir, { limit: 100 * MiB })
    // A refresh period longer than the test: any figure in an event line was read at the event.
    // The threshold in plain digits: bytes, as the help says.
    const watcher = spawn(process.execPath, [bin, 'watch', '--cgroup', cg.path, '--thresholds', String(40 * MiB), '--interval-ms', '600000'], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] })
    children.push(watcher)
    const lines = new Collector<string>()
    createInterface({ input: watcher.stdout as NodeJS.ReadableStream }).on('line', lines.push)
    const exit = new Promise<number | null>((resolve) => watcher.on('exit', (c) => resolve(c)))
    await lines.until((l) => l.some((x) => x.startsWith('limit ')), 30_000)
    const child = await spawnInCgroup(cg, allocator)
    const cycles = 8
    try {
      // Back and forth across 40 MiB, each crossing awaited so that none merges with the next.
      for (let i = 0; i < cycles; i++) {
        await child.send(`alloc ${44 * MiB}`)
        await lines.until((l) => l.some((x) => / threshold up 40\.0 MiB /.test(x)) || i > 0)
        // A second collection: the first one frees a dead Buffer's memory only on a helper thread.
        await child.send('free')
        await child.send('free')
        await lines.until((l) => l.some((x) => / threshold down 40\.0 MiB /.test(x)) || i > 0)
      }
    } finally {
      child.proc.kill('SIGKILL')
      await child.exited
    }
    watcher.kill('SIGINT')
    expect(await exit).toBe(0)
    const ws = (x: string): number => {
      const m = / ws ([\d.]+) (B|KiB|MiB)/.exec(x)
      return m === null ? Number.NaN : Number(m[1]) * (m[2] === 'MiB' ? MiB : m[2] === 'KiB' ? 1024 : 1)
    }
    const up = lines.items.find((x) => / threshold up 40\.0 MiB /.test(x)) ?? ''
    const down = lines.items.find((x) => / threshold down 40\.0 MiB /.test(x)) ?? ''
    // At the up crossing the child holds 44 MiB; at the down one it has given them back.
    expect(ws(up)).toBeGreaterThanOrEqual(40 * MiB)
    expect(ws(down)).toBeLessThan(40 * MiB)
    // Every crossing is accounted for: the first of each direction printed, the rest as counts.
    const about = lines.items.filter((x) => / threshold (up|down) 40\.0 MiB/.test(x))
    const counted = about.reduce((n, x) => n + Number(/ x(\d+) more in /.exec(x)?.[1] ?? 1), 0)
    expect(counted).toBe(2 * cycles)
    expect(about.length).toBeLessThan(2 * cycles)
  })

  // The status line as watch draws it, whole: a row that starts like it but does not match is half of one.
  const statusRow = /^\[[#.|]{10,50}\] [\d.]+ (B|KiB|MiB|GiB) \/ 100 MiB [\d.]+%(  (below all thresholds|above [\d.]+ MiB \([\d.]+%\)))?(  ws [\d.]+ (B|KiB|MiB|GiB))?(  cache [\d.]+ (B|KiB|MiB|GiB))?$/
  // Every other row: the header, its notes, events, or the indented continuation of one of them.
  const otherRow = /^(watching |limit |  \S|    \S|\+\d+\.\d{3}s (threshold|OOM|pressure level|error) )/

  it.skipIf(tmuxSkip !== null)(`watch in a terminal (tmux): rows fit 80 and 110 columns and a shrink, the status line is never broken, Ctrl-C exits 0${tmuxSkip ? ` (skipped: ${tmuxSkip})` : ''}`, { timeout: 90_000 }, async () => {
    if (!('dir' in own)) return
    cg = createTestCgroup(own.dir, { limit: 100 * MiB })
    const socket = `mp-cli-${process.pid}-${randomBytes(3).toString('hex')}`
    const { tm, capture, screen } = tmuxPane(socket)
    const codeFile = path.join(os.tmpdir(), `${socket}.code`)
    const command = `${process.execPath} ${bin} watch --cgroup ${cg.path} --thresholds 30%,50%,70% --interval-ms 10; echo $? > ${codeFile}`
    // Rows from `from` on were written at `width`; earlier ones (written wider, before a shrink) are
    // reflowed by tmux, which -J joins back: they must still be whole.
    const check = (rows: string[], width: number, from = 0): void => {
      for (const row of rows.slice(from)) expect(row.length, row).toBeLessThanOrEqual(width)
      expect(rows.at(-1)).toMatch(statusRow)
      for (const row of rows.slice(0, -1)) expect(row, `row ${JSON.stringify(row)} of\n${rows.join('\n')}`).toMatch(otherRow)
    }
    tm('new-session', '-d', '-x', '110', '-y', '24', '-s', 'w', command)
    try {
      const start = await screen((r) => statusRow.test(r.at(-1) ?? ''))
      check(start, 110)
      expect(start.join(' ').replace(/ +/g, ' ')).toMatch(/watching .* with cgroup-v1 \(kernel\)/)
      const child = await spawnInCgroup(cg, allocator)
      try {
        // Allocate past 50% and free, twice: crossings up and down, the status redrawn under them.
        // Each step awaited on the screen: an up and a down within one wake-up of the watcher are
        // no crossing at all once it reads usage.
        for (let round = 0; round < 2; round++) {
          // The child's own Node is part of usage (about 11 MiB on Node 24, less on 20): past 50%
          // it may also be past 70%.
          while ((await child.send(`alloc ${4 * MiB}`)).held < 52 * MiB) { /* grow past 50% */ }
          await screen((r) => /above (50|70)\.0 MiB/.test(r.at(-1) ?? ''))
          await child.send('freeall')
          await screen((r) => /below all thresholds/.test(r.at(-1) ?? ''))
        }
        // Both rounds accounted for (the second as counts when it came within the first's window),
        // so that no line is still pending when the window shrinks.
        const seen = (rows: string[], dir: string): number => rows
          .filter((x) => new RegExp(` threshold ${dir} 50\\.0 MiB`).test(x))
          .reduce((n, x) => n + Number(/ x(\d+) more in /.exec(x)?.[1] ?? 1), 0)
        const wide = await screen((r) => seen(r, 'up') === 2 && seen(r, 'down') === 2)
        check(wide, 110)
        const before = capture().length - 1
        tm('resize-window', '-t', 'w', '-x', '80', '-y', '24')
        // The next redraw after the shrink: the bar narrows to fit.
        const shrunk = await screen((r) => (r.at(-1)?.length ?? 999) <= 80 && statusRow.test(r.at(-1) ?? ''))
        check(shrunk, 80, before)
        expect(shrunk.length).toBe(before + 1)
        while ((await child.send(`alloc ${4 * MiB}`)).held < 76 * MiB) { /* grow past 70% */ }
        const narrow = await screen((r) => r.some((x) => / threshold up 70\.0 MiB/.test(x)) && /above 70\.0 MiB/.test(r.at(-1) ?? ''))
        check(narrow, 80, before)
      } finally {
        child.proc.kill('SIGKILL')
        await child.exited
      }
      tm('send-keys', '-t', 'w', 'C-c')
      for (let i = 0; i < 200 && !fs.existsSync(codeFile); i++) await new Promise((r) => setTimeout(r, 50))
      expect(fs.readFileSync(codeFile, 'utf8').trim()).toBe('0')
    } finally {
      spawnSync('tmux', ['-L', socket, 'kill-server'])
      fs.rmSync(codeFile, { force: true })
      // kill-server leaves the socket file behind.
      fs.rmSync(path.join(process.env.TMUX_TMPDIR ?? '/tmp', `tmux-${process.getuid?.() ?? 0}`, socket), { force: true })
    }
  })

  it.skipIf(tmuxSkip !== null)(`watch in an 80x24 terminal (tmux) from the start: every row fits, the status line is whole${tmuxSkip ? ` (skipped: ${tmuxSkip})` : ''}`, { timeout: 60_000 }, async () => {
    if (!('dir' in own)) return
    cg = createTestCgroup(own.dir, { limit: 100 * MiB })
    const socket = `mp-cli-${process.pid}-${randomBytes(3).toString('hex')}`
    const { tm, screen } = tmuxPane(socket)
    tm('new-session', '-d', '-x', '80', '-y', '24', '-s', 'w', `${process.execPath} ${bin} watch --cgroup ${cg.path} --interval-ms 100`)
    try {
      const child = await spawnInCgroup(cg, allocator)
      try {
        while ((await child.send(`alloc ${4 * MiB}`)).held < 56 * MiB) { /* past the default 50% */ }
        await screen((r) => /above 50\.0 MiB/.test(r.at(-1) ?? ''))
        await child.send('freeall')
        const rows = await screen((r) => r.some((x) => / threshold down 50\.0 MiB/.test(x)) && statusRow.test(r.at(-1) ?? ''))
        for (const row of rows) expect(row.length, row).toBeLessThanOrEqual(80)
        for (const row of rows.slice(0, -1)) expect(row, rows.join('\n')).toMatch(otherRow)
      } finally {
        child.proc.kill('SIGKILL')
        await child.exited
      }
    } finally {
      spawnSync('tmux', ['-L', socket, 'kill-server'])
      fs.rmSync(path.join(process.env.TMUX_TMPDIR ?? '/tmp', `tmux-${process.getuid?.() ?? 0}`, socket), { force: true })
    }
  })
})
