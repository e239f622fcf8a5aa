// What the SDK may write and where: only cgroup.event_control and PSI trigger files, only on a
// cgroup (or proc) filesystem, never through a symlink or `..` out of one, from the API or the CLI.

import { spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CgroupV2Backend } from '../../src/backends/cgroup-v2.js'
import { PsiTrigger } from '../../src/backends/psi.js'
import { resolveCgroupPath } from '../../src/cgroup/index.js'
import { MemoryPressureError } from '../../src/errors.js'
import { nativeStatus } from '../../src/native.js'
import { createTestCgroup, openFdCount, ownV1MemoryCgroup, type TestCgroup } from '../helpers/cgroup.js'

const root = fileURLToPath(new URL('../../', import.meta.url))
const bin = path.join(root, 'dist/cli/main.js')
const fixtureTree = path.join(root, 'test/fixtures/v2/k8s-pod')
const own = ownV1MemoryCgroup()
const hasStrace = spawnSync('strace', ['-V']).status === 0
const hasUnshare = spawnSync('unshare', ['--cgroup', 'true']).status === 0
const native = nativeStatus().loaded
const MiB = 2 ** 20
const VICTIM = 'some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n'

let tmp: string
/** A copy of the k8s fixture tree whose container's memory.pressure is a symlink to a file outside it. */
let tree: { root: string; container: string; victim: string }

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-security-'))
  const treeRoot = path.join(tmp, 'tree')
  fs.cpSync(fixtureTree, treeRoot, { recursive: true })
  const container = path.join(treeRoot, 'kubepods.slice/pod-a.slice/container')
  const victim = path.join(tmp, 'victim')
  // A file that parses as PSI: the trigger's own read before writing cannot tell it apart.
  fs.writeFileSync(victim, VICTIM)
  fs.rmSync(path.join(container, 'memory.pressure'), { force: true })
  fs.symlinkSync(victim, path.join(container, 'memory.pressure'))
  tree = { root: treeRoot, container, victim }
})

afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true })
})

describe.skipIf(!native)(`PSI triggers are written only on cgroup2 or proc files${native ? '' : ' (skipped: no native addon)'}`, () => {
  it('refuses a regular file in /tmp, writes nothing and keeps no fd', () => {
    const file = path.join(tmp, 'memory.pressure')
    fs.writeFileSync(file, VICTIM)
    const fds = openFdCount()
    let error: unknown
    try {
      PsiTrigger.open(file)
    } catch (err) {
      error = err
    }
    expect(error).toBeInstanceOf(MemoryPressureError)
    expect((error as MemoryPressureError).code).toBe('ERR_NO_CGROUP')
    expect((error as MemoryPressureError).path).toBe(file)
    expect(fs.readFileSync(file, 'utf8')).toBe(VICTIM)
    expect(openFdCount()).toBe(fds)
  })

  it('refuses a symlink out of a tree given by root, and the v2 backend goes on without PSI', () => {
    const fds = openFdCount()
    const backend = CgroupV2Backend.open({ cgroup: tree.container, root: tree.root, poll: { minIntervalMs: 60_000, maxIntervalMs: 60_000 } })
    try {
      expect(backend.precision.kind).toBe('polled')
      expect(backend.precision.kind === 'polled' ? backend.precision.signals : []).not.toContain('psi')
    } finally {
      backend.close()
    }
    expect(fs.readFileSync(tree.victim, 'utf8')).toBe(VICTIM)
    expect(openFdCount()).toBe(fds)
  })

  it('refuses a character device (opening it read-write could have effects)', () => {
    expect(() => PsiTrigger.open('/dev/null')).toThrow(expect.objectContaining({ code: 'ERR_NO_CGROUP' }))
  })
})

describe.skipIf(!fs.existsSync(bin))(`the command line cannot be pointed at a file to write${fs.existsSync(bin) ? '' : ' (skipped: dist/ not built)'}`, () => {
  it('watch --cgroup/--root on a tree whose memory.pressure links to /tmp leaves the target unchanged', async () => {
    const child = spawn(process.execPath, [bin, 'watch', '--cgroup', tree.container, '--root', tree.root, '--interval-ms', '50'], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    // The first usage line comes after the backend opened (and PSI was tried).
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (d: Buffer) => {
        out += d
        if (/usage \d+/.test(out)) resolve()
      })
      child.on('exit', (code) => reject(new Error(`watch exited with ${code} before printing usage: ${out}`)))
    })
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
    child.kill('SIGINT')
    expect(await exited).toBe(0)
    expect(fs.readFileSync(tree.victim, 'utf8')).toBe(VICTIM)
  })

  // The remount below names this machine's mount point of the v1 memory hierarchy.
  const container = 'dir' in own && own.dir.startsWith('/sys/fs/cgroup/memory/') && hasUnshare
  it.skipIf(!container)(`--pid of a process outside this cgroup namespace finds no cgroup to watch${container ? '' : ' (skipped: needs root, a v1 cgroup under /sys/fs/cgroup/memory and unshare --cgroup)'}`, async () => {
    const cg = createTestCgroup((own as { dir: string }).dir)
    try {
      // A container, as Docker makes one: the shell moves itself into the test cgroup, then a new
      // cgroup and mount namespace are rooted there and cgroupfs is mounted afresh (its root is now
      // the test cgroup). From inside, pid 1's cgroup is above that root (`/..`, cgroup_namespaces(7)):
      // no directory of it can be opened, so nothing of it can be read or written.
      const inner = `umount -l /sys/fs/cgroup/memory && mount -t cgroup -o memory none /sys/fs/cgroup/memory && exec ${process.execPath} ${bin} doctor --json --pid 1`
      const script = `echo $$ > ${cg.path}/cgroup.procs && exec unshare --cgroup --mount /bin/sh -c '${inner}'`
      const r = spawnSync('/bin/sh', ['-c', script], { encoding: 'utf8' })
      const report = JSON.parse(r.stdout) as { cgroup: unknown; cgroupError: { code: string } | null; backends: Array<{ name: string; available: boolean }> }
      expect(report.cgroup).toBeNull()
      expect(report.cgroupError?.code).toBe('ERR_NO_CGROUP')
      expect(report.backends.filter((b) => b.name.startsWith('cgroup')).map((b) => b.available)).toEqual([false, false])
    } finally {
      await cg.remove()
    }
  })
})

describe.skipIf(!('dir' in own) || !hasUnshare || !native || !fs.existsSync(bin))(`a v1 cgroup replaced after opening${'dir' in own && hasUnshare && native ? '' : ' (skipped: needs root, a v1 cgroup, unshare and the addon)'}`, () => {
  it('a directory mounted over the cgroup gets no registration written into its cgroup.event_control', async () => {
    const cg = createTestCgroup((own as { dir: string }).dir, { limit: 64 * MiB })
    const fake = path.join(tmp, 'fake-cgroup')
    fs.mkdirSync(fake)
    for (const f of ['cgroup.event_control', 'memory.usage_in_bytes']) fs.writeFileSync(path.join(fake, f), '')
    try {
      // In a private mount namespace: open the backend on the real cgroup, then mount the fake
      // directory over it, as a hostile or confused operator could between two registrations.
      const script = `
        const { execFileSync } = await import('node:child_process')
        const sdk = await import(${JSON.stringify(path.join(root, 'dist/index.js'))})
        const b = sdk.CgroupV1Backend.open({ cgroup: ${JSON.stringify(cg.path)}, oom: false })
        execFileSync('mount', ['--bind', ${JSON.stringify(fake)}, ${JSON.stringify(cg.path)}])
        let out
        try { b.watchThreshold(1048576, () => {}); out = 'registered' } catch (e) { out = e.code }
        b.close()
        console.log(out)
      `
      const r = spawnSync('unshare', ['--mount', '--propagation', 'private', process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8' })
      expect(r.stdout.trim(), r.stderr).toBe('ERR_NO_CGROUP')
      expect(fs.readFileSync(path.join(fake, 'cgroup.event_control'), 'utf8')).toBe('')
    } finally {
      await cg.remove()
    }
  })
})

describe('user paths are resolved before they are checked', () => {
  it.skipIf(!('dir' in own))('a symlink in /tmp to a cgroup resolves to the cgroup inside its mount', () => {
    const link = path.join(tmp, 'to-own-cgroup')
    fs.symlinkSync((own as { dir: string }).dir, link)
    const loc = resolveCgroupPath(link)
    expect(loc.path).toBe(fs.realpathSync((own as { dir: string }).dir))
    expect(loc.path.startsWith(`${loc.mountPoint}/`) || loc.path === loc.mountPoint).toBe(true)
  })

  it.each([
    ['a symlink from a cgroup-looking name to /tmp', () => { const l = path.join(tmp, 'memory'); fs.symlinkSync(tmp, l); return l }],
    ['.. out of the v1 mount', () => '/sys/fs/cgroup/memory/../../../tmp'],
    ['.. out of the v2 mount', () => '/sys/fs/cgroup/unified/../../../etc'],
    ['a file inside the mount', () => '/sys/fs/cgroup/memory/memory.stat'],
    ['a fake tree in /tmp without root', () => tree.container],
  ])('%s is ERR_NO_CGROUP', (_, make) => {
    expect(() => resolveCgroupPath(make())).toThrow(expect.objectContaining({ code: 'ERR_NO_CGROUP' }))
  })
})

describe.skipIf(!hasStrace || !('dir' in own) || !native)(`a monitor's lifetime writes only cgroup.event_control and PSI files${hasStrace && 'dir' in own && native ? '' : ' (skipped: needs strace, root with a v1 cgroup and the addon)'}`, () => {
  let cg: TestCgroup | undefined
  afterAll(async () => cg?.remove())

  it('every file opened for writing is one of them (traced with strace)', () => {
    cg = createTestCgroup((own as { dir: string }).dir, { limit: 64 * MiB })
    // Everything a service does with the SDK: thresholds, levels with a shrinker, OOM watching,
    // pressure levels, a PSI trigger on this process's own v2 cgroup (when PSI exists), close.
    const script = `
      const sdk = await import(${JSON.stringify(path.join(root, 'dist/index.js'))})
      const fs = await import('node:fs')
      fs.existsSync('/mp-trace-begin')
      const m = sdk.createMemoryMonitor({ backend: 'cgroup-v1', cgroup: ${JSON.stringify(cg.path)}, thresholds: ['50%', { threshold: '75%', direction: 'both' }], levels: true })
      m.register({ name: 'cache', shrink: () => 0 })
      m.snapshot()
      m.diagnostics()
      const own2 = fs.readFileSync('/proc/self/cgroup', 'utf8').split('\\n').find((l) => l.startsWith('0::'))?.slice(3)
      const psiFile = fs.existsSync('/sys/fs/cgroup/unified' + own2 + '/memory.pressure') ? '/sys/fs/cgroup/unified' + own2 + '/memory.pressure' : '/proc/pressure/memory'
      let t = null
      try { t = sdk.PsiTrigger.open(psiFile, { windowUs: 2000000 }) } catch (e) { console.log('psi-error', e.code) }
      t?.close()
      await m.close()
      fs.existsSync('/mp-trace-end')
    `
    const r = spawnSync('strace', ['-f', '-qq', '-e', 'trace=open,openat,openat2,creat,truncate,rename,renameat,renameat2,unlink,unlinkat,mkdir,mkdirat,rmdir,symlink,symlinkat,link,linkat,chmod,fchmodat,access,newfstatat,statx,stat', '-e', 'signal=none',
      process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8', maxBuffer: 64 * MiB })
    expect(r.status).toBe(0)
    const lines = r.stderr.split('\n')
    const begin = lines.findIndex((l) => l.includes('/mp-trace-begin'))
    const end = lines.findIndex((l) => l.includes('/mp-trace-end'))
    expect(begin).toBeGreaterThan(-1)
    expect(end).toBeGreaterThan(begin)
    const phase = lines.slice(begin + 1, end)
    const written = new Set<string>()
    const changed: string[] = []
    for (const l of phase) {
      const file = /"([^"]+)"/.exec(l)?.[1]
      if (file === undefined) continue
      if (/open(at2?)?\(/.test(l) && /O_WRONLY|O_RDWR|O_CREAT|O_TRUNC|O_APPEND/.test(l)) written.add(file)
      if (/^(\[pid +\d+\] )?(creat|truncate|rename|unlink|mkdir|rmdir|symlink|link|chmod|fchmodat)/.test(l)) changed.push(l)
    }
    const allowed = (f: string): boolean =>
      f === path.join(cg!.path, 'cgroup.event_control') || f === '/proc/pressure/memory' || (f.startsWith('/sys/fs/cgroup/unified/') && f.endsWith('/memory.pressure'))
    expect([...written].filter((f) => !allowed(f))).toEqual([])
    expect(written.has(path.join(cg.path, 'cgroup.event_control'))).toBe(true)
    expect(changed).toEqual([])
  })
})

/** Runs `watch --cgroup <dir> --root <root>` until it exits by itself or `killAfterMs` passes (then SIGKILL). */
async function watchUntilExit(
  dir: string,
  treeRoot: string,
  options: { cgroupDir?: string; killAfterMs?: number } = {},
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  const argv = [bin, 'watch', '--cgroup', dir, '--root', treeRoot, '--interval-ms', '50']
  // In a memory-limited test cgroup, an unbounded read ends in an OOM kill, not in the machine's memory.
  const child = options.cgroupDir === undefined
    ? spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn('/bin/sh', ['-c', 'echo $$ > "$0" && exec "$@"', path.join(options.cgroupDir, 'cgroup.procs'), process.execPath, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  child.stdout.resume()
  // A safety net against a hang (the failure being tested), not a speed requirement.
  const timer = setTimeout(() => child.kill('SIGKILL'), options.killAfterMs ?? 30_000)
  const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (c, s) => resolve({ code: c, signal: s })))
  clearTimeout(timer)
  return { code, signal, stderr }
}

/** A copy of the k8s fixture tree with one of the container's files replaced by `make(file)`. */
function hostileTree(name: string, file: string, make: (target: string) => void): { root: string; container: string } {
  const treeRoot = path.join(tmp, name)
  fs.cpSync(fixtureTree, treeRoot, { recursive: true })
  const container = path.join(treeRoot, 'kubepods.slice/pod-a.slice/container')
  fs.rmSync(path.join(container, file), { force: true })
  make(path.join(container, file))
  return { root: treeRoot, container }
}

const hasMkfifo = spawnSync('mkfifo', ['--version']).status === 0
describe.skipIf(!fs.existsSync(bin))(`--root: what is read is checked, opened without blocking and bounded${fs.existsSync(bin) ? '' : ' (skipped: dist/ not built)'}`, () => {
  it.skipIf(!hasMkfifo)(`a FIFO as memory.current: watch exits by itself with an error instead of blocking in open()${hasMkfifo ? '' : ' (skipped: no mkfifo)'}`, async () => {
    const t = hostileTree('fifo', 'memory.current', (f) => expect(spawnSync('mkfifo', [f]).status).toBe(0))
    const r = await watchUntilExit(t.container, t.root)
    expect(r.signal).toBe(null)
    expect(r.code).not.toBe(0)
    expect(r.stderr).toContain('ERR_NO_CGROUP')
  })

  it.skipIf(!('dir' in own))(`memory.max linked to /dev/zero: watch exits by itself, memory bounded (in a 512 MiB test cgroup)${'dir' in own ? '' : ' (skipped: needs a writable v1 cgroup to bound the child)'}`, async () => {
    const t = hostileTree('zero', 'memory.max', (f) => fs.symlinkSync('/dev/zero', f))
    const cg = createTestCgroup((own as { dir: string }).dir, { limit: 512 * MiB })
    try {
      const r = await watchUntilExit(t.container, t.root, { cgroupDir: cg.path })
      expect(r.signal).toBe(null)
      expect(r.code).not.toBe(0)
      const failcnt = Number(fs.readFileSync(path.join(cg.path, 'memory.failcnt'), 'utf8'))
      expect(failcnt).toBe(0)
    } finally {
      await cg.remove()
    }
  })

  // In-process, only inputs that cannot hang or exhaust this process without the fix either: the
  // FIFO and /dev/zero cases run in child processes above.
  it('the shared reader refuses a device and a file over 64 KiB, reads a real one, and keeps no fd', async () => {
    const { readText, MAX_CGROUP_FILE_BYTES } = await import('../../src/cgroup/files.js')
    const big = path.join(tmp, 'big.stat')
    fs.writeFileSync(big, 'x'.repeat(MAX_CGROUP_FILE_BYTES + 1))
    const fds = openFdCount()
    const codeOf = (f: string): string | undefined => {
      try {
        readText(f)
      } catch (err) {
        return (err as MemoryPressureError).code
      }
      return undefined
    }
    expect([codeOf('/dev/null'), codeOf(big)]).toEqual(['ERR_NO_CGROUP', 'ERR_PARSE'])
    expect(readText(path.join(fixtureTree, 'kubepods.slice/memory.max'))).toMatch(/^\d+\n$|^max\n$/)
    expect(openFdCount()).toBe(fds)
  })
})
