// In the VM: the cgroup v2 memory controller is there, and discovery and the effective limit from
// src/cgroup/ work on it, with the limit held by an ancestor.

import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { cgroupOfPid, effectiveLimit, findMemoryCgroup, readFigures } from '../../../src/cgroup/index.js'
import { type CgroupChild, type TestCgroup, spawnInCgroup } from '../../helpers/cgroup.js'
import { makeV2Nested, testParent } from './cgroup2.js'

const MiB = 2 ** 20
const allocator = fileURLToPath(new URL('../../helpers/allocator.mjs', import.meta.url))
const dist = new URL('../../../dist/index.js', import.meta.url).href

/** A child that opens a monitor through the public API and prints what it watches. */
const monitorScript = `
const { createMemoryMonitor } = await import(${JSON.stringify(dist)})
process.stdout.write('ready\\n')
const m = createMemoryMonitor({ backend: 'cgroup-v2' })
const s = m.snapshot()
process.stdout.write(JSON.stringify({ backend: m.backend, cgroup: m.cgroup, limit: s.limit, limitHolder: s.limitHolder }) + '\\n')
await m.close()
`

describe('cgroup v2 memory controller', () => {
  const made: TestCgroup[] = []
  let child: CgroupChild | undefined
  afterEach(async () => {
    child?.proc.kill('SIGKILL')
    child = undefined
    for (const cg of made.splice(0).reverse()) await cg.remove()
  })

  it('is enabled, and this process finds its own cgroup as v2 with memory.current', () => {
    const loc = findMemoryCgroup()
    expect(loc).toMatchObject({ version: 2, relativePath: '/mp-vm/runner' })
    expect(fs.readFileSync(path.join(loc.path, 'cgroup.controllers'), 'utf8').split(/\s+/)).toContain('memory')
    expect(readFigures(loc).usage).toBeGreaterThan(0)
    expect(effectiveLimit(loc)).toEqual({ limit: Infinity, holder: null, source: null })
  })

  it('effectiveLimit finds memory.max on the parent when the child has none', async () => {
    const { outer: parent, leaf } = makeV2Nested(testParent(), { max: 96 * MiB })
    made.push(parent, leaf)
    expect(fs.readFileSync(path.join(leaf.path, 'memory.max'), 'utf8').trim()).toBe('max')
    child = await spawnInCgroup(leaf, allocator)
    const loc = cgroupOfPid(child.proc.pid as number)
    expect(loc).toMatchObject({ version: 2, path: leaf.path })
    expect(effectiveLimit(loc)).toEqual({ limit: 96 * MiB, holder: parent.path, source: 'memory.max' })
    // A lower memory.high on the leaf wins, and names the leaf.
    fs.writeFileSync(path.join(leaf.path, 'memory.high'), String(64 * MiB))
    expect(effectiveLimit(loc)).toEqual({ limit: 64 * MiB, holder: leaf.path, source: 'memory.high' })
    // Usage is charged to the leaf and counted in the parent (hierarchical).
    const before = readFigures(loc)
    await child.send(`alloc ${16 * MiB}`)
    const after = readFigures(loc)
    expect(after.usage - before.usage).toBeGreaterThanOrEqual(16 * MiB)
    expect(after.rss - before.rss).toBeGreaterThanOrEqual(16 * MiB)
    expect(readFigures({ ...loc, path: parent.path }).usage).toBeGreaterThanOrEqual(after.usage)
  })

  it('a monitor opened in the child watches the ancestor that holds the limit', async () => {
    const { outer: parent, leaf } = makeV2Nested(testParent(), { max: 80 * MiB })
    made.push(parent, leaf)
    child = await spawnInCgroup(leaf, '--input-type=module', ['-e', monitorScript])
    const [line] = await child.output.count(1, 60_000)
    expect(JSON.parse(line ?? '{}')).toEqual({ backend: 'cgroup-v2', cgroup: parent.path, limit: 80 * MiB, limitHolder: parent.path })
  })
})
