// vitest inside the cgroup v2 VM (see test/vm/init.sh): the guest tests, the backend contract suite
// and any other file the host passes, one file at a time, reported line by line to the host.

import { defineConfig } from 'vitest/config'
import GuestLineReporter from './guest/reporter.js'

export default defineConfig({
  test: {
    // psi.test.ts: its real-kernel part runs as root with CAP_SYS_RESOURCE here (1 s windows).
    include: ['test/vm/guest/**/*.vm.ts', 'test/contract.test.ts', 'test/psi.test.ts'],
    fileParallelism: false,
    maxWorkers: 1,
    // Software emulation runs 5 to 20 times slower than the host, and memory.high throttling
    // stalls allocating children for seconds.
    testTimeout: 180_000,
    hookTimeout: 120_000,
    reporters: [new GuestLineReporter(), 'verbose'],
  },
})
