// Parser for /proc/<pid>/mountinfo (proc(5)): the mount table, used to find where each cgroup
// hierarchy is mounted and which part of the hierarchy (`root`) each mount shows.

import { MemoryPressureError } from '../errors.js'

/** One line of `/proc/<pid>/mountinfo`, with octal escapes decoded. See proc(5). */
export interface MountInfoEntry {
  /** Unique id of the mount (field 1). */
  mountId: number
  /** Id of the parent mount, or of itself for the root of the mount tree (field 2). */
  parentId: number
  /**
   * The directory of the filesystem that forms the root of this mount (field 4). For a cgroup
   * filesystem this is a cgroup path, relative to the reading process's cgroup namespace: a bind
   * mount of `/docker/<id>` shows that path; a mount from outside the namespace can show `/..`.
   */
  root: string
  /** Where the mount is, relative to the reading process's root directory (field 5). */
  mountPoint: string
  /** Per-mount options (field 6), e.g. `['ro', 'nosuid', 'relatime']`. */
  mountOptions: string[]
  /** Filesystem type, e.g. `cgroup`, `cgroup2`, `tmpfs` (first field after ` - `). */
  fsType: string
  /** Filesystem-specific source, e.g. `cgroup`, `/dev/sda1`; may be the empty string. */
  source: string
  /** Per-superblock options; for cgroup v1 these name the controllers (`rw,memory`). */
  superOptions: string[]
}

const decimal = /^\d+$/
const majorMinor = /^\d+:\d+$/

/**
 * Parses the text of `/proc/<pid>/mountinfo`. Empty lines are ignored.
 *
 * @param text the whole file
 * @param source file name to report in errors (`.path`)
 * @returns one entry per mount, in file order (later entries can shadow earlier ones)
 * @throws MemoryPressureError `ERR_PARSE` on any malformed line: a wrong value is never returned
 */
export function parseMountInfo(text: string, source?: string): MountInfoEntry[] {
  const entries: MountInfoEntry[] = []
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] as string
    if (line === '') continue
    entries.push(parseLine(line, i + 1, source))
  }
  return entries
}

function parseLine(line: string, lineNo: number, source: string | undefined): MountInfoEntry {
  // Fields are separated by single spaces; the kernel escapes spaces inside fields as \040
  // (fs/proc_namespace.c, mangle()), so splitting on ' ' is exact. An empty mount source shows
  // as two spaces in a row, which is why this is not a split on /\s+/.
  const fields = line.split(' ')
  const fail = (why: string): never => {
    throw new MemoryPressureError('ERR_PARSE', `mountinfo line ${lineNo}: ${why}: ${JSON.stringify(line)}`,
      source === undefined ? {} : { path: source })
  }
  // proc(5): six fixed fields, zero or more optional fields (`shared:1`, `master:2`...), then a
  // lone hyphen, then filesystem type, mount source and super options.
  let sep = -1
  for (let j = 6; j < fields.length; j++) {
    if (fields[j] === '-') { sep = j; break }
  }
  if (sep === -1) return fail('no " - " separator after the sixth field')
  if (fields.length - sep - 1 !== 3) return fail('expected exactly three fields after " - "')
  const [id, parent, dev, root, mountPoint, mountOptions] = fields as [string, string, string, string, string, string]
  const fsType = fields[sep + 1] as string
  const mountSource = fields[sep + 2] as string
  const superOptions = fields[sep + 3] as string
  if (!decimal.test(id) || !decimal.test(parent)) return fail('mount ids are not decimal numbers')
  if (!majorMinor.test(dev)) return fail('the device field is not major:minor')
  for (let j = 0; j < sep; j++) {
    if (fields[j] === '') return fail('empty field')
  }
  if (fsType === '' || superOptions === '') return fail('empty filesystem type or super options')
  if (!mountPoint.startsWith('/')) return fail('the mount point is not an absolute path')
  return {
    mountId: Number(id),
    parentId: Number(parent),
    root: unescapeOctal(root),
    mountPoint: unescapeOctal(mountPoint),
    mountOptions: mountOptions.split(',').map(unescapeOctal),
    fsType: unescapeOctal(fsType),
    source: unescapeOctal(mountSource),
    superOptions: superOptions.split(',').map(unescapeOctal),
  }
}

const octalEscape = /\\([0-3][0-7]{2})/g

/**
 * Decodes the kernel's `\ooo` escapes (space, tab, newline and backslash are escaped; other
 * bytes are raw). Works on bytes so that escaped bytes of a multi-byte UTF-8 name decode right.
 */
function unescapeOctal(field: string): string {
  if (!field.includes('\\')) return field
  const bytes: number[] = []
  let last = 0
  for (const match of field.matchAll(octalEscape)) {
    bytes.push(...Buffer.from(field.slice(last, match.index), 'utf8'))
    bytes.push(parseInt(match[1] as string, 8))
    last = match.index + match[0].length
  }
  bytes.push(...Buffer.from(field.slice(last), 'utf8'))
  return Buffer.from(bytes).toString('utf8')
}
