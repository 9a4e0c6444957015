import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // Two cores on CI: more workers only add contention for the registries and zstd.
    maxWorkers: 2,
    minWorkers: 1,
  },
});
