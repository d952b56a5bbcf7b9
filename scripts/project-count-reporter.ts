/**
 * Vitest reporter: counts tests per project (unit, pglite, postgres, redis), prints one
 * summary line per project and a final "N passed, N failed" line, and writes the counts
 * to .tmp/test-counts.json so CI can refuse a run where a suite ran zero tests.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import type { Reporter, TestModule } from 'vitest/node';

type Counts = Record<string, { passed: number; failed: number; skipped: number }>;

export default class ProjectCountReporter implements Reporter {
  onTestRunEnd(modules: ReadonlyArray<TestModule>) {
    const counts: Counts = {};
    for (const module of modules) {
      const name = module.project.name || 'default';
      counts[name] ??= { passed: 0, failed: 0, skipped: 0 };
      for (const test of module.children.allTests()) {
        const state = test.result().state;
        if (state === 'passed') counts[name].passed++;
        else if (state === 'failed') counts[name].failed++;
        else counts[name].skipped++;
      }
      if (module.state() === 'failed' && ![...module.children.allTests()].length)
        counts[name].failed++;
    }
    mkdirSync('.tmp', { recursive: true });
    writeFileSync('.tmp/test-counts.json', `${JSON.stringify(counts, null, 2)}\n`);
    let passed = 0;
    let failed = 0;
    let skipped = 0;
    process.stdout.write('\nTests per project:\n');
    for (const [name, c] of Object.entries(counts)) {
      process.stdout.write(
        `  ${name.padEnd(9)} ${c.passed} passed, ${c.failed} failed, ${c.skipped} skipped\n`,
      );
      passed += c.passed;
      failed += c.failed;
      skipped += c.skipped;
    }
    process.stdout.write(
      `${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}\n`,
    );
  }
}
