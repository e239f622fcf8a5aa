// Tests of the native addon and its loader against the real kernel: eventfds, uv_poll watchers,
// ownership and teardown (including worker threads), run in child processes where a crash could occur.

import { spawn, spawnSync } from 'node:child_process'
import { AsyncLocalStorage } from 'node:async_hooks'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { setImmediate as immediate } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { MemoryPressureError } from '../src/errors.js'
import {
  type PollMode,
  type PollWatcher,
  POLL_PRIORITIZED,
  POLL_READABLE,
  loadNative,
  tryLoadNative,
} from '../src/native.js'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const addonPath =
  ['Release', 'Debug'].map((config) => path.join(root, 'build', config, 'memory_pressure.node')).find((p) => fs.existsSync(p)) ??
  path.join(root, 'build', 'Release', 'memory_pressure.node')
const native = loadNative()
const { EBADF, EEXIST, EPERM } = os.constants.errno

// Whatever a test leaves open is closed afterwards, so one failure does not leak into the next.
// Raw fds and watcher-owned fds are kept apart: closing a watcher's fd number a second time could
// close an unrelated file that reused the number.
const rawFds = new Set<number>()
const watchers: PollWatcher[] = []

afterEach(() => {
  for (const watcher of watchers.splice(0)) watcher.close()
  for (const fd of rawFds) native.close(fd)
  rawFds.clear()
})

function newEventfd(): number {
  const fd = native.eventfd()
  expect(fd).toBeGreaterThanOrEqual(0)
  rawFds.add(fd)
  return fd
}

function watch(fd: number, mode: PollMode, callback: (status: number, events: number) => void): PollWatcher {
  const watcher = native.watch(fd, mode, callback)
  if (typeof watcher === 'number') throw new Error(`watch(${fd}, ${mode}) failed with ${watcher}`)
  rawFds.delete(fd)
  watchers.push(watcher)
  return watcher
}

/** Adds `n` to an eventfd's counter, as the kernel or another process would (eventfd(2)). */
function signal(fd: number, n: number | bigint = 1): void {
  const buffer = Buffer.alloc(8)
  buffer.writeBigUInt64LE(BigInt(n))
  expect(fs.writeSync(fd, buffer)).toBe(8)
}

/** Turns the event loop until `condition` holds; a poll event needs one iteration, so 1000 is ample. */
async function until(condition: () => boolean, what: string, maxTurns = 1000): Promise<void> {
  for (let turn = 0; turn < maxTurns; turn++) {
    if (condition()) return
    await immediate()
  }
  throw new Error(`timed out waiting for ${what}`)
}

async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await immediate()
}

function countFds(): number {
  return fs.readdirSync('/proc/self/fd').length
}

interface ChildResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

/**
 * Runs an inline ES module in a fresh Node process with the addon path in `MP_ADDON`. A child that
 * outlives `timeoutMs` is killed, which shows up as `signal: 'SIGKILL'`.
 */
function runChild(script: string, { timeoutMs = 15_000, nodeArgs = [] as string[], wrapper = [] as string[] } = {}): Promise<ChildResult> {
  const args = [...nodeArgs, '--input-type=module', '-e', script]
  const [command, ...commandArgs] = wrapper.length > 0 ? [...wrapper, process.execPath, ...args] : [process.execPath, ...args]
  return new Promise((resolve, reject) => {
    const child = spawn(command!, commandArgs, {
      env: { ...process.env, MP_ADDON: addonPath },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk))
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr })
    })
  })
}

// Shared preamble of the child scripts.
const CHILD_PRELUDE = `
import { createRequire } from 'node:module'
import * as fs from 'node:fs'
const native = createRequire(import.meta.url)(process.env.MP_ADDON)
const signal = (fd, n = 1) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(n)); fs.writeSync(fd, b) }
const tick = () => new Promise((resolve) => setImmediate(resolve))
const countFds = () => fs.readdirSync('/proc/self/fd').length
`

function canUnshareUts(): string | undefined {
  const probe = spawnSync('unshare', ['--uts', 'true'], { stdio: 'ignore' })
  if (probe.error !== undefined) return `unshare not runnable: ${probe.error.message}`
  if (probe.status !== 0) return `unshare --uts exited with ${probe.status ?? probe.signal} (needs CAP_SYS_ADMIN)`
  return undefined
}

// Runs in a worker (CommonJS: eval, with execArgv emptied so the parent's --input-type=module is
// not inherited). Five ref'd eventfd watchers, all signalled; what happens at
// the first callback depends on the scenario.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads')
const fs = require('node:fs')
const { addon, scenario } = workerData
const native = require(addon)
const one = Buffer.alloc(8)
one.writeBigUInt64LE(1n)
const fds = []
const watchers = []
let fired = false
for (let i = 0; scenario !== 'warm-up' && i < 5; i++) {
  const fd = native.eventfd()
  fds.push(fd)
  const watcher = native.watch(fd, 'readable', () => {
    if (fired) return
    fired = true
    parentPort.postMessage('fired')
    switch (scenario) {
      case 'close':
        for (const w of watchers) w.close()
        break
      case 'exit-open':
        process.exit(0)
      case 'natural-open':
        // Drain and unref, but leave them open; one is closing when the worker ends.
        for (const f of fds) native.readEventfd(f)
        for (const w of watchers) w.unref()
        watchers[0].close()
        break
      case 'terminate':
        // Not drained: the callbacks keep coming until the parent terminates this worker.
        break
      case 'throw-open':
        throw new Error('thrown with watchers open')
    }
  })
  watcher.ref()
  watchers.push(watcher)
}
for (const fd of fds) fs.writeSync(fd, one)
`

describe('binding', () => {
  it('is the Linux build, and tryLoadNative caches it', () => {
    expect(native.platformSupported).toBe(true)
    const first = tryLoadNative()
    expect(first).not.toBeInstanceOf(MemoryPressureError)
    expect(tryLoadNative()).toBe(first)
  })

  it('mallocTrim answers 0 or 1 with glibc', () => {
    expect([0, 1]).toContain(native.mallocTrim())
  })
})

describe('eventfd', () => {
  it('wakes a readable watcher and reads back the summed counter, then EAGAIN as 0', async () => {
    const fd = newEventfd()
    const calls: Array<{ status: number; events: number; counter: number }> = []
    const watcher = watch(fd, 'readable', (status, events) => {
      calls.push({ status, events, counter: native.readEventfd(fd) })
    })
    expect(watcher.fd).toBe(fd)
    expect(watcher.closed).toBe(false)
    signal(fd, 1)
    signal(fd, 2)
    await until(() => calls.length > 0, 'the readable callback')
    expect(calls[0]).toEqual({ status: 0, events: expect.any(Number), counter: 3 })
    expect(calls[0]!.events & POLL_READABLE).toBe(POLL_READABLE)
    expect(native.readEventfd(fd)).toBe(0)
    // Drained, so level-triggered polling must go quiet.
    await turns(20)
    expect(calls).toHaveLength(1)
    watcher.close()
    expect(watcher.closed).toBe(true)
    expect(watcher.fd).toBe(-1)
  })

  it('reads 0 from a fresh eventfd', () => {
    expect(native.readEventfd(newEventfd())).toBe(0)
  })

  it('clamps a counter above 2^53 to Number.MAX_SAFE_INTEGER', () => {
    const fd = newEventfd()
    // eventfd(2): the largest value the counter can hold.
    signal(fd, 0xfffffffffffffffen)
    expect(native.readEventfd(fd)).toBe(Number.MAX_SAFE_INTEGER)
    expect(native.readEventfd(fd)).toBe(0)
  })

  it('closes a raw fd with close()', () => {
    const fd = newEventfd()
    expect(native.close(fd)).toBe(0)
    rawFds.delete(fd)
    expect(native.readEventfd(fd)).toBe(-EBADF)
  })
})

describe('priority mode', () => {
  it('is accepted and does not fire for plain readability', async () => {
    const priorityFd = newEventfd()
    const controlFd = newEventfd()
    let priorityCalls = 0
    let controlCalls = 0
    const priority = watch(priorityFd, 'priority', () => priorityCalls++)
    watch(controlFd, 'readable', () => {
      native.readEventfd(controlFd)
      controlCalls++
    })
    signal(priorityFd)
    signal(controlFd)
    await until(() => controlCalls > 0, 'the readable control watcher')
    await turns(20)
    expect(priorityCalls).toBe(0)
    expect(priority.closed).toBe(false)
  })

  const unshareProblem = canUnshareUts()
  it.skipIf(unshareProblem !== undefined)(
    `fires on POLLPRI from a domainname change in a private UTS namespace${unshareProblem === undefined ? '' : ` (skipped: ${unshareProblem})`}`,
    async () => {
      // proc_sys_poll (fs/proc/proc_sysctl.c) reports POLLERR|POLLPRI once after
      // /proc/sys/kernel/domainname changes, and plain POLLIN always; unshare keeps the change
      // inside the child's own UTS namespace.
      const result = await runChild(`${CHILD_PRELUDE}
        const fd = fs.openSync('/proc/sys/kernel/domainname', 'r')
        const events = []
        const watcher = native.watch(fd, 'priority', (status, bits) => events.push([status, bits]))
        watcher.ref()
        for (let i = 0; i < 20; i++) await tick()
        const before = events.length
        fs.writeFileSync('/proc/sys/kernel/domainname', 'node-memory-pressure-test')
        for (let i = 0; i < 1000 && events.length === before; i++) await tick()
        for (let i = 0; i < 20; i++) await tick()
        watcher.close()
        console.log(JSON.stringify({ before, events }))
      `, { wrapper: ['unshare', '--uts'] })
      expect(result.stderr).toBe('')
      expect(result).toMatchObject({ code: 0, signal: null })
      const { before, events } = JSON.parse(result.stdout) as { before: number; events: Array<[number, number]> }
      expect(before).toBe(0)
      expect(events).toHaveLength(1)
      expect(events[0]![0]).toBe(0)
      expect(events[0]![1] & POLL_PRIORITIZED).toBe(POLL_PRIORITIZED)
    },
  )
})

describe('errors', () => {
  it('returns -EBADF for fd -1 from every call that takes an fd', () => {
    expect(EBADF).toBe(9)
    expect(native.watch(-1, 'readable', () => {})).toBe(-EBADF)
    expect(native.readEventfd(-1)).toBe(-EBADF)
    expect(native.close(-1)).toBe(-EBADF)
  })

  it('throws TypeError/RangeError with Node codes for bad arguments', () => {
    const fd = newEventfd()
    const bad = native as unknown as Record<string, (...args: unknown[]) => unknown>
    expect(() => bad.watch!('3', 'readable', () => {})).toThrow(expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' }))
    expect(() => bad.watch!(fd, 'writable', () => {})).toThrow(expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE' }))
    expect(() => bad.watch!(fd, 1, () => {})).toThrow(expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' }))
    expect(() => bad.watch!(fd, 'readable', 'callback')).toThrow(expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' }))
    expect(() => bad.readEventfd!(undefined)).toThrow(expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' }))
    expect(() => bad.readEventfd!(1.5)).toThrow(expect.objectContaining({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }))
    expect(() => bad.close!(2 ** 31)).toThrow(expect.objectContaining({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }))
    expect(() => bad.close!(Number.NaN)).toThrow(expect.objectContaining({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }))
    // None of these may have taken the fd.
    expect(native.readEventfd(fd)).toBe(0)
  })

  it('refuses a second watcher on the same fd with -EEXIST and keeps the first', async () => {
    const fd = newEventfd()
    let calls = 0
    watch(fd, 'readable', () => {
      native.readEventfd(fd)
      calls++
    })
    expect(native.watch(fd, 'readable', () => {})).toBe(-EEXIST)
    signal(fd)
    await until(() => calls > 0, 'the first watcher')
  })

  it('leaves the fd open and the caller\'s when watching fails (regular file: -EPERM)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-native-'))
    try {
      const file = path.join(dir, 'plain')
      fs.writeFileSync(file, 'x')
      const fd = fs.openSync(file, 'r')
      try {
        // epoll_ctl(2): EPERM for files that do not support polling, such as regular files.
        expect(native.watch(fd, 'readable', () => {})).toBe(-EPERM)
        expect(fs.fstatSync(fd).isFile()).toBe(true)
      } finally {
        fs.closeSync(fd)
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  it('reports POLLERR once as status -EBADF, then stays quiet until closed', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-native-'))
    try {
      const fifo = path.join(dir, 'fifo')
      expect(spawnSync('mkfifo', [fifo]).status).toBe(0)
      const readEnd = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK)
      const writeEnd = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK)
      const before = countFds()
      const calls: Array<[number, number]> = []
      const watcher = watch(writeEnd, 'readable', (status, events) => calls.push([status, events]))
      // pipe(7): the write end reports POLLERR once no reader is left; libuv turns POLLERR without
      // POLLPRI into UV_EBADF and stops the handle itself, so it must not spin.
      fs.closeSync(readEnd)
      await until(() => calls.length > 0, 'the error callback')
      await turns(20)
      expect(calls).toEqual([[-EBADF, 0]])
      expect(watcher.closed).toBe(false)
      expect(watcher.fd).toBe(writeEnd)
      watcher.close()
      expect(countFds()).toBe(before - 2)
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  it('does not let JS construct a PollWatcher', () => {
    const watcher = watch(newEventfd(), 'readable', () => {})
    const Constructor = Object.getPrototypeOf(watcher).constructor as new (...args: unknown[]) => unknown
    expect(() => new Constructor()).toThrow(expect.objectContaining({ name: 'TypeError', code: 'ERR_ILLEGAL_CONSTRUCTOR' }))
    expect(() => new Constructor({})).toThrow(expect.objectContaining({ name: 'TypeError', code: 'ERR_ILLEGAL_CONSTRUCTOR' }))
  })
})

describe('callbacks', () => {
  it('run in the async context of watch() and drain nextTick and microtasks before the next phase', async () => {
    const fd = newEventfd()
    const als = new AsyncLocalStorage<string>()
    const order: string[] = []
    let store: string | undefined
    als.run('watch-context', () => {
      watch(fd, 'readable', () => {
        native.readEventfd(fd)
        store = als.getStore()
        order.push('callback')
        queueMicrotask(() => order.push('microtask'))
        process.nextTick(() => order.push('nextTick'))
        setImmediate(() => order.push('immediate'))
      })
    })
    signal(fd)
    await until(() => order.includes('immediate'), 'the immediate queued by the callback')
    expect(order).toEqual(['callback', 'nextTick', 'microtask', 'immediate'])
    expect(store).toBe('watch-context')
  })

  it('can close their own watcher; a second close is a no-op; pending events are dropped', async () => {
    const a = newEventfd()
    const b = newEventfd()
    const before = countFds()
    const calls: string[] = []
    // Both fds are ready in the same loop iteration: whichever callback runs first closes both
    // watchers, so the other, already reported by epoll, must not be called.
    let wa: PollWatcher | undefined
    let wb: PollWatcher | undefined
    const closeBoth = (name: string) => () => {
      calls.push(name)
      wa!.close()
      wa!.close()
      wb!.close()
      expect(wa!.closed && wb!.closed).toBe(true)
    }
    wa = watch(a, 'readable', closeBoth('a'))
    wb = watch(b, 'readable', closeBoth('b'))
    signal(a)
    signal(b)
    await until(() => calls.length > 0, 'a callback')
    await turns(20)
    expect(calls).toHaveLength(1)
    expect(wa.fd).toBe(-1)
    expect(wb.hasRef()).toBe(false)
    expect(() => wa!.ref()).not.toThrow()
    expect(countFds()).toBe(before - 2)
  })

  it('send an exception to uncaughtException and keep watching', async () => {
    const result = await runChild(`${CHILD_PRELUDE}
      const fd = native.eventfd()
      let calls = 0
      const watcher = native.watch(fd, 'readable', () => {
        native.readEventfd(fd)
        calls++
        if (calls === 1) throw new Error('thrown by the callback')
        console.log('second call')
        watcher.close()
      })
      watcher.ref()
      process.on('uncaughtException', (err) => {
        console.log('uncaught: ' + err.message)
        signal(fd)
      })
      signal(fd)
    `)
    expect(result).toMatchObject({ code: 0, signal: null, stderr: '' })
    expect(result.stdout.trim().split('\n')).toEqual(['uncaught: thrown by the callback', 'second call'])
  })
})

describe('ref and unref', () => {
  it('starts unref\'d and follows ref()/unref()/close()', () => {
    const watcher = watch(newEventfd(), 'readable', () => {})
    expect(watcher.hasRef()).toBe(false)
    watcher.ref()
    expect(watcher.hasRef()).toBe(true)
    watcher.unref()
    expect(watcher.hasRef()).toBe(false)
    watcher.ref()
    watcher.close()
    expect(watcher.hasRef()).toBe(false)
  })

  it('an unref\'d watcher does not keep a process alive', async () => {
    const result = await runChild(`${CHILD_PRELUDE}
      const fd = native.eventfd()
      const watcher = native.watch(fd, 'readable', () => console.log('called'))
      console.log(typeof watcher === 'object' && !watcher.hasRef() ? 'armed' : 'not armed')
    `, { timeoutMs: 10_000 })
    expect(result).toMatchObject({ code: 0, signal: null, stderr: '' })
    expect(result.stdout.trim()).toBe('armed')
  })

  it('a ref\'d watcher keeps a process alive until it is closed', async () => {
    // The timer is unref'd: only the watcher can keep the process alive long enough for it to fire.
    const result = await runChild(`${CHILD_PRELUDE}
      const fd = native.eventfd()
      const watcher = native.watch(fd, 'readable', () => {
        console.log('fired ' + native.readEventfd(fd))
        watcher.close()
      })
      watcher.ref()
      setTimeout(() => signal(fd, 7), 200).unref()
    `, { timeoutMs: 10_000 })
    expect(result).toMatchObject({ code: 0, signal: null, stderr: '' })
    expect(result.stdout.trim()).toBe('fired 7')
  })
})

describe('fd ownership', () => {
  it('closing 200 watchers closes their 200 eventfds', async () => {
    const before = countFds()
    const opened: PollWatcher[] = []
    for (let i = 0; i < 200; i++) opened.push(watch(newEventfd(), 'readable', () => {}))
    expect(countFds()).toBe(before + 200)
    for (const watcher of opened) watcher.close()
    // Let the close callbacks run, which free the handles.
    await turns(3)
    expect(countFds()).toBe(before)
  })

  it('a watcher that is garbage-collected while open is closed by its finalizer', async () => {
    const result = await runChild(`${CHILD_PRELUDE}
      const before = countFds()
      ;(() => {
        for (let i = 0; i < 20; i++) {
          const fd = native.eventfd()
          native.watch(fd, 'readable', () => {})
        }
      })()
      const during = countFds()
      for (let i = 0; i < 50 && countFds() !== before; i++) {
        globalThis.gc()
        await tick()
        await tick()
      }
      console.log(JSON.stringify({ before, during, after: countFds() }))
    `, { nodeArgs: ['--expose-gc'] })
    expect(result).toMatchObject({ code: 0, signal: null, stderr: '' })
    const counts = JSON.parse(result.stdout) as { before: number; during: number; after: number }
    expect(counts.during).toBe(counts.before + 20)
    expect(counts.after).toBe(counts.before)
  })
})

describe('worker_threads', () => {
  it('closes what each worker left open when it exits, without disturbing the main thread', async () => {
    // In a child process: an abort on a worker's teardown (libuv asserts on open handles) must
    // show up as a signal here rather than kill the test runner.
    const result = await runChild(`${CHILD_PRELUDE}
      import { Worker } from 'node:worker_threads'
      const workerSource = ${JSON.stringify(WORKER_SOURCE)}
      const run = (scenario) => new Promise((resolve) => {
        const worker = new Worker(workerSource, { eval: true, execArgv: [], workerData: { addon: process.env.MP_ADDON, scenario } })
        const outcome = { scenario, fired: false, error: null, exitCode: null }
        worker.on('message', (message) => {
          if (message === 'fired') {
            outcome.fired = true
            if (scenario === 'terminate') worker.terminate()
          }
        })
        worker.on('error', (err) => { outcome.error = err.message })
        worker.on('exit', (code) => { outcome.exitCode = code; resolve(outcome) })
      })
      // The first worker of a process can leave process-wide fds behind; count after one.
      await run('warm-up')
      const mainFd = native.eventfd()
      let mainCalls = 0
      const mainWatcher = native.watch(mainFd, 'readable', () => { native.readEventfd(mainFd); mainCalls++ })
      const before = countFds()
      const outcomes = []
      for (const scenario of ['close', 'exit-open', 'natural-open', 'terminate', 'throw-open']) {
        outcomes.push(await run(scenario))
      }
      for (let i = 0; i < 5; i++) await tick()
      const after = countFds()
      signal(mainFd)
      for (let i = 0; i < 1000 && mainCalls === 0; i++) await tick()
      mainWatcher.close()
      console.log(JSON.stringify({ outcomes, before, after, mainCalls }))
    `, { timeoutMs: 25_000 })
    expect(result).toMatchObject({ code: 0, signal: null, stderr: '' })
    const report = JSON.parse(result.stdout) as {
      outcomes: Array<{ scenario: string; fired: boolean; error: string | null; exitCode: number }>
      before: number
      after: number
      mainCalls: number
    }
    expect(report.outcomes).toEqual([
      { scenario: 'close', fired: true, error: null, exitCode: 0 },
      { scenario: 'exit-open', fired: true, error: null, exitCode: 0 },
      { scenario: 'natural-open', fired: true, error: null, exitCode: 0 },
      { scenario: 'terminate', fired: true, error: null, exitCode: 1 },
      { scenario: 'throw-open', fired: true, error: 'thrown with watchers open', exitCode: 1 },
    ])
    expect(report.after).toBe(report.before)
    expect(report.mainCalls).toBe(1)
  })
})

describe('loader', () => {
  it('loads an explicitly named addon', () => {
    const binding = loadNative({ paths: [addonPath] })
    expect(binding.platformSupported).toBe(true)
    expect(binding.eventfd).toBeTypeOf('function')
  })

  it('throws ERR_NATIVE_UNAVAILABLE naming every path it tried, and why', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-loader-'))
    try {
      const notAnAddon = path.join(dir, 'garbage.node')
      fs.writeFileSync(notAnAddon, 'this is not a shared object')
      let caught: unknown
      try {
        loadNative({ paths: ['/nonexistent/x.node', notAnAddon] })
      } catch (err) {
        caught = err
      }
      expect(caught).toBeInstanceOf(MemoryPressureError)
      const error = caught as MemoryPressureError
      expect(error.code).toBe('ERR_NATIVE_UNAVAILABLE')
      expect(error.tried).toHaveLength(2)
      expect(error.tried![0]).toContain('/nonexistent/x.node')
      expect(error.tried![1]).toContain(notAnAddon)
      for (const line of error.tried!) expect(error.message).toContain(line)
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  it('rejects a module that loads but is not the addon, then goes on to the next path', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-loader-'))
    try {
      const impostor = path.join(dir, 'impostor.cjs')
      fs.writeFileSync(impostor, 'module.exports = { eventfd() { return 3 } }')
      expect(loadNative({ paths: [impostor, addonPath] }).platformSupported).toBe(true)
      expect(() => loadNative({ paths: [impostor] })).toThrow(
        expect.objectContaining({ code: 'ERR_NATIVE_UNAVAILABLE', tried: [expect.stringContaining(impostor)] }),
      )
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  it('rejects paths that are not an array of strings with a TypeError', () => {
    expect(() => loadNative({ paths: 'build/Release/memory_pressure.node' as unknown as string[] })).toThrow(TypeError)
  })
})
