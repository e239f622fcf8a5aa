// What every test file on a real cgroup v1 sets up: why it skips (no usable memory cgroup of its
// own, no eventfd thresholds, or the built package it loads is missing), and test cgroups that are
// removed after each test, whatever it did.

import fs from 'node:fs'
import path from 'node:path'
import { afterEach, it } from 'vitest'
import { CgroupV1Backend } from '../../src/backends/cgroup-v1.js'
import { type TestCgroup, createTestCgroup, ownV1MemoryCgroup } from './cgroup.js'

/** `needs`: a built file the tests load (skipped with "dist/ not built" without it). */
export function v1Suite(needs: string) {
  const own = ownV1MemoryCgroup()
  const probe = CgroupV1Backend.probe()
  const skip = 'reason' in own ? own.reason : !probe.available ? probe.reasons.join('; ') : !fs.existsSync(needs) ? 'dist/ not built (npm run build)' : null
  const cgroups: TestCgroup[] = []
  afterEach(async () => {
    // children first: a parent cgroup cannot be removed while it has children
    for (const cg of cgroups.reverse()) await cg.remove()
    cgroups.length = 0
  })
  return {
    own,
    probe,
    /** `it`, or `it.skip` when the file cannot run here; `suffix` says why, for the test's name. */
    test: skip === null ? it : it.skip,
    suffix: skip === null ? '' : ` (skipped: ${skip})`,
    /** A test cgroup below `parent`, removed after the test. */
    cgroup(parent: string, limit?: number): TestCgroup {
      const cg = createTestCgroup(parent, { limit })
      cgroups.push(cg)
      return cg
    },
  }
}

/** The OOM kills counted in `cg` (`memory.oom_control`). */
export function oomKills(cg: TestCgroup): number {
  const line = fs.readFileSync(path.join(cg.path, 'memory.oom_control'), 'utf8').split('\n').find((l) => l.startsWith('oom_kill '))
  return Number(line?.split(' ')[1])
}
