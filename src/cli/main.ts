#!/usr/bin/env node
// The `node-memory-pressure` command: `doctor` (what this machine offers and why) and `watch` (a live
// view of a cgroup's memory with its events). Arguments are parsed with node:util parseArgs.

import { readFileSync, realpathSync } from 'node:fs'
import { pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { MemoryPressureError } from '../errors.js'
import { doctor, renderDoctor } from './doctor.js'
import { UsageError, parsePid } from './target.js'
import { watch } from './watch.js'

/** Exit codes, as documented in `--help`. */
export const EXIT = {
  /** doctor: a backend can run; watch: interrupted (SIGINT/SIGTERM). */
  ok: 0,
  /** doctor: no backend can run for the target; watch: the watched cgroup (or process) went away. */
  failure: 1,
  /** Bad command line (unknown command or option, bad value). */
  usage: 2,
  /** watch: the target cannot be watched (no memory cgroup, no backend, unreadable files). */
  unavailable: 3,
} as const

const help = `Usage: node-memory-pressure <command> [options]

Commands:
  doctor   What this machine offers for memory notifications and why: cgroup version and
           layout, the process's cgroup, the effective limit and which ancestor holds it,
           usage, working set and page cache, each backend usable or not (with reasons),
           permissions on the files the backends use, and what to change.
  watch    A live view of a cgroup's usage against its limit, with threshold crossings,
           OOM and pressure-level events as they happen, until interrupted. Plain lines
           when stdout is not a terminal.

Options:
  --cgroup PATH        a cgroup directory (e.g. a container's, from outside it)
  --pid PID            the memory cgroup of this process
  --root DIR           with --cgroup: the directory a cgroup v2 tree is mounted on,
                       when it is not in this process's mount table
  --json               doctor: print the report as JSON
  --thresholds LIST    watch: comma-separated thresholds (default 50%,80%,95%): bytes,
                       sizes ('512MiB') or percentages of the effective limit
  --interval-ms N      watch: refresh period in milliseconds (default 1000)
  -h, --help           this text
  -v, --version        the package version

Without --cgroup or --pid: this process's memory cgroup; doctor and watch look at the cgroup
holding its effective limit.

Exit codes:
  0  doctor: a backend can run. watch: interrupted (SIGINT or SIGTERM)
  1  doctor: no backend can run. watch: the cgroup or process went away
  2  usage error: unknown command or option, bad value
  3  watch: the target cannot be watched (no memory cgroup, no usable backend)
`

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
  return pkg.version
}

/** Runs the command line; resolves to the exit code. `out`/`err` default to the process's streams. */
export async function main(argv: string[], io: { out?: NodeJS.WriteStream; err?: NodeJS.WritableStream } = {}): Promise<number> {
  const out = io.out ?? process.stdout
  const err = io.err ?? process.stderr
  let parsed: ReturnType<typeof parse>
  try {
    parsed = parse(argv)
  } catch (e) {
    err.write(`node-memory-pressure: ${(e as Error).message}\n\n${help}`)
    return EXIT.usage
  }
  const { values, positionals } = parsed
  if (values.version === true) {
    out.write(`${version()}\n`)
    return EXIT.ok
  }
  const command = positionals[0]
  if (values.help === true || command === undefined || command === 'help') {
    out.write(help)
    return command === undefined && values.help !== true ? EXIT.usage : EXIT.ok
  }
  try {
    if (positionals.length > 1) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[1])}`)
    const target = { cgroup: values.cgroup, pid: parsePid(values.pid), root: values.root }
    if (command === 'doctor') {
      if (values.thresholds !== undefined || values['interval-ms'] !== undefined) throw new UsageError('--thresholds and --interval-ms are options of watch')
      const report = doctor(target)
      out.write(values.json === true ? `${JSON.stringify(report, null, 2)}\n` : renderDoctor(report))
      return report.chosen === null ? EXIT.failure : EXIT.ok
    }
    if (command === 'watch') {
      if (values.json === true) throw new UsageError('--json is an option of doctor')
      const intervalText = values['interval-ms'] ?? '1000'
      const intervalMs = Number(intervalText)
      if (!/^\d+$/.test(intervalText) || intervalMs < 10) throw new UsageError(`--interval-ms must be a whole number of at least 10 (received ${JSON.stringify(intervalText)})`)
      const thresholds = (values.thresholds ?? '50%,80%,95%').split(',').map((t) => t.trim()).filter((t) => t !== '')
      const controller = new AbortController()
      const stop = (): void => controller.abort()
      process.once('SIGINT', stop)
      process.once('SIGTERM', stop)
      // `watch | head` closes the pipe: stop as if interrupted rather than die of an unhandled EPIPE.
      // Left attached: writes already queued can fail after watch() returns.
      out.on?.('error', (e: NodeJS.ErrnoException) => {
        if (e.code === 'EPIPE') stop()
        else throw e
      })
      try {
        const end = await watch({
          ...target,
          thresholds,
          defaultThresholds: values.thresholds === undefined,
          intervalMs,
          tty: out.isTTY === true,
          columns: out.columns ?? 100,
          write: (text) => out.write(text),
        }, controller.signal)
        if (out.isTTY === true) out.write('\n')
        return end.code
      } finally {
        process.off('SIGINT', stop)
        process.off('SIGTERM', stop)
      }
    }
    throw new UsageError(`unknown command ${JSON.stringify(command)} (doctor or watch)`)
  } catch (e) {
    if (e instanceof UsageError) {
      err.write(`node-memory-pressure: ${e.message}\n`)
      return EXIT.usage
    }
    if (e instanceof MemoryPressureError) {
      err.write(`node-memory-pressure: ${e.code}: ${e.message}\n`)
      return EXIT.unavailable
    }
    throw e
  }
}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      cgroup: { type: 'string' },
      pid: { type: 'string' },
      root: { type: 'string' },
      json: { type: 'boolean' },
      thresholds: { type: 'string' },
      'interval-ms': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean', short: 'v' },
    },
  })
}

// Run when executed (the bin), not when imported (tests import main()).
const invoked = process.argv[1]
if (invoked !== undefined && import.meta.url === pathToFileURL(realpathSync(invoked)).href) {
  process.exitCode = await main(process.argv.slice(2))
}
