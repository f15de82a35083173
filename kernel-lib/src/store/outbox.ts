/**
 * Writes that must not be lost (feedback, memories, the LLM ledger, planner calls) are described
 * as data, a kind plus a JSON payload, and applied by the kind's handler. When such a write
 * cannot commit (the file stayed locked past every retry, an I/O error), its entry is appended
 * to this process's outbox file, `<store>.duckdb.outbox/<pid>-<start>.jsonl` (one JSON object a
 * line, fsynced before the caller hears of the failure), and the caller gets
 * StoreWriteQueuedError. The next open of the store, by any process, replays every outbox entry
 * whose kind it knows, each in its own transaction together with a row in `outbox_entries`
 * (migration 9), so an entry is applied once even if the replaying process dies halfway. An
 * entry its handler refuses (its data is wrong, e.g. feedback on a stage run that is not in
 * the store) is kept in `outbox_entries` with the error and its payload instead.
 *
 * Only its owner appends to an outbox file, and a file is deleted only when every entry in it
 * is done and its owner is gone (or is the replaying process), so no append can race a delete.
 */
import * as fs from 'fs';
import * as path from 'path';
import { newId } from '../ids';
import { StoreLockedError, StoreRecoveryError, messageOf } from './errors';
import type { Queryable } from './queryable';
import { isAlive } from './waiters';

/** How a durable write is applied, inside a write transaction. Replays must give the same effect. */
export type DurableApply<P, T> = (q: Queryable, payload: P) => Promise<T>;

/** A kind of durable write: its name (the key in the outbox) and its handler. */
export interface DurableKind<P, T> {
  readonly kind: string;
  readonly apply: DurableApply<P, T>;
}

const kinds = new Map<string, DurableKind<unknown, unknown>>();

/**
 * Declares a kind of durable write. Modules declare theirs when loaded, so a process can
 * replay an entry only when it loaded the module that wrote it; other entries wait.
 */
export function defineDurableWrite<P, T>(kind: string, apply: DurableApply<P, T>): DurableKind<P, T> {
  const defined: DurableKind<P, T> = { kind, apply };
  kinds.set(kind, defined as DurableKind<unknown, unknown>);
  return defined;
}

/** Rows to insert per table; a row whose key is already stored is skipped, so a replay adds nothing twice. */
export interface RowInserts {
  inserts: Array<{ table: string; rows: Array<Record<string, unknown>> }>;
}

/**
 * The primary key of each table INSERT_ROWS writes, or null for a table with other unique
 * indexes too (then INSERT OR IGNORE decides). The library's migrations never change a key.
 */
const insertKeys = new Map<string, string[] | null>();

async function insertKeyOf(q: Queryable, table: string): Promise<string[] | null> {
  if (insertKeys.has(table)) return insertKeys.get(table)!;
  const [found] = await q.all<{ key: string[] | null; other_unique: number }>(
    `SELECT (SELECT constraint_column_names FROM duckdb_constraints()
              WHERE schema_name = 'main' AND table_name = $1 AND constraint_type = 'PRIMARY KEY') AS key,
            (SELECT count(*) FROM duckdb_indexes() WHERE schema_name = 'main' AND table_name = $1 AND is_unique)::INTEGER AS other_unique`,
    [table]
  );
  const key = found?.key?.length && !found.other_unique ? found.key : null;
  insertKeys.set(table, key);
  return key;
}

/**
 * The generic durable write: whole rows (ledger rows, planner calls), each skipped when its key
 * is already stored. Measured here, DuckDB's INSERT OR IGNORE of one row costs 2-3x a plain
 * insert (8 ms against 3); a primary-key probe and a plain insert cost 4.5, and the probes of up
 * to 16 rows go in one statement (each a key lookup of its own). (Inside the write's transaction
 * the probe cannot race: this process holds the file and its writes are serialised.)
 */
export const INSERT_ROWS = defineDurableWrite<RowInserts, void>('store.insert-rows', async (q, payload) => {
  const tables: KeyedRows[] = [];
  for (const { table, rows } of payload.inserts) {
    if (!/^[a-z_][a-z0-9_]*$/.test(table)) throw new Error(`insert-rows: "${table}" is not a table name`);
    if (rows.length) tables.push({ table, rows, key: await insertKeyOf(q, table) });
  }
  const stored = await storedKeys(q, tables);
  for (const { table, rows, key } of tables) {
    for (const row of rows) {
      const probed = hasKey(row, key);
      if (probed) {
        // A key given twice in one payload is inserted once.
        const id = keyOf(table, row, key);
        if (stored.has(id)) continue;
        stored.add(id);
      }
      const columns = Object.keys(row);
      const placeholders = columns.map((_, i) => `$${i + 1}`).join(', ');
      // A row whose key was probed is inserted plainly; one that could not be probed lets DuckDB decide.
      await q.run(
        `INSERT ${probed ? '' : 'OR IGNORE '}INTO ${table} (${columns.join(', ')}) VALUES (${placeholders})`,
        columns.map(c => row[c])
      );
    }
  }
});

interface KeyedRows {
  table: string;
  rows: Array<Record<string, unknown>>;
  key: string[] | null;
}

/** Point lookups per probe statement: enough for a stage's writes, few statement shapes to prepare. */
const PROBES_PER_STATEMENT = 16;

function hasKey(row: Record<string, unknown>, key: string[] | null): key is string[] {
  return key?.every(column => column in row) ?? false;
}

function keyOf(table: string, row: Record<string, unknown>, key: string[]): string {
  return JSON.stringify([table, ...key.map(column => row[column])]);
}

/**
 * The keys (keyOf) among the rows that are already stored. The probes go in few statements, each
 * a UNION ALL of equality lookups on the primary key, which DuckDB answers from the key's index
 * (measured: 0.7 ms for two lookups at 3M rows, 17 ms for the same on an unindexed column).
 */
async function storedKeys(q: Queryable, tables: KeyedRows[]): Promise<Set<string>> {
  const probes = tables.flatMap(({ table, rows, key }) => rows.filter(row => hasKey(row, key)).map(row => ({ table, key: key!, row })));
  const stored = new Set<string>();
  for (let start = 0; start < probes.length; start += PROBES_PER_STATEMENT) {
    const params: unknown[] = [];
    const branches = probes.slice(start, start + PROBES_PER_STATEMENT).map(({ table, key, row }, i) => {
      const where = key.map(column => {
        params.push(row[column]);
        return `${column} = $${params.length}`;
      });
      return `SELECT ${i} AS probe FROM ${table} WHERE ${where.join(' AND ')}`;
    });
    for (const { probe } of await q.all<{ probe: number }>(branches.join(' UNION ALL '), params)) {
      const { table, key, row } = probes[start + probe];
      stored.add(keyOf(table, row, key));
    }
  }
  return stored;
}

/** One line of an outbox file. */
export interface OutboxEntry {
  id: string;
  kind: string;
  payload: unknown;
  /** When the write was given up (ISO). */
  queued_at: string;
  /** Why it could not commit. */
  error: string;
}

/** A durable write could not commit; its data is kept in the outbox and written on the next open. */
export class StoreWriteQueuedError extends Error {
  override readonly name = 'StoreWriteQueuedError';
  constructor(
    readonly file: string,
    readonly outboxFile: string,
    readonly entryId: string,
    readonly kind: string,
    readonly cause: unknown
  ) {
    super(
      `The ${kind} write could not be committed to ${file} (${messageOf(cause)}). Nothing is lost: it is kept in ` +
        `${outboxFile} (entry ${entryId}) and is written the next time the store is opened, by this or any process.`
    );
  }
}

/**
 * Failures a durable write survives by waiting or queueing: the file stayed locked, or DuckDB
 * failed below SQL (I/O, a fatal error that invalidated the instance). A constraint or binder
 * error means the data itself is wrong, and a replay would fail the same way: it is thrown.
 */
export function isStoreUnavailable(error: unknown): boolean {
  if (error instanceof StoreLockedError || error instanceof StoreRecoveryError) return true;
  return /IO Error|FATAL|database has been invalidated|Could not set lock|No space left|Read-only file system/i.test(messageOf(error));
}

/** The outbox folder of a store file. */
export function outboxDirOf(file: string): string {
  return `${file}.outbox`;
}

function ownerOf(name: string): number | null {
  const match = /^(\d+)-\d+\.jsonl$/.exec(name);
  return match ? Number(match[1]) : null;
}

export class Outbox {
  readonly dir: string;
  /** This process's outbox file (created on the first queued write). */
  readonly ownFile: string;
  /** Entries this process queued that no replay has written yet. */
  pending = 0;

  constructor(readonly storeFile: string) {
    this.dir = outboxDirOf(storeFile);
    this.ownFile = path.join(this.dir, `${process.pid}-${Date.now()}.jsonl`);
  }

  /** Appends an entry and fsyncs it (and, for a new file, the folder), then returns its id. */
  append(kind: string, payload: unknown, cause: unknown): OutboxEntry {
    const entry: OutboxEntry = { id: newId('obx'), kind, payload, queued_at: new Date().toISOString(), error: messageOf(cause) };
    const created = !fs.existsSync(this.ownFile);
    fs.mkdirSync(this.dir, { recursive: true });
    const fd = fs.openSync(this.ownFile, 'a', 0o600);
    try {
      fs.writeSync(fd, `${JSON.stringify(entry)}\n`);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    if (created) fsyncDir(this.dir);
    this.pending++;
    return entry;
  }

  /** True when some outbox file exists (one directory read). */
  hasEntries(): boolean {
    try {
      return fs.readdirSync(this.dir).some(name => name.endsWith('.jsonl'));
    } catch {
      return false;
    }
  }

  /**
   * Replays every entry whose kind is known, through `write` (one transaction each, run while
   * the caller holds the file), and deletes the files that are done. Returns the counts.
   */
  async replay(write: <T>(fn: (q: Queryable) => Promise<T>) => Promise<T>): Promise<ReplayReport> {
    const report: ReplayReport = { applied: 0, refused: 0, waiting: 0 };
    let names: string[];
    try {
      names = fs.readdirSync(this.dir).filter(name => name.endsWith('.jsonl'));
    } catch {
      return report;
    }
    for (const name of names.sort()) {
      const file = path.join(this.dir, name);
      let text: string;
      try {
        text = fs.readFileSync(file, 'utf8');
      } catch {
        continue;
      }
      const entries = parseEntries(text);
      let open = 0;
      for (const entry of entries) {
        const known = kinds.get(entry.kind);
        if (!known) {
          open++;
          continue;
        }
        const outcome = await write(async q => {
          if (await q.get('SELECT 1 AS done FROM outbox_entries WHERE id = $1', [entry.id])) return 'done' as const;
          // A handler that throws rolls the whole entry back (the write's transaction).
          await known.apply(q, entry.payload);
          await q.run('INSERT INTO outbox_entries (id, kind, queued_at, applied_at, error, payload) VALUES ($1, $2, $3, $4, NULL, NULL)', [
            entry.id,
            entry.kind,
            entry.queued_at,
            new Date()
          ]);
          return 'applied' as const;
        }).catch(error => {
          if (isStoreUnavailable(error)) throw error;
          return { refused: messageOf(error) };
        });
        if (outcome === 'applied') report.applied++;
        else if (outcome !== 'done') {
          // The handler refused the data: keep it, with why, where a user can find it (lab.sql).
          await write(q =>
            q.run('INSERT OR IGNORE INTO outbox_entries (id, kind, queued_at, applied_at, error, payload) VALUES ($1, $2, $3, $4, $5, $6)', [
              entry.id,
              entry.kind,
              entry.queued_at,
              new Date(),
              outcome.refused,
              JSON.stringify(entry.payload)
            ])
          );
          report.refused++;
        }
      }
      report.waiting += open;
      const owner = ownerOf(name);
      const ownerGone = owner === process.pid || owner === null || !isAlive(owner);
      if (open > 0 || !ownerGone) continue;
      // Our own file may have grown while we replayed; the check and the delete are one synchronous step.
      if (fs.statSync(file).size !== Buffer.byteLength(text)) continue;
      fs.rmSync(file, { force: true });
      if (file === this.ownFile) this.pending = 0;
      // The file is gone, so its entries cannot come back: their markers are no longer needed.
      const ids = entries.map(e => e.id);
      if (ids.length) {
        await write(q => q.run(`DELETE FROM outbox_entries WHERE error IS NULL AND id IN (SELECT unnest(from_json($1::JSON, '["VARCHAR"]')))`, [ids]));
      }
    }
    return report;
  }
}

/** What a replay did. */
export interface ReplayReport {
  /** Entries written now. */
  applied: number;
  /** Entries their handler refused (kept in outbox_entries with the error). */
  refused: number;
  /** Entries of kinds this process does not know, left for another. */
  waiting: number;
}

/** Entries of an outbox file; a torn last line (the writer died mid-append, before anyone was told) is skipped. */
function parseEntries(text: string): OutboxEntry[] {
  const entries: OutboxEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      entries.push(JSON.parse(line) as OutboxEntry);
    } catch {
      // Only the last line can be torn: appends are whole lines, fsynced one by one.
    }
  }
  return entries;
}

function fsyncDir(dir: string): void {
  try {
    const fd = fs.openSync(dir, 'r');
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    // Some file systems cannot fsync a directory; the entry itself is synced.
  }
}
