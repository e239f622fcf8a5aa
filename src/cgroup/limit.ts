// The memory limit that actually applies to a cgroup: the lowest limit set on it or on any
// ancestor, and which cgroup holds it. All comparisons are on bigints (limits reach 2^63).

import { readFileSync } from 'node:fs'
import { endianness, totalmem } from 'node:os'
import { MemoryPressureError } from '../errors.js'
import { parentOf, type CgroupLocation, type CgroupVersion } from './discover.js'
import { joinPath, kindOf, readOptionalText, readText } from './files.js'
import { parseMemoryStat } from './stat.js'

const AT_NULL = 0n
const AT_PAGESZ = 6n
const FALLBACK_PAGE_SIZE = 4096

/**
 * Finds `AT_PAGESZ` in the contents of `/proc/<pid>/auxv`: (type, value) pairs of native machine
 * words, ending with `AT_NULL` (getauxval(3)).
 *
 * @param auxv the raw file
 * @param wordBytes machine word size in bytes (8 on 64-bit, 4 on 32-bit). Default: from `process.arch`
 * @param littleEndian byte order. Default: this machine's
 * @returns the page size in bytes, or `null` when absent or not a power of two
 */
export function pageSizeFromAuxv(
  auxv: Uint8Array,
  wordBytes: 4 | 8 = is64BitArch() ? 8 : 4,
  littleEndian: boolean = endianness() === 'LE',
): number | null {
  const view = new DataView(auxv.buffer, auxv.byteOffset, auxv.byteLength)
  const word = (at: number): bigint => wordBytes === 8
    ? view.getBigUint64(at, littleEndian)
    : BigInt(view.getUint32(at, littleEndian))
  for (let at = 0; at + 2 * wordBytes <= auxv.byteLength; at += 2 * wordBytes) {
    const type = word(at)
    if (type === AT_NULL) break
    if (type === AT_PAGESZ) {
      const value = word(at + wordBytes)
      return value > 0n && (value & (value - 1n)) === 0n && value <= 1n << 30n ? Number(value) : null
    }
  }
  return null
}

function is64BitArch(): boolean {
  return ['x64', 'arm64', 'ppc64', 's390x', 'riscv64', 'loong64', 'mips64', 'mips64el'].includes(process.arch)
}

let cachedPageSize: number | undefined

/**
 * The kernel's page size in bytes, from `AT_PAGESZ` in `/proc/self/auxv`; 4096 when the file
 * cannot be read or has no usable entry. Read once and cached.
 */
export function pageSize(): number {
  if (cachedPageSize === undefined) {
    let size: number | null = null
    try {
      size = pageSizeFromAuxv(readFileSync('/proc/self/auxv'))
    } catch {
      size = null
    }
    cachedPageSize = size ?? FALLBACK_PAGE_SIZE
  }
  return cachedPageSize
}

const LONG_MAX = (1n << 63n) - 1n

/**
 * What cgroup v1 `memory.limit_in_bytes` shows for "no limit": the page counter's maximum,
 * `LONG_MAX / PAGE_SIZE` pages, shown in bytes (mm/memcontrol-v1.c, PAGE_COUNTER_MAX), i.e.
 * LONG_MAX rounded down to a page: 9223372036854771712 with 4 KiB pages. Assumes a 64-bit kernel.
 *
 * @param page page size in bytes. Default {@link pageSize}()
 */
export function unlimitedV1(page: number = pageSize()): bigint {
  if (!Number.isSafeInteger(page) || page <= 0) {
    throw new RangeError(`page must be a positive integer number of bytes, received ${String(page)}`)
  }
  const p = BigInt(page)
  return (LONG_MAX / p) * p
}

/**
 * Parses a limit file: v1 `memory.limit_in_bytes`, v2 `memory.max` / `memory.high`. One trailing
 * newline is allowed.
 *
 * @param text file contents
 * @param version the hierarchy's version: v1 means "unlimited" with a huge number, v2 with `max`
 * @param source file name to report in errors (`.path`)
 * @returns the limit in bytes, or `null` for "unlimited" (v1: any value >= {@link unlimitedV1}(),
 *   which also covers the 2^64−1 of old res_counter kernels; v2: `max`)
 * @throws MemoryPressureError `ERR_PARSE` for anything else
 */
export function parseLimitValue(text: string, version: CgroupVersion, source?: string): bigint | null {
  const value = text.endsWith('\n') ? text.slice(0, -1) : text
  if (version === 2 && value === 'max') return null
  if (!/^\d+$/.test(value)) {
    throw new MemoryPressureError('ERR_PARSE', `not a cgroup v${version} memory limit: ${JSON.stringify(text)}`,
      source === undefined ? {} : { path: source })
  }
  const bytes = BigInt(value)
  if (version === 1 && bytes >= unlimitedV1()) return null
  return bytes
}

/** The file (or, for `hierarchical_memory_limit`, the v1 memory.stat key) a limit was read from. */
export type LimitSource = 'memory.limit_in_bytes' | 'memory.max' | 'memory.high' | 'hierarchical_memory_limit'

/** The memory limit that applies to a cgroup, and where it comes from. */
export interface EffectiveLimit {
  /**
   * The limit in bytes; `Infinity` when no limit applies; at most the machine's memory
   * (`os.totalmem()`), which a limit set higher counts as. When it
   * comes from `memory.high` it is where the kernel starts throttling and reclaiming, not where it
   * OOM-kills (cgroup-v2.rst).
   */
  limit: number
  /**
   * Filesystem path of the cgroup whose own setting is the effective limit (the lowest cgroup
   * when several hold the same value). `null` when unlimited, or when the limit is set above the
   * visible mount root (v1: `hierarchical_memory_limit` lower than every visible limit).
   */
  holder: string | null
  /** The file (or, for `hierarchical_memory_limit`, the memory.stat key) the limit was read from; `null` when unlimited. */
  source: LimitSource | null
}

interface Candidate {
  bytes: bigint
  holder: string | null
  source: LimitSource
}

/**
 * The effective memory limit of a cgroup: the minimum over the cgroup and every ancestor up to
 * its mount point of v1 `memory.limit_in_bytes`, or v2 `memory.max` and `memory.high` (absent at
 * the v2 root: skipped). Compared as bigint, converted to a number at the end.
 *
 * For v1 the cgroup's `memory.stat` `hierarchical_memory_limit` (the kernel's own minimum over
 * all ancestors, including those above a container's mount root) is taken when it is lower than
 * every visible limit; the holder is then unknown (`null`). On old kernels with
 * `memory.use_hierarchy` 0 ancestors' limits do not apply, and this errs low.
 *
 * v2 has no such figure: a limit set above the visible root (a cgroup namespace) is not seen.
 *
 * @throws MemoryPressureError `ERR_NO_CGROUP` when the cgroup is gone, `ERR_PARSE` for bad file
 *   contents, `ERR_PERMISSION`/`ERR_SYSCALL` for other read failures (all with `.path`)
 */
export function effectiveLimit(loc: CgroupLocation): EffectiveLimit {
  const visible: Candidate[] = []
  for (let cg: CgroupLocation | null = loc; cg !== null; cg = parentOf(cg)) {
    if (loc.version === 1) {
      const file = joinPath(cg.path, 'memory.limit_in_bytes')
      const bytes = parseLimitValue(readText(file), 1, file)
      if (bytes !== null) visible.push({ bytes, holder: cg.path, source: 'memory.limit_in_bytes' })
      continue
    }
    for (const name of ['memory.max', 'memory.high'] as const) {
      const file = joinPath(cg.path, name)
      const text = readOptionalText(file)
      if (text === null) {
        // cgroup-v2.rst: memory.max and memory.high exist only on non-root cgroups. A missing
        // file in a missing directory means the cgroup itself is gone.
        if (kindOf(cg.path) !== 'directory') {
          throw new MemoryPressureError('ERR_NO_CGROUP', `cgroup ${cg.path} does not exist`,
            { path: cg.path, reasons: [`${cg.path} does not exist`] })
        }
        continue
      }
      const bytes = parseLimitValue(text, 2, file)
      if (bytes !== null) visible.push({ bytes, holder: cg.path, source: name })
    }
  }
  // The first (lowest cgroup; memory.max before memory.high) of equal values wins.
  let best: Candidate | null = null
  for (const c of visible) if (best === null || c.bytes < best.bytes) best = c

  if (loc.version === 1) {
    const file = joinPath(loc.path, 'memory.stat')
    const hierarchical = parseMemoryStat(readText(file), file).get('hierarchical_memory_limit')
    // cgroup-v1/memory.rst 5.2: hierarchical_memory_limit is the limit "with regard to hierarchy
    // under which the memory cgroup is": the kernel's minimum over all ancestors, including those
    // above the mount root that this process cannot see (a container's own cgroup).
    if (hierarchical !== undefined && hierarchical < unlimitedV1() && (best === null || hierarchical < best.bytes)) {
      best = { bytes: hierarchical, holder: null, source: 'hierarchical_memory_limit' }
    }
  }
  if (best === null) return { limit: Infinity, holder: null, source: null }
  return { limit: atMostMachineMemory(best.bytes), holder: best.holder, source: best.source }
}

/**
 * A limit above the machine's memory (`echo $((1<<62)) > memory.limit_in_bytes`) is never reached:
 * the machine runs out first. It is not "unlimited" either, so it counts as the machine's memory.
 */
function atMostMachineMemory(bytes: bigint): number {
  const machine = BigInt(totalmem())
  return Number(bytes < machine ? bytes : machine)
}
