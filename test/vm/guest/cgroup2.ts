// In the VM: cgroup v2 test cgroups made and removed by the shared helpers (test/helpers/cgroup.ts),
// with v2 limits, in the subtree delegated to the test run (see test/vm/init.sh).

import fs from 'node:fs'
import path from 'node:path'
import { type CgroupLocation, findMemoryCgroup, parentOf } from '../../../src/cgroup/index.js'
import { type TestCgroup, createTestCgroup } from '../../helpers/cgroup.js'

/** This process's cgroup v2 memory cgroup; throws outside a v2 guest. */
export function own(): CgroupLocation {
  const loc = findMemoryCgroup()
  if (loc.version !== 2) throw new Error(`not in a cgroup v2 guest: ${JSON.stringify(loc)}`)
  return loc
}

/**
 * Where tests make their cgroups: the parent of this process's leaf (the delegated subtree). v2
 * cannot give the leaf itself children with the memory controller while processes live in it.
 */
export function testParent(): string {
  const parent = parentOf(own())
  if (parent === null) throw new Error('the test runner is in the root cgroup; see test/vm/init.sh')
  return parent.path
}

/** Limits of a v2 test cgroup, in bytes. */
export interface V2Limits {
  /** `memory.max`: the OOM killer runs above it. */
  max?: number
  /** `memory.high`: allocations above it are throttled and reclaimed. */
  high?: number
}

/** Makes a uniquely named child of `parent` with the v2 limits given; `remove()` it in afterEach. */
export function makeV2Cgroup(parent: string, limits: V2Limits = {}): TestCgroup {
  const cg = createTestCgroup(parent)
  try {
    if (limits.max !== undefined) fs.writeFileSync(path.join(cg.path, 'memory.max'), String(limits.max))
    if (limits.high !== undefined) fs.writeFileSync(path.join(cg.path, 'memory.high'), String(limits.high))
  } catch (err) {
    fs.rmdirSync(cg.path)
    throw err
  }
  return cg
}

/** Parses `memory.events` (`key value` lines) into numbers by key. */
export function readEvents(cg: string, file = 'memory.events'): Record<string, number> {
  const out: Record<string, number> = {}
  for (const line of fs.readFileSync(path.join(cg, file), 'utf8').split('\n')) {
    const [key, value] = line.split(' ')
    if (key && value !== undefined) out[key] = Number(value)
  }
  return out
}
