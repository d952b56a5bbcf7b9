/** `npm run migrate`: apply pending migrations and print what was done. */
import { ConfigError, loadConfig } from '../config/load-config.ts';
import { openDatabase } from '../container.ts';
import { lockDataDir } from '../infra/data-dir-lock.ts';
import { migrate } from './migrate.ts';

try {
  const config = loadConfig();
  const release = config.database.url ? () => {} : lockDataDir(config.data_dir);
  const database = await openDatabase(config);
  try {
    const result = await migrate(database);
    process.stdout.write(
      result.applied.length
        ? `applied ${result.applied.join(', ')}; schema version ${result.current}\n`
        : `up to date; schema version ${result.current}\n`,
    );
  } finally {
    await database.close();
    release();
  }
} catch (err) {
  process.stderr.write(`${err instanceof ConfigError ? '' : 'error: '}${(err as Error).message}\n`);
  process.exit(1);
}
