// A child for the real-kernel heap test: an lru-cache of plain JavaScript objects (about 1 KiB of
// V8 heap each), with (`--plugin`) or without node-memory-pressure's monitor and lru-cache plugin.
// Started with a small heap (NODE_OPTIONS=--max-old-space-size=...) it runs out of V8 heap long
// before its cgroup's limit. Commands, one a line: `fill <entries>` (yields to the event loop every
// 100 entries, as a service between requests), `exit`. Answers `ok <entries held> <done ns>`.
// Prints `pressure <json>` and `shrink <json>` as the monitor reports them.
import { LRUCache } from 'lru-cache'
import { createInterface } from 'node:readline'
import { setImmediate as turn } from 'node:timers/promises'

const ENTRY_BYTES = 1024
const withPlugin = process.argv.includes('--plugin')
const cache = new LRUCache({ maxSize: 2 ** 40, sizeCalculation: () => ENTRY_BYTES })
let monitor
if (withPlugin) {
  const { createMemoryMonitor } = await import('node-memory-pressure')
  const { lruCacheShrinker } = await import('node-memory-pressure/lru-cache')
  monitor = createMemoryMonitor({ levels: true })
  monitor.register(lruCacheShrinker(cache))
  monitor.on('pressure', (e) => process.stdout.write(`pressure ${JSON.stringify({ level: e.level, limit: e.limit, heap: e.heap })}\n`))
  monitor.on('error', (err) => process.stdout.write(`error ${err.code}\n`))
  monitor.on('shrink', (r) => {
    const { before, after, heap, ...rest } = r // the report without its snapshots
    process.stdout.write(`shrink ${JSON.stringify(rest)}\n`)
  })
}
// about 1 KiB of heap: a small object and 120 doubles in their own backing store
const entry = (i) => ({ id: i, values: Array.from({ length: 120 }, (_, j) => i + j / 2) })
let key = 0
createInterface({ input: process.stdin }).on('line', async (line) => {
  const [cmd, a] = line.trim().split(/\s+/)
  if (cmd === 'fill') {
    for (let i = 0; i < Number(a); i++) {
      cache.set(key++, entry(key))
      if (i % 100 === 99) await turn()
    }
  } else if (cmd === 'exit') {
    await monitor?.close()
    process.exit(0)
  }
  process.stdout.write(`ok ${cache.size} ${process.hrtime.bigint()}\n`)
})
process.stdout.write('ready\n')
