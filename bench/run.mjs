// Runs the benches and writes their results:
// `node bench/run.mjs [--quick] [--only a,b] [--out dir] [--limits 192,256] [--repeats n] [--no-vm]`
// (vm-v2 boots the cgroup v2 VM of test/vm/ and runs its own stage inside; --no-vm or MP_VM=0 skips
// it, and it skips itself with the reason where the VM cannot be had; it also writes its results
// to bench/results/vm-v2/).
// (--limits and --repeats change the CRAMM sweep only: which limits, in MiB, and how many repetitions,
// the first one of every strategy and the rest side-by-side pairs; --workload too: buffers (default),
// objects, heap (objects with V8's heap at half the limit), phase, two-caches, no-cache: see cramm.mjs).
// Each bench writes <out>/<name>.json (with the machine), <name>.md and SVG charts; the Markdown
// files are also joined into <out>/README.md. Needs root and a writable cgroup v1 memory hierarchy.

import fs from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { removeAll } from './lib/cgroup.mjs'
import { machine as describeMachine, write } from './lib/report.mjs'
import { summarize } from './lib/summary.mjs'

const ALL = ['latency', 'idle', 'lead-time', 'control', 'cramm', 'overhead', 'phase', 'reclaim', 'vm-v2']
const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    out: { type: 'string' },
    limits: { type: 'string' },
    repeats: { type: 'string' },
    workload: { type: 'string' },
    'no-vm': { type: 'boolean', default: false },
  },
})
const quick = values.quick
const only = (values.only ? values.only.split(',') : ALL).filter((n) => !(n === 'vm-v2' && values['no-vm']))
for (const name of only) if (!ALL.includes(name)) throw new RangeError(`--only: unknown bench ${JSON.stringify(name)} (known: ${ALL.join(', ')})`)
const cramm = {}
if (values.limits !== undefined) {
  cramm.limits = values.limits.split(',').map(Number)
  if (cramm.limits.some((l) => !Number.isInteger(l) || l < 64)) throw new RangeError(`--limits: whole MiB of 64 or more, comma-separated (received ${JSON.stringify(values.limits)})`)
}
if (values.repeats !== undefined) {
  cramm.repeats = Number(values.repeats)
  if (!Number.isInteger(cramm.repeats) || cramm.repeats < 1) throw new RangeError(`--repeats: a whole number of 1 or more (received ${JSON.stringify(values.repeats)})`)
}
if (values.workload !== undefined) cramm.workload = values.workload
const out = values.out ?? path.join('bench', 'results', quick ? 'quick' : 'full')

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    removeAll().finally(() => process.exit(130))
  })
}

const machine = describeMachine()
const started = Date.now()
const done = []
try {
  for (const name of only) {
    const t = Date.now()
    console.error(`== ${name}${quick ? ' (quick)' : ''}`)
    const mod = await import(`./${name}.mjs`)
    const r = await mod.run({ quick, machine, out, cramm })
    write(out, r.name, { ...r.json, mode: quick ? 'quick' : 'full' }, r.md)
    for (const [file, svg] of Object.entries(r.charts ?? {})) fs.writeFileSync(path.join(out, `${file}.svg`), svg)
    console.log(r.md)
    console.error(`== ${name} took ${((Date.now() - t) / 1000).toFixed(0)} s`)
    done.push(r.name)
  }
} finally {
  await removeAll()
}
const parts = ALL.filter((n) => fs.existsSync(path.join(out, `${n}.md`))).map((n) => fs.readFileSync(path.join(out, `${n}.md`), 'utf8'))
const charts = fs.readdirSync(out).filter((f) => f.endsWith('.svg')).sort()
const headline = summarize(out)
fs.writeFileSync(path.join(out, 'SUMMARY.md'), `${headline}\n`)
const flags = `${quick ? ' --quick' : ''}${values.only ? ` --only ${values.only}` : ''}${values.limits ? ` --limits ${values.limits}` : ''}${values.repeats ? ` --repeats ${values.repeats}` : ''}${values.workload ? ` --workload ${values.workload}` : ''}`
fs.writeFileSync(path.join(out, 'README.md'), `# Bench results (${quick ? 'quick' : 'full'} run)\n\nWritten by \`node bench/run.mjs${flags}\`; the last run took ${((Date.now() - started) / 60000).toFixed(1)} min (${done.join(', ')}).\n\n## Summary\n\n${headline}\n\n${parts.map((p) => p.replace(/^# /m, '## ')).join('\n\n')}\n\n## Charts\n\n${charts.map((c) => `![${c}](${c})`).join('\n\n')}\n`)
