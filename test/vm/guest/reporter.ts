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
  // One synchronous write per line on the fd vitest prints to (a pipe, synchronous in Node on
  // Linux): a result line is never split by vitest's own output.
  #send(kind: string, value: unknown): void {
    writeSync(1, `${MARK} ${kind} ${Buffer.from(JSON.stringify(value)).toString('base64')}\n`)
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
