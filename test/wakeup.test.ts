// Turning an eventfd counter plus a usage read into crossings: nothing the kernel counted is lost,
// nothing usage contradicts is reported.

import { describe, expect, it } from 'vitest'
import { classifyWakeup, type ThresholdSide } from '../src/backends/wakeup.js'

describe('classifyWakeup', () => {
  it('one crossing up, usage above: one up', () => {
    const side: ThresholdSide = { above: false, pending: 0 }
    expect(classifyWakeup(side, 1, true)).toEqual(['up'])
    expect(side).toEqual({ above: true, pending: 0 })
  })

  it('one crossing down, usage below: one down', () => {
    const side: ThresholdSide = { above: true, pending: 0 }
    expect(classifyWakeup(side, 1, false)).toEqual(['down'])
    expect(side).toEqual({ above: false, pending: 0 })
  })

  it('two crossings coalesced, back where it was: a round trip, in order', () => {
    const side: ThresholdSide = { above: false, pending: 0 }
    expect(classifyWakeup(side, 2, false)).toEqual(['up', 'down'])
    expect(side).toEqual({ above: false, pending: 0 })
  })

  it('three crossings coalesced ending above: up, down, up', () => {
    const side: ThresholdSide = { above: false, pending: 0 }
    expect(classifyWakeup(side, 3, true)).toEqual(['up', 'down', 'up'])
    expect(side.above).toBe(true)
  })

  it('a crossing usage already undid is held until the kernel reports the way back', () => {
    const side: ThresholdSide = { above: false, pending: 0 }
    // the kernel saw usage go up, but it was back below when read
    expect(classifyWakeup(side, 1, false)).toEqual([])
    expect(side).toEqual({ above: false, pending: 1 })
    // the kernel's next check reports the way down: both are delivered, in order
    expect(classifyWakeup(side, 1, false)).toEqual(['up', 'down'])
    expect(side).toEqual({ above: false, pending: 0 })
  })

  it('usage moved across before the kernel checked: nothing yet, nothing lost', () => {
    const side: ThresholdSide = { above: false, pending: 0 }
    expect(classifyWakeup(side, 0, true)).toEqual([])
    expect(side).toEqual({ above: false, pending: 0 })
    expect(classifyWakeup(side, 1, true)).toEqual(['up'])
  })
})
