/**
 * Do the store's indexes agree with its rows? DuckDB keeps an ART index for every PRIMARY KEY,
 * UNIQUE constraint and CREATE INDEX. DuckDB releases have lost index entries (while replaying
 * a write-ahead log, duckdb/duckdb#24744; under upserts, #23645); a lost entry makes a lookup by
 * key miss a row that a full scan finds, and a lost unique entry lets a duplicate key in. So
 * after an unclean shutdown every key is checked against a full scan (recovery.ts), and a table
 * that fails is rebuilt from its rows.
 */
import { DuckDBConnection, DuckDBType, DuckDBValue } from '@duckdb/node-api';
import { messageOf } from './errors';
import { execute, rowsOf } from './queryable';

/** One key DuckDB keeps an ART index for. */
export interface IndexedKey {
  table: string;
  /** The index's name, or the constraint's. */
  name: string;
  columns: string[];
  unique: boolean;
}

/** A key whose index disagrees with the table's rows. */
export interface IndexFault {
  table: string;
  index: string;
  /** What disagrees, in words. */
  problem: string;
}

/** What a rebuild did to one table. */
export interface TableRebuild {
  table: string;
  /** Rows written back into the rebuilt table. */
  rowsKept: number;
  /** Rows left out because an earlier row has the same unique key (each as a JSON object). */
  rowsSetAside: unknown[];
}

/** Keys looked up per query; DuckDB answers an IN list of this size through the index. */
const PROBE_CHUNK = 2000;

/** Quotes an identifier for SQL text. */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/**
 * The column an index expression names, or null for any other expression. duckdb_indexes()
 * writes a column as it is (`run_id`) or, for a keyword, quoted twice (`'"scope"'`).
 */
function columnOf(expression: string, columns: ReadonlySet<string>): string | null {
  let name = expression.trim();
  if (/^'.*'$/.test(name)) name = name.slice(1, -1).replace(/''/g, "'");
  if (/^".*"$/.test(name)) name = name.slice(1, -1).replace(/""/g, '"');
  return columns.has(name) ? name : null;
}

/** The store's keys: PRIMARY KEY and UNIQUE constraints, then CREATE INDEX indexes on plain columns. */
export async function indexedKeys(connection: DuckDBConnection): Promise<IndexedKey[]> {
  const main = `schema_name = 'main' AND database_name = current_database()`;
  const constraints = await rowsOf<{ table: string; name: string; columns: string[] }>(
    await connection.run(
      `SELECT table_name AS "table", constraint_name AS name, constraint_column_names AS columns
         FROM duckdb_constraints() WHERE constraint_type IN ('PRIMARY KEY', 'UNIQUE') AND ${main}
        ORDER BY table_name, constraint_index`
    )
  );
  const indexes = await rowsOf<{ table: string; name: string; expressions: string; unique: boolean }>(
    await connection.run(
      `SELECT table_name AS "table", index_name AS name, expressions, is_unique AS "unique"
         FROM duckdb_indexes() WHERE ${main} ORDER BY table_name, index_name`
    )
  );
  const columns = new Map<string, Set<string>>();
  for (const row of await rowsOf<{ table: string; name: string }>(
    await connection.run(`SELECT table_name AS "table", column_name AS name FROM duckdb_columns() WHERE ${main}`)
  )) {
    if (!columns.has(row.table)) columns.set(row.table, new Set());
    columns.get(row.table)!.add(row.name);
  }
  const keys: IndexedKey[] = constraints.map(c => ({ ...c, unique: true }));
  for (const index of indexes) {
    // `expressions` reads like "[run_id, stage, attempt]"; an index on expressions has no columns to probe.
    const named = index.expressions
      .replace(/^\[|\]$/g, '')
      .split(',')
      .map(e => columnOf(e, columns.get(index.table) ?? new Set()));
    if (named.every((c): c is string => c !== null)) keys.push({ table: index.table, name: index.name, columns: named, unique: index.unique });
  }
  return keys;
}

/**
 * How rows are found by key through a non-unique single-column index: the rows a list of key
 * values matches.
 */
export type IndexLookup = (connection: DuckDBConnection, key: IndexedKey, values: readonly DuckDBValue[], type: DuckDBType) => Promise<number>;

/** One lookup statement and its parameter values. */
export interface LookupStatement {
  sql: string;
  values: DuckDBValue[];
}

/** True for two or more integers without gaps (DuckDB rewrites such an IN list as a range). */
function isIntegerRun(values: readonly DuckDBValue[]): boolean {
  if (values.length < 2 || !values.every(v => typeof v === 'number' || typeof v === 'bigint')) return false;
  const ints = values.map(v => BigInt(v as number | bigint));
  const min = ints.reduce((a, b) => (b < a ? b : a));
  const max = ints.reduce((a, b) => (b > a ? b : a));
  return max - min + 1n === BigInt(ints.length);
}

/**
 * The statements that look `values` (distinct) up through the key's index: `col IN ($1, …)`,
 * which DuckDB answers with an index scan when the matches are few enough (checkIndexes raises
 * the thresholds so it always does). A run of consecutive integers would be rewritten as a
 * range and scanned, so such a list is split into its odd and even places.
 */
export function lookupStatements(key: IndexedKey, values: readonly DuckDBValue[]): LookupStatement[] {
  if (isIntegerRun(values)) {
    const sorted = [...values].sort((a, b) => (BigInt(a as number) < BigInt(b as number) ? -1 : 1));
    return [0, 1].flatMap(parity =>
      lookupStatements(
        key,
        sorted.filter((_, i) => i % 2 === parity)
      )
    );
  }
  const placeholders = values.map((_, i) => `$${i + 1}`).join(', ');
  return [{ sql: `SELECT count(*) AS n FROM ${quoteIdent(key.table)} WHERE ${quoteIdent(key.columns[0])} IN (${placeholders})`, values: [...values] }];
}

/** Counts the rows matching `values` through the key's index. */
export const lookupThroughIndex: IndexLookup = async (connection, key, values, type) => {
  let found = 0;
  for (const statement of lookupStatements(key, values)) {
    const prepared = await connection.prepare(statement.sql);
    try {
      statement.values.forEach((value, i) => prepared.bindValue(i + 1, value, type));
      const [row] = await rowsOf<{ n: number }>(await prepared.run());
      found += Number(row.n);
    } finally {
      prepared.destroySync();
    }
  }
  return found;
};

async function scalar(connection: DuckDBConnection, sql: string): Promise<number> {
  const [row] = await rowsOf<{ n: number | null }>(await connection.run(sql));
  return Number(row?.n ?? 0);
}

/**
 * Index scans never (full scans only), always (whenever a filter allows one), or as DuckDB
 * decides. "Always" also turns off statistics propagation, which answers a filter that every
 * row passes (all rows share the one key value looked up) without reading the index.
 */
async function indexScans(connection: DuckDBConnection, mode: 'never' | 'always' | 'default'): Promise<void> {
  if (mode === 'default') {
    await connection.run('RESET index_scan_percentage; RESET index_scan_max_count; RESET disabled_optimizers;');
    return;
  }
  if (mode === 'never') {
    await connection.run('RESET disabled_optimizers; SET index_scan_percentage = 0; SET index_scan_max_count = 0;');
    return;
  }
  await connection.run(`SET disabled_optimizers = 'statistics_propagation'; SET index_scan_percentage = 1.0; SET index_scan_max_count = 9223372036854775807;`);
}

/**
 * Looks every key of a unique index up through the index, in one statement: the key columns of
 * every row are inserted again with ON CONFLICT DO NOTHING (and rolled back). DuckDB checks each
 * key against the index; with every key there, every row conflicts and nothing is inserted. A key
 * the index lacks is inserted, or fails another constraint of the row (a NOT NULL column left
 * out, the primary key): either way, a fault. Only the key columns are copied. Runs its own
 * (rolled back) transaction. Returns the problem, or null.
 */
export async function probeUnique(connection: DuckDBConnection, key: IndexedKey): Promise<string | null> {
  const table = quoteIdent(key.table);
  const columns = key.columns.map(quoteIdent).join(', ');
  const present = key.columns.map(c => `${quoteIdent(c)} IS NOT NULL`).join(' AND ');
  await connection.run('BEGIN TRANSACTION');
  try {
    const result = await connection.run(
      `INSERT INTO ${table} (${columns}) SELECT ${columns} FROM ${table} WHERE ${present} ON CONFLICT (${columns}) DO NOTHING`
    );
    return result.rowsChanged > 0
      ? `${result.rowsChanged} keys are missing from unique ${key.name} (${key.columns.join(', ')}): inserting them again did not conflict`
      : null;
  } catch (error) {
    return `the keys of unique ${key.name} (${key.columns.join(', ')}) do not all conflict with their rows: ${messageOf(error).split('\n')[0]}`;
  } finally {
    await connection.run('ROLLBACK').catch(() => undefined);
  }
}

/**
 * Compares one key's index with a full scan. A unique key: no duplicates in a scan, and every
 * key found through the index (probeUnique). A non-unique single-column key: every distinct
 * value looked up through the index finds as many rows as the scan has. DuckDB never reads a
 * non-unique multi-column index for lookups, so nothing there can disagree with a scan.
 */
async function checkKey(connection: DuckDBConnection, key: IndexedKey, lookup: IndexLookup): Promise<string | null> {
  const table = quoteIdent(key.table);
  const columns = key.columns.map(quoteIdent);
  const present = columns.map(c => `${c} IS NOT NULL`).join(' AND ');
  await indexScans(connection, 'never');
  if (key.unique) {
    const duplicated = await scalar(
      connection,
      `SELECT sum(n) AS n FROM (SELECT count(*) AS n FROM ${table} WHERE ${present} GROUP BY ${columns.join(', ')} HAVING count(*) > 1)`
    );
    if (duplicated > 0) return `${duplicated} rows share a key of unique ${key.name} (${key.columns.join(', ')})`;
    return probeUnique(connection, key);
  }
  const rows = await scalar(connection, `SELECT count(*) AS n FROM ${table} WHERE ${present}`);
  if (columns.length > 1 || rows === 0) return null;
  const distinct = await connection.run(`SELECT DISTINCT ${columns[0]} FROM ${table} WHERE ${present}`);
  const type = distinct.columnTypes()[0];
  const values = (await distinct.getRows()).map(row => row[0]);
  await indexScans(connection, 'always');
  let found = 0;
  for (let start = 0; start < values.length; start += PROBE_CHUNK) {
    found += await lookup(connection, key, values.slice(start, start + PROBE_CHUNK), type);
  }
  return found === rows ? null : `lookups through ${key.name} (${key.columns[0]}) find ${found} of the ${rows} rows a full scan finds`;
}

/** Checks every key of the store; returns the disagreements (none when the store is sound). */
export async function checkIndexes(
  connection: DuckDBConnection,
  lookup: IndexLookup = lookupThroughIndex
): Promise<{ keys: IndexedKey[]; faults: IndexFault[] }> {
  const keys = await indexedKeys(connection);
  const faults: IndexFault[] = [];
  try {
    for (const key of keys) {
      const problem = await checkKey(connection, key, lookup);
      if (problem) faults.push({ table: key.table, index: key.name, problem });
    }
  } finally {
    await indexScans(connection, 'default');
  }
  return { keys, faults };
}

/**
 * Rebuilds a table and its indexes from its rows, in the caller's transaction: the rows go to
 * a temporary table, the table is dropped (which drops its indexes without consulting them, so
 * a damaged index cannot fail the statement) and created again from its own DDL, the rows go
 * back, the indexes are created again. Where rows share a unique key, the first written is
 * kept and the others are returned so the caller can keep them elsewhere. On an error the
 * caller rolls the transaction back, temporary table included.
 */
export async function rebuildTable(connection: DuckDBConnection, table: string, keys: readonly IndexedKey[]): Promise<TableRebuild> {
  const where = `table_name = $1 AND schema_name = 'main' AND database_name = current_database()`;
  const [definition] = await rowsOf<{ sql: string }>(await execute(connection, `SELECT sql FROM duckdb_tables() WHERE ${where}`, [table]));
  if (!definition) throw new Error(`rebuildTable: the store has no table "${table}"`);
  const indexSql = await rowsOf<{ sql: string }>(await execute(connection, `SELECT sql FROM duckdb_indexes() WHERE ${where}`, [table]));
  const columns = await rowsOf<{ name: string }>(
    await execute(connection, `SELECT column_name AS name FROM duckdb_columns() WHERE ${where} ORDER BY column_index`, [table])
  );
  const list = columns.map(c => quoteIdent(c.name)).join(', ');
  const unique = keys.filter(k => k.table === table && k.unique);
  // A row is a duplicate when an earlier row (lower rowid) has the same value of some unique key.
  const ranks = unique.map((key, i) => {
    const cols = key.columns.map(c => `t.${quoteIdent(c)}`);
    const anyNull = cols.map(c => `${c} IS NULL`).join(' OR ');
    return `CASE WHEN ${anyNull} THEN 1 ELSE row_number() OVER (PARTITION BY ${cols.join(', ')} ORDER BY t.rowid) END AS nr_rank_${i}`;
  });
  const duplicate = unique.length ? unique.map((_, i) => `nr_rank_${i} > 1`).join(' OR ') : 'false';
  await connection.run(
    `CREATE TEMP TABLE nr_rebuild AS SELECT ${list}, nr_rowid, (${duplicate}) AS nr_duplicate
       FROM (SELECT t.*, t.rowid AS nr_rowid${ranks.map(r => `, ${r}`).join('')} FROM ${quoteIdent(table)} t)`
  );
  const setAside = await rowsOf<{ row: unknown }>(
    await connection.run(`SELECT to_json(r) AS row FROM (SELECT ${list} FROM nr_rebuild WHERE nr_duplicate ORDER BY nr_rowid) r`)
  );
  await connection.run(`DROP TABLE ${quoteIdent(table)}`);
  await connection.run(definition.sql);
  const kept = await connection.run(`INSERT INTO ${quoteIdent(table)} SELECT ${list} FROM nr_rebuild WHERE NOT nr_duplicate ORDER BY nr_rowid`);
  for (const index of indexSql) await connection.run(index.sql);
  await connection.run('DROP TABLE temp.nr_rebuild');
  return { table, rowsKept: kept.rowsChanged, rowsSetAside: setAside.map(r => r.row) };
}
