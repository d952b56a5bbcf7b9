/**
 * Test projects. `unit` needs nothing; `pglite` runs the database tests on embedded PGlite;
 * `postgres` runs the same files on PostgreSQL (TEST_DATABASE_URL or DATABASE_URL);
 * `redis` runs the multi-process and Redis tests (REDIS_URL). Projects whose service is not
 * configured are left out, and the run says so.
 */
import { defineConfig } from 'vitest/config';

const pgUrl = process.env.TEST_DATABASE_URL ?? process.env.DATABASE_URL;
const redisUrl = process.env.TEST_REDIS_URL ?? process.env.REDIS_URL;

const dbFiles = ['server/test/**/*.db.test.ts'];
const e2eFiles = ['server/test/**/*.e2e.test.ts'];
const shared = { testTimeout: 30_000, hookTimeout: 60_000, pool: 'forks' as const };

const projects = [
  {
    test: {
      ...shared,
      name: 'unit',
      include: ['protocol/src/**/*.test.ts', 'server/src/**/*.test.ts'],
    },
  },
  {
    test: {
      ...shared,
      name: 'pglite',
      include: [...dbFiles, ...e2eFiles],
      globalSetup: ['server/test/helpers/pglite-template.ts'],
      env: { TEST_DB: 'pglite' },
    },
  },
];
if (pgUrl) {
  projects.push({
    test: {
      ...shared,
      name: 'postgres',
      include: dbFiles,
      env: { TEST_DB: 'postgres', TEST_DATABASE_URL: pgUrl },
    },
  } as never);
} else {
  console.warn('[vitest] TEST_DATABASE_URL/DATABASE_URL not set: PostgreSQL project skipped');
}
if (redisUrl) {
  projects.push({
    test: {
      ...shared,
      name: 'redis',
      include: ['server/test/**/*.redis.test.ts'],
      env: { TEST_REDIS_URL: redisUrl, ...(pgUrl ? { TEST_DATABASE_URL: pgUrl } : {}) },
    },
  } as never);
} else {
  console.warn('[vitest] TEST_REDIS_URL/REDIS_URL not set: Redis project skipped');
}

export default defineConfig({
  test: { projects, reporters: ['default', './scripts/project-count-reporter.ts'] },
});
