// Shrinkers for tests of the policy engine on the simulated backend.

import type { SimulatedBackend } from '../../src/backends/simulated.js'
import type { ShrinkRequest, Shrinker } from '../../src/policy/shrinker.js'

/** A shrinker that frees `bytes` from the simulated cgroup each time and records its requests. */
export function freeing(sim: SimulatedBackend, name: string, priority: number, bytes: number, log: string[] = []): Shrinker & { requests: ShrinkRequest[] } {
  const requests: ShrinkRequest[] = []
  return {
    name,
    priority,
    requests,
    shrink(req) {
      requests.push(req)
      log.push(name)
      sim.free(bytes)
      return bytes
    },
  }
}
