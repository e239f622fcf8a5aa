// nativeStatus(): which addon file this checkout loads (the compiled one; prebuilds exist only in
// the packed tarball, see pack.test.ts), and the same answer on every call.

import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { nativeStatus } from '../src/native.js'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const compiled = path.join(root, 'build', 'Release', 'memory_pressure.node')
const skip = process.platform !== 'linux' ? `not Linux (${process.platform})` : !fs.existsSync(compiled) ? 'build/Release not built (npm run build:native)' : null
const test = skip === null ? it : it.skip

describe('nativeStatus', () => {
  test(`reports the compiled addon of the checkout, loaded, with eventfd support${skip === null ? '' : ` (skipped: ${skip})`}`, () => {
    const status = nativeStatus()
    expect(status).toEqual({ loaded: true, path: compiled, platformSupported: true })
    expect(nativeStatus()).toEqual(status)
  })
})
