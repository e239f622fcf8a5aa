#!/usr/bin/env node
// The `node-memory-pressure` command: `doctor` (what this machine offers and why), `watch` (a live view
// of a cgroup's memory with its events), `exec` and `heap-flags` (V8's heap sized from the cgroup's
// limit). Arguments are parsed with node:util parseArgs.

import { readFileSync, realpathSync } from 'node:fs'
import { pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { MemoryPressureError } from '../errors.js'
import { doctor, renderDoctor } from './doctor.js'
import { exec, heapFlagsFor } from './exec.js'
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
  /** exec: the command was found but could not be started. */
  cannotRun: 126,
  /** exec: the command was not found. */
  notFound: 127,
} as const

const help = `Usage: node-memory-pressure <command> [options]

Commands:
  doctor   What this machine offers for memory notifications and why: cgroup version and
           layout, the process's cgroup, the effective limit and which ancestor holds it,
           usage, working set and page cache, each backend usable or not (with reasons),
           permissions on the files the backends use, the native addon, V8's heap limit
           against the cgroup's, and advice: each setup where the defaults will not work
           with the one thing to change (a stable code per item in --json).
  watch    A live view of a cgroup's usage against its limit, with threshold crossings,
           OOM and pressure-level events as they happen, until interrupted. Fitted to the
           terminal's width; plain lines when stdout is not a terminal.
  exec -- COMMAND [ARGS...]
           Runs COMMAND with NODE_OPTIONS extended by heap flags that fit V8's heap to
           this cgroup's effective limit (75% of it), stdio inherited, signals forwarded,
           and exits as COMMAND does. Without a limit, or when NODE_OPTIONS already has a
           heap flag, COMMAND runs with NODE_OPTIONS unchanged (a note on stderr).
  heap-flags
           Prints those flags for this cgroup (or --cgroup/--pid), for NODE_OPTIONS:
           export NODE_OPTIONS="$NODE_OPTIONS $(npx node-memory-pressure heap-flags)"
           Prints nothing (and a note on stderr) when there is no limit.

Options:
  --cgroup PATH        a cgroup directory (e.g. a container's, from outside it)
  --pid PID            the memory cgroup of this process
  --root DIR           with --cgroup: the directory a cgroup v2 tree is mounted on,
                       when it is not in this process's mount table
  --json               doctor, heap-flags: print the result as JSON
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
  exec exits with COMMAND's code (or dies of its signal); 127 when COMMAND is not found,
  126 when it cannot be started
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
  // exec's command is everything after `--`, its own options included.
  const dashes = argv.indexOf('--')
  const command = dashes === -1 ? [] : argv.slice(dashes + 1)
  try {
    if (argv[0] === 'exec' && dashes === -1) throw new UsageError('exec needs -- before its command, as in exec -- node app.js')
    parsed = parse(dashes === -1 ? argv : argv.slice(0, dashes))
  } catch (e) {
    const hint = argv[0] === 'exec' && !(e instanceof UsageError) ? ' (exec: put the command after --, as in exec -- node app.js)' : ''
    err.write(`node-memory-pressure: ${(e as Error).message}${hint}\n\n${help}`)
    return EXIT.usage
  }
  const { values, positionals } = parsed
  if (values.version === true) {
    out.write(`${version()}\n`)
    return EXIT.ok
  }
  const name = positionals[0]
  if (values.help === true || name === undefined || name === 'help') {
    out.write(help)
    return name === undefined && values.help !== true ? EXIT.usage : EXIT.ok
  }
  try {
    if (positionals.length > 1) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[1])}`)
    if (dashes !== -1 && name !== 'exec') throw new UsageError(`-- is for exec's command, not ${name}`)
    const target = { cgroup: values.cgroup, pid: parsePid(values.pid), root: values.root }
    const watchOnly = values.thresholds !== undefined || values['interval-ms'] !== undefined
    if (name === 'exec') {
      if (command.length === 0) throw new UsageError('exec needs a command after --, as in exec -- node app.js')
      if (watchOnly || values.json === true || values.cgroup !== undefined || values.pid !== undefined || values.root !== undefined) {
        throw new UsageError('exec takes no options: it sizes the heap for its own cgroup, which the command inherits')
      }
      try {
        return await exec(command, (text) => err.write(`node-memory-pressure: ${text}\n`))
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code
        err.write(`node-memory-pressure: cannot run ${JSON.stringify(command[0])}: ${code ?? (e as Error).message}\n`)
        return code === 'ENOENT' ? EXIT.notFound : EXIT.cannotRun
      }
    }
    if (name === 'heap-flags') {
      if (watchOnly) throw new UsageError('--thresholds and --interval-ms are options of watch')
      const r = heapFlagsFor(target)
      if (values.json === true) out.write(`${JSON.stringify(r, null, 2)}\n`)
      else if (r.recipe !== null) out.write(`${r.recipe.flags.join(' ')}\n`)
      if (r.recipe === null) err.write(`node-memory-pressure: ${r.reason}: no heap flags (V8's default heap limit applies)\n`)
      return EXIT.ok
    }
    if (name === 'doctor') {
      if (watchOnly) throw new UsageError('--thresholds and --interval-ms are options of watch')
      const report = doctor(target)
      out.write(values.json === true ? `${JSON.stringify(report, null, 2)}\n` : renderDoctor(report))
      return report.chosen === null ? EXIT.failure : EXIT.ok
    }
    if (name === 'watch') {
      if (values.json === true) throw new UsageError('--json is an option of doctor and heap-flags')
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
          // The terminal's size now (TIOCGWINSZ), not `columns`, which changes only when the
          // 'resize' event is handled: a redraw can come between the two.
          columns: () => (out.isTTY === true ? out.getWindowSize()[0] : out.columns) ?? 80,
          onResize: (listener) => {
            out.on('resize', listener)
            return () => out.off('resize', listener)
          },
          write: (text) => out.write(text),
        }, controller.signal)
        if (out.isTTY === true) out.write('\n')
        return end.code
      } finally {
        process.off('SIGINT', stop)
        process.off('SIGTERM', stop)
      }
    }
    throw new UsageError(`unknown command ${JSON.stringify(name)} (doctor, watch, exec or heap-flags)`)
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
