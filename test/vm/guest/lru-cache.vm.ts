// In the VM: the lru-cache plugin on cgroup v2. A child filling an lru-cache past its cgroup's
// memory.max is OOM-killed; the same child with the plugin (public API, backend chosen by 'auto')
// gives memory back at each pressure level and lives.

import fs from 'node:fs'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { type CgroupChild, type TestCgroup, spawnInCgroup } from '../../helpers/cgroup.js'
import { makeV2Cgroup, readEvents, testParent } from './cgroup2.js'

const MiB = 2 ** 20
const cacheChild = fileURLToPath(new URL('../../helpers/cache-child.mjs', import.meta.url))
const distPlugin = fileURLToPath(new URL('../../../dist/plugins/lru-cache.js', import.meta.url))
const LIMIT = 192 * MiB
const FILL = `fill 400 ${MiB}` // 400 MiB of touched 1 MiB Buffers

const made: TestCgroup[] = []
afterEach(async () => {
  for (const cg of made.splice(0)) await cg.remove()
})

/** Sends the fill; resolves with the child's answer, or with its exit when it dies first. */
async function fill(child: CgroupChild): Promise<{ held: number } | { exited: Awaited<CgroupChild['exited']> }> {
  child.proc.stdin.on('error', () => {}) // EPIPE if the OOM killer got there first
  const exited = child.exited.then((e) => ({ exited: e }))
  return Promise.race([child.send(FILL).catch(() => exited), exited])
}

describe('the lru-cache plugin under a cgroup v2 memory.max', () => {
  it(`keeps a child alive that is OOM-killed without it (${LIMIT / MiB} MiB limit, ${FILL})`, async () => {
    expect(fs.existsSync(distPlugin)).toBe(true)
    const bare = makeV2Cgroup(testParent(), { max: LIMIT })
    made.push(bare)
    const unprotected = await fill(await spawnInCgroup(bare, cacheChild))
    expect(unprotected).toEqual({ exited: { code: null, signal: 'SIGKILL' } })
    expect(readEvents(bare.path).oom_kill).toBe(1)

    const cg = makeV2Cgroup(testParent(), { max: LIMIT })
    made.push(cg)
    const child = await spawnInCgroup(cg, cacheChild, ['--plugin'])
    const outcome = await fill(child)
    const lines = child.output.items
    expect(outcome, `child output:\n${lines.join('\n')}\n${child.stderr()}`).toHaveProperty('held')
    expect(readEvents(cg.path).oom_kill).toBe(0)
    expect(lines.filter((l) => l.startsWith('error'))).toEqual([])
    const shrinks = lines.filter((l) => l.startsWith('shrink ')).map((l) => JSON.parse(l.slice(7)) as {
      reportedBytes: number
      shrinkers: Array<{ name: string }>
    })
    // A cycle collects garbage first and asks the cache only when that was not enough: every cycle
    // that asked, asked the cache and got bytes back, and at least one had to ask.
    const asking = shrinks.filter((s) => s.shrinkers.length > 0)
    expect(asking.length).toBeGreaterThanOrEqual(1)
    expect(asking.every((s) => s.shrinkers[0]?.name === 'lru-cache' && s.reportedBytes > 0)).toBe(true)
    // What the cache holds at the end fits under the limit, with the rest of the process.
    expect((outcome as { held: number }).held).toBeLessThan(LIMIT)
    expect(lines.some((l) => l.startsWith('pressure '))).toBe(true)
  })
})
