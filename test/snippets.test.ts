// Every code block of README.md and docs/*.md, extracted with a markdown parser when the test runs
// and run: JavaScript and TypeScript as programs inside a memory-limited child cgroup (TypeScript
// type-checked strictly, then transpiled), the package's own commands against dist/cli/main.js,
// npm commands checked against package.json, configuration blocks parsed. A block that cannot run
// says why in a `<!-- snippet: skip: reason -->` comment right above it; any other block fails.

import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import MarkdownIt from 'markdown-it'
import ts from 'typescript'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseAllDocuments } from 'yaml'
import { type TestCgroup, createTestCgroup, ownV1MemoryCgroup } from './helpers/cgroup.js'

const MiB = 2 ** 20
const root = fileURLToPath(new URL('..', import.meta.url))
const bin = path.join(root, 'dist', 'cli', 'main.js')
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as {
  name: string
  scripts: Record<string, string>
  peerDependencies: Record<string, string>
}

/** The documents whose blocks must run: the README and docs/*.md (docs/api is generated). */
const documents = ['README.md', ...fs.readdirSync(path.join(root, 'docs')).filter((f) => f.endsWith('.md')).sort().map((f) => `docs/${f}`)]

/** What the comment above a block asks: not to run it (with the reason), or another cgroup limit. */
interface Mark {
  skip?: string
  limit?: number
  /**
   * More memory must be charged to the block's cgroup over its run than the limit: it holds at most
   * the limit at any time, so it gave memory back for real.
   */
  beyondLimit?: boolean
}

interface Block {
  file: string
  /** 1-based line of the opening fence. */
  line: number
  lang: string
  code: string
  mark: Mark
  /** Why the comment above it could not be read, if it could not. */
  markError?: string
}

const DEFAULT_LIMIT = 256 * MiB

function parseMark(text: string): Mark {
  const body = text.trim()
  if (body.startsWith('skip:')) {
    const reason = body.slice('skip:'.length).trim()
    if (reason.length < 10) throw new Error(`a skipped block needs its reason (got ${JSON.stringify(reason)})`)
    return { skip: reason }
  }
  const mark: Mark = {}
  for (const word of body.split(/\s+/)) {
    const limit = /^limit=(\d+)MiB$/.exec(word)
    if (limit) mark.limit = Number(limit[1]) * MiB
    else if (word === 'beyond-limit') mark.beyondLimit = true
    else throw new Error(`unknown snippet option ${JSON.stringify(word)}`)
  }
  return mark
}

/** The fenced code blocks of one document, with the `<!-- snippet: ... -->` comment right above each. */
function extract(file: string): Block[] {
  const md = new MarkdownIt({ html: true })
  const tokens = md.parse(fs.readFileSync(path.join(root, file), 'utf8'), {})
  const blocks: Block[] = []
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!
    if (t.type !== 'fence' && t.type !== 'code_block') continue
    const before = tokens[i - 1]
    const comment = before?.type === 'html_block' ? /<!--\s*snippet:([\s\S]*?)-->/.exec(before.content) : null
    let mark: Mark = {}
    let markError: string | undefined
    try {
      if (comment) mark = parseMark(comment[1]!)
    } catch (err) {
      markError = (err as Error).message
    }
    blocks.push({ file, line: (t.map?.[0] ?? 0) + 1, lang: t.info.trim().split(/\s+/)[0]?.toLowerCase() ?? '', code: t.content, mark, markError })
  }
  return blocks
}

const blocks = documents.flatMap(extract)
const name = (b: Block): string => `${b.file}:${b.line} (${b.lang || 'no language'})`

const JS = new Set(['js', 'javascript', 'mjs', 'cjs', 'ts', 'typescript'])
const SHELL = new Set(['sh', 'bash', 'shell', 'console'])
const YAML = new Set(['yaml', 'yml'])
const INI = new Set(['ini', 'systemd'])
const TEXT = new Set(['', 'text', 'txt'])
const isTs = (b: Block): boolean => b.lang === 'ts' || b.lang === 'typescript'
/** CommonJS when it requires and never imports (`import(...)` is allowed in CommonJS). */
const isCjs = (b: Block): boolean => b.lang === 'cjs' || (/\brequire\(/.test(b.code) && !/^\s*(import|export)\s/m.test(b.code))

const own = ownV1MemoryCgroup()
const built = fs.existsSync(bin)
const cgroupSkip = !built ? 'dist/ not built (npm run build)' : 'reason' in own ? own.reason : null

// Snippets are written inside the checkout, so that `import 'node-memory-pressure'` resolves to it
// through the package's own exports (Node's self-reference), as it does for a user after install.
const work = path.join(root, `.snippets-${process.pid}-${randomBytes(4).toString('hex')}`)
const cgroups: TestCgroup[] = []
const children = new Set<ChildProcess>()

beforeAll(() => fs.mkdirSync(work))
afterAll(async () => {
  for (const child of children) if (child.pid !== undefined && child.exitCode === null) child.kill('SIGKILL')
  for (const cg of cgroups) await cg.remove()
  fs.rmSync(work, { recursive: true, force: true })
})

function fileFor(b: Block, ext: string): string {
  return path.join(work, `${b.file.replace(/[^a-z0-9]+/gi, '-')}-${b.line}${ext}`)
}

/** The runnable file of a JavaScript or TypeScript block (TypeScript transpiled, types dropped). */
function program(b: Block): string {
  const ext = isCjs(b) ? '.cjs' : '.mjs'
  const source = isTs(b)
    ? ts.transpileModule(b.code, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, verbatimModuleSyntax: false } }).outputText
    : b.code
  const file = fileFor(b, ext)
  fs.writeFileSync(file, source)
  return file
}

interface Run {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  oomKills: number
  /** Bytes charged to the cgroup over the run (memory.stat pgpgin, in pages). */
  chargedBytes: number
}

const pageSize = Number(execFileSync('getconf', ['PAGESIZE'], { encoding: 'utf8' }).trim())

function statValue(cg: TestCgroup, file: string, key: string): number {
  const line = fs.readFileSync(path.join(cg.path, file), 'utf8').split('\n').find((l) => l.startsWith(`${key} `))
  return Number(line?.split(' ')[1])
}

/**
 * Runs `argv` inside a new child cgroup limited to `limit` bytes (a shell moves itself there, then
 * execs). `untilLine`: once stdout has printed a line, send SIGINT (for commands that run until
 * interrupted). Killed after `timeoutMs`.
 */
async function runInCgroup(argv: string[], limit: number, options: { untilLine?: boolean; timeoutMs?: number } = {}): Promise<Run> {
  if (!('dir' in own)) throw new Error('no cgroup')
  const cg = createTestCgroup(own.dir, { limit })
  cgroups.push(cg)
  const proc = spawn('/bin/sh', ['-c', 'echo $$ > "$0" && exec "$@"', path.join(cg.path, 'cgroup.procs'), ...argv], {
    cwd: root,
    env: { ...process.env, NODE_OPTIONS: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  children.add(proc)
  if (proc.pid !== undefined) cg.pids.add(proc.pid)
  let stdout = ''
  let stderr = ''
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  const lines = createInterface({ input: proc.stdout })
  let interrupted = false
  lines.on('line', (line) => {
    stdout += `${line}\n`
    // Once: a second SIGINT after the command's handler ran once would be the default action.
    if (options.untilLine && !interrupted) {
      interrupted = true
      proc.kill('SIGINT')
    }
  })
  const timer = setTimeout(() => proc.kill('SIGKILL'), options.timeoutMs ?? 90_000)
  const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.on('close', (c, s) => resolve({ code: c, signal: s })),
  )
  clearTimeout(timer)
  children.delete(proc)
  if (proc.pid !== undefined) cg.pids.delete(proc.pid)
  const result = { code, signal, stdout, stderr, oomKills: statValue(cg, 'memory.oom_control', 'oom_kill'), chargedBytes: statValue(cg, 'memory.stat', 'pgpgin') * pageSize }
  await cg.remove()
  return result
}

/** Splits a shell block into commands: comments dropped, `\` continuations joined, `&&` split. */
function commands(code: string): string[] {
  return code
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.replace(/(^|\s)#.*$/, '').trim())
    .filter((l) => l !== '')
    .flatMap((l) => l.split('&&').map((c) => c.trim()))
}

/** Why a shell command is not well-formed, or null; `run` collects the package's own commands to run. */
function checkCommand(command: string, run: string[][]): string | null {
  const words = command.split(/\s+/)
  while (/^[A-Z_][A-Z0-9_]*=\S*$/.test(words[0] ?? '')) words.shift()
  const [tool, sub, ...rest] = words
  if (tool === 'npx' && sub === pkg.name) {
    run.push(rest)
    return null
  }
  if (tool === pkg.name) {
    run.push(sub === undefined ? [] : [sub, ...rest])
    return null
  }
  if (tool === 'npm') {
    if (sub === 'test' || sub === 't') return rest.length === 0 ? null : `npm test with arguments: ${command}`
    if (sub === 'run') return rest[0] !== undefined && rest[0] in pkg.scripts ? null : `no script ${rest[0]} in package.json`
    if (sub === 'ci') return rest.length === 0 ? null : `npm ci with arguments: ${command}`
    if (sub === 'install' || sub === 'i') {
      const names = rest.filter((w) => !w.startsWith('-')).map((w) => w.replace(/(.)@[^/]*$/, '$1'))
      const known = new Set([pkg.name, ...Object.keys(pkg.peerDependencies)])
      const unknown = names.filter((n) => !known.has(n))
      return unknown.length === 0 ? null : `npm install of packages that are neither this one nor a peer dependency: ${unknown.join(', ')}`
    }
    return `no check for npm ${sub}`
  }
  if (tool !== undefined && tool.includes('/') && fs.existsSync(path.join(root, tool))) {
    // A script of this repository, run by its path: it exists, and a shell script parses.
    const file = path.join(root, tool)
    if (!fs.readFileSync(file, 'utf8').startsWith('#!/usr/bin/env bash') && !fs.readFileSync(file, 'utf8').startsWith('#!/bin/')) return `${tool}: not a script`
    const check = spawnSync('bash', ['-n', file], { encoding: 'utf8' })
    return check.status === 0 ? null : `bash -n ${tool}: ${check.stderr}`
  }
  if (tool === 'bash' && sub !== undefined) {
    const file = path.join(root, sub)
    if (!fs.existsSync(file)) return `bash ${sub}: no such file`
    const check = spawnSync('bash', ['-n', file], { encoding: 'utf8' })
    return check.status === 0 ? null : `bash -n ${sub}: ${check.stderr}`
  }
  if (tool === 'node' && sub !== undefined) {
    const file = path.join(root, sub)
    if (!fs.existsSync(file)) return `node ${sub}: no such file`
    const check = spawnSync(process.execPath, ['--check', file], { encoding: 'utf8' })
    return check.status === 0 ? null : `node --check ${sub}: ${check.stderr}`
  }
  return `no check for the command ${JSON.stringify(command)}: make it one the test can run or check, or mark the block with <!-- snippet: skip: reason -->`
}

/** Why a systemd unit / ini block is not well-formed, or null. */
function checkIni(code: string): string | null {
  let section = false
  for (const line of code.split('\n').map((l) => l.trim())) {
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue
    if (/^\[[A-Za-z][\w -]*\]$/.test(line)) section = true
    else if (!/^[A-Za-z][\w.-]*\s*=/.test(line)) return `not a key=value line: ${line}`
    else if (!section) return `a key before any [section]: ${line}`
  }
  return section ? null : 'no [section]'
}

describe('the documentation has code blocks and marks only what cannot run', () => {
  it('finds blocks in the README and in docs/, and every mark comment parses', () => {
    expect(blocks.filter((b) => b.file === 'README.md').length).toBeGreaterThan(3)
    expect(blocks.filter((b) => b.file !== 'README.md').length).toBeGreaterThan(3)
    expect(blocks.filter((b) => b.markError !== undefined).map((b) => `${name(b)}: ${b.markError}`)).toEqual([])
  })

  it('gives every block a language the test can run or check', () => {
    const known = (b: Block): boolean => JS.has(b.lang) || SHELL.has(b.lang) || YAML.has(b.lang) || INI.has(b.lang) || TEXT.has(b.lang) || b.lang === 'json'
    expect(blocks.filter((b) => b.mark.skip === undefined && !known(b)).map(name)).toEqual([])
  })

  it('has no code hidden in blocks without a language (diagrams and output only)', () => {
    const codeLike = /^\s*(import |export |const |let |await |npm |npx |require\()/m
    expect(blocks.filter((b) => TEXT.has(b.lang) && codeLike.test(b.code)).map(name)).toEqual([])
  })

  it('checks configuration blocks: YAML, JSON and systemd units parse', () => {
    const problems: string[] = []
    for (const b of blocks.filter((x) => x.mark.skip === undefined)) {
      if (YAML.has(b.lang)) {
        const errors = parseAllDocuments(b.code).flatMap((d) => ('errors' in d ? d.errors : []))
        if (errors.length > 0) problems.push(`${name(b)}: ${errors[0]!.message}`)
      } else if (b.lang === 'json') {
        try {
          JSON.parse(b.code)
        } catch (err) {
          problems.push(`${name(b)}: ${(err as Error).message}`)
        }
      } else if (INI.has(b.lang)) {
        const why = checkIni(b.code)
        if (why !== null) problems.push(`${name(b)}: ${why}`)
      }
    }
    expect(problems).toEqual([])
  })

  it('type-checks every TypeScript block strictly against the built package', () => {
    const tsBlocks = blocks.filter((b) => isTs(b) && b.mark.skip === undefined)
    expect(tsBlocks.length).toBeGreaterThan(0)
    expect(built, 'dist/ must be built (npm run build) for the package types').toBe(true)
    const files = tsBlocks.map((b) => {
      const file = fileFor(b, '.mts')
      fs.writeFileSync(file, b.code)
      return file
    })
    const host = ts.createCompilerHost({})
    const prog = ts.createProgram(files, {
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext,
      lib: ['lib.es2022.d.ts', 'lib.esnext.disposable.d.ts'],
      strict: true,
      noEmit: true,
      skipLibCheck: true,
      types: ['node'],
    }, host)
    const diagnostics = ts.getPreEmitDiagnostics(prog).map((d) => {
      const where = d.file && d.start !== undefined ? `${path.basename(d.file.fileName)}:${d.file.getLineAndCharacterOfPosition(d.start).line + 1}` : ''
      return `${where} ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`
    })
    for (const f of files) fs.rmSync(f, { force: true })
    expect(diagnostics).toEqual([])
  })

  it('links only to files that exist, and the README only to files the package ships or docs/ and bench/README.md', () => {
    const md = new MarkdownIt({ html: true })
    const problems: string[] = []
    for (const file of documents) {
      const links: string[] = []
      const walk = (tokens: ReturnType<typeof md.parse>): void => {
        for (const t of tokens) {
          if (t.type === 'link_open' || t.type === 'image') links.push(t.attrGet('href') ?? t.attrGet('src') ?? '')
          if (t.children) walk(t.children)
        }
      }
      walk(md.parse(fs.readFileSync(path.join(root, file), 'utf8'), {}))
      for (const link of links) {
        if (/^[a-z]+:/i.test(link) || link.startsWith('#')) continue
        const target = path.normalize(path.join(path.dirname(file), link.split('#')[0]!))
        if (!fs.existsSync(path.join(root, target))) problems.push(`${file}: ${link} does not exist`)
        if (file === 'README.md' && !target.startsWith('docs/') && target !== path.normalize('bench/README.md')) {
          problems.push(`README.md: ${link} points outside docs/ and bench/README.md`)
        }
      }
    }
    expect(problems).toEqual([])
  })
})

describe.skipIf(cgroupSkip !== null)(`every JavaScript and TypeScript block runs to completion in a limited cgroup${cgroupSkip === null ? '' : ` (skipped: ${cgroupSkip})`}`, () => {
  const jsBlocks = blocks.filter((b) => JS.has(b.lang) && b.mark.skip === undefined)
  it.each(jsBlocks.map((b) => [name(b), b] as const))('%s', { timeout: 120_000 }, async (_, b) => {
    const limit = b.mark.limit ?? DEFAULT_LIMIT
    const r = await runInCgroup([process.execPath, program(b)], limit)
    expect({ code: r.code, signal: r.signal, oomKills: r.oomKills, stderr: r.stderr }).toEqual({ code: 0, signal: null, oomKills: 0, stderr: '' })
    if (process.env.MP_SNIPPETS_VERBOSE === '1') console.log(`${name(b)}:\n${r.stdout}`)
    if (b.mark.beyondLimit) expect(r.chargedBytes).toBeGreaterThan(limit)
  })
})

describe.skipIf(cgroupSkip !== null)(`the reason the README gives for reduceHeap() holds${cgroupSkip === null ? '' : ` (skipped: ${cgroupSkip})`}`, () => {
  // The README says clearing a cache of Buffers frees nothing until V8 collects: its snippet,
  // without the reduceHeap() line, must be killed where the snippet as written survives.
  const withReduce = blocks.filter((b) => JS.has(b.lang) && b.mark.beyondLimit && /^\s*await reduceHeap\(\)/m.test(b.code))
  it('has such a snippet', () => expect(withReduce.map((b) => b.file)).toContain('README.md'))
  it.each(withReduce.map((b) => [name(b), b] as const))('%s without its reduceHeap() line is OOM-killed', { timeout: 120_000 }, async (_, b) => {
    const control: Block = { ...b, line: -b.line, code: b.code.replace(/^\s*await reduceHeap\(\).*\n/m, '') }
    expect(control.code).not.toBe(b.code)
    const r = await runInCgroup([process.execPath, program(control)], b.mark.limit ?? DEFAULT_LIMIT)
    expect({ signal: r.signal, killed: r.oomKills > 0 }).toEqual({ signal: 'SIGKILL', killed: true })
  })
})

describe.skipIf(cgroupSkip !== null)(`every shell block is a command that runs or is well-formed${cgroupSkip === null ? '' : ` (skipped: ${cgroupSkip})`}`, () => {
  const shBlocks = blocks.filter((b) => SHELL.has(b.lang) && b.mark.skip === undefined)
  it.each(shBlocks.map((b) => [name(b), b] as const))('%s', { timeout: 120_000 }, async (_, b) => {
    const own: string[][] = []
    const problems = commands(b.code).map((c) => checkCommand(c, own)).filter((p) => p !== null)
    expect(problems).toEqual([])
    for (const args of own) {
      // `watch` runs until interrupted: stop it once it has drawn its first line; exit 0 then.
      const r = await runInCgroup([process.execPath, bin, ...args], DEFAULT_LIMIT, { untilLine: args[0] === 'watch' })
      expect({ args, code: r.code, signal: r.signal }).toEqual({ args, code: 0, signal: null })
      expect(r.stdout.length).toBeGreaterThan(0)
      if (args.includes('--json')) expect(() => JSON.parse(r.stdout)).not.toThrow()
    }
  })
})
