import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/harness/global-setup.ts'],
    setupFiles: ['test/fast-check-setup.ts', 'test/matcher-guard.ts'],
    // Namespace tests spawn many short processes; forks keep signals and cwd per file.
    pool: 'forks',
    // A test that asserts nothing cannot fail: vitest fails it instead.
    expect: { requireAssertions: true },
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
