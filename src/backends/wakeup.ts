// Turning one eventfd wake-up into crossings: the kernel counts crossings (the eventfd counter), the
// process reads usage afterwards; together they say how many crossings happened and which way.

import type { Direction } from './types.js'

/** What a threshold watcher remembers between wake-ups. */
export interface ThresholdSide {
  /** Which side of the threshold the crossings delivered so far leave usage on. */
  above: boolean
  /** Crossings the kernel counted that are not delivered yet (see {@link classifyWakeup}). */
  pending: number
}

/**
 * Classifies one wake-up. `count` is the eventfd counter (crossings since the last read) and
 * `nowAbove` the side usage is on when read after the wake-up. Each crossing flips the side, so
 * when the parity of the count agrees with what usage says, every counted crossing is delivered,
 * alternating directions. When it disagrees, usage moved again after the kernel's check and the
 * kernel has not checked since (it checks every 128 page events per CPU, `memcontrol-v1.c`): one
 * crossing is held back until the kernel reports the next, so that nothing is reported that usage
 * contradicts and nothing the kernel counted is lost.
 *
 * Mutates `side` and returns the directions to deliver, in order.
 */
export function classifyWakeup(side: ThresholdSide, count: number, nowAbove: boolean): Direction[] {
  const total = side.pending + count
  const changed = nowAbove !== side.above
  let deliver = total
  if ((total % 2 === 1) !== changed) deliver = total - 1
  if (deliver < 0) deliver = 0
  const out: Direction[] = []
  let above = side.above
  for (let i = 0; i < deliver; i++) {
    above = !above
    out.push(above ? 'up' : 'down')
  }
  side.above = above
  side.pending = total - deliver
  return out
}
