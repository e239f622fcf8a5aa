// cgroup v2 on a real kernel: boots a Debian cloud kernel under QEMU (test/vm/), runs the guest
// suite inside and reports each guest test here as a test of its own, with the guest's output when
// it fails. Skipped, with the reason in the name, where qemu or the kernel cannot be had.
// MP_VM=0 skips it; MP_VM_ARGS passes words to the guest's `vitest run` (file filters, -t);
// MP_VM_TIMEOUT_S stops qemu after that many seconds (default 600); MP_VM_VERBOSE=1 streams the console.

import fs from 'node:fs'
import { describe, expect, it } from 'vitest'
import { type VmResult, prepare, runVm } from './vm/harness.js'

type Outcome = { skip: string } | { kernel: string; result: VmResult } | { error: unknown }

async function boot(): Promise<Outcome> {
  if (process.env.MP_VM === '0') return { skip: 'MP_VM=0' }
  const prepared = await prepare()
  if ('skip' in prepared) return prepared
  const args = (process.env.MP_VM_ARGS ?? '').split(' ').filter((a) => a !== '')
  try {
    const timeoutS = Number(process.env.MP_VM_TIMEOUT_S ?? 600)
    if (!(timeoutS > 0)) throw new RangeError(`MP_VM_TIMEOUT_S must be a positive number of seconds, received ${process.env.MP_VM_TIMEOUT_S}`)
    const result = await runVm({
      vmlinux: prepared.vmlinux,
      args,
      timeoutMs: timeoutS * 1000,
      onConsoleLine: process.env.MP_VM_VERBOSE === '1'
        ? (l) => { if (!/^@@mp-vm (test|end) /.test(l)) process.stderr.write(`[vm] ${l}\n`) }
        : undefined,
    })
    const t = result.timings
    const s = (ms: number | null): string => (ms === null ? '-' : `${(ms / 1000).toFixed(1)} s`)
    process.stderr.write(`[vm] ${prepared.kernel}: initramfs ${(result.initramfsBytes / 2 ** 20).toFixed(0)} MiB built in ${s(t.buildMs)}, ` +
      `boot ${s(t.bootMs)}, guest tests ${s(t.testMs)}, qemu total ${s(t.vmMs)}; ${result.tests.length} guest tests\n`)
    return { kernel: prepared.kernel, result }
  } catch (error) {
    return { error }
  }
}

// The VM runs while this file is collected, so that each guest test can become a host test.
const outcome = await boot()

function consoleTail(r: VmResult, lines = 120): string {
  return r.console.split('\n').filter((l) => !/^@@mp-vm (test|end) /.test(l)).slice(-lines).join('\n')
}

describe('cgroup v2 in a VM', () => {
  if ('skip' in outcome) {
    it.skip(`guest suite (skipped: ${outcome.skip})`, () => {})
    return
  }
  if ('error' in outcome) {
    it('builds and boots the VM', () => {
      throw outcome.error
    })
    return
  }
  const { result } = outcome
  it(`the guest (${outcome.kernel}) ran its suite to the end and powered off`, () => {
    const context = `\n--- guest console (last lines) ---\n${consoleTail(result)}`
    expect(result.qemu.timedOut, `qemu was killed after the timeout${context}`).toBe(false)
    expect(result.garbled, 'result lines that could not be decoded').toEqual([])
    expect(result.end, `no end of run from the guest${context}`).not.toBeNull()
    expect(result.end?.failedFiles, `test files failed outside their tests${context}`).toEqual([])
    expect(result.end?.unhandled, `unhandled errors in the guest${context}`).toEqual([])
    expect(result.tests.length, `no guest test reported${context}`).toBeGreaterThan(0)
    expect(result.qemu.code, `qemu exit status${context}`).toBe(0)
  })
  if ((process.env.MP_VM_ARGS ?? '').trim() === '') {
    it('every guest test file reported results (the guest config found them all)', () => {
      const guestFiles = fs.readdirSync(new URL('./vm/guest/', import.meta.url)).filter((f) => f.endsWith('.vm.ts')).map((f) => `test/vm/guest/${f}`)
      const expected = [...guestFiles, 'test/contract.test.ts', 'test/psi.test.ts'].sort()
      expect(guestFiles.length).toBeGreaterThan(0)
      expect([...new Set(result.tests.map((t) => t.file))].sort()).toEqual(expected)
    })
  }
  for (const t of result.tests) {
    const title = `${t.file} > ${t.name}`
    if (t.state === 'skipped') {
      it.skip(title, () => {})
      continue
    }
    it(title, () => {
      if (t.state !== 'passed') {
        throw new Error(`guest test ${t.state}:\n${t.errors.join('\n\n')}\n--- guest console (last lines) ---\n${consoleTail(result)}`)
      }
      expect(t.state).toBe('passed')
    })
  }
})
