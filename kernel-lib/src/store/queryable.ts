/**
 * The query surface handed to `store.read()` / `store.write()` callbacks, over one DuckDB
 * connection. Rows come back as plain objects (see values.ts for the conversions).
 */
import {
  DuckDBAppender,
  DuckDBConnection,
  DuckDBMaterializedResult,
  DuckDBPreparedStatement,
  DuckDBTimestampValue,
  DuckDBType,
  DuckDBTypeId
} from '@duckdb/node-api';
import { messageOf } from './errors';
import { Params, Row, bindParams, fromDuckDB, toAppendValue } from './values';

export interface RunResult {
  /** Rows inserted, updated or deleted by the statement. */
  rowsChanged: number;
}

export interface Queryable {
  /** Runs a statement. Without params, a string of several `;`-separated statements is allowed. */
  run(sql: string, params?: Params): Promise<RunResult>;
  /** All rows of a query. */
  all<T = Row>(sql: string, params?: Params): Promise<T[]>;
  /** The first row of a query, or undefined. */
  get<T = Row>(sql: string, params?: Params): Promise<T | undefined>;
  /**
   * Bulk-inserts rows through DuckDB's appender. Keys are column names; a missing key takes
   * the column's default (NULL if none); an unknown key is an error. Returns the row count.
   */
  appendRows(table: string, rows: readonly Record<string, unknown>[]): Promise<number>;
}

/**
 * What a pooled connection (file-lease.ts) keeps while it lives: its prepared statements by SQL
 * text (on these machines preparing a small statement costs about as much as running it, and a
 * stage runs the same few dozen statements every time) and the column names appendRows needs
 * (tables change only in migrations, after which the pool is closed).
 */
interface ConnectionCache {
  statements: Map<string, DuckDBPreparedStatement>;
  columns: Map<string, string[]>;
}
const connectionCaches = new WeakMap<DuckDBConnection, ConnectionCache>();
/** Statements kept per connection; the least recently used one is destroyed beyond it. */
const STATEMENT_CACHE_SIZE = 96;

/** Keeps the prepared statements and table columns of `connection` for reuse, until `dropConnectionCache`. */
export function startConnectionCache(connection: DuckDBConnection): void {
  connectionCaches.set(connection, { statements: new Map(), columns: new Map() });
}

/** Destroys what is kept for `connection` (before it is disconnected). */
export function dropConnectionCache(connection: DuckDBConnection): void {
  const cache = connectionCaches.get(connection);
  connectionCaches.delete(connection);
  for (const prepared of cache?.statements.values() ?? []) prepared.destroySync();
}

/** The prepared statement of `sql` on a caching connection, most recently used last. */
async function cachedStatement(connection: DuckDBConnection, cache: Map<string, DuckDBPreparedStatement>, sql: string): Promise<DuckDBPreparedStatement> {
  const kept = cache.get(sql);
  if (kept) {
    cache.delete(sql);
    cache.set(sql, kept);
    return kept;
  }
  const prepared = await connection.prepare(sql);
  cache.set(sql, prepared);
  if (cache.size > STATEMENT_CACHE_SIZE) {
    const [oldest, statement] = cache.entries().next().value!;
    cache.delete(oldest);
    statement.destroySync();
  }
  return prepared;
}

/** Runs `sql` with or without parameters and returns DuckDB's materialised result. */
export async function execute(connection: DuckDBConnection, sql: string, params?: Params): Promise<DuckDBMaterializedResult> {
  if (params === undefined) return connection.run(sql);
  const cache = connectionCaches.get(connection)?.statements;
  if (cache) {
    // Every parameter is bound again on each run, so a kept statement carries nothing over.
    const prepared = await cachedStatement(connection, cache, sql);
    bindParams(prepared, params, sql);
    return prepared.run();
  }
  const prepared = await connection.prepare(sql);
  try {
    bindParams(prepared, params, sql);
    return await prepared.run();
  } finally {
    prepared.destroySync();
  }
}

/**
 * Reads every row of a result as a plain object. Types come from the result's columns
 * because only those carry the JSON alias (chunk vectors report plain VARCHAR).
 */
export async function rowsOf<T>(result: DuckDBMaterializedResult): Promise<T[]> {
  const names = result.deduplicatedColumnNames();
  const types = result.columnTypes();
  const rows = await result.getRows();
  return rows.map(values => {
    const row: Record<string, unknown> = {};
    for (let i = 0; i < names.length; i++) row[names[i]] = values[i] === null ? null : fromDuckDB(values[i], types[i]);
    return row as T;
  });
}

type AppendOne = (appender: DuckDBAppender, value: unknown) => void;

/** A fast append for the column types the store uses, the generic path for the rest. */
function appendFor(type: DuckDBType, column: string): AppendOne {
  const generic: AppendOne = (appender, value) => appender.appendValue(toAppendValue(value, type, column), type);
  switch (type.typeId) {
    case DuckDBTypeId.VARCHAR:
      if (type.alias === 'JSON') {
        // JSON is stored as text; the generic path would validate through a DuckDBValue first.
        return (appender, value) => appender.appendVarchar(toAppendValue(value, type, column) as string);
      }
      return (appender, value) => (typeof value === 'string' ? appender.appendVarchar(value) : generic(appender, value));
    case DuckDBTypeId.TIMESTAMP:
      return (appender, value) => appender.appendTimestamp(toAppendValue(value, type, column) as DuckDBTimestampValue);
    case DuckDBTypeId.INTEGER:
      return (appender, value) => (typeof value === 'number' && Number.isInteger(value) ? appender.appendInteger(value) : generic(appender, value));
    case DuckDBTypeId.DOUBLE:
      return (appender, value) => (typeof value === 'number' ? appender.appendDouble(value) : generic(appender, value));
    case DuckDBTypeId.BOOLEAN:
      return (appender, value) => (typeof value === 'boolean' ? appender.appendBoolean(value) : generic(appender, value));
    default:
      return generic;
  }
}

export class ConnectionQueryable implements Queryable {
  constructor(private readonly connection: DuckDBConnection) {}

  async run(sql: string, params?: Params): Promise<RunResult> {
    const result = await execute(this.connection, sql, params);
    return { rowsChanged: result.rowsChanged };
  }

  async all<T = Row>(sql: string, params?: Params): Promise<T[]> {
    return rowsOf<T>(await execute(this.connection, sql, params));
  }

  async get<T = Row>(sql: string, params?: Params): Promise<T | undefined> {
    const rows = await this.all<T>(sql, params);
    return rows[0];
  }

  async appendRows(table: string, rows: readonly Record<string, unknown>[]): Promise<number> {
    if (rows.length === 0) return 0;
    const columns = await this.columnsOf(table);
    const known = new Set(columns);
    for (const row of rows) {
      for (const key in row) {
        if (!known.has(key)) {
          throw new Error(`appendRows(${table}): the table has no column "${key}" (columns: ${columns.join(', ')})`);
        }
      }
    }
    const appender = await this.connection.createAppender(table);
    let done = false;
    let closeError: { error: unknown } | undefined;
    try {
      const appenders = columns.map((column, index) => appendFor(appender.columnType(index), column));
      for (let r = 0; r < rows.length; r++) {
        const row = rows[r];
        for (let c = 0; c < columns.length; c++) {
          const value = row[columns[c]];
          if (value === undefined) {
            if (!(columns[c] in row)) appender.appendDefault();
            else appender.appendNull();
          } else if (value === null) appender.appendNull();
          else appenders[c](appender, value);
        }
        appender.endRow();
      }
      appender.flushSync();
      done = true;
    } catch (error) {
      throw new Error(`appendRows(${table}) failed: ${messageOf(error)}`, { cause: error });
    } finally {
      // A failed append leaves rows buffered: drop them rather than flush half a batch.
      if (!done) appender.clear();
      try {
        appender.closeSync();
      } catch (error) {
        closeError = { error };
      }
    }
    // Reached only when the append succeeded: then a failed close is the error (after a failed
    // append, that failure is the one thrown).
    if (closeError) throw closeError.error;
    return rows.length;
  }

  private async columnsOf(table: string): Promise<string[]> {
    // A connection outside the pool asks each time.
    const cached = connectionCaches.get(this.connection)?.columns;
    const known = cached?.get(table);
    if (known) return known;
    const rows = await this.all<{ column_name: string }>(
      `SELECT column_name FROM duckdb_columns() WHERE table_name = $1 AND schema_name = 'main' ORDER BY column_index`,
      [table]
    );
    if (rows.length === 0) throw new Error(`appendRows: no table named "${table}" in the store`);
    const columns = rows.map(row => row.column_name);
    cached?.set(table, columns);
    return columns;
  }
}
