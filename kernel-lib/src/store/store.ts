/**
 * The NanoResearch store: one DuckDB file per user, shared by every notebook kernel and CLI
 * of that user. See file-lease.ts for how processes take turns on the file.
 */
import * as fs from 'fs';
import * as path from 'path';
import { DuckDBConnection } from '@duckdb/node-api';
import { messageOf } from './errors';
import { FileLease, StoreStats, dropLease, leaseFor } from './file-lease';
import { migrate } from './migrate';
import { Migration, migrations as libraryMigrations } from './migrations';
import { ConnectionQueryable, Queryable, execute, rowsOf } from './queryable';
import { DurableKind, ReplayReport, StoreWriteQueuedError, isStoreUnavailable } from './outbox';
import { StoreRecovery } from './recovery';
import { SqlResult, assertReadOnlyQuery, explainFileAccess } from './user-sql';
import { Params } from './values';

export interface StoreOptions {
  /** The store file. Default: `<home>/store.duckdb`. */
  path?: string;
  /** Folder of the default store file. Default: `$NANORESEARCH_HOME`, else `.nanoresearch/` under the cwd. */
  home?: string;
  /** How long to wait for another process to release the file (ms, default 30000). */
  lockTimeoutMs?: number;
  /** Release the file after this long without work (ms, default 50). */
  idleReleaseMs?: number;
  /** Release the file after holding it this long so other processes get turns (ms, default 1000). */
  maxHoldMs?: number;
  /** The schema to bring the file to. Default: the library's migrations. */
  migrations?: readonly Migration[];
}

const DEFAULT_LOCK_TIMEOUT_MS = 30_000;
const DEFAULT_IDLE_RELEASE_MS = 50;
const DEFAULT_MAX_HOLD_MS = 1_000;
/** A write that hits a DuckDB transaction conflict is retried this many times. */
const CONFLICT_RETRIES = 5;
/** Tries of a durable write (each waits up to lockTimeoutMs) before its data goes to the outbox. */
const DURABLE_ATTEMPTS = 3;

/** Where the store file lives for these options. */
export function resolveStorePath(options: Pick<StoreOptions, 'path' | 'home'> = {}): string {
  if (options.path) return path.resolve(options.path);
  const home = options.home ?? process.env.NANORESEARCH_HOME ?? path.join(process.cwd(), '.nanoresearch');
  return path.resolve(home, 'store.duckdb');
}

function isTransactionConflict(error: unknown): boolean {
  return /transaction conflict|conflict on (tuple|update)|write-write conflict/i.test(messageOf(error));
}

async function rollbackQuietly(connection: DuckDBConnection): Promise<void> {
  // After a failed COMMIT DuckDB has already ended the transaction; nothing to undo then.
  await connection.run('ROLLBACK').catch(() => undefined);
}

export class Store {
  private closed = false;

  private constructor(
    /** Absolute path of the store file. */
    readonly path: string,
    private readonly lease: FileLease
  ) {}

  /**
   * Opens (creating if needed) the store file and brings its schema up to date. The file is
   * only held while work runs; see StoreOptions for the timings. Throws StoreVersionError for
   * a store written by a newer library, StoreLockedError if another process kept it too long.
   */
  static async open(options: StoreOptions = {}): Promise<Store> {
    const file = resolveStorePath(options);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const lease = leaseFor(file, {
      lockTimeoutMs: options.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS,
      idleReleaseMs: options.idleReleaseMs ?? DEFAULT_IDLE_RELEASE_MS,
      maxHoldMs: options.maxHoldMs ?? DEFAULT_MAX_HOLD_MS
    });
    const store = new Store(file, lease);
    try {
      const versions = await lease.serialize(() =>
        lease.withConnection(connection => migrate(connection, file, options.migrations ?? libraryMigrations), true)
      );
      if (versions.from !== versions.to) lease.refreshConnections();
      if (lease.outbox.hasEntries()) await store.replayOutbox();
    } catch (error) {
      await store.close();
      throw error;
    }
    return store;
  }

  /** Lock statistics of this process for this store file. */
  get stats(): StoreStats {
    return { ...this.lease.stats };
  }

  /**
   * What this process found and did when it opened the file after an unclean shutdown (each
   * with a `message` to show). Every process's recoveries are also in the `store_recoveries` table.
   */
  get recoveries(): readonly StoreRecovery[] {
    return [...this.lease.recoveries];
  }

  /**
   * Runs `fn` in a READ ONLY transaction: it sees one consistent snapshot and cannot write.
   * Reads do not wait for this process's queued writes.
   */
  async read<T>(fn: (q: Queryable) => Promise<T>): Promise<T> {
    this.checkOpen();
    return this.lease.withConnection(async connection => {
      await connection.run('BEGIN TRANSACTION READ ONLY');
      try {
        const result = await fn(new ConnectionQueryable(connection));
        await connection.run('COMMIT');
        return result;
      } catch (error) {
        await rollbackQuietly(connection);
        throw error;
      }
    });
  }

  /**
   * Runs `fn` in one transaction, after this process's earlier writes: it commits when `fn`
   * resolves and rolls back (and rethrows) when it throws. On a DuckDB transaction conflict
   * the whole callback is run again, so it should only change the store, not the world.
   */
  async write<T>(fn: (q: Queryable) => Promise<T>): Promise<T> {
    this.checkOpen();
    return this.lease.serialize(() =>
      this.lease.withConnection(async connection => {
        for (let attempt = 0; ; attempt++) {
          await connection.run('BEGIN TRANSACTION');
          try {
            const result = await fn(new ConnectionQueryable(connection));
            await connection.run('COMMIT');
            return result;
          } catch (error) {
            await rollbackQuietly(connection);
            if (!isTransactionConflict(error) || attempt >= CONFLICT_RETRIES) throw error;
            await new Promise(resolve => setTimeout(resolve, 5 * 2 ** attempt * (0.5 + Math.random() / 2)));
          }
        }
      }, true)
    );
  }

  /**
   * A write that must not be lost: `kind.apply(q, payload)` in one transaction (plus `also`, in
   * the same transaction, for work that may be lost with it). The payload is applied as its
   * JSON round trip, exactly as a replay will see it. When the file stays locked (each try waits
   * up to lockTimeoutMs, DURABLE_ATTEMPTS tries) or DuckDB fails below SQL, the payload is
   * appended to this process's outbox file and StoreWriteQueuedError is thrown: the write is
   * then done by the next open of the store (any process). Errors of the data itself (a
   * constraint, a missing row the handler needs) are thrown as they are, and nothing is kept.
   */
  async writeDurable<P, T>(kind: DurableKind<P, T>, payload: P, also?: (q: Queryable, result: T) => Promise<void>): Promise<T> {
    const data = JSON.parse(JSON.stringify(payload)) as P;
    let lastError: unknown;
    for (let attempt = 1; attempt <= DURABLE_ATTEMPTS; attempt++) {
      try {
        const result = await this.write(async q => {
          const applied = await kind.apply(q, data);
          await also?.(q, applied);
          return applied;
        });
        // The store is reachable again: write what this process had to queue.
        if (this.lease.outbox.pending > 0) void this.replayOutbox().catch(() => undefined);
        return result;
      } catch (error) {
        if (!isStoreUnavailable(error)) throw error;
        lastError = error;
      }
    }
    const entry = this.lease.outbox.append(kind.kind, data, lastError);
    throw new StoreWriteQueuedError(this.path, this.lease.outbox.ownFile, entry.id, kind.kind, lastError);
  }

  /**
   * Writes the outbox's entries (every process's) into the store; Store.open does it when
   * there are any. Entries of kinds this process never loaded are left for another.
   */
  async replayOutbox(): Promise<ReplayReport> {
    this.checkOpen();
    return this.lease.replayOutbox(fn => this.write(fn));
  }

  /** This process's outbox file and how many of its entries are not written yet. */
  get outbox(): { dir: string; file: string; pending: number } {
    return { dir: this.lease.outbox.dir, file: this.lease.outbox.ownFile, pending: this.lease.outbox.pending };
  }

  /**
   * Runs one user query read-only. Anything but a single SELECT-type statement (writes, DDL,
   * ATTACH, COPY, EXPORT, INSTALL/LOAD, SET, PRAGMA, several statements) is refused with
   * StoreReadOnlyError by the parser, before it is prepared; a query reading or writing a host
   * file (read_text, read_csv, ...) is refused by DuckDB itself, since the store's instance has
   * external access off (file-lease.ts), and reported as StoreReadOnlyError too.
   */
  async sql(query: string, params?: Params): Promise<SqlResult> {
    this.checkOpen();
    return this.lease.withConnection(async connection => {
      await assertReadOnlyQuery(connection, query);
      await connection.run('BEGIN TRANSACTION READ ONLY');
      try {
        const result = await execute(connection, query, params);
        const columns = result.deduplicatedColumnNames();
        const rows = await rowsOf<Record<string, unknown>>(result);
        await connection.run('COMMIT');
        return { columns, rows };
      } catch (error) {
        await rollbackQuietly(connection);
        throw explainFileAccess(error, query);
      }
    });
  }

  /** Waits for this store's pending work and releases the file. Further calls are refused. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await dropLease(this.lease);
  }

  private checkOpen(): void {
    if (this.closed) throw new Error(`The store ${this.path} is closed; open it again with Store.open()`);
  }
}
