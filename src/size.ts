// Thresholds as users write them: bytes, size strings ('512MiB', '1.5G') or a share of the limit
// ('80%'), turned into whole bytes against a known limit.

import { MemoryPressureError } from './errors.js'

/**
 * A memory threshold: a number of bytes, a size string (`'512MiB'`, `'1.5G'`, `'64k'`) or a
 * percentage of the effective limit (`'80%'`).
 *
 * Size suffixes are binary, as the kernel reads them in `memory.limit_in_bytes` and as Docker reads
 * `--memory`: `K`/`KB`/`KiB` = 1024, `M` = 1024², `G` = 1024³, `T` = 1024⁴; case does not matter.
 */
export type Threshold = number | `${number}%` | `${number}${SizeUnit}` | string

type SizeUnit = 'B' | 'K' | 'KB' | 'KiB' | 'M' | 'MB' | 'MiB' | 'G' | 'GB' | 'GiB' | 'T' | 'TB' | 'TiB'

/** A threshold once parsed, before it is resolved against a limit. */
export type ParsedThreshold =
  | { kind: 'bytes'; bytes: number; text: string }
  | { kind: 'percent'; percent: number; text: string }

/** The smallest percentage threshold, in bytes: one page (4 KiB, the smallest page size Linux has). */
const PAGE_BYTES = 4096

const unitPowers: Record<string, number> = { '': 0, b: 0, k: 1, m: 2, g: 3, t: 4 }
const sizePattern = /^\s*(\d+(?:\.\d+)?|\.\d+)\s*(?:([bkmgt])(?:i?b)?)?\s*$/i
const percentPattern = /^\s*(\d+(?:\.\d+)?|\.\d+)\s*%\s*$/

function invalid(message: string, option: string, value: unknown): MemoryPressureError {
  return new MemoryPressureError('ERR_INVALID_THRESHOLD', `${option}: ${message} (received ${describe(value)})`)
}

/** A short rendering of a received value for error messages. */
export function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)
  if (typeof value === 'bigint') return `${value}n`
  if (typeof value === 'number' || typeof value === 'boolean' || value == null) return String(value)
  if (typeof value === 'function') return 'a function'
  if (typeof value === 'symbol') return 'a symbol'
  return Array.isArray(value) ? 'an array' : `an object`
}

/**
 * Parses a threshold without resolving percentages. Throws `TypeError` for a value of the wrong
 * type and `MemoryPressureError('ERR_INVALID_THRESHOLD')` for zero, negative, NaN or fractional
 * numbers of bytes, byte counts above 2^53, unparsable strings and strings without a unit or `%`
 * (`'80'`: give `80` for bytes). A size with a unit of K or more is rounded down to whole bytes
 * (`'1.9K'` is 1945 bytes); `'1.5B'` is refused.
 *
 * @param value - what the user passed
 * @param option - the option's name, used in messages (`'threshold'`)
 */
export function parseThreshold(value: unknown, option = 'threshold'): ParsedThreshold {
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw invalid('must be a finite number of bytes', option, value)
    if (value <= 0) throw invalid('must be greater than zero', option, value)
    if (!Number.isSafeInteger(Math.floor(value))) throw invalid('is beyond 2^53 bytes', option, value)
    if (!Number.isInteger(value)) throw invalid('must be a whole number of bytes', option, value)
    return { kind: 'bytes', bytes: value, text: String(value) }
  }
  if (typeof value !== 'string') {
    throw new TypeError(`${option} must be a number of bytes, a size string such as '512MiB' or a percentage such as '80%' (received ${describe(value)})`)
  }
  const percent = percentPattern.exec(value)
  if (percent) {
    const p = Number(percent[1])
    if (!(p > 0) || p > 100) throw invalid('a percentage must be above 0% and at most 100%', option, value)
    return { kind: 'percent', percent: p, text: value.trim() }
  }
  const size = sizePattern.exec(value)
  if (!size) throw invalid(`is not a size ('512MiB', '1.5G', 1048576) or a percentage ('80%')`, option, value)
  // '80' could mean bytes, MiB or percent: a string must say which (a number is bytes).
  if (size[2] === undefined) throw invalid(`needs a unit ('${size[1]}MiB') or '%' ('${size[1]}%'); give a number for bytes`, option, value)
  const exact = Number(size[1]) * 1024 ** (unitPowers[size[2].toLowerCase()] ?? 0)
  if (size[2].toLowerCase() === 'b' && !Number.isInteger(exact)) throw invalid('must be a whole number of bytes', option, value)
  const bytes = Math.floor(exact)
  if (!(bytes > 0)) throw invalid('must be at least one byte', option, value)
  if (!Number.isSafeInteger(bytes)) throw invalid('is beyond 2^53 bytes', option, value)
  return { kind: 'bytes', bytes, text: value.trim() }
}

/**
 * Resolves a parsed threshold to whole bytes against the effective limit (`Infinity` when there is
 * none). Percentages need a finite limit (`ERR_NO_LIMIT`) and must come to at least one page
 * (4096 bytes) of it; every threshold must be at most the limit (`ERR_INVALID_THRESHOLD`), since
 * usage can never reach one above it.
 *
 * @param cgroup - the cgroup the limit was read from: `ERR_NO_LIMIT` names it (message and `.path`)
 */
export function resolveThreshold(parsed: ParsedThreshold, limit: number, option = 'threshold', cgroup?: string): number {
  let bytes: number
  if (parsed.kind === 'percent') {
    if (!Number.isFinite(limit)) {
      const which = cgroup === undefined ? 'the cgroup' : `the cgroup ${cgroup}`
      throw new MemoryPressureError('ERR_NO_LIMIT', `${option}: ${parsed.text} needs a memory limit, and ${which} has none; give bytes instead`,
        cgroup === undefined ? {} : { path: cgroup })
    }
    bytes = Math.floor((limit * parsed.percent) / 100)
    // The kernel counts memory in pages: a share of the limit below one page watches nothing real.
    // A hysteresis is a distance between two watched points, not a point: it is exempt.
    if (bytes < PAGE_BYTES && option !== 'hysteresis') throw invalid(`is less than one page (${PAGE_BYTES} bytes) of the ${limit}-byte limit`, option, parsed.text)
    if (bytes <= 0) throw invalid(`is less than one byte of the ${limit}-byte limit`, option, parsed.text)
  } else {
    bytes = parsed.bytes
  }
  if (bytes > limit) throw invalid(`is above the effective limit of ${limit} bytes`, option, parsed.text)
  return bytes
}

/** Formats bytes for humans: `1.5 GiB`, `300 MiB`, `512 B`. */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes)) return 'unlimited'
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB']
  let value = Math.abs(bytes)
  let i = 0
  while (value >= 1024 && i < units.length - 1) {
    value /= 1024
    i++
  }
  const sign = bytes < 0 ? '-' : ''
  return `${sign}${i === 0 ? value : value.toFixed(value >= 100 ? 0 : 1)} ${units[i]}`
}
