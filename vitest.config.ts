import { defineConfig } from 'vitest/config'

// Real-kernel tests create cgroups and spawn children; run files one at a time so that the
// machine's 2 cores are not oversubscribed and cgroup usage figures stay readable.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    fileParallelism: false,
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
})
