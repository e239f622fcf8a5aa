// What a shrink cycle's heap reduction costs and what it gives back: reduceHeap() (two full
// collections, then malloc_trim) against one collection and against gc({type:'major'}), for
// several sizes of live heap, each run in a fresh process. Writes bench/results/heap-reduction.md.
//
//   node bench/heap-reduction.mjs [--reps 5] [--live 16,128,384]

import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

const MiB = 2 ** 20
const self = fileURLToPath(import.meta.url)
const { values } = parseArgs({
  options: {
    child: { type: 'string' },
    live: { type: 'string', default: '16,128,384' },
    reps: { type: 'string', default: '5' },
  },
})

if (values.child !== undefined) await child(values.child, Number(values.live))
else await main()

/** One measurement: build a live heap, drop 64 MiB of objects and 64 MiB of Buffers, reduce. */
async function child(method, liveMib) {
  const { reduceHeap } = await import('node-memory-pressure')
  const v8 = await import('node:v8')
  const vm = await import('node:vm')
  v8.setFlagsFromString('--expose-gc')
  const gc = vm.runInNewContext('gc')
  const objects = (mib) => {
    const out = []
    // about 64 bytes per object with its string: mib × 16384 objects
    for (let i = 0; i < mib * 16384; i++) out.push({ i, s: `v${i}` })
    return out
  }
  const live = objects(liveMib)
  let garbage = objects(64)
  let buffers = Array.from({ length: 64 }, () => Buffer.alloc(MiB, 1))
  await new Promise((r) => setImmediate(r))
  garbage = null
  buffers = null
  const before = process.memoryUsage()
  const t = performance.now()
  let trim = ''
  if (method === 'reduceHeap') trim = (await reduceHeap()).mallocTrim
  else if (method === 'gc-once') gc()
  else if (method === 'gc-major-options') gc({ type: 'major', execution: 'sync' })
  const ms = performance.now() - t
  const after = process.memoryUsage()
  const freed = (k) => (before[k] - after[k]) / MiB
  process.stdout.write(JSON.stringify({ ms, heapFreed: freed('heapUsed'), externalFreed: freed('external'), rssFreed: freed('rss'), trim, live: live.length }))
}

async function main() {
  const methods = ['reduceHeap', 'gc-once', 'gc-major-options']
  const lives = values.live.split(',').map(Number)
  const reps = Number(values.reps)
  const rows = []
  for (const live of lives) {
    for (const method of methods) {
      const runs = []
      for (let r = 0; r < reps; r++) {
        const out = execFileSync(process.execPath, [self, '--child', method, '--live', String(live)], {
          env: { ...process.env, MALLOC_MMAP_THRESHOLD_: '131072' },
          maxBuffer: 1 << 20,
        })
        runs.push(JSON.parse(out.toString()))
      }
      const med = (k) => {
        const v = runs.map((x) => x[k]).sort((a, b) => a - b)
        return v[Math.floor(v.length / 2)]
      }
      const row = { live, method, ms: med('ms'), heapFreed: med('heapFreed'), externalFreed: med('externalFreed'), rssFreed: med('rssFreed'), trim: runs[0].trim, minHeapFreed: Math.min(...runs.map((x) => x.heapFreed)) }
      rows.push(row)
      console.log(JSON.stringify(row))
    }
  }
  const f = (n, d = 1) => n.toFixed(d)
  const lines = [
    '# Heap reduction: time and memory given back',
    '',
    `Node ${process.version}, ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? 'unknown'}), Linux ${os.release()}, shared with other engineers' runs (times move between runs; compare within a row group). Produced by \`node bench/heap-reduction.mjs --reps ${reps} --live ${values.live}\`.`,
    '',
    `Each cell: the median of ${reps} fresh processes. Each builds a live heap of small objects, then drops 64 MiB of objects and 64 MiB of 1 MiB Buffers, and runs one method. "freed" is the drop in \`process.memoryUsage()\` across the call (V8 heap used, external memory, resident set); "min heap freed" is the worst run. reduceHeap = two \`gc()\` calls, then \`malloc_trim(0)\`.`,
    '',
    '| live heap | method | ms | ms ÷ one gc() | heap freed MiB | min heap freed MiB | external freed MiB | rss freed MiB | malloc_trim |',
    '| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
  ]
  for (const r of rows) {
    const once = rows.find((x) => x.live === r.live && x.method === 'gc-once')
    lines.push(`| ${r.live} MiB | ${r.method} | ${f(r.ms)} | ${f(r.ms / once.ms, 2)} | ${f(r.heapFreed)} | ${f(r.minHeapFreed)} | ${f(r.externalFreed)} | ${f(r.rssFreed)} | ${r.trim || '–'} |`)
  }
  fs.mkdirSync(new URL('./results/', import.meta.url), { recursive: true })
  fs.writeFileSync(new URL('./results/heap-reduction.md', import.meta.url), `${lines.join('\n')}\n`)
  console.log(lines.join('\n'))
}
