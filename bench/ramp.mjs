// A bench child that leaks at a steady rate until the OOM killer stops it: `--step` bytes (touched)
// every `--every` ms, printing `alloc <ns> <bytes held>` after each step.
import { parseArgs } from 'node:util'

const { values } = parseArgs({ options: { step: { type: 'string', default: String(2 ** 20) }, every: { type: 'string', default: '50' } } })
const step = Number(values.step)
const held = []
setInterval(() => {
  held.push(Buffer.alloc(step, 1))
  process.stdout.write(`alloc ${process.hrtime.bigint()} ${held.length * step}\n`)
}, Number(values.every))
process.stdout.write('ready\n')
