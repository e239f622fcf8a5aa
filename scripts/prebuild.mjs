// Builds the Node-API prebuild shipped in the npm tarball (prebuilds/<platform>-<arch>/), in a scratch
// copy of the sources so that the checkout's build/ (which the tests load) is never cleaned.
// Run through `npm run prebuildify` (npm puts its bundled node-gyp on PATH); `npm pack` runs it.
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-prebuild-'))
const env = { ...process.env }
// node-gyp downloads headers for the target unless told where they are; a Node installed with its
// headers (distribution packages, the official tarballs) has them next to the binary.
const localHeaders = path.join(path.dirname(process.execPath), '..', 'include', 'node')
if (env.npm_config_nodedir === undefined && fs.existsSync(path.join(localHeaders, 'node_api.h'))) {
  env.npm_config_nodedir = path.resolve(localHeaders, '..', '..')
}
try {
  for (const entry of ['binding.gyp', 'package.json', 'native']) {
    fs.cpSync(path.join(root, entry), path.join(work, entry), { recursive: true })
  }
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(work, 'node_modules'))
  const prebuildify = path.join(root, 'node_modules', 'prebuildify', 'bin.js')
  // --napi: one build serves every Node version with Node-API 8 (the addon's NAPI_VERSION).
  // --tag-libc: names the file node-memory-pressure.glibc.node, so node-gyp-build skips it on musl.
  execFileSync(process.execPath, [prebuildify, '--napi', '--strip', '--tag-libc', '-t', process.versions.node, '--cwd', work, '--out', root], {
    stdio: 'inherit',
    env,
  })
} finally {
  fs.rmSync(work, { recursive: true, force: true })
}
const dir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`)
for (const file of fs.readdirSync(dir)) console.log(`prebuild: ${path.join(dir, file)} (${fs.statSync(path.join(dir, file)).size} bytes)`)
