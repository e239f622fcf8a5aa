// A child for the real-kernel policy tests: holds an lru-cache of touched Buffers and fills it on
// command, with (`--plugin`) or without the lru-cache shrinker of node-memory-pressure on its own cgroup.
// Commands, one a line: `fill <entries> <bytes each>` (yields to the event loop between entries),
// `exit`. Answers `ok <bytes held by the cache> <done ns>`. Prints `pressure <level>`,
// `shrink <json>` and `relief` as the monitor reports them.
import { LRUCache } from 'lru-cache'
import { createInterface } from 'node:readline'
import { setImmediate as turn } from 'node:timers/promises'

const withPlugin = process.argv.includes('--plugin')
const cache = new LRUCache({ max: 100_000, maxSize: 2 ** 40, sizeCalculation: (b) => b.length })
let monitor
if (withPlugin) {
  const { createMemoryMonitor } = await import('node-memory-pressure')
  const { lruCacheShrinker } = await import('node-memory-pressure/lru-cache')
  monitor = createMemoryMonitor({ levels: { moderate: '50%', high: '65%', critical: '80%' }, tuning: { cooldownMs: 200 } })
  monitor.register(lruCacheShrinker(cache))
  monitor.on('pressure', (e) => process.stdout.write(`pressure ${e.level}\n`))
  monitor.on('relief', () => process.stdout.write('relief\n'))
  monitor.on('error', (err) => process.stdout.write(`error ${err.code}\n`))
  monitor.on('shrink', (r) => {
    const { cycle, level, levelAfter, requestedBytes, reportedBytes, freedBytes, heap } = r
    process.stdout.write(`shrink ${JSON.stringify({ cycle, level, levelAfter, requestedBytes, reportedBytes, freedBytes, gcMs: heap?.gcMs, mallocTrim: heap?.mallocTrim, shrinkers: r.shrinkers.map((s) => ({ name: s.name, reported: s.reported })) })}\n`)
  })
}
let key = 0
createInterface({ input: process.stdin }).on('line', async (line) => {
  const [cmd, a, b] = line.trim().split(/\s+/)
  if (cmd === 'fill') {
    for (let i = 0; i < Number(a); i++) {
      // fill(1) touches every page, so the cgroup is charged at once.
      cache.set(key++, Buffer.alloc(Number(b), 1))
      await turn()
    }
  } else if (cmd === 'exit') {
    await monitor?.close()
    process.exit(0)
  }
  process.stdout.write(`ok ${cache.calculatedSize} ${process.hrtime.bigint()}\n`)
})
process.stdout.write('ready\n')
