// End to end under load: the fastify example service in a 256 MiB cgroup, loaded by autocannon with
// requests that only grow its cache. With node-memory-pressure it is never OOM-killed; without, it is.

import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { CgroupV1Backend } from '../src/backends/cgroup-v1.js'
import { type TestCgroup, createTestCgroup, ownV1MemoryCgroup, spawnInCgroup } from './helpers/cgroup.js'

const MiB = 2 ** 20
const service = fileURLToPath(new URL('../examples/fastify-service.mjs', import.meta.url))
const distEntry = fileURLToPath(new URL('../dist/plugins/fastify.js', import.meta.url))
const own = ownV1MemoryCgroup()
const probe = CgroupV1Backend.probe()
const skip = !fs.existsSync(distEntry) ? 'dist/ not built (npm run build)' : 'reason' in own ? own.reason : !probe.available ? probe.reasons.join('; ') : null
const test = skip === null ? it : it.skip
const suffix = skip === null ? '' : ` (skipped: ${skip})`

// 1500 new pages of 512 KiB: nearly three times the limit.
const env = { LOAD_REQUESTS: '1500', CONNECTIONS: '8' }

const cgroups: TestCgroup[] = []
afterEach(async () => {
  for (const cg of cgroups.splice(0)) await cg.remove()
})

function oomKills(cg: TestCgroup): number {
  return Number(/oom_kill (\d+)/.exec(fs.readFileSync(path.join(cg.path, 'memory.oom_control'), 'utf8'))?.[1])
}

interface Result {
  requests: number
  ok: number
  shed: number
  errors: number
  levels: string[]
  shrinks: number
  evicted: number
  cacheBytes: number
}

describe('fastify under load in a 256 MiB cgroup', () => {
  test(`with node-memory-pressure the service shrinks its cache, serves every request or sheds it, and is not OOM-killed${suffix}`, { timeout: 120_000 }, async () => {
    if (!('dir' in own)) return
    const cg = createTestCgroup(own.dir, { limit: 256 * MiB })
    cgroups.push(cg)
    const child = await spawnInCgroup(cg, service, ['--serve'], env)
    const [line] = (await child.output.until((lines) => lines.some((l) => l.startsWith('result ')), 110_000)).filter((l) => l.startsWith('result '))
    const exit = await child.exited
    const result = JSON.parse((line ?? '').slice('result '.length)) as Result
    expect(exit).toEqual({ code: 0, signal: null })
    expect(oomKills(cg)).toBe(0)
    expect(result.errors).toBe(0)
    expect(result.ok + result.shed).toBe(result.requests)
    expect(result.requests).toBeGreaterThanOrEqual(1500)
    expect(result.ok).toBeGreaterThan(0)
    expect(result.shrinks).toBeGreaterThan(0)
    expect(result.evicted).toBeGreaterThan(0)
    expect(result.levels).toContain('moderate')
    expect(result.cacheBytes).toBeLessThan(256 * MiB)
  })

  test(`without it the same load gets the service OOM-killed${suffix}`, { timeout: 120_000 }, async () => {
    if (!('dir' in own)) return
    const cg = createTestCgroup(own.dir, { limit: 256 * MiB })
    cgroups.push(cg)
    const child = await spawnInCgroup(cg, service, ['--serve', '--no-sdk'], env)
    const exit = await child.exited
    expect(exit).toEqual({ code: null, signal: 'SIGKILL' })
    expect(oomKills(cg)).toBeGreaterThanOrEqual(1)
    expect(child.output.items.some((l) => l.startsWith('result '))).toBe(false)
  })
})
