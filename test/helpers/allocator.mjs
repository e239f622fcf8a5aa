// A child process for real-kernel tests: allocates and frees touched memory on command from stdin.
// Commands, one a line: `alloc <bytes>`, `free` (the newest allocation), `freeall`, `exit`,
// `cache <bytes> <file>` (writes and reads back a file: page cache charged to this cgroup, which
// stays charged after the process exits).
// Each command is answered on stdout with `ok <total bytes held> <done ns> <start ns>`: when the
// command finished and began, from process.hrtime.bigint() (CLOCK_MONOTONIC, the same clock in every
// process of the machine).
// Run with MALLOC_MMAP_THRESHOLD_=65536 so that every chunk is its own mapping and is returned to
// the kernel as soon as it is freed.
import fs from 'node:fs'
import { createInterface } from 'node:readline'
import v8 from 'node:v8'
import vm from 'node:vm'

v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc')
const held = []
let total = 0
let start = 0n
const reply = () => process.stdout.write(`ok ${total} ${process.hrtime.bigint()} ${start}\n`)
createInterface({ input: process.stdin }).on('line', (line) => {
  start = process.hrtime.bigint()
  const [cmd, arg] = line.trim().split(/\s+/)
  if (cmd === 'alloc') {
    const n = Number(arg)
    // fill(1) touches every page, so the cgroup is charged now (Buffer.alloc(n) may not).
    held.push(Buffer.alloc(n, 1))
    total += n
  } else if (cmd === 'free') {
    const b = held.pop()
    if (b) total -= b.length
    gc()
  } else if (cmd === 'freeall') {
    held.length = 0
    total = 0
    gc()
  } else if (cmd === 'cache') {
    const file = line.trim().split(/\s+/)[2]
    fs.writeFileSync(file, Buffer.alloc(Number(arg), 7))
    fs.readFileSync(file)
  } else if (cmd === 'exit') {
    process.exit(0)
  }
  reply()
})
// `--watch <threshold>`: also watch the process's own cgroup through the public API, printing each
// event as `event <json>` (and `error <code>` / `close <reason>`).
const watchAt = process.argv.indexOf('--watch')
if (watchAt !== -1) {
  const { onMemoryThreshold } = await import('node-memory-pressure')
  onMemoryThreshold(process.argv[watchAt + 1], (e) => process.stdout.write(`event ${JSON.stringify(e)}\n`), {
    direction: 'both',
    onError: (err) => process.stdout.write(`error ${err.code}\n`),
    onClose: (e) => process.stdout.write(`close ${e.reason}\n`),
  })
}
process.stdout.write('ready\n')
