/**
 * Holding the DuckDB file for bursts of work.
 *
 * DuckDB lets one process hold a database file; while it does, other processes cannot even
 * open it read-only. Several notebook kernels and CLIs share one store, so a process holds
 * the file only while work keeps coming: it opens it on first use, releases it after
 * `idleReleaseMs` without work, and also after `maxHoldMs` of continuous holding when another
 * process is waiting (in-flight work finishes, then the file is released and queued work
 * re-acquires it) so that others get turns. Waiting processes queue in arrival order
 * (tickets, waiters.ts), so a release hands the file to the longest waiter, and a holder that
 * wants the file back queues behind those already waiting. A process still not served after
 * `lockTimeoutMs` fails with StoreLockedError; writes that must not be lost are then kept in
 * the outbox (outbox.ts).
 *
 * One lease exists per file per process (see `leaseFor`), so a process never has two DuckDB
 * instances on one file and every Store on that file shares the lock, the write queue and
 * the statistics.
 *
 * Every release runs CHECKPOINT before closing, so a cleanly released file has no write-ahead
 * log; one found right after opening means the last holder died holding the file, and the
 * store is checked and repaired before any work runs on it (recovery.ts).
 *
 * The DuckDB instance is kept across hand-offs: each lease has one in-memory instance for its
 * whole life, and holding the file means the file is ATTACHed to it (DETACH releases DuckDB's
 * lock). Creating an instance cost 15-40 ms on these 2 cores, attaching the 100k-record store
 * 4-5 ms, so a retrieval after the notebook idled (the file released meanwhile) pays the attach only.
 */
import { AsyncLocalStorage } from 'async_hooks';
import * as path from 'path';
import { DuckDBConnection, DuckDBInstance } from '@duckdb/node-api';
import { StoreLockedError, StoreRecoveryError, messageOf } from './errors';
import { StoreRecovery, isReplayFailure, recoverStore, walBytes, walOf } from './recovery';
import { Outbox, ReplayReport } from './outbox';
import { startConnectionCache, dropConnectionCache, type Queryable } from './queryable';
import { TicketQueue } from './waiters';

export interface LeaseOptions {
  /** Give up acquiring the file after this long (ms). */
  readonly lockTimeoutMs: number;
  /** Release the file after this long without work (ms). */
  readonly idleReleaseMs: number;
  /** Release the file after holding it this long, once in-flight work is done (ms). */
  readonly maxHoldMs: number;
}

/** Lock statistics of this process for one store file. */
export interface StoreStats {
  /** Times the file was opened. */
  acquisitions: number;
  /** Acquisitions that had to wait for another process. */
  lockWaits: number;
  /** Longest wait of one acquisition (ms). */
  maxWaitMs: number;
  /** Sum of all waits (ms). */
  totalWaitMs: number;
}

const INITIAL_BACKOFF_MS = 5;
/** Slowest retry of the open while it fails; also how often the head tries despite a holder mark. */
const MAX_BACKOFF_MS = 200;
/** How often a queued process looks whether its turn came (a directory read). */
const QUEUE_POLL_MS = 10;
/** How often the head looks whether the marked holder let go (one small file read). */
const HOLDER_POLL_MS = 3;

/**
 * Settings of the lease's instance: DuckDB never reaches the network for extensions, and never
 * touches a file but the store's own (its WAL and spill folder included). The store reads and
 * writes only its tables, so with external access off (set by createHost once the store's own
 * paths are allowed) no query, however written (user SQL in particular), can read host files
 * (read_text, read_csv), write them (COPY, EXPORT DATABASE) or ATTACH another database. DuckDB
 * applies this to the whole instance and cannot turn it back on while the instance runs.
 */
const INSTANCE_CONFIG_BEFORE_LOCKDOWN = {
  autoinstall_known_extensions: 'false',
  autoload_known_extensions: 'false',
  threads: '1',
  // Every release checkpoints (closeCleanly), so the log stays small in normal use. DuckDB's own
  // checkpoint at 16 MB of log fired inside write bursts and rewrote the growing last row group
  // each time, leaving the old blocks free in the file: 10k memories written in batches made a
  // store 1.6-1.9x the bulk-built size; with this threshold 0.9x. A crash replays at most this much log.
  checkpoint_threshold: '64MB'
};
const OFFLINE_SET = 'SET autoinstall_known_extensions = false; SET autoload_known_extensions = false;';
/** The store file's name inside the lease's instance; every connection of the lease makes it the default (USE). */
const ATTACHED_AS = 'store';

/** A SQL string literal. */
function sqlString(text: string): string {
  return `'${text.replace(/'/g, "''")}'`;
}

/**
 * The lease's DuckDB instance: in memory, offline, and with external access off except for the
 * store file, its log and its spill folder (DuckDB allows exactly these paths), so attaching the
 * store works while no query can read or write any other host file, nor attach another database.
 */
async function createHost(file: string): Promise<DuckDBInstance> {
  const host = await DuckDBInstance.create(':memory:', INSTANCE_CONFIG_BEFORE_LOCKDOWN);
  try {
    const connection = await host.connect();
    try {
      await connection.run(OFFLINE_SET);
      await connection.run(`SET temp_directory = ${sqlString(`${file}.tmp`)}`);
      // The log, and the log DuckDB writes while a checkpoint runs.
      await connection.run(`SET allowed_paths = [${[file, walOf(file), `${walOf(file)}.checkpoint`].map(sqlString).join(', ')}]`);
      await connection.run(`SET allowed_directories = [${sqlString(`${file}.tmp/`)}]`);
      await connection.run('SET enable_external_access = false');
    } finally {
      connection.disconnectSync();
    }
  } catch (error) {
    host.closeSync();
    throw error;
  }
  return host;
}

/** Idle connections an attached store keeps for reuse (more are made when more work runs at once). */
const POOLED_CONNECTIONS = 4;

/**
 * The store file attached to the lease's instance: its connections work on the store. Work of
 * the lease takes a pooled connection (connecting, making the store the default and preparing
 * the same statements again cost a few milliseconds each time, a stage's largest overhead) and
 * gives it back; the pool is closed before the file is detached.
 */
export class AttachedStore {
  private readonly idle: DuckDBConnection[] = [];
  /** Connections made before the last closePool: closed when given back, not pooled. */
  private readonly retired = new WeakSet<DuckDBConnection>();
  private readonly out = new Set<DuckDBConnection>();

  constructor(private readonly host: DuckDBInstance) {}

  /** A new connection whose default database is the store. */
  async connect(): Promise<DuckDBConnection> {
    const connection = await this.host.connect();
    try {
      await connection.run(`USE ${ATTACHED_AS}`);
    } catch (error) {
      connection.disconnectSync();
      throw error;
    }
    return connection;
  }

  /** A pooled connection (with its prepared statements), to hand back with `giveBack`. */
  async take(): Promise<DuckDBConnection> {
    let connection = this.idle.pop();
    if (!connection) {
      connection = await this.connect();
      startConnectionCache(connection);
    }
    this.out.add(connection);
    return connection;
  }

  /** Returns a connection to the pool; one whose work failed is closed instead (its state is unknown). */
  giveBack(connection: DuckDBConnection, clean: boolean): void {
    this.out.delete(connection);
    if (clean && !this.retired.has(connection) && this.idle.length < POOLED_CONNECTIONS) this.idle.push(connection);
    else closeConnection(connection);
  }

  /** Closes the idle connections, and those in use once given back (before DETACH, or after migrations changed the tables). */
  closePool(): void {
    for (const connection of this.out) this.retired.add(connection);
    for (const connection of this.idle.splice(0)) closeConnection(connection);
  }
}

function closeConnection(connection: DuckDBConnection): void {
  dropConnectionCache(connection);
  connection.disconnectSync();
}

/** Runs one statement on a fresh connection of the host. */
async function runOnHost(host: DuckDBInstance, sql: string): Promise<void> {
  const connection = await host.connect();
  try {
    await connection.run(sql);
  } finally {
    connection.disconnectSync();
  }
}

function isLockError(error: unknown): boolean {
  return /Could not set lock on file/i.test(messageOf(error));
}

function holderPid(error: unknown): number | null {
  const match = /PID (\d+)/.exec(messageOf(error));
  return match ? Number(match[1]) : null;
}

const sleep = (ms: number) => new Promise<void>(resolve => setTimeout(resolve, ms));

/** Which operation of which lease the current async context is running inside. */
const insideOperation = new AsyncLocalStorage<{ lease: FileLease; writing: boolean }>();

export class FileLease {
  /** Open Store objects using this lease; the lease leaves the registry when it reaches 0. */
  users = 0;
  readonly stats: StoreStats = { acquisitions: 0, lockWaits: 0, maxWaitMs: 0, totalWaitMs: 0 };
  /** Recoveries this process ran after finding the file not closed cleanly. */
  readonly recoveries: StoreRecovery[] = [];

  /** The lease's DuckDB instance, made on first use and kept until the lease is dropped. */
  private host: DuckDBInstance | null = null;
  /** The store file while this process holds it (attached to `host`). */
  private instance: AttachedStore | null = null;
  private acquiring: Promise<void> | null = null;
  /** The checkpoint and close of the last instance, while it runs; nothing opens the file meanwhile. */
  private releasing: Promise<void> | null = null;
  private active = 0;
  private heldSince = 0;
  private idleTimer: NodeJS.Timeout | null = null;
  private drained: Promise<void> | null = null;
  private resolveDrained: (() => void) | null = null;
  private writeTail: Promise<unknown> = Promise.resolve();
  private readonly queue: TicketQueue;
  /** Durable writes of this process that could not commit (outbox.ts). */
  readonly outbox: Outbox;
  private replaying: Promise<ReplayReport> | null = null;

  constructor(
    readonly file: string,
    readonly options: LeaseOptions
  ) {
    this.queue = new TicketQueue(file);
    this.outbox = new Outbox(file);
  }

  /** Replays the outbox through `write`; a replay already running is joined, not repeated. */
  replayOutbox(write: <T>(fn: (q: Queryable) => Promise<T>) => Promise<T>): Promise<ReplayReport> {
    this.replaying ??= this.outbox.replay(write).finally(() => (this.replaying = null));
    return this.replaying;
  }

  /**
   * Runs `fn` with a connection of the attached store while this process holds the file. The
   * connection goes back to the pool, which is closed (its prepared statements destroyed with
   * it) before the lease releases the file, so nothing keeps the file open after that.
   */
  async withConnection<T>(fn: (connection: DuckDBConnection) => Promise<T>, writing = false): Promise<T> {
    const outer = insideOperation.getStore();
    // Work nested in an operation of this lease must not wait for a drain that waits for it.
    const instance = await this.enter(outer?.lease === this);
    let connection: DuckDBConnection | undefined;
    let clean = false;
    try {
      connection = await instance.take();
      const open = connection;
      const result = await insideOperation.run({ lease: this, writing }, () => fn(open));
      clean = true;
      return result;
    } finally {
      if (connection) instance.giveBack(connection, clean);
      this.exit();
    }
  }

  /** Closes the pooled connections of the attached store: after migrations, none keeps what it knew of the old tables. */
  refreshConnections(): void {
    this.instance?.closePool();
  }

  /**
   * Runs `fn` after every earlier write of this process finished: writes within a process are
   * serialised. Calling it from inside a write of the same file is refused, since that write
   * would wait for itself.
   */
  serialize<T>(fn: () => Promise<T>): Promise<T> {
    const outer = insideOperation.getStore();
    if (outer?.lease === this && outer.writing) {
      return Promise.reject(
        new Error(`store.write() was called inside another store.write() on ${this.file}; ` + 'use the Queryable passed to the outer callback instead')
      );
    }
    const run = this.writeTail.then(fn, fn);
    this.writeTail = run.catch(() => undefined);
    return run;
  }

  /** Waits for queued writes and in-flight work, then releases the file. */
  async shutdown(): Promise<void> {
    await this.writeTail;
    while (this.active > 0) {
      this.drained ??= new Promise(resolve => (this.resolveDrained = resolve));
      await this.drained;
    }
    await this.release();
  }

  private async enter(nested: boolean): Promise<AttachedStore> {
    let instance: AttachedStore | null = null;
    while (!instance) {
      if (this.instance && nested) {
        instance = this.instance;
        continue;
      }
      if (this.drained) {
        await this.drained;
        continue;
      }
      if (this.instance) {
        if (Date.now() - this.heldSince < this.options.maxHoldMs) {
          instance = this.instance;
          continue;
        }
        if (this.queue.othersWaiting() === 0) {
          // Nobody else wants the file: keep it rather than pay a close (checkpoint) and reopen.
          this.heldSince = Date.now();
          instance = this.instance;
          continue;
        }
        if (this.active === 0) {
          await this.release();
          continue;
        }
        // Held too long: let in-flight work finish, then release and queue behind the others.
        this.drained = new Promise(resolve => (this.resolveDrained = resolve));
        continue;
      }
      if (this.releasing) {
        await this.releasing;
        continue;
      }
      this.acquiring ??= this.acquire().finally(() => (this.acquiring = null));
      await this.acquiring;
    }
    this.active++;
    if (this.idleTimer) {
      clearTimeout(this.idleTimer);
      this.idleTimer = null;
    }
    return instance;
  }

  private exit(): void {
    this.active--;
    if (this.active > 0) return;
    if (this.drained) {
      const resolve = this.resolveDrained;
      this.drained = null;
      this.resolveDrained = null;
      void this.release().then(() => resolve?.());
      return;
    }
    this.idleTimer = setTimeout(() => {
      this.idleTimer = null;
      if (this.active === 0) void this.release();
    }, this.options.idleReleaseMs);
  }

  /** Checkpoints and closes the instance; resolves once the file is free (never rejects). */
  private release(): Promise<void> {
    if (this.idleTimer) {
      clearTimeout(this.idleTimer);
      this.idleTimer = null;
    }
    const instance = this.instance;
    if (!instance) return this.releasing ?? Promise.resolve();
    this.instance = null;
    const closing = this.closeCleanly(instance).finally(() => {
      this.queue.clearHolder();
      if (this.releasing === closing) this.releasing = null;
    });
    this.releasing = closing;
    return closing;
  }

  /**
   * Opens the file in turn: when others are queued this process takes a ticket behind them and
   * waits until its ticket is the lowest, then tries the file until the holder lets go.
   */
  private async acquire(): Promise<void> {
    const started = Date.now();
    let waited = false;
    let backoff = INITIAL_BACKOFF_MS;
    let lastAttempt = 0;
    let lastError: unknown = null;
    try {
      for (;;) {
        const elapsed = Date.now() - started;
        const ahead = this.queue.ahead();
        if (elapsed >= this.options.lockTimeoutMs) {
          this.recordWait(elapsed);
          const holder = this.queue.holder();
          throw new StoreLockedError(this.file, holder ?? holderPid(lastError), elapsed, lastError ?? undefined, ahead.length);
        }
        if (ahead.length > 0) this.queue.take();
        else {
          // Our turn. Trying DuckDB's open costs ~10 ms of CPU, so while a live holder is marked
          // only its mark is watched (with a slow real try, in case the mark is wrong).
          const holder = this.queue.holder();
          const due = holder === null || holder === process.pid || Date.now() - lastAttempt >= MAX_BACKOFF_MS;
          if (due) {
            lastAttempt = Date.now();
            let instance: AttachedStore;
            try {
              this.host ??= await createHost(this.file);
              await runOnHost(this.host, `ATTACH ${sqlString(this.file)} AS ${ATTACHED_AS}`);
              instance = new AttachedStore(this.host);
            } catch (error) {
              if (isReplayFailure(error)) throw new StoreRecoveryError(this.file, [messageOf(error)], error);
              if (!isLockError(error)) throw error;
              lastError = error;
              this.queue.take();
              await sleep(Math.min(backoff / 2 + (Math.random() * backoff) / 2, Math.max(0, this.options.lockTimeoutMs - elapsed)));
              backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
              waited = true;
              continue;
            }
            this.queue.markHolder();
            try {
              await this.recoverIfUnclean(instance);
            } catch (error) {
              this.queue.clearHolder();
              throw error;
            }
            this.instance = instance;
            this.heldSince = Date.now();
            this.stats.acquisitions++;
            if (waited) this.recordWait(Date.now() - started);
            return;
          }
          this.queue.take();
        }
        waited = true;
        await sleep(Math.min(ahead.length > 0 ? QUEUE_POLL_MS : HOLDER_POLL_MS, this.options.lockTimeoutMs - elapsed));
      }
    } finally {
      this.queue.leave();
    }
  }

  /** Runs the recovery when the last holder left a write-ahead log, i.e. died holding the file. */
  private async recoverIfUnclean(instance: AttachedStore): Promise<void> {
    const bytes = walBytes(this.file);
    if (bytes === null) return;
    try {
      this.recoveries.push(await recoverStore(instance, this.file, bytes));
    } catch (error) {
      await this.detach();
      throw error;
    }
  }

  /**
   * CHECKPOINT, then DETACH: the write-ahead log goes into the file and is removed, so the next
   * opener sees a clean file and DuckDB has nothing to replay. A failed checkpoint loses nothing
   * (every commit is in the log, which the next open replays); it is reported and the file released.
   */
  private async closeCleanly(instance: AttachedStore): Promise<void> {
    instance.closePool();
    try {
      const connection = await instance.connect();
      try {
        await connection.run('CHECKPOINT');
      } finally {
        connection.disconnectSync();
      }
    } catch (error) {
      process.emitWarning(
        `CHECKPOINT of ${this.file} failed before closing it: ${messageOf(error)}. The committed writes are safe in ` +
          `${walOf(this.file)} and are replayed (and the store checked) on the next open.`,
        { code: 'NANORESEARCH_STORE_CHECKPOINT' }
      );
    }
    await this.detach();
  }

  /** Releases DuckDB's lock on the file (all connections are closed: active is 0); if DETACH fails, the whole instance is closed. */
  private async detach(): Promise<void> {
    const host = this.host;
    if (!host) return;
    try {
      await runOnHost(host, `DETACH ${ATTACHED_AS}`);
    } catch (error) {
      process.emitWarning(`Closing ${this.file} failed: ${messageOf(error)}; its DuckDB instance is closed instead`, { code: 'NANORESEARCH_STORE_CLOSE' });
      this.closeHost();
    }
  }

  /** Closes the lease's instance (the file is released); the next acquisition makes a new one. */
  closeHost(): void {
    const host = this.host;
    this.host = null;
    try {
      host?.closeSync();
    } catch (error) {
      process.emitWarning(`Closing the DuckDB instance of ${this.file} failed: ${messageOf(error)}`, { code: 'NANORESEARCH_STORE_CLOSE' });
    }
  }

  private recordWait(ms: number): void {
    this.stats.lockWaits++;
    this.stats.totalWaitMs += ms;
    this.stats.maxWaitMs = Math.max(this.stats.maxWaitMs, ms);
  }
}

const leases = new Map<string, FileLease>();

/**
 * The lease for a store file in this process, created on first use. Options come from the
 * first opener; later Stores on the same file share them.
 */
export function leaseFor(file: string, options: LeaseOptions): FileLease {
  const key = path.resolve(file);
  let lease = leases.get(key);
  if (!lease) {
    lease = new FileLease(key, options);
    leases.set(key, lease);
  }
  lease.users++;
  return lease;
}

/**
 * Drops one user of a lease; the last one releases the file and forgets the lease. The lease
 * stays registered until it has released, so a Store opened meanwhile shares it instead of
 * getting a second instance that this release would close under it.
 */
export async function dropLease(lease: FileLease): Promise<void> {
  lease.users--;
  if (lease.users > 0) return;
  await lease.shutdown();
  if (lease.users === 0 && leases.get(lease.file) === lease) {
    leases.delete(lease.file);
    lease.closeHost();
  }
}
