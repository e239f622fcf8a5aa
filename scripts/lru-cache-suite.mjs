#!/usr/bin/env node
// Runs lru-cache's own test suite against caches with the lru-cache plugin attached and held at
// their own bound (`max`, or `maxSize` for a cache that tracks sizes), and without it, to show that
// holding changes nothing a cache's users can observe while the cap is not below the cache's bound.
//
// The registry's tarball of lru-cache ships no tests, so the suite comes from a clone of
// github.com/isaacs/node-lru-cache (a git directory; the tag v<version> is read) and the built
// package from the registry (`npm pack`). Nothing of theirs is committed: all of it goes to
// node_modules/.cache/lru-cache-suite/. Needs `npm run build` first (the plugin is loaded from dist/).
//
//   node scripts/lru-cache-suite.mjs --tests /path/to/node-lru-cache[.git] \
//     [--versions 10.4.3,11.3.6] [--modes none,wrapper,hook] [--out test/lru-cache-suite.json]
//
// --out: results as JSON (per mode: files passed/failed, test points passed/failed, caches built
// and how they were held); versions run now replace their earlier results in that file.
//
// Modes: none (the suite as is), wrapper (lruCacheShrinker on every cache: methods wrapped),
// hook (every cache built with withHoldHook(options): held through onInsert; lru-cache 11.1+).
// Each cache's constructor is given two calls into a global this script defines, identically in
// every mode (so the suite compares the same code), inert in mode none.

import { execFileSync, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const { values: args } = parseArgs({
  options: {
    tests: { type: 'string' },
    versions: { type: 'string', default: '10.4.3,11.3.6' },
    modes: { type: 'string', default: 'none,wrapper,hook' },
    out: { type: 'string' },
    timeout: { type: 'string', default: '1800' },
  },
})
if (args.tests === undefined) {
  console.error('--tests: a git directory (or clone) of github.com/isaacs/node-lru-cache is needed')
  process.exit(2)
}
const plugin = path.join(root, 'dist/plugins/lru-cache.js')
if (!fs.existsSync(plugin)) {
  console.error(`${plugin} is missing: run npm run build first`)
  process.exit(2)
}
const cacheDir = path.join(root, 'node_modules/.cache/lru-cache-suite')
const git = (...a) => execFileSync('git', ['--git-dir', gitDir(args.tests), ...a], { maxBuffer: 256 * 2 ** 20 })

function gitDir(p) {
  return fs.existsSync(path.join(p, '.git')) ? path.join(p, '.git') : p
}

/** The package from the registry with the suite of the same tag next to it, and tap installed. */
function prepare(version) {
  const dir = path.join(cacheDir, version)
  const pkg = path.join(dir, 'package')
  fs.rmSync(pkg, { recursive: true, force: true })
  fs.mkdirSync(dir, { recursive: true })
  const tgz = execFileSync('npm', ['pack', `lru-cache@${version}`, '--pack-destination', dir, '--silent'], { encoding: 'utf8' }).trim().split('\n').at(-1)
  execFileSync('tar', ['xzf', path.join(dir, tgz), '-C', dir])
  const tag = `v${version}`
  const tree = git('ls-tree', '--name-only', tag).toString().split('\n')
  const wanted = ['test', 'tap-snapshots', '.taprc', 'src', 'tsconfig.json', 'package.json'].filter((p) => tree.includes(p))
  const archive = git('archive', tag, ...wanted)
  execFileSync('tar', ['x', '-C', pkg], { input: archive })
  const manifest = JSON.parse(fs.readFileSync(path.join(pkg, 'package.json'), 'utf8'))
  const tapRange = manifest.devDependencies?.tap ?? 'latest'
  const installed = path.join(dir, 'node_modules/tap/package.json')
  const stamp = path.join(dir, 'tap-range')
  if (!fs.existsSync(installed) || !fs.existsSync(stamp) || fs.readFileSync(stamp, 'utf8') !== tapRange) {
    fs.writeFileSync(path.join(dir, 'package.json'), '{ "private": true }\n')
    const npmInstall = (...specs) => execFileSync('npm', ['install', '--no-save', '--no-package-lock', '--no-audit', '--no-fund', ...specs], { cwd: dir, stdio: 'inherit' })
    npmInstall(`tap@${tapRange}`)
    // The suite's tap config loads the @tapjs/clock plugin, which must be built for tap's own core.
    const core = JSON.parse(fs.readFileSync(installed, 'utf8')).dependencies['@tapjs/core']
    const clocks = JSON.parse(execFileSync('npm', ['view', '@tapjs/clock@>=1.0.0', 'version', 'peerDependencies', '--json'], { encoding: 'utf8' }))
    const clock = clocks.find((c) => c.peerDependencies?.['@tapjs/core'] === core)
    if (clock === undefined) throw new Error(`no @tapjs/clock for @tapjs/core ${core}`)
    npmInstall(`tap@${tapRange}`, `@tapjs/clock@${clock.version}`)
    fs.writeFileSync(stamp, tapRange)
  }
  const patched = []
  for (const file of walk(pkg)) {
    if (!/(^|\/)(dist\/.*\/index\.js|src\/index\.ts)$/.test(path.relative(pkg, file))) continue
    const source = fs.readFileSync(file, 'utf8')
    const next = instrument(source, file.endsWith('.ts'))
    if (next !== source) {
      fs.writeFileSync(file, next)
      patched.push(path.relative(pkg, file))
    }
  }
  if (patched.length === 0) throw new Error(`no LRUCache constructor found in ${pkg}`)
  fs.writeFileSync(path.join(dir, 'attach.mjs'), attachModule())
  return { dir, pkg, patched }
}

function* walk(dir) {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name)
    if (entry.isDirectory()) yield* walk(p)
    else yield p
  }
}

/**
 * Adds a call at the start of LRUCache's constructor (may replace the options) and one at its end
 * (gets the new cache). The end is found by matching braces, skipping strings, templates and comments.
 */
function instrument(source, ts) {
  const m = /\n\s*constructor\(options[^)]*\)\s*\{/.exec(source)
  if (m === null) return source
  const open = m.index + m[0].length
  let depth = 1
  let i = open
  const stack = [] // template literal nesting: depth at which a `${` opened
  while (depth > 0 && i < source.length) {
    const c = source[i]
    if (c === '/' && source[i + 1] === '/') i = source.indexOf('\n', i)
    else if (c === '/' && source[i + 1] === '*') i = source.indexOf('*/', i) + 1
    else if (c === "'" || c === '"') {
      for (i++; source[i] !== c; i++) if (source[i] === '\\') i++
    } else if (c === '`' || (c === '}' && stack.at(-1) === depth)) {
      if (c === '}') stack.pop()
      for (i++; source[i] !== '`'; i++) {
        if (source[i] === '\\') i++
        else if (source[i] === '$' && source[i + 1] === '{') {
          stack.push(depth)
          i++
          break
        }
      }
    } else if (c === '{') depth++
    else if (c === '}') depth--
    i++
  }
  const close = i - 1
  const g = ts ? '(globalThis as any).__lruCacheSuite' : 'globalThis.__lruCacheSuite'
  return (
    source.slice(0, open) +
    ` options = ${g}?.options(options) ?? options;` +
    source.slice(open, close) +
    ` ${g}?.attach(this);\n    ` +
    source.slice(close)
  )
}

function attachModule() {
  return `// Written by scripts/lru-cache-suite.mjs: attaches the plugin to every LRUCache the suite builds.
import fs from 'node:fs'
import { lruCacheShrinker, withHoldHook } from ${JSON.stringify(pathToFileURL(plugin).href)}
const mode = process.env.LRU_CACHE_SUITE_MODE
const counts = { caches: 0, onInsert: 0, wrapper: 0, capped: 0 }
const shrinkers = []
globalThis.__lruCacheSuite = {
  options: (o) => (mode === 'hook' && o !== null && Object.getPrototypeOf(o) === Object.prototype ? withHoldHook(o) : o),
  attach(cache) {
    const shrinker = lruCacheShrinker(cache, { hold: true })
    const bound = shrinker.mode === 'bytes' ? cache.maxSize : cache.max
    if (bound > 0) {
      shrinker.cap = bound
      counts.capped++
    }
    counts.caches++
    counts[shrinker.holdBy]++
    shrinkers.push(new WeakRef(shrinker))
  },
}
process.on('exit', () => {
  const evicted = shrinkers.reduce((n, r) => n + (r.deref()?.stats.capped ?? 0), 0)
  const file = process.argv[1] ?? ''
  fs.appendFileSync(process.env.LRU_CACHE_SUITE_LOG, JSON.stringify({ file, ...counts, evictedByCap: evicted }) + '\\n')
})
`
}

/** Runs tap in `pkg` (the whole suite, or `only` files); returns per-file results and the attach counts. */
function run({ dir, pkg }, mode, only = []) {
  const log = path.join(dir, `attached-${mode}.jsonl`)
  fs.rmSync(log, { force: true })
  const env = { ...process.env, LRU_CACHE_SUITE_MODE: mode, LRU_CACHE_SUITE_LOG: log }
  if (mode !== 'none') env.NODE_OPTIONS = `${process.env.NODE_OPTIONS ?? ''} --import=${pathToFileURL(path.join(dir, 'attach.mjs')).href}`.trim()
  const tap = path.join(dir, 'node_modules/.bin/tap')
  const r = spawnSync(tap, ['--disable-coverage', '--reporter=tap', '--jobs=1', '--timeout=120', ...only], {
    cwd: pkg,
    env,
    encoding: 'utf8',
    maxBuffer: 512 * 2 ** 20,
    timeout: Number(args.timeout) * 1000,
  })
  const output = `${r.stdout}\n${r.stderr}`
  fs.writeFileSync(path.join(dir, `tap-${mode}${only.length ? '-rerun' : ''}.txt`), output)
  // The top-level points of tap's TAP stream are the test files; the subtests are indented.
  const files = {}
  for (const line of r.stdout.split('\n')) {
    const t = /^(ok|not ok) \d+ - (\S+)/.exec(line)
    if (t !== null) files[t[2]] = t[1] === 'ok' ? 'pass' : 'fail'
  }
  const asserts = { pass: 0, fail: 0, todo: 0, skip: 0 }
  for (const line of r.stdout.split('\n')) {
    const t = /^\s*(ok|not ok) \d+/.exec(line)
    if (t === null) continue
    if (/# TODO/.test(line)) asserts.todo++
    else if (/# SKIP/.test(line)) asserts.skip++
    else asserts[t[1] === 'ok' ? 'pass' : 'fail']++
  }
  const lines = fs.existsSync(log) ? fs.readFileSync(log, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)) : []
  const attached = lines.length === 0 ? null : { caches: 0, onInsert: 0, wrapper: 0, capped: 0, evictedByCap: 0 }
  const cachesByFile = {}
  for (const { file, ...counts } of lines) {
    for (const [k, v] of Object.entries(counts)) attached[k] += v
    const name = path.relative(pkg, file)
    cachesByFile[name] = (cachesByFile[name] ?? 0) + counts.caches
  }
  return { exit: r.status, signal: r.signal, files, asserts, attached, cachesByFile }
}

const RERUNS = 3
const results = { node: process.version, plugin: 'dist/plugins/lru-cache.js', runs: [], reruns: [] }
for (const version of args.versions.split(',')) {
  const prepared = prepare(version)
  console.log(`lru-cache ${version}: instrumented ${prepared.patched.join(', ')}`)
  const modes = args.modes.split(',').filter((m) => !(m === 'hook' && Number(version.split('.')[0]) < 11)) // no onInsert before 11.1
  const byMode = {}
  for (const mode of modes) {
    const result = run(prepared, mode)
    const failed = Object.entries(result.files).filter(([, v]) => v === 'fail').map(([k]) => k)
    console.log(`  ${mode}: files ${Object.keys(result.files).length - failed.length} passed, ${failed.length} failed${failed.length ? ` (${failed.join(', ')})` : ''}; points ${result.asserts.pass} passed, ${result.asserts.fail} failed; attached ${JSON.stringify(result.attached)}`)
    results.runs.push({ version, mode, ...result, failedFiles: failed })
    byMode[mode] = new Set(failed)
  }
  // A file that failed in one mode and not in another is run alone RERUNS times in every mode: some
  // of lru-cache's tests race timers, and fail or pass by the load of the machine.
  const discordant = [...new Set(Object.values(byMode).flatMap((s) => [...s]))].filter((f) => !modes.every((m) => byMode[m].has(f)))
  for (const file of discordant) {
    const passes = {}
    for (const mode of modes) {
      passes[mode] = 0
      for (let i = 0; i < RERUNS; i++) if (run(prepared, mode, [file]).files[file] === 'pass') passes[mode]++
    }
    console.log(`  rerun ${file} alone ${RERUNS} times: passed ${JSON.stringify(passes)}`)
    results.reruns.push({ version, file, runs: RERUNS, passes })
  }
}
if (args.out !== undefined) {
  // Versions run now replace their earlier results in the file; the others stay.
  const out = path.resolve(args.out)
  const ran = new Set(args.versions.split(','))
  const before = fs.existsSync(out) ? JSON.parse(fs.readFileSync(out, 'utf8')) : { runs: [], reruns: [] }
  results.runs = [...before.runs.filter((r) => !ran.has(r.version)), ...results.runs]
  results.reruns = [...before.reruns.filter((r) => !ran.has(r.version)), ...results.reruns]
  fs.writeFileSync(out, JSON.stringify(results, null, 2) + '\n')
}
