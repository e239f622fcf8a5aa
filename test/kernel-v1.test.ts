// Real-kernel tests on cgroup v1: child cgroups below this process's own, children that allocate,
// thresholds from the kernel. Skipped with the reason in the name where that cannot run.

import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect } from 'vitest'
import { type CloseEvent, type ThresholdEvent, createMemoryMonitor } from '../src/monitor.js'
import { Collector, turns } from './helpers/collect.js'
import { openFdCount, spawnInCgroup } from './helpers/cgroup.js'
import { v1Suite } from './helpers/v1-suite.js'

const MiB = 2 ** 20
const allocator = fileURLToPath(new URL('./helpers/allocator.mjs', import.meta.url))
const distEntry = fileURLToPath(new URL('../dist/index.js', import.meta.url))
const { own, test, suffix, cgroup } = v1Suite(distEntry)



describe('cgroup v1 on a real kernel', () => {
  test(`a child using onMemoryThreshold on its own cgroup is called up and down${suffix}`, async () => {
    if (!('dir' in own)) return
    const cg = cgroup(own.dir, 256 * MiB)
    const child = await spawnInCgroup(cg, allocator, ['--watch', '60%'])
    const threshold = Math.floor(256 * MiB * 0.6)
    const usage = () => Number(fs.readFileSync(path.join(cg.path, 'memory.usage_in_bytes'), 'utf8'))
    while (usage() < threshold + 4 * MiB) await child.send(`alloc ${MiB}`)
    await child.output.until((lines) => lines.some((l) => l.startsWith('event ')))
    while (usage() > threshold - 4 * MiB) await child.send('free')
    await child.output.until((lines) => lines.filter((l) => l.startsWith('event ')).length >= 2)
    const events = child.output.items.filter((l) => l.startsWith('event ')).map((l) => JSON.parse(l.slice(6)) as ThresholdEvent)
    expect(events.map((e) => e.direction)).toEqual(['up', 'down'])
    expect(events[0]).toMatchObject({ threshold, limit: 256 * MiB, backend: 'cgroup-v1', cgroup: cg.path, initial: false, signal: 'eventfd' })
    expect(events[0]?.usage).toBeGreaterThanOrEqual(threshold)
    expect(events[1]?.usage).toBeLessThan(threshold)
    expect(events[0]?.workingSet).toBeLessThanOrEqual(events[0]?.usage ?? 0)
    expect(child.output.items.filter((l) => l.startsWith('error'))).toEqual([])
  })

  test(`a percentage is taken of the limit an ancestor holds, and watched there${suffix}`, async () => {
    if (!('dir' in own)) return
    const parent = cgroup(own.dir, 192 * MiB)
    const inner = cgroup(parent.path)
    const child = await spawnInCgroup(inner, allocator, ['--watch', '75%'])
    const threshold = Math.floor(192 * MiB * 0.75)
    const usage = () => Number(fs.readFileSync(path.join(parent.path, 'memory.usage_in_bytes'), 'utf8'))
    while (usage() < threshold + 4 * MiB) await child.send(`alloc ${MiB}`)
    const [line] = await child.output.until((lines) => lines.some((l) => l.startsWith('event ')))
    const event = JSON.parse((line ?? '').slice(6)) as ThresholdEvent
    expect(event).toMatchObject({ threshold, limit: 192 * MiB, cgroup: parent.path, direction: 'up' })
  })

  test(`an up threshold already crossed at registration is reported with initial: true${suffix}`, async () => {
    if (!('dir' in own)) return
    const cg = cgroup(own.dir, 256 * MiB)
    const child = await spawnInCgroup(cg, allocator)
    await child.send(`alloc ${16 * MiB}`)
    const monitor = createMemoryMonitor({ cgroup: cg.path })
    const got = new Collector<ThresholdEvent>()
    monitor.addThreshold(8 * MiB, { handler: got.push })
    const [e] = await got.count(1)
    expect(e).toMatchObject({ initial: true, direction: 'up', threshold: 8 * MiB })
    expect(e?.usage).toBeGreaterThanOrEqual(8 * MiB)
    await monitor.close()
  })

  test(`removing a watched cgroup gives a close, not a crossing, for thresholds on both sides${suffix}`, async () => {
    if (!('dir' in own)) return
    const cg = cgroup(own.dir, 256 * MiB)
    const child = await spawnInCgroup(cg, allocator)
    // Page cache stays charged after its process exits (first touch), so the empty cgroup keeps a
    // steady usage with thresholds below and above it, and only the removal can wake them.
    const file = path.join(os.tmpdir(), `mp-cache-${process.pid}-${Date.now()}`)
    try {
      await child.send(`cache ${24 * MiB} ${file}`)
      child.proc.stdin.write('exit\n')
      await child.exited
      const monitor = createMemoryMonitor({ cgroup: cg.path })
      const usage = monitor.snapshot().usage
      expect(usage).toBeGreaterThan(16 * MiB)
      const crossings = new Collector<ThresholdEvent>()
      const closes = new Collector<CloseEvent>()
      monitor.addThreshold(Math.floor(usage / 2), { direction: 'down', handler: crossings.push })
      monitor.addThreshold(usage + 32 * MiB, { direction: 'both', handler: crossings.push })
      monitor.on('close', closes.push)
      await turns()
      // rmdir without force_empty: the charges move to the parent, usage here does not "drop"
      fs.rmdirSync(cg.path)
      await closes.count(1)
      await turns()
      expect(closes.items).toEqual([{ reason: 'removed' }])
      expect(crossings.items).toEqual([])
      expect(monitor.closed).toBe(true)
    } finally {
      fs.rmSync(file, { force: true })
    }
  })

  test(`after close() the process has the same open fds as before${suffix}`, async () => {
    if (!('dir' in own)) return
    const cg = cgroup(own.dir, 256 * MiB)
    await spawnInCgroup(cg, allocator)
    const before = openFdCount()
    for (let round = 0; round < 3; round++) {
      const monitor = createMemoryMonitor({ cgroup: cg.path, thresholds: ['50%', '60%', '70%', { threshold: '80%', direction: 'both' }] })
      expect(openFdCount()).toBeGreaterThan(before)
      await monitor.close()
    }
    await turns()
    expect(openFdCount()).toBe(before)
  })

  test(`several crossings of one threshold arrive in order with alternating directions${suffix}`, async () => {
    if (!('dir' in own)) return
    const cg = cgroup(own.dir, 256 * MiB)
    const child = await spawnInCgroup(cg, allocator)
    const monitor = createMemoryMonitor({ cgroup: cg.path })
    const base = monitor.snapshot().usage
    const threshold = base + 16 * MiB
    const got = new Collector<ThresholdEvent>()
    monitor.addThreshold(threshold, { direction: 'both', handler: got.push })
    const usage = () => monitor.snapshot().usage
    for (let i = 0; i < 3; i++) {
      while (usage() < threshold + 4 * MiB) await child.send(`alloc ${MiB}`)
      await got.count(2 * i + 1)
      while (usage() > threshold - 4 * MiB) await child.send('free')
      await got.count(2 * i + 2)
    }
    expect(got.items.map((e) => e.direction)).toEqual(['up', 'down', 'up', 'down', 'up', 'down'])
    await monitor.close()
  })
})
