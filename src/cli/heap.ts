// V8's heap limit next to the cgroup's: the heap_size_limit a Node process has (or will have), and the
// flags that size it from the effective cgroup limit, leaving room for memory V8's heap does not hold.

import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import v8 from 'node:v8'

const MiB = 2 ** 20

/**
 * The share of the effective cgroup limit a fitting `heap_size_limit` takes. The rest is for what
 * V8's heap does not hold: Buffers and other native allocations, code, thread stacks, the C
 * allocator's free lists.
 */
export const HEAP_SHARE = 0.75
/**
 * `--max-old-space-size-percentage` where Node supports it: the old space only; V8 sizes the young
 * generation from it, which leaves {@link HEAP_SHARE} for the whole heap.
 */
export const HEAP_PERCENTAGE = 70
/** Advice is given when `heap_size_limit` is above this share of the effective limit (the kill comes first)... */
export const HEAP_HIGH_SHARE = 0.9
/**
 * ...or below this share: heap exhaustion with memory to spare (Node 20 gives a process in a 512 MiB
 * cgroup a 259 MiB heap limit, 51%: a cache of JavaScript objects dies of it with 250 MiB unused).
 */
export const HEAP_LOW_SHARE = 0.6

/** Heap-sizing flags found on a command line or in `NODE_OPTIONS`. */
export interface HeapFlags {
  /** `--max-old-space-size`, MiB. */
  maxOldSpaceMiB?: number
  /** `--max-old-space-size-percentage` (it takes precedence over `--max-old-space-size`). */
  percentage?: number
  /** `--max-semi-space-size`, MiB. */
  semiSpaceMiB?: number
  /** The tokens they came from. */
  tokens: string[]
}

/** Finds heap flags in a list of arguments (`process.execArgv`, `/proc/PID/cmdline`, `NODE_OPTIONS` split on spaces). */
export function parseHeapFlags(args: readonly string[]): HeapFlags {
  const out: HeapFlags = { tokens: [] }
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string
    // V8 accepts `_` for `-` in flag names, and Node a value after `=` or as the next argument.
    const m = /^--max[-_](old|semi)[-_]space[-_]size([-_]percentage)?(?:=(.*))?$/.exec(arg)
    if (m === null) continue
    let value = m[3]
    const token = [arg]
    if (value === undefined && i + 1 < args.length) {
      value = args[i + 1]
      token.push(value as string)
      i++
    }
    const n = Number.parseFloat((value ?? '').replace(/%$/, ''))
    if (!Number.isFinite(n) || n <= 0) continue
    out.tokens.push(...token)
    if (m[1] === 'semi') out.semiSpaceMiB = n
    else if (m[2] !== undefined) out.percentage = n
    else out.maxOldSpaceMiB = n
  }
  return out
}

/** `NODE_OPTIONS` split as Node splits it (spaces; double quotes group). */
export function splitNodeOptions(text: string | undefined): string[] {
  if (text === undefined) return []
  return [...text.matchAll(/"((?:[^"\\]|\\.)*)"|(\S+)/g)].map((m) => m[1] ?? m[2] ?? '')
}

/** True when this Node accepts `--max-old-space-size-percentage` (Node 22.21+ and 24+). */
export function supportsPercentage(): boolean {
  return process.allowedNodeEnvironmentFlags.has('--max-old-space-size-percentage')
}

let youngCache: Map<string, number> | undefined

/**
 * Bytes `heap_size_limit` adds to an explicit `--max-old-space-size`: the young generation, three
 * semi-spaces (to, from, and new large objects), whose default maximum differs between V8 versions
 * (measured: 48 MiB on Node 20 and 22, 192 MiB on Node 24). Read from a child `node` once per binary.
 */
export function youngGenerationBytes(execPath = process.execPath): number {
  youngCache ??= new Map()
  const known = youngCache.get(execPath)
  if (known !== undefined) return known
  const env = { ...process.env }
  delete env.NODE_OPTIONS
  const r = spawnSync(execPath, ['--max-old-space-size=256', '-p', 'v8.getHeapStatistics().heap_size_limit'], { encoding: 'utf8', env, timeout: 30_000 })
  const limit = Number(r.stdout?.trim())
  // Without an answer, assume the largest default seen, so that the heap fits rather than not.
  const young = r.status === 0 && Number.isFinite(limit) && limit > 256 * MiB ? limit - 256 * MiB : 192 * MiB
  youngCache.set(execPath, young)
  return young
}

/** Flags that fit V8's heap to an effective limit, and the `heap_size_limit` they give. */
export interface HeapRecipe {
  /** Flags to add to `NODE_OPTIONS` (or the node command line). */
  flags: string[]
  /** The `heap_size_limit` they are meant to give, bytes: {@link HEAP_SHARE} of the limit. */
  heapSizeLimit: number
  /** `'percentage'`: `--max-old-space-size-percentage`; `'mib'`: `--max-old-space-size` for this limit. */
  kind: 'percentage' | 'mib'
}

/**
 * The flags for a process under `limit` bytes. `percentage` asks for the percentage flag, right only
 * when Node itself sees the limit: it reads the process's own cgroup, not an ancestor's.
 * Otherwise `--max-old-space-size` is `HEAP_SHARE` of the limit less the young generation; when the
 * young generation would take more than a quarter of that, `--max-semi-space-size` caps it.
 */
export function heapRecipe(limit: number, options: { percentage: boolean; youngBytes: number }): HeapRecipe {
  const heap = Math.floor(HEAP_SHARE * limit)
  if (options.percentage) return { flags: [`--max-old-space-size-percentage=${HEAP_PERCENTAGE}`], heapSizeLimit: heap, kind: 'percentage' }
  const flags: string[] = []
  let young = options.youngBytes
  if (young > heap / 4) {
    const semiMiB = Math.max(1, Math.floor(heap / 4 / 3 / MiB))
    young = 3 * semiMiB * MiB
    flags.push(`--max-semi-space-size=${semiMiB}`)
  }
  const oldMiB = Math.max(16, Math.floor((heap - young) / MiB))
  flags.unshift(`--max-old-space-size=${oldMiB}`)
  return { flags, heapSizeLimit: heap, kind: 'mib' }
}

/** What is known of a process's V8 heap limit. */
export interface HeapReading {
  /** `heap_size_limit` in bytes; `null` when it cannot be known from outside the process. */
  limit: number | null
  /** How it was learned. */
  source: 'this process' | 'flags' | 'unknown'
  /** Heap flags the process was started with (command line and `NODE_OPTIONS`). */
  flags: string[]
  /** Why the limit is unknown or approximate. */
  note: string | null
}

/** The doctor's own heap: exact. */
export function ownHeap(): HeapReading {
  const flags = parseHeapFlags([...process.execArgv, ...splitNodeOptions(process.env.NODE_OPTIONS)])
  return { limit: v8.getHeapStatistics().heap_size_limit, source: 'this process', flags: flags.tokens, note: null }
}

/**
 * Another process's heap, from its command line and `NODE_OPTIONS` (`/proc/PID/cmdline`, `environ`):
 * with `--max-old-space-size` the old space does not depend on where the process runs, so the same
 * binary (or this Node) started with the same flags tells it, within the young generation, which V8
 * sizes from the memory the process sees (measured: 3 MiB in a 512 MiB cgroup, 48 MiB without a
 * limit, Node 20). V8's default and the percentage flag are sized from the process's own cgroup,
 * which only a process inside it can read.
 */
export function pidHeap(pid: number): HeapReading {
  let argv: string[]
  try {
    argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((a) => a !== '')
  } catch (err) {
    return { limit: null, source: 'unknown', flags: [], note: `cannot read /proc/${pid}/cmdline (${(err as NodeJS.ErrnoException).code})` }
  }
  let nodeOptions: string | undefined
  let environNote: string | null = null
  try {
    const env = fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0')
    nodeOptions = env.find((e) => e.startsWith('NODE_OPTIONS='))?.slice('NODE_OPTIONS='.length)
  } catch (err) {
    environNote = `cannot read /proc/${pid}/environ (${(err as NodeJS.ErrnoException).code}): NODE_OPTIONS unknown`
  }
  // NODE_OPTIONS first: the command line takes precedence over it.
  const flags = parseHeapFlags([...splitNodeOptions(nodeOptions), ...argv.slice(1)])
  if (flags.percentage !== undefined || flags.maxOldSpaceMiB === undefined) {
    const what = flags.percentage !== undefined ? '--max-old-space-size-percentage' : 'V8\'s default'
    return { limit: null, source: 'unknown', flags: flags.tokens, note: [environNote, `${what} is sized from the process's own cgroup: run doctor inside it (without --pid) to read heap_size_limit`].filter((n) => n !== null).join('; ') }
  }
  let exe = process.execPath
  let standIn = true
  try {
    const target = fs.readlinkSync(`/proc/${pid}/exe`)
    if (/(^|\/)node[^/]*$/.test(target) && fs.existsSync(target)) {
      exe = target
      standIn = false
    }
  } catch {
    // another user's process: its binary is not visible; this Node stands in for it
  }
  const env = { ...process.env }
  delete env.NODE_OPTIONS
  const r = spawnSync(exe, [...flags.tokens, '-p', 'v8.getHeapStatistics().heap_size_limit'], { encoding: 'utf8', env, timeout: 30_000 })
  const limit = Number(r.stdout?.trim())
  if (r.status !== 0 || !Number.isFinite(limit)) return { limit: null, source: 'unknown', flags: flags.tokens, note: `${exe} with ${flags.tokens.join(' ')} did not report its heap limit` }
  const young = `approximate: the young generation (up to ${Math.round(youngGenerationBytes(exe) / MiB)} MiB) is sized from the memory the process sees`
  return { limit, source: 'flags', flags: flags.tokens, note: [environNote, standIn ? `its binary is not visible: read from this Node (${process.version}) with the same flags` : null, young].filter((n) => n !== null).join('; ') }
}
