// Numbers and files of a bench run: percentiles, the machine description, JSON and Markdown output.

import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

export function pct(xs, p) {
  if (xs.length === 0) return null
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]
}

export function summary(xs) {
  if (xs.length === 0) return { n: 0, p50: null, p99: null, max: null, min: null }
  return { n: xs.length, min: Math.min(...xs), p50: pct(xs, 50), p99: pct(xs, 99), max: Math.max(...xs) }
}

export const median = (xs) => pct(xs, 50)

/** The middle value, or the mean of the two middle ones: how ratios of side-by-side pairs are summarised. */
export function pairMedian(xs) {
  const v = [...xs].sort((a, b) => a - b)
  const m = v.length >> 1
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2
}

export function machine() {
  const load = os.loadavg()
  return {
    cores: os.availableParallelism(),
    cpu: os.cpus()[0]?.model,
    memoryBytes: os.totalmem(),
    kernel: os.release(),
    node: process.version,
    loadavgAtStart: load.map((x) => Number(x.toFixed(2))),
    date: new Date().toISOString(),
  }
}

export function machineLine(m) {
  return `${m.cores} cores (${m.cpu}), Linux ${m.kernel}, Node ${m.node}, load average ${m.loadavgAtStart.join(' ')} at start, ${m.date}`
}

export function table(header, rows) {
  return [`| ${header.join(' | ')} |`, `| ${header.map(() => '---').join(' | ')} |`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n')
}

export const fmt = (x, digits = 2) => (x === null || x === undefined || Number.isNaN(x) ? '–' : Number(x).toFixed(digits))
export const mib = (bytes, digits = 1) => (bytes === null || bytes === undefined ? '–' : (bytes / 2 ** 20).toFixed(digits))

/** Writes `<out>/<name>.json` and `<name>.md`. */
export function write(out, name, json, md) {
  fs.mkdirSync(out, { recursive: true })
  fs.writeFileSync(path.join(out, `${name}.json`), `${JSON.stringify(json, null, 2)}\n`)
  fs.writeFileSync(path.join(out, `${name}.md`), `${md.trim()}\n`)
}

/** Reads `/proc/<pid>/task/*` : CPU time on the CPU (ns, schedstat) and context switches, summed over threads. */
export function procCost(pid) {
  let cpuNs = 0
  let voluntary = 0
  let involuntary = 0
  let threads = 0
  for (const t of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      cpuNs += Number(fs.readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'utf8').split(' ')[0])
      const st = fs.readFileSync(`/proc/${pid}/task/${t}/status`, 'utf8')
      voluntary += Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(st)[1])
      involuntary += Number(/^nonvoluntary_ctxt_switches:\s+(\d+)/m.exec(st)[1])
      threads++
    } catch {
      // thread ended between readdir and read
    }
  }
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const ticks = Number(fields[11]) + Number(fields[12]) // utime + stime, in clock ticks
  return { cpuNs, ticks, voluntary, involuntary, threads }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
