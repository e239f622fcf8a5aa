// The error helpers: kernel errors map to codes; our own errors are never mistaken for the kernel's.

import { describe, expect, it } from 'vitest'
import { MemoryPressureError, isErrnoException, syscallError } from '../src/errors.js'

describe('errors', () => {
  it('syscallError maps errno to codes and keeps errno, syscall and path', () => {
    expect(syscallError(-13, 'open', '/x')).toMatchObject({ code: 'ERR_PERMISSION', errno: 13, syscall: 'open', path: '/x' })
    expect(syscallError(-30, 'write')).toMatchObject({ code: 'ERR_PERMISSION', errno: 30 })
    expect(syscallError(-2, 'open')).toMatchObject({ code: 'ERR_NO_CGROUP', errno: 2 })
    expect(syscallError(-19, 'read')).toMatchObject({ code: 'ERR_NO_CGROUP', errno: 19 })
    expect(syscallError(-9, 'poll')).toMatchObject({ code: 'ERR_SYSCALL', errno: 9 })
  })

  it('isErrnoException is true for a Node system error and false for a MemoryPressureError', () => {
    const sys = Object.assign(new Error('no'), { code: 'ENOENT', errno: -2 })
    expect(isErrnoException(sys)).toBe(true)
    expect(isErrnoException(sys, 'ENOENT')).toBe(true)
    expect(isErrnoException(sys, 'EACCES')).toBe(false)
    // a string .code alone does not make an error the kernel's: re-wrapping ours lost its code
    expect(isErrnoException(new MemoryPressureError('ERR_CLOSED', 'closed'))).toBe(false)
    expect(isErrnoException('ENOENT')).toBe(false)
  })
})
