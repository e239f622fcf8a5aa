// How a MemoryPressureError prints when nobody catches it: the code on the first line, and only the
// fields that were set (Node prints every own property of an uncaught error).

import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { inspect } from 'node:util'
import { describe, expect, it } from 'vitest'
import { MemoryPressureError } from '../src/errors.js'

const built = existsSync(new URL('../dist/errors.js', import.meta.url))

describe('MemoryPressureError as printed', () => {
  it('has own properties only for the fields that were set', () => {
    // `name` is an own property as on any Error subclass that sets it; inspect() does not list it.
    const fields = (e: Error): string[] => Object.keys(e).filter((k) => k !== 'name').sort()
    expect(fields(new MemoryPressureError('ERR_NO_LIMIT', 'no limit'))).toEqual(['code'])
    const full = new MemoryPressureError('ERR_PERMISSION', 'denied', { errno: 13, syscall: 'write', path: '/x', reasons: ['r'] })
    expect(fields(full)).toEqual(['code', 'errno', 'path', 'reasons', 'syscall'])
    expect(inspect(new MemoryPressureError('ERR_NO_LIMIT', 'no limit'))).not.toMatch(/undefined/)
    expect(full.name).toBe('MemoryPressureError')
  })

  it.skipIf(!built)(`uncaught: the first line names the class and code, the fields block has only those set${built ? '' : ' (skipped: dist/ not built)'}`, () => {
    // The built package, as a user's program imports it.
    const dist = new URL('../dist/errors.js', import.meta.url).href
    const script = `import { MemoryPressureError } from ${JSON.stringify(dist)}
throw new MemoryPressureError('ERR_NO_LIMIT', 'no limit', { path: '/sys/fs/cgroup/x' })`
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' })
    expect(r.status).toBe(1)
    expect(r.stderr).toMatch(/^MemoryPressureError \[ERR_NO_LIMIT\]: /m)
    const fields = /\{\n([\s\S]*?)\n\}/.exec(r.stderr)?.[1] ?? ''
    expect(fields.split('\n').map((l) => l.trim().split(':')[0])).toEqual(['code', 'path'])
  })
})
