// `node-memory-pressure exec` and `heap-flags`: V8's heap sized from the effective cgroup limit, as
// flags to print or as NODE_OPTIONS for a command this process starts and stands in for.

import { spawn } from 'node:child_process'
import fs from 'node:fs'
import { constants as osConstants } from 'node:os'
import path from 'node:path'
import { effectiveLimit } from '../cgroup/limit.js'
import { type HeapRecipe, heapRecipe, parseHeapFlags, splitNodeOptions, supportsPercentage, youngGenerationBytes } from './heap.js'
import { type TargetOptions, findTarget } from './target.js'

/** The effective limit of a target and the flags that fit V8's heap to it; `recipe` is `null` without a limit. */
export interface HeapFlagsResult {
  /** The effective limit, bytes; `null` when there is none (or no memory cgroup). */
  limit: number | null
  /** The cgroup whose limit it is. */
  holder: string | null
  recipe: HeapRecipe | null
  /** Why there is no recipe. */
  reason: string | null
}

/** `node` on the PATH, which a command such as `npm start` will run; this Node when there is none. */
function nodeOnPath(command?: string): string {
  if (command !== undefined && command.includes('/')) return /(^|\/)node[^/]*$/.test(command) ? path.resolve(command) : process.execPath
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const file = path.join(dir || '.', 'node')
    try {
      fs.accessSync(file, fs.constants.X_OK)
      return file
    } catch {
      // not here
    }
  }
  return process.execPath
}

/**
 * The heap flags for a target. `percentage`: allow `--max-old-space-size-percentage` (Node reads
 * only its own cgroup, so only when that cgroup holds the limit, and only where this Node has it).
 * `node`: the binary whose young generation is measured.
 */
export function heapFlagsFor(options: TargetOptions, { percentage = true, node = process.execPath }: { percentage?: boolean; node?: string } = {}): HeapFlagsResult {
  const target = findTarget(options)
  if (target.error !== null || target.watched === null) return { limit: null, holder: null, recipe: null, reason: `no memory cgroup (${target.error?.code ?? 'ERR_NO_CGROUP'})` }
  const l = effectiveLimit(target.watched)
  if (!Number.isFinite(l.limit)) return { limit: null, holder: null, recipe: null, reason: `no memory limit on ${target.watched.path} or its ancestors` }
  const ownHolds = target.location !== null && l.holder === target.location.path
  const recipe = heapRecipe(l.limit, { percentage: percentage && ownHolds && supportsPercentage(), youngBytes: youngGenerationBytes(node) })
  return { limit: l.limit, holder: l.holder, recipe, reason: null }
}

/** Signals passed on to the child: what a shell or supervisor sends to stop or poke a service. */
const FORWARDED: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGWINCH']

/**
 * Runs `command` with NODE_OPTIONS extended by the heap flags for this process's cgroup, stdio
 * inherited and signals forwarded; resolves to the child's exit code, or re-raises the signal that
 * killed it (resolving to 128 + its number if that does not end this process). Without a limit, or
 * when NODE_OPTIONS already sizes the heap, the command runs with NODE_OPTIONS unchanged and a note
 * on `warn`.
 */
export async function exec(command: string[], warn: (text: string) => void): Promise<number> {
  const [file, ...args] = command
  if (file === undefined) throw new Error('exec needs a command after --')
  const env = { ...process.env }
  const existing = parseHeapFlags(splitNodeOptions(env.NODE_OPTIONS))
  if (existing.tokens.length > 0) {
    warn(`NODE_OPTIONS already sizes the heap (${existing.tokens.join(' ')}): left unchanged`)
  } else {
    // The command may run another Node than this one: its young generation is what is measured.
    const r = heapFlagsFor({}, { percentage: false, node: nodeOnPath(file) })
    if (r.recipe === null) warn(`${r.reason}: the command runs with V8's default heap limit`)
    else env.NODE_OPTIONS = [env.NODE_OPTIONS, ...r.recipe.flags].filter((o) => o !== undefined && o !== '').join(' ')
  }
  const child = spawn(file, args, { stdio: 'inherit', env })
  const forward = (signal: NodeJS.Signals): void => {
    child.kill(signal)
  }
  for (const s of FORWARDED) process.on(s, forward)
  const cleanup = (): void => {
    for (const s of FORWARDED) process.off(s, forward)
  }
  return await new Promise<number>((resolve, reject) => {
    child.once('error', (err) => {
      cleanup()
      reject(err)
    })
    child.once('exit', (code, signal) => {
      cleanup()
      if (signal === null) {
        resolve(code ?? 1)
        return
      }
      // Die the same way, so that a supervisor sees what killed the service.
      process.kill(process.pid, signal)
      resolve(128 + (osConstants.signals[signal] ?? 0))
    })
  })
}
