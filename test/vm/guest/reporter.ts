// Inside the VM: reports every guest test as one marked line on the serial console, which the host
// turns into its own tests; vitest's readable output goes around it.

import { writeSync } from 'node:fs'
import path from 'node:path'
import type { Reporter, TestCase, TestModule, TestRunEndReason } from 'vitest/node'
import type { SerializedError } from '@vitest/utils'

/** One guest test as the host sees it (also the shape of `test` lines, base64 JSON). */
export interface GuestTest {
  /** Test file, relative to the project root. */
  file: string
  /** Suite names and test name, joined with ` > `. */
  name: string
  state: 'passed' | 'failed' | 'skipped' | 'pending'
  /** Milliseconds of guest time; `null` when the test did not run. */
  durationMs: number | null
  /** Message, diff and stack of each error, for the host's failure report. */
  errors: string[]
}

/** The last line of a run (`end`, base64 JSON). */
export interface GuestEnd {
  reason: TestRunEndReason
  /** Test files that failed outside a test (import errors, hooks), with their errors. */
  failedFiles: Array<{ file: string; errors: string[] }>
  /** Errors vitest caught outside any test file. */
  unhandled: string[]
}

/** The marker that starts every protocol line. */
export const MARK = '@@mp-vm'

function describeError(e: SerializedError & { diff?: string }): string {
  return [e.name && e.message ? `${e.name}: ${e.message}` : (e.message ?? String(e)), e.diff, e.stack]
    .filter((s): s is string => typeof s === 'string' && s !== '')
    .join('\n')
}

export default class GuestLineReporter implements Reporter {
  // Synchronous writes of whole lines on the fd vitest prints to, so that vitest's own output never
  // lands inside a result line. The pipe may be non-blocking: finish partial writes, retry EAGAIN.
  #send(kind: string, value: unknown): void {
    const line = Buffer.from(`${MARK} ${kind} ${Buffer.from(JSON.stringify(value)).toString('base64')}\n`)
    const pause = new Int32Array(new SharedArrayBuffer(4))
    for (let at = 0; at < line.length;) {
      try {
        at += writeSync(1, line, at)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err
        Atomics.wait(pause, 0, 0, 5)
      }
    }
  }

  #file(m: TestModule): string {
    return path.relative(process.cwd(), m.moduleId)
  }

  onTestCaseResult(test: TestCase): void {
    const result = test.result()
    const line: GuestTest = {
      file: this.#file(test.module),
      name: test.fullName,
      state: result.state,
      durationMs: test.diagnostic()?.duration ?? null,
      errors: result.state === 'failed' ? result.errors.map(describeError) : [],
    }
    this.#send('test', line)
  }

  onTestRunEnd(modules: ReadonlyArray<TestModule>, unhandled: ReadonlyArray<SerializedError>, reason: TestRunEndReason): void {
    const end: GuestEnd = {
      reason,
      failedFiles: modules
        .filter((m) => m.errors().length > 0)
        .map((m) => ({ file: this.#file(m), errors: m.errors().map(describeError) })),
      unhandled: unhandled.map(describeError),
    }
    this.#send('end', end)
  }
}
