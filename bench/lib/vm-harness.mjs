// The VM harness of the tests (test/vm/harness.ts) for the benches, which are plain JavaScript: the
// two TypeScript files are transpiled (types dropped, nothing checked) into test/vm/.cache and imported.

import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import ts from 'typescript'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')

/** `{ prepare, runVm, projectRoot }` of test/vm/harness.ts. */
export async function loadHarness() {
  const out = path.join(root, 'test', 'vm', '.cache', 'bench-js', 'test', 'vm')
  for (const rel of ['harness.ts', 'guest/reporter.ts']) {
    const src = fs.readFileSync(path.join(root, 'test', 'vm', rel), 'utf8')
    const { outputText } = ts.transpileModule(src, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, verbatimModuleSyntax: false } })
    const file = path.join(out, rel.replace(/\.ts$/, '.js'))
    fs.mkdirSync(path.dirname(file), { recursive: true })
    fs.writeFileSync(file, outputText)
  }
  // A package.json marking the copies as ES modules, without the package's name (the harness looks
  // for that one to find the project root).
  fs.writeFileSync(path.join(out, 'package.json'), '{"type":"module"}\n')
  return import(pathToFileURL(path.join(out, 'harness.js')).href)
}
