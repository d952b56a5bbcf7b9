/**
 * Vitest global setup for the PGlite project: boots PGlite once, applies the migrations and
 * dumps the data folder, so each test file starts from a copy instead of a 6 s initdb.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { createDatabase } from '../../src/db/database.ts';
import { migrate } from '../../src/db/migrate.ts';

export default async function setup(project: TestProject) {
  const dir = mkdtempSync(join(tmpdir(), 'mz-pglite-template-'));
  const database = await createDatabase({});
  await migrate(database);
  if (database.raw.kind !== 'pglite') throw new Error('expected PGlite');
  const dump = await database.raw.pglite.dumpDataDir('none');
  await database.close();
  const file = join(dir, 'template.tar');
  writeFileSync(file, Buffer.from(await dump.arrayBuffer()));
  project.provide('pgliteTemplate', file);
  return () => rmSync(dir, { recursive: true, force: true });
}

declare module 'vitest' {
  export interface ProvidedContext {
    pgliteTemplate: string;
  }
}
