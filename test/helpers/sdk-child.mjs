// A child process for real-kernel fault tests: runs the SDK on its own memory cgroup (the default
// discovery) and a cache of 1 MiB Buffers, printing what the monitor reports as `event <json>`.
// Usage: node sdk-child.mjs <dist/index.js> [--levels] [--threshold <t>]
// Commands on stdin, each answered `ok <usage> <ns>`: `fill <bytes>` (cache until the cgroup's
// usage reaches bytes), `grow <MiB>` (held, not cache: 1 MiB every 20 ms), `usage` (a snapshot),
// `freeall` (drops the cache and everything held, then collects), `diagnostics` (printed as an event).
import v8 from 'node:v8'
import vm from 'node:vm'
import { createInterface } from 'node:readline'

v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc')
const MiB = 2 ** 20
const args = process.argv.slice(2)
const sdk = await import(args[0])
const out = (e) => process.stdout.write(`event ${JSON.stringify(e)}\n`)
const cache = []
const held = []
const monitor = sdk.createMemoryMonitor(args.includes('--levels') ? { levels: true } : {})
monitor.on('error', (e) => out({ type: 'error', code: e.code }))
monitor.on('close', (e) => out({ type: 'close', reason: e.reason }))
monitor.on('oom', () => out({ type: 'oom' }))
monitor.on('pressure', (e) => out({ type: 'pressure', level: e.level, previous: e.previous, limit: e.snapshot.limit }))
monitor.on('shrink', (r) => out({ type: 'shrink', level: r.level, reported: r.reportedBytes }))
if (args.includes('--levels')) {
  monitor.register({
    name: 'cache',
    size: () => cache.length * MiB,
    shrink: ({ targetBytes }) => {
      let freed = 0
      while (cache.length > 0 && freed < targetBytes) {
        cache.pop()
        freed += MiB
      }
      return freed
    },
  })
}
const t = args.indexOf('--threshold')
if (t !== -1) {
  monitor.addThreshold(args[t + 1], {
    direction: 'both',
    handler: (e) => out({ type: 'threshold', direction: e.direction, threshold: e.threshold, signal: e.signal, limit: e.limit }),
  })
}
const usage = () => (monitor.closed ? -1 : monitor.snapshot().usage)
const reply = (n) => process.stdout.write(`ok ${n} ${process.hrtime.bigint()}\n`)
createInterface({ input: process.stdin }).on('line', async (line) => {
  const [cmd, arg] = line.trim().split(/\s+/)
  if (cmd === 'fill') {
    while (usage() < Number(arg)) cache.push(Buffer.alloc(MiB, 1))
  } else if (cmd === 'grow') {
    for (let i = 0; i < Number(arg); i++) {
      held.push(Buffer.alloc(MiB, 1))
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  } else if (cmd === 'freeall') {
    cache.length = 0
    held.length = 0
    gc()
    gc()
  } else if (cmd === 'registered') {
    await monitor.registered()
  } else if (cmd === 'diagnostics') {
    out({ type: 'diagnostics', ...monitor.diagnostics() })
  }
  reply(usage())
})
await monitor.registered()
process.stdout.write('ready\n')
