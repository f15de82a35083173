/**
 * Opening a store that was not closed cleanly. Every close checkpoints (file-lease.ts), which
 * empties the write-ahead log into the file and removes it; so a `<store>.duckdb.wal` found
 * right after opening means the last holder ended without closing (killed, crashed, power
 * loss). DuckDB has replayed that log while opening; before anyone reads, the store is
 * checkpointed, its indexes are checked against full scans (integrity.ts), any table that fails
 * is rebuilt from its rows in one transaction, and what happened is reported: returned, kept in
 * `store_recoveries` (when the schema has it), and, when something was repaired, raised as a
 * process warning.
 */
import * as fs from 'fs';
import { DuckDBConnection } from '@duckdb/node-api';
import { newId } from '../ids';
import { StoreRecoveryError, messageOf } from './errors';
import { IndexLookup, TableRebuild, checkIndexes, lookupThroughIndex, rebuildTable } from './integrity';
import { execute, rowsOf } from './queryable';

/** What the open after an unclean shutdown found and did. */
export interface StoreRecovery {
  /** The store file. */
  file: string;
  /** When the recovery ran (ISO). */
  at: string;
  /** The process that ran it. */
  pid: number;
  /** Size of the replayed write-ahead log. */
  walBytes: number;
  /** Keys (primary keys, unique constraints, indexes) checked. */
  keysChecked: number;
  /** What disagreed before any repair, one line each (empty when the store was sound). */
  problems: string[];
  /** Tables rebuilt from their rows. */
  rebuilt: TableRebuild[];
  /** How long the check (and repair) took. */
  ms: number;
  /** The whole story in one paragraph, for a notebook warning. */
  message: string;
}

/** The log DuckDB writes beside a store file. */
export function walOf(file: string): string {
  return `${file}.wal`;
}

/** Runs statements in one transaction on `connection`, rolling back on an error. */
async function inTransaction<T>(connection: DuckDBConnection, fn: () => Promise<T>): Promise<T> {
  await connection.run('BEGIN TRANSACTION');
  try {
    const result = await fn();
    await connection.run('COMMIT');
    return result;
  } catch (error) {
    await connection.run('ROLLBACK').catch(() => undefined);
    throw error;
  }
}

function describe(file: string, walBytes: number, keysChecked: number, problems: string[], rebuilt: TableRebuild[]): string {
  const opening =
    `The store ${file} was not closed cleanly (the process holding it ended without closing it); ` +
    `DuckDB replayed its write-ahead log (${walBytes} bytes) and the store was checkpointed. `;
  if (problems.length === 0) return `${opening}All ${keysChecked} keys and indexes agree with their tables; nothing was lost.`;
  const tables = rebuilt
    .map(r => `${r.table} (${r.rowsKept} rows kept${r.rowsSetAside.length ? `, ${r.rowsSetAside.length} duplicate rows set aside` : ''})`)
    .join(', ');
  const setAside = rebuilt.some(r => r.rowsSetAside.length > 0)
    ? ' Rows set aside shared a unique key with an earlier row; they are kept in store_recoveries.rebuilt (query it with lab.sql).'
    : '';
  return `${opening}Index check: ${problems.join('; ')}. Rebuilt from their rows: ${tables}.${setAside}`;
}

/**
 * Checkpoints, checks and (if needed) repairs a store just opened after an unclean shutdown.
 * `lookup` is how keys are looked up through indexes (tests replace it to simulate an index
 * that lost entries). Throws StoreRecoveryError when a rebuilt table still fails the check.
 */
export async function recoverStore(
  instance: { connect(): Promise<DuckDBConnection> },
  file: string,
  walBytes: number,
  lookup: IndexLookup = lookupThroughIndex
): Promise<StoreRecovery> {
  const started = Date.now();
  const connection = await instance.connect();
  try {
    await connection.run('CHECKPOINT');
    const { keys, faults } = await checkIndexes(connection, lookup);
    const problems = faults.map(f => `${f.table}: ${f.problem}`);
    const damaged = [...new Set(faults.map(f => f.table))];
    const rebuilt = damaged.length
      ? await inTransaction(connection, async () => {
          const done: TableRebuild[] = [];
          for (const table of damaged) done.push(await rebuildTable(connection, table, keys));
          return done;
        })
      : [];
    if (damaged.length) {
      // The rebuilt tables are checked with DuckDB's own lookups, whatever `lookup` was.
      const still = (await checkIndexes(connection)).faults.filter(f => damaged.includes(f.table));
      if (still.length)
        throw new StoreRecoveryError(
          file,
          still.map(f => `${f.table}: ${f.problem}`)
        );
    }
    const recovery: StoreRecovery = {
      file,
      at: new Date().toISOString(),
      pid: process.pid,
      walBytes,
      keysChecked: keys.length,
      problems,
      rebuilt,
      ms: Date.now() - started,
      message: describe(file, walBytes, keys.length, problems, rebuilt)
    };
    await keepRecord(connection, recovery);
    await connection.run('CHECKPOINT');
    if (rebuilt.length) process.emitWarning(recovery.message, { code: 'NANORESEARCH_STORE_REPAIRED' });
    return recovery;
  } finally {
    connection.disconnectSync();
  }
}

/** Writes the recovery into `store_recoveries`; a store whose schema predates that table keeps it in memory only. */
async function keepRecord(connection: DuckDBConnection, recovery: StoreRecovery): Promise<void> {
  const [table] = await rowsOf<{ n: number }>(
    await connection.run(
      `SELECT count(*) AS n FROM duckdb_tables() WHERE table_name = 'store_recoveries' AND schema_name = 'main' AND database_name = current_database()`
    )
  );
  if (Number(table.n) === 0) return;
  await execute(
    connection,
    `INSERT INTO store_recoveries (id, recovered_at, pid, wal_bytes, keys_checked, problems, rebuilt, ms, message)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
    [
      newId('rec'),
      recovery.at,
      recovery.pid,
      recovery.walBytes,
      recovery.keysChecked,
      JSON.stringify(recovery.problems),
      JSON.stringify(recovery.rebuilt),
      recovery.ms,
      recovery.message
    ]
  );
}

/** The size of the store's write-ahead log, or null when there is none. */
export function walBytes(file: string): number | null {
  try {
    return fs.statSync(walOf(file)).size;
  } catch {
    return null;
  }
}

/** True when DuckDB could not replay the log while opening. */
export function isReplayFailure(error: unknown): boolean {
  return /Failure while replaying WAL/i.test(messageOf(error));
}
