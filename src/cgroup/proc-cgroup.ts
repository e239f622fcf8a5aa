// Parser for /proc/<pid>/cgroup (cgroups(7)): which cgroup the process is in, per hierarchy.

import { MemoryPressureError } from '../errors.js'

/** One line of `/proc/<pid>/cgroup`: `hierarchy-ID:controller-list:cgroup-path`. */
export interface ProcCgroupEntry {
  /** Hierarchy id; `0` for the cgroup v2 unified hierarchy. Matches nothing in mountinfo. */
  hierarchyId: number
  /**
   * Controllers bound to the hierarchy (`['cpu', 'cpuacct']`, `['name=systemd']`); `[]` for the
   * cgroup v2 line, whose controllers are listed in `cgroup.controllers` instead.
   */
  controllers: string[]
  /**
   * The cgroup's path in the hierarchy, relative to the reading process's cgroup namespace root
   * (cgroup_namespaces(7)): `/../x` means outside that root. May itself contain `:`.
   */
  path: string
}

/**
 * Parses the text of `/proc/<pid>/cgroup`. Each line is split on its first two colons only,
 * because the path may contain colons. Empty lines are ignored.
 *
 * @param text the whole file
 * @param source file name to report in errors (`.path`)
 * @throws MemoryPressureError `ERR_PARSE` on a malformed line
 */
export function parseProcCgroup(text: string, source?: string): ProcCgroupEntry[] {
  const entries: ProcCgroupEntry[] = []
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] as string
    if (line === '') continue
    const fail = (why: string): never => {
      throw new MemoryPressureError('ERR_PARSE', `cgroup line ${i + 1}: ${why}: ${JSON.stringify(line)}`,
        source === undefined ? {} : { path: source })
    }
    const first = line.indexOf(':')
    const second = first === -1 ? -1 : line.indexOf(':', first + 1)
    if (second === -1) return fail('expected hierarchy-ID:controller-list:cgroup-path')
    const id = line.slice(0, first)
    const controllers = line.slice(first + 1, second)
    const path = line.slice(second + 1)
    if (!/^\d+$/.test(id)) return fail('the hierarchy id is not a decimal number')
    if (!path.startsWith('/')) return fail('the cgroup path is not absolute')
    entries.push({
      hierarchyId: Number(id),
      controllers: controllers === '' ? [] : controllers.split(','),
      path,
    })
  }
  return entries
}
