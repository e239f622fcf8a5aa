// memory.stat parsing and the memory figures the SDK reports (usage, rss, cache, inactive file,
// working set), read from a cgroup directory. memory.stat is read by key, never by position.

import { MemoryPressureError } from '../errors.js'
import type { CgroupLocation, CgroupVersion } from './discover.js'
import { joinPath, readText } from './files.js'

const statLine = /^([A-Za-z0-9_]+) (\d+)$/

/**
 * Parses a cgroup `memory.stat` file (v1 or v2): one `key value` pair a line. Keys the SDK does
 * not know are kept; the order of lines is irrelevant.
 *
 * @param text file contents
 * @param source file name to report in errors (`.path`)
 * @returns values by key: bytes for sizes, counts for events (`pgfault`...), as bigint
 * @throws MemoryPressureError `ERR_PARSE` for a malformed line or a repeated key
 */
export function parseMemoryStat(text: string, source?: string): Map<string, bigint> {
  const stat = new Map<string, bigint>()
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] as string
    if (line === '') continue
    const m = statLine.exec(line)
    const fail = (why: string): never => {
      throw new MemoryPressureError('ERR_PARSE', `memory.stat line ${i + 1}: ${why}: ${JSON.stringify(line)}`,
        source === undefined ? {} : { path: source })
    }
    if (m === null) return fail('expected "<key> <unsigned decimal>"')
    const key = m[1] as string
    if (stat.has(key)) return fail('repeated key')
    stat.set(key, BigInt(m[2] as string))
  }
  return stat
}

/** A snapshot of a cgroup's memory, in bytes. */
export interface MemoryFigures {
  /** Memory charged to the cgroup, page cache included (v1 `memory.usage_in_bytes`, v2 `memory.current`), bytes. */
  usage: number
  /** Anonymous memory: heap, stacks, anonymous mappings (v1 `total_rss`, v2 `anon`), bytes. */
  rss: number
  /** Page cache, shmem/tmpfs included (v1 `total_cache`, v2 `file`), bytes. */
  cache: number
  /** Page cache on the inactive LRU list, the first to be reclaimed (v1 `total_inactive_file`, v2 `inactive_file`), bytes. */
  inactiveFile: number
  /**
   * `max(0, usage − inactiveFile)`, bytes: what kubelet and cAdvisor call the working set and
   * compare with the limit for eviction. This is the figure to set thresholds on.
   */
  workingSet: number
}

function pick(stat: ReadonlyMap<string, bigint>, keys: readonly string[], missing: string[]): bigint {
  for (const key of keys) {
    const value = stat.get(key)
    if (value !== undefined) return value
  }
  missing.push(keys.join(' or '))
  return 0n
}

/**
 * Derives the SDK's memory figures from a usage reading and a parsed `memory.stat`.
 *
 * v1 prefers the hierarchical `total_*` keys (the cgroup and its descendants, like usage) and falls
 * back to the cgroup's own `rss`, `cache`, `inactive_file` (cgroup-v1/memory.rst 5.2). v2 keys are
 * hierarchical already: `anon`, `file`, `inactive_file` (cgroup-v2.rst, memory.stat).
 *
 * @param version the cgroup's version, which decides the keys
 * @param usage usage in bytes (v1 `memory.usage_in_bytes`, v2 `memory.current`)
 * @param stat parsed `memory.stat`
 * @throws MemoryPressureError `ERR_PARSE` when a needed key is absent
 */
export function memoryFigures(version: CgroupVersion, usage: bigint | number, stat: ReadonlyMap<string, bigint>): MemoryFigures {
  const missing: string[] = []
  const [rss, cache, inactiveFile] = version === 1
    ? [pick(stat, ['total_rss', 'rss'], missing), pick(stat, ['total_cache', 'cache'], missing),
        pick(stat, ['total_inactive_file', 'inactive_file'], missing)]
    : [pick(stat, ['anon'], missing), pick(stat, ['file'], missing), pick(stat, ['inactive_file'], missing)]
  if (missing.length > 0) {
    throw new MemoryPressureError('ERR_PARSE', `cgroup v${version} memory.stat lacks ${missing.join(', ')}`)
  }
  const used = typeof usage === 'bigint' ? usage : BigInt(Math.trunc(usage))
  const workingSet = used > inactiveFile ? used - inactiveFile : 0n
  return {
    usage: Number(used),
    rss: Number(rss),
    cache: Number(cache),
    inactiveFile: Number(inactiveFile),
    workingSet: Number(workingSet),
  }
}

/**
 * Reads the cgroup's current usage in bytes: v1 `memory.usage_in_bytes`, v2 `memory.current`.
 * Both include page cache. v1's figure is approximate (per-CPU charge caches; cgroup-v1/memory.rst
 * 5.5).
 *
 * @throws MemoryPressureError from `syscallError(err, 'read', path)` (`ERR_NO_CGROUP` when the
 *   cgroup is gone), or `ERR_PARSE`
 */
export function readUsage(loc: CgroupLocation): bigint {
  const file = joinPath(loc.path, loc.version === 1 ? 'memory.usage_in_bytes' : 'memory.current')
  const text = readText(file)
  const value = text.endsWith('\n') ? text.slice(0, -1) : text
  if (!/^\d+$/.test(value)) {
    throw new MemoryPressureError('ERR_PARSE', `not a usage in bytes: ${JSON.stringify(text)}`, { path: file })
  }
  return BigInt(value)
}

/**
 * Reads usage and `memory.stat` of a cgroup and derives {@link MemoryFigures}. Usage is read
 * first; the two files are not read atomically, so figures can disagree by a few pages.
 *
 * @throws MemoryPressureError as {@link readUsage}, {@link parseMemoryStat} and {@link memoryFigures}
 */
export function readFigures(loc: CgroupLocation): MemoryFigures {
  const usage = readUsage(loc)
  const file = joinPath(loc.path, 'memory.stat')
  const stat = parseMemoryStat(readText(file), file)
  try {
    return memoryFigures(loc.version, usage, stat)
  } catch (err) {
    if (err instanceof MemoryPressureError && err.path === undefined) {
      throw new MemoryPressureError(err.code, err.message, { path: file, cause: err })
    }
    throw err
  }
}
