/**
 * Brings a store file to the newest schema version: each pending migration runs in its own
 * transaction and is recorded in `schema_migrations`. A store newer than the library is
 * refused rather than touched.
 */
import { DuckDBConnection } from '@duckdb/node-api';
import { StoreMigrationError, StoreVersionError } from './errors';
import { Migration, latestVersion } from './migrations';
import { execute, rowsOf } from './queryable';

/** The versions before and after migrating. */
export interface MigrationOutcome {
  from: number;
  to: number;
}

/** Checks that versions run 1, 2, 3, ... in order: a gap or a repeat is a library bug. */
function checkOrder(list: readonly Migration[]): void {
  list.forEach((migration, index) => {
    if (migration.version !== index + 1) {
      throw new Error(`Store migrations must be numbered 1, 2, 3, ... in order; entry ${index} ("${migration.name}") has version ${migration.version}`);
    }
  });
}

export async function migrate(connection: DuckDBConnection, file: string, list: readonly Migration[]): Promise<MigrationOutcome> {
  checkOrder(list);
  await connection.run('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)');
  const [row] = await rowsOf<{ version: number | null }>(await connection.run('SELECT max(version) AS version FROM schema_migrations'));
  const from = row?.version ?? 0;
  const known = latestVersion(list);
  if (from > known) throw new StoreVersionError(file, from, known);
  for (const migration of list) {
    if (migration.version <= from) continue;
    await connection.run('BEGIN TRANSACTION');
    try {
      for (const statement of migration.up) await connection.run(statement);
      await execute(connection, 'INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [
        migration.version,
        migration.name,
        new Date()
      ]);
      await connection.run('COMMIT');
    } catch (error) {
      await connection.run('ROLLBACK').catch(() => undefined);
      throw new StoreMigrationError(file, migration.version, migration.name, error);
    }
  }
  return { from, to: Math.max(from, known) };
}
