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

/**
 * {@link testParent} when this process runs in a cgroup v2 memory cgroup whose parent has the memory
 * controller for its children and can be written (the VM of test/vm-v2.test.ts), else why not.
 * Never throws: host test files use it to skip with the reason.
 */
export function v2TestParent(): { dir: string } | { reason: string } {
  let loc: CgroupLocation
  try {
    loc = findMemoryCgroup()
  } catch (err) {
    return { reason: `no memory cgroup (${(err as Error).message})` }
  }
  if (loc.version !== 2) return { reason: `this process's memory cgroup is cgroup v${loc.version}, not v2` }
  const parent = parentOf(loc)
  if (parent === null) return { reason: 'this process is in the cgroup v2 root' }
  try {
    const control = fs.readFileSync(path.join(parent.path, 'cgroup.subtree_control'), 'utf8')
    if (!control.split(/\s+/).includes('memory')) return { reason: `${parent.path} does not give its children the memory controller` }
    fs.accessSync(parent.path, fs.constants.W_OK)
  } catch (err) {
    return { reason: `${parent.path} is not usable (${(err as Error).message})` }
  }
  return { dir: parent.path }
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

/**
 * A cgroup with `limits` that gives its children the memory controller, and a child of it with no
 * limit of its own. Remove `leaf` before `outer`.
 */
export function makeV2Nested(parent: string, limits: V2Limits = {}): { outer: TestCgroup; leaf: TestCgroup } {
  const outer = makeV2Cgroup(parent, limits)
  try {
    fs.writeFileSync(path.join(outer.path, 'cgroup.subtree_control'), '+memory')
    return { outer, leaf: makeV2Cgroup(outer.path) }
  } catch (err) {
    fs.rmdirSync(outer.path)
    throw err
  }
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
