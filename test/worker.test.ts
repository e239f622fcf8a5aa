// Monitors inside worker threads: they receive the kernel's notifications, do not keep the thread
// alive, and everything they opened is released when the thread ends, closed or not.

import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { Worker } from 'node:worker_threads'
import { afterEach, describe, expect, it } from 'vitest'
import { CgroupV1Backend } from '../src/backends/cgroup-v1.js'
import { Collector } from './helpers/collect.js'
import { type TestCgroup, createTestCgroup, openFdCount, ownV1MemoryCgroup, spawnInCgroup } from './helpers/cgroup.js'

const MiB = 2 ** 20
const allocator = fileURLToPath(new URL('./helpers/allocator.mjs', import.meta.url))
const distEntry = fileURLToPath(new URL('../dist/index.js', import.meta.url))
const own = ownV1MemoryCgroup()
const probe = CgroupV1Backend.probe()
const noDist = fs.existsSync(distEntry) ? null : 'dist/ not built (npm run build)'
const skipKernel = noDist ?? ('reason' in own ? own.reason : !probe.available ? probe.reasons.join('; ') : null)
const kernelTest = skipKernel === null ? it : it.skip
const kernelSuffix = skipKernel === null ? '' : ` (skipped: ${skipKernel})`
const simTest = noDist === null ? it : it.skip
const simSuffix = noDist === null ? '' : ` (skipped: ${noDist})`

type FromWorker =
  | { type: 'ready'; backend: string; cgroup: string }
  | { type: 'event'; direction: string; threshold: number; backend: string; initial: boolean }
  | { type: 'closed' }
  | { type: 'error'; code: string | undefined; message: string }

/**
 * A worker that opens a monitor from the published build and posts what it sees. With
 * `stay: true` it listens on its port (which keeps it alive until terminated) and closes the
 * monitor when sent `'close'`; otherwise it has
 * nothing left to do after setting up, so only the monitor could keep it alive.
 */
function monitorWorker(data: { cgroup?: string; backend?: string; threshold: number; stay: boolean; close?: boolean; simulate?: number[] }): {
  worker: Worker
  messages: Collector<FromWorker>
  exited: Promise<number>
} {
  const source = `
    const { parentPort, workerData } = require('node:worker_threads')
    ;(async () => {
      const mp = await import(workerData.dist)
      const sim = workerData.backend === 'simulated' ? new mp.SimulatedBackend({ limit: 100 * 2 ** 20 }) : undefined
      const monitor = mp.createMemoryMonitor({ backend: sim ?? 'auto', cgroup: workerData.cgroup })
      monitor.on('error', (err) => parentPort.postMessage({ type: 'error', code: err.code, message: String(err) }))
      monitor.addThreshold(workerData.threshold, {
        direction: 'both',
        handler: (e) => parentPort.postMessage({ type: 'event', direction: e.direction, threshold: e.threshold, backend: e.backend, initial: e.initial }),
      })
      if (workerData.stay) {
        parentPort.on('message', async (m) => {
          if (m !== 'close') return
          await monitor.close()
          parentPort.postMessage({ type: 'closed' })
        })
      }
      parentPort.postMessage({ type: 'ready', backend: monitor.backend, cgroup: monitor.cgroup })
      for (const usage of workerData.simulate ?? []) sim.setUsage(usage)
      if (workerData.close) {
        await monitor.close()
        sim?.close()
        parentPort.postMessage({ type: 'closed' })
      }
    })().catch((err) => parentPort.postMessage({ type: 'error', code: err.code, message: String(err) }))
  `
  const worker = new Worker(source, { eval: true, workerData: { ...data, dist: pathToFileURL(distEntry).href } })
  const messages = new Collector<FromWorker>()
  worker.on('message', messages.push)
  worker.on('error', (err) => messages.push({ type: 'error', code: (err as NodeJS.ErrnoException).code, message: String(err) }))
  const exited = new Promise<number>((resolve) => worker.once('exit', resolve))
  return { worker, messages, exited }
}

const cgroups: TestCgroup[] = []
afterEach(async () => {
  for (const cg of cgroups.reverse()) await cg.remove()
  cgroups.length = 0
})

// The first worker of a process opens a few fds that live as long as the process (libuv's
// signal pipe, for example): start one before taking a baseline.
async function warmUp(): Promise<void> {
  const w = new Worker('0', { eval: true })
  await new Promise((resolve) => w.once('exit', resolve))
}

describe('worker threads', () => {
  simTest(`a monitor on the simulated backend delivers events in a worker, which exits on its own with the monitor open${simSuffix}`, async () => {
    await warmUp()
    const before = openFdCount()
    const { messages, exited } = monitorWorker({ backend: 'simulated', threshold: 50 * MiB, stay: false, simulate: [60 * MiB, 10 * MiB] })
    const code = await exited
    expect(code).toBe(0)
    expect(messages.items.filter((m) => m.type === 'event')).toEqual([
      { type: 'event', direction: 'up', threshold: 50 * MiB, backend: 'simulated', initial: false },
      { type: 'event', direction: 'down', threshold: 50 * MiB, backend: 'simulated', initial: false },
    ])
    expect(messages.items.filter((m) => m.type === 'error')).toEqual([])
    expect(openFdCount()).toBe(before)
  })

  kernelTest(`a worker's cgroup-v1 monitor gets the kernel's crossings, and terminating the worker releases its fds${kernelSuffix}`, async () => {
    if (!('dir' in own)) return
    const cg = createTestCgroup(own.dir, { limit: 256 * MiB })
    cgroups.push(cg)
    const child = await spawnInCgroup(cg, allocator)
    const usage = (): number => Number(fs.readFileSync(path.join(cg.path, 'memory.usage_in_bytes'), 'utf8'))
    const threshold = usage() + 32 * MiB
    await warmUp()
    const before = openFdCount()
    const { worker, messages, exited } = monitorWorker({ cgroup: cg.path, threshold, stay: true })
    const [ready] = await messages.until((items) => items.some((m) => m.type !== 'event'))
    expect(ready).toEqual({ type: 'ready', backend: 'cgroup-v1', cgroup: cg.path })
    // The worker's eventfd and memory.usage_in_bytes fd are fds of this process.
    const during = openFdCount()
    expect(during).toBeGreaterThanOrEqual(before + 2)

    await child.send(`alloc ${48 * MiB}`)
    await messages.until((items) => items.some((m) => m.type === 'event'))
    await child.send('freeall')
    await messages.until((items) => items.filter((m) => m.type === 'event').length >= 2)
    expect(messages.items.filter((m) => m.type === 'event')).toEqual([
      { type: 'event', direction: 'up', threshold, backend: 'cgroup-v1', initial: false },
      { type: 'event', direction: 'down', threshold, backend: 'cgroup-v1', initial: false },
    ])

    // The monitor is never closed by the worker: the thread's teardown must release it.
    await worker.terminate()
    await exited
    expect(openFdCount()).toBe(before)
    // A crossing after the thread is gone reaches nobody and disturbs nothing here.
    await child.send(`alloc ${48 * MiB}`)
    expect(messages.items.filter((m) => m.type === 'error')).toEqual([])
  })

  kernelTest(`several workers, each with its own monitor on one cgroup, all get the crossing; closing and exiting leave no fd${kernelSuffix}`, async () => {
    if (!('dir' in own)) return
    const cg = createTestCgroup(own.dir, { limit: 256 * MiB })
    cgroups.push(cg)
    const child = await spawnInCgroup(cg, allocator)
    const threshold = Number(fs.readFileSync(path.join(cg.path, 'memory.usage_in_bytes'), 'utf8')) + 32 * MiB
    await warmUp()
    const before = openFdCount()
    const workers = [0, 1, 2].map(() => monitorWorker({ cgroup: cg.path, threshold, stay: true }))
    for (const w of workers) await w.messages.until((items) => items.some((m) => m.type === 'ready'))
    await child.send(`alloc ${48 * MiB}`)
    for (const w of workers) {
      await w.messages.until((items) => items.some((m) => m.type === 'event'))
      expect(w.messages.items.find((m) => m.type === 'event')).toMatchObject({ direction: 'up', threshold })
    }
    // One closes its monitor itself, the others are terminated with theirs open.
    workers[0]!.worker.postMessage('close')
    await workers[0]!.messages.until((items) => items.some((m) => m.type === 'closed'))
    await Promise.all(workers.map((w) => w.worker.terminate()))
    await Promise.all(workers.map((w) => w.exited))
    expect(openFdCount()).toBe(before)
  })
})
