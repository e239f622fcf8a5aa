// Bench stage: cgroup v2. Boots the test VM (test/vm/, software emulation) with enough memory for
// the limits used and runs bench/vm-guest.mjs inside it: latency, idle cost, lead time before the
// OOM kill and the CRAMM sweep, every strategy side by side in the one VM run, so every figure is a
// ratio within the run (the emulated CPU is 5 to 20 times slower than the host, and noisy).
// Skipped with the reason when the VM cannot be had here, or with MP_VM=0.

import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { loadHarness } from './lib/vm-harness.mjs'
import { fmt, table } from './lib/report.mjs'

const MiB = 2 ** 20
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
/** The largest memory.max used inside (the CRAMM pairs run two such cgroups at once) plus room for Node and the watchers. */
const GUEST_MIB = 2 * 256 + 640

export async function run({ quick, machine }) {
  const name = 'vm-v2'
  const skip = (why) => ({ name, json: { bench: name, skipped: why }, md: `# 9. cgroup v2 in a VM\n\nSkipped: ${why}.\n` })
  if (process.env.MP_VM === '0') return skip('MP_VM=0')
  const { prepare, runVm } = await loadHarness()
  const prepared = await prepare()
  if ('skip' in prepared) return skip(prepared.skip)
  const results = {}
  const started = Date.now()
  const vm = await runVm({
    vmlinux: prepared.vmlinux,
    memoryMiB: GUEST_MIB,
    timeoutMs: (quick ? 30 : 90) * 60_000,
    // MP_VM_CALLERS=1: each CRAMM cell also says which functions opened each cgroup file (lib/count-files.mjs).
    run: { command: `${process.env.MP_VM_CALLERS === '1' ? 'MP_COUNT_CALLERS=1 ' : ''}node bench/vm-guest.mjs${quick ? ' --quick' : ''}${process.env.MP_VM_SMOKE === '1' ? ' --smoke' : ''}${process.env.MP_VM_ONLY ? ` --only ${process.env.MP_VM_ONLY}` : ''}${process.env.MP_VM_AB_BUILD ? ` --ab-build ${process.env.MP_VM_AB_BUILD}${process.env.MP_VM_AB_PAIRS ? ` --ab-pairs ${process.env.MP_VM_AB_PAIRS}` : ''}` : ''}`, include: ['bench'] },
    onConsoleLine: (line) => {
      const m = /^@@mp-vm result (\S+)/.exec(line)
      if (m === null) return
      const { name: key, value } = JSON.parse(Buffer.from(m[1], 'base64').toString('utf8'))
      results[key] = value
      process.stderr.write(`[vm] ${key} after ${((Date.now() - started) / 1000).toFixed(0)} s\n`)
    },
  })
  const guest = {
    kernel: vm.kernel, memoryMiB: GUEST_MIB, cpus: 2, accel: 'tcg (software emulation)', bootS: vm.timings.bootMs / 1000,
    runS: vm.timings.testMs === null ? null : vm.timings.testMs / 1000, qemu: vm.qemu,
    // The host is shared: its load at the end beside the one at the start (machine.loadavgAtStart).
    hostLoadAtEnd: os.loadavg().map((x) => Math.round(x * 100) / 100),
  }
  if (results.error || !results.done) {
    fs.mkdirSync(path.join(root, 'bench', 'results', 'vm-v2'), { recursive: true })
    fs.writeFileSync(path.join(root, 'bench', 'results', 'vm-v2', 'last-failure.log'), vm.console.slice(-20000))
    throw new Error(`the v2 stage failed in the VM: ${results.error?.message ?? 'no end of run'} (console in bench/results/vm-v2/last-failure.log)`)
  }
  const json = { bench: name, machine, guest, ...results }
  const md = render(json, quick)
  // A run of some parts only (MP_VM_ONLY) goes beside the complete runs, not over them.
  const mode = process.env.MP_VM_SMOKE === '1' ? 'smoke' : quick ? 'quick' : 'full'
  const dir = path.join(root, 'bench', 'results', 'vm-v2', `${process.env.MP_VM_ONLY ? `${mode}-${process.env.MP_VM_ONLY.replaceAll(',', '-')}` : mode}${process.env.MP_VM_AB_BUILD ? '-ab' : ''}`)
  fs.mkdirSync(dir, { recursive: true })
  fs.writeFileSync(path.join(dir, 'vm-v2.json'), `${JSON.stringify(json, null, 1)}\n`)
  fs.writeFileSync(path.join(dir, 'README.md'), md)
  return { name, json, md }
}

const ms = (x) => (x === null || x === undefined ? '–' : fmt(x, x < 10 ? 2 : 0))

export function render(r, quick) {
  const g = r.guest
  const parts = [`# 9. cgroup v2 in a VM (${quick ? 'quick' : 'full'} run)

Guest: ${g.kernel}, ${g.memoryMiB} MiB, ${g.cpus} vCPUs under ${g.accel} on the host below (${r.machine?.cores ?? '?'} cores, load average ${r.machine?.loadavgAtStart?.join(' ') ?? '?'} at the start${g.hostLoadAtEnd ? `, ${g.hostLoadAtEnd.join(' ')} at the end` : ''}: other jobs share it); boot ${fmt(g.bootS, 1)} s, stage ${fmt(g.runS ?? 0, 0)} s. Every figure compares strategies run side by side in this one VM run; absolute times are those of an emulated CPU 5 to 20 times slower than the host.`]
  const l = r.latency
  if (l) {
    parts.push(`## Latency (JavaScript allocation in the SDK's own process)

The service allocates ${l.stepBytes / MiB} MiB of JavaScript arrays (8 KiB each) every ${l.stepEveryMs} ms after ${l.quietMs / 1000} s of steady memory; ${l.thresholds.length} thresholds 8 MiB apart; the SDK (cgroup-v2 backend on its own cgroup, signals: ${l.signals}) runs in the allocating process, the others in processes of their own. Latency: from the end of the step after which \`memory.current\` was first at or above the threshold to the handler (negative: seen during the step). ${l.steps} steps.

${table(['strategy', 'crossings seen', 'p50 ms', 'p99 ms', 'max ms', 'overshoot p50 MiB', 'overshoot max MiB', 'delivered by'], l.rows.map((x) => [x.strategy, `${x.seen} of ${x.of}`, ms(x.p50Ms), ms(x.p99Ms), ms(x.maxMs), ms(x.overshootP50MiB), ms(x.overshootMaxMiB), Object.entries(x.signals).map(([k, v]) => `${k} ${v}`).join(', ') || '–']))}`)
  }
  const i = r.idle
  if (i) {
    parts.push(`## Idle cost (levels armed, memory steady)

Fresh processes: two services with the SDK and \`createMemoryMonitor({ levels: true })\` on cgroups limited to 256 MiB, one as shipped and one clock-driven (\`gc: null\`: the timer of before, 10 ms to 1 s), beside watchers of the first cgroup and an idle Node process (the floor). ${fmt(i.minutes, 1)} min measured after ${fmt(i.settleMs / 1000, 0)} s of settling; usage ${fmt(i.usageMiB[0], 1)} → ${fmt(i.usageMiB[1], 1)} MiB, level ${i.level}.

The SDK's own wake-ups a minute (timer reads of the backend, timers of the policy):

${table(['SDK', 'timed reads / min', 'policy timers / min'], i.sdkOwn.map((x) => [x.strategy, fmt(x.timedReadsPerMin, 2), fmt(x.policyTimersPerMin, 2)]))}

Per process (all threads), CPU time and voluntary context switches a minute:

${table(['strategy', 'CPU ms / min', 'wake-ups / min'], i.rows.map((x) => [x.strategy, fmt(x.cpuMsPerMin, 1), fmt(x.wakeupsPerMin, 1)]))}`)
  }
  const t = r['lead-time']
  if (t) {
    const kindName = { js: 'JavaScript objects, in the SDK\'s process', buf: 'Buffers, in the SDK\'s process', native: 'another process of the cgroup (native memory: V8 collects nothing)' }
    parts.push(`## Lead time before the OOM kill (a ${t.leakMiBps} MiB/s leak, 256 MiB limit, warning at 80%)

The leak starts after ${t.quietMs / 1000} s of steady memory (the SDK's timer has slowed down); the rate the emulated CPU achieved is given per row (${t.leakMiBps} MiB/s asked; the native leak is \`bench/ramp.mjs\`, 1 MiB every 50 ms). Lead time = the kill minus the first warning; poll 10 ms watches from a process of its own.

${table(['leak', 'killed', 'SDK lead ms', 'SDK signal', 'poll 10 ms lead ms', 'SDK / poll 10 ms', 'SDK usage at warning MiB'], t.runs.map((x) => {
      const [sdk, poll] = x.rows
      return [`${kindName[x.kind]}${x.options?.poll?.idleIntervalMs ? ` (poll.idleIntervalMs ${x.options.poll.idleIntervalMs})` : ''}${x.achievedMiBps ? `, ${fmt(x.achievedMiBps, 1)} MiB/s` : ''}`, `${x.killed} (${x.signal}), oom_kill ${x.oomKills}, at ${fmt(x.killAtS, 1)} s`, sdk.leadMs === null ? 'no warning' : ms(sdk.leadMs), sdk.signal ?? '–', poll.leadMs === null ? 'no warning' : ms(poll.leadMs),
        sdk.leadMs !== null && poll.leadMs ? fmt(sdk.leadMs / poll.leadMs, 3) : '–', sdk.usageAtWarningMiB === null ? '–' : fmt(sdk.usageAtWarningMiB, 1)]
    }))}`)
  }
  const c = r.cramm
  if (c) {
    parts.push(`## CRAMM sweep (${c.warmup} s warm-up + ${c.seconds} s per cell, PBKDF2 cost ${c.cost})

Each limit: every fixed size and the SDK once, one after the other; then the SDK side by side with the best fixed size of that round (two cgroups with the same limit, started together), ${c.pairs} pair${c.pairs > 1 ? 's' : ''}. Ratio: requests per CPU second at equal speed, SDK / best fixed, median over the pairs.

${table(['workload', 'limit MiB', 'best fixed (round 1)', 'SDK / best fixed (pairs)', 'hit ratio SDK / fixed', 'SDK OOM kills', 'round 1: at equal speed (hit ratio, kills)'], c.rows.map((x) => [x.workload, x.limitMib, x.best ?? 'none survived', x.ratio === null ? '–' : `${fmt(x.ratio, 3)} [${x.pairs.map((p) => fmt(p.ratio ?? 0, 3)).join(', ')}]`, x.pairs.map((p) => fmt(p.ratioHit ?? 0, 3)).join(', ') || '–', x.sdkKills,
      x.rep0.map((y) => `${y.label}: ${y.scaled === null ? '–' : fmt(y.scaled, 0)} (${fmt(y.hitRatio ?? 0, 2)}${y.killed ? ', killed' : ''})`).join('; ')]))}`)
    const readsPerS = (y) => (y.files?.['memory.current'] ? fmt(y.files['memory.current'].opens / c.seconds, 1) : '–')
    const ab = c.rows.flatMap((x) => (x.ab ?? []).map((p) => [x.workload, x.limitMib, p.build, fmt(p.ratio ?? 0, 3), `${readsPerS(p.sdk)} / ${readsPerS(p.other)}`, `${p.sdk.killed ? 'killed' : 'no'} / ${p.other.killed ? 'killed' : 'no'}`]))
    if (ab.length > 0) parts.push(`A/B: this build's SDK side by side with another build's, at equal speed (requests per CPU second × the run's computation cost):\n\n${table(['workload', 'limit MiB', 'other build', 'this / other', 'memory.current reads / s (this / other)', 'killed (this / other)'], ab)}`)
    const tagged = (x) => [...x.rep0.map((y) => ['round 1', y]), ...x.pairs.flatMap((p, i) => [[`pair ${i + 1}`, p.sdk], [`pair ${i + 1}`, p.fixed]]), ...(x.ab ?? []).flatMap((p, i) => [[`A/B ${i + 1}`, p.sdk], [`A/B ${i + 1}, ${p.build}`, p.other]])]
    const sdkCells = c.rows.flatMap((x) => tagged(x).filter(([, y]) => y.cpuSeconds && !y.killed).map(([run, y]) => [x.limitMib, run, y.label, fmt(y.cpuSeconds, 1), y.gc ? `${fmt(y.gc.ms, 0)} (${y.gc.major} major)` : '–', y.shrinkCycles ? `${y.shrinkCycles.n}: ${fmt(y.shrinkCycles.gcMs, 0)} GC, ${fmt(y.shrinkCycles.mallocTrimMs, 0)} trim` : '–', y.resources ? `${fmt(y.resources.systemMs, 0)} / ${y.resources.minorFaults}` : '–', readsPerS(y), y.files ? fmt(Object.entries(y.files).filter(([k]) => k.startsWith('memory.') || k === 'cgroup').reduce((n, [, v]) => n + v.ms, 0), 0) : '–']))
    // MP_VM_CALLERS=1: which functions opened memory.current, by the calling frames' names.
    const callerRows = c.rows.flatMap((x) => tagged(x).filter(([, y]) => y.files?.['memory.current']?.callers).flatMap(([run, y]) => {
      const by = {}
      for (const [stack, n] of Object.entries(y.files['memory.current'].callers)) {
        const key = stack.split(' < ').slice(1, 5).map((f) => f.split(' (')[0]).join(' < ')
        by[key] = (by[key] ?? 0) + n
      }
      return Object.entries(by).sort((a, b) => b[1] - a[1]).slice(0, 5).map(([key, n]) => [x.limitMib, run, y.label, fmt(n / c.seconds, 1), `\`${key}\``])
    }))
    if (callerRows.length > 0) parts.push(`Who read memory.current (opens a second by calling frames; MP_VM_CALLERS=1):\n\n${table(['limit MiB', 'run', 'cell', 'reads / s', 'called from'], callerRows)}`)
    parts.push(`Where each cell's CPU went in its measured window (all threads; file times are wall time around the calls):\n\n${table(['limit MiB', 'run', 'cell', 'CPU s', 'GC ms (all)', 'shrink cycles: forced GC ms, trim ms', 'system ms / minor faults', 'memory.current reads / s', 'ms in cgroup files'], sdkCells)}`)
  }
  return `${parts.join('\n\n')}\n`
}
