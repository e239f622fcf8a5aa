// The cgroup layer against this machine's real /proc and cgroupfs: discovery, resolution, limits
// and figures of the test runner's own memory cgroup. Read-only: nothing is created or moved.

import { spawn, spawnSync } from 'node:child_process'
import { readFileSync, statSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import {
  cgroupOfPid,
  effectiveLimit,
  findMemoryCgroup,
  parentOf,
  parseLimitValue,
  parseMountInfo,
  parseProcCgroup,
  readFigures,
  readUsage,
  resolveCgroupPath,
  type CgroupLocation,
} from '../src/cgroup/index.js'

const memoryLine = parseProcCgroup(readFileSync('/proc/self/cgroup', 'utf8'))
  .find((l) => l.hierarchyId !== 0 && l.controllers.includes('memory'))
const skip = memoryLine === undefined ? ' [skipped: /proc/self/cgroup has no cgroup v1 memory line]' : ''

describe.skipIf(memoryLine === undefined)(`this machine's v1 memory cgroup${skip}`, () => {
  it('findMemoryCgroup() returns version 1 with a path under the memory mount that exists', () => {
    const loc = findMemoryCgroup()
    const mounts = parseMountInfo(readFileSync('/proc/self/mountinfo', 'utf8'))
      .filter((m) => m.fsType === 'cgroup' && m.superOptions.includes('memory'))
    expect(loc.version).toBe(1)
    expect(mounts.map((m) => m.mountPoint)).toContain(loc.mountPoint)
    expect(loc.path.startsWith(`${loc.mountPoint}/`) || loc.path === loc.mountPoint).toBe(true)
    expect(loc.relativePath).toBe(memoryLine?.path)
    expect(statSync(loc.path).isDirectory()).toBe(true)
    expect(statSync(`${loc.path}/memory.usage_in_bytes`).isFile()).toBe(true)
  })

  it('cgroupOfPid(process.pid) and resolveCgroupPath(path) agree with findMemoryCgroup()', () => {
    const loc = findMemoryCgroup()
    expect(cgroupOfPid(process.pid)).toEqual(loc)
    expect(findMemoryCgroup({ pid: process.pid })).toEqual(loc)
    expect(resolveCgroupPath(loc.path)).toEqual(loc)
  })

  it('readFigures gives usage > 0 and workingSet <= usage', () => {
    const loc = findMemoryCgroup()
    const figures = readFigures(loc)
    expect(figures.usage).toBeGreaterThan(0)
    expect(figures.rss).toBeGreaterThan(0)
    expect(figures.workingSet).toBeLessThanOrEqual(figures.usage)
    expect(figures.workingSet).toBe(Math.max(0, figures.usage - figures.inactiveFile))
    expect(readUsage(loc)).toBeGreaterThan(0n)
  })

  it('effectiveLimit is the minimum of the visible limit files, or the kernel\'s hierarchical one', () => {
    const loc = findMemoryCgroup()
    let lowest: bigint | null = null
    let lowestAt: string | null = null
    for (let cg: CgroupLocation | null = loc; cg !== null; cg = parentOf(cg)) {
      const bytes = parseLimitValue(readFileSync(`${cg.path}/memory.limit_in_bytes`, 'utf8'), 1)
      if (bytes !== null && (lowest === null || bytes < lowest)) [lowest, lowestAt] = [bytes, cg.path]
    }
    const limit = effectiveLimit(loc)
    if (limit.source === 'hierarchical_memory_limit') {
      expect(limit.holder).toBeNull()
      expect(lowest === null || BigInt(limit.limit) < lowest).toBe(true)
    } else if (lowest === null) {
      expect(limit).toEqual({ limit: Infinity, holder: null, source: null })
    } else {
      expect(limit).toEqual({ limit: Number(lowest), holder: lowestAt, source: 'memory.limit_in_bytes' })
    }
  })

  it('parentOf walks up to the mount point and stops there', () => {
    let loc: CgroupLocation | null = findMemoryCgroup()
    let last: CgroupLocation | null = null
    let steps = 0
    for (; loc !== null; loc = parentOf(loc)) {
      expect(statSync(loc.path).isDirectory()).toBe(true)
      last = loc
      steps++
    }
    expect(last?.path).toBe(last?.mountPoint)
    const start = findMemoryCgroup()
    expect(steps).toBe(start.path.slice(start.mountPoint.length).split('/').filter(Boolean).length + 1)
  })
})

// A child in its own mount namespace, with the memory hierarchy bind-mounted from the child's own
// cgroup (as a container runtime does): its /proc/<pid>/mountinfo shows that cgroup as the mount
// root, which would map to the *host's* root memory cgroup if it were applied to our mounts.
const canUnshare = memoryLine !== undefined &&
  spawnSync('unshare', ['--mount', '--propagation', 'private', 'true'], { stdio: 'ignore' }).status === 0
const unshareSkip = canUnshare ? '' : ' [skipped: no v1 memory line, or unshare --mount is not permitted here]'

describe.skipIf(!canUnshare)(`cgroupOfPid across mount namespaces${unshareSkip}`, () => {
  it('maps the pid\'s cgroup through this process\'s mounts, not the pid\'s', async () => {
    const own = findMemoryCgroup()
    const script = `mount --bind '${own.path}' '${own.mountPoint}' && echo ready && exec sleep 30`
    const child = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script], { stdio: ['ignore', 'pipe', 'inherit'] })
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (chunk: Buffer) => { if (chunk.toString().includes('ready')) resolve() })
        child.once('exit', (code) => reject(new Error(`unshare exited with ${code}`)))
      })
      const theirs = parseMountInfo(readFileSync(`/proc/${child.pid}/mountinfo`, 'utf8'))
        .filter((m) => m.mountPoint === own.mountPoint && m.superOptions.includes('memory'))
      expect(theirs.at(-1)?.root).toBe(own.relativePath)
      expect(cgroupOfPid(child.pid as number)).toEqual(own)
    } finally {
      child.kill('SIGKILL')
    }
  })
})
