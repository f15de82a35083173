/**
 * One runner per project. A process that runs a project's stages holds its row in `run_leases`
 * (migration 7) and refreshes its heartbeat; a second kernel or CLI on the same project waits
 * for it or is told who holds it, and only a dead holder's lease is taken over. Taking over is
 * the one moment a stage left `pending`/`running` is known to belong to a process that ended,
 * so it is marked interrupted then, in the same transaction, and never while its runner lives.
 *
 * A holder is dead when it ran on this host and its pid no longer exists, or when its heartbeat
 * is older than `staleMs` (another host, or a pid reused by an unrelated process). The heartbeat
 * goes through the store, so `staleMs` must outlast the longest wait for the store file
 * (lockTimeoutMs, 30 s by default).
 */
import * as os from 'os';
import { newId } from '../ids';
import { Queryable } from './queryable';
import type { Store } from './store';

export interface RunLeaseOptions {
  /** The run the holder works on, shown to whoever waits. */
  runId?: string | null;
  /** How long to wait for a live holder to finish before RunLeaseHeldError (ms, default 0). */
  waitMs?: number;
  /** How often the holder refreshes its heartbeat (ms, default 5000). */
  heartbeatMs?: number;
  /** A heartbeat older than this means the holder is gone (ms, default 60000). */
  staleMs?: number;
  /** Called when the lease was taken from this holder (it looked dead to another process): stop running. */
  onLost?: (lease: RunLease) => void;
}

/** Who holds a project's lease, as its row says. */
export interface LeaseHolder {
  pid: number;
  host: string;
  runId: string | null;
  acquiredAt: string;
  heartbeatAt: string;
}

interface LeaseRow {
  holder_id: string;
  holder_pid: number;
  holder_host: string;
  run_id: string | null;
  acquired_at: string;
  heartbeat_at: string;
}

const DEFAULT_HEARTBEAT_MS = 5_000;
const DEFAULT_STALE_MS = 60_000;
const POLL_MS = 250;

/** Another live process runs the project. */
export class RunLeaseHeldError extends Error {
  override readonly name = 'RunLeaseHeldError';
  constructor(
    readonly projectId: string,
    readonly holder: LeaseHolder,
    readonly waitedMs: number
  ) {
    const ago = Math.max(0, Math.round((Date.now() - Date.parse(holder.heartbeatAt)) / 1000));
    super(
      `Project ${projectId} is being run by process ${holder.pid} on ${holder.host}` +
        `${holder.runId ? ` (run ${holder.runId})` : ''} since ${holder.acquiredAt}, last heartbeat ${ago} s ago` +
        `${waitedMs > 0 ? `; waited ${waitedMs} ms` : ''}. Wait for it to finish, stop that kernel or CLI` +
        `${holder.host === os.hostname() ? ` (e.g. \`kill ${holder.pid}\`)` : ''}, or pass a longer waitMs.`
    );
  }
}

function holderOf(row: LeaseRow): LeaseHolder {
  return { pid: row.holder_pid, host: row.holder_host, runId: row.run_id, acquiredAt: row.acquired_at, heartbeatAt: row.heartbeat_at };
}

/** Does a process with this pid exist on this host? (Also used by feedback/learning.ts's job claims.) */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: the process exists but belongs to someone else.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Is the row's holder gone? */
function isDead(row: LeaseRow, staleMs: number): boolean {
  if (row.holder_host === os.hostname() && !pidAlive(row.holder_pid)) return true;
  return Date.now() - Date.parse(row.heartbeat_at) > staleMs;
}

/** A held lease: refreshes its heartbeat until released. */
export class RunLease {
  /** The dead holder this lease was taken from, if it was. */
  readonly takenOverFrom: LeaseHolder | null;
  /** Stage runs marked interrupted when taking over (they belonged to a process that ended). */
  readonly interrupted: string[];
  private timer: NodeJS.Timeout | null = null;
  private lostTo = false;
  private released = false;

  constructor(
    private readonly store: Store,
    readonly projectId: string,
    readonly holderId: string,
    taken: { from: LeaseHolder | null; interrupted: string[] },
    heartbeatMs: number,
    private readonly onLost?: (lease: RunLease) => void
  ) {
    this.takenOverFrom = taken.from;
    this.interrupted = taken.interrupted;
    this.timer = setInterval(() => void this.heartbeat(), heartbeatMs);
    // A heartbeat alone must not keep a finished process alive.
    this.timer.unref();
  }

  /** True once another process took the lease over: this holder should stop. */
  get lost(): boolean {
    return this.lostTo;
  }

  /** Refreshes the heartbeat; finds out when the lease was taken over. */
  async heartbeat(): Promise<void> {
    if (this.lostTo || !this.timer) return;
    let changed: number;
    try {
      changed = (
        await this.store.write(q =>
          q.run('UPDATE run_leases SET heartbeat_at = $1 WHERE project_id = $2 AND holder_id = $3', [new Date(), this.projectId, this.holderId])
        )
      ).rowsChanged;
    } catch {
      // The store was busy or closed; the next beat tries again (staleMs allows for several misses).
      return;
    }
    // Beats overlap when a write waits longer than the interval: only the first to find out reports it.
    if (changed === 0 && !this.lostTo) {
      this.lostTo = true;
      this.stopTimer();
      this.onLost?.(this);
    }
  }

  /** Stops the heartbeat and gives the project back (only if this holder still has it and did not give it back already). */
  async release(): Promise<void> {
    this.stopTimer();
    if (this.lostTo || this.released) return;
    await this.store.write(q => this.deleteRow(q));
  }

  /**
   * Runs `work` in a write that also gives the project back, one commit instead of two (a stage's
   * end and its lease). If the write fails, the lease is still held and `release()` gives it back.
   */
  async releaseWith<T>(work: (q: Queryable) => Promise<T>): Promise<T> {
    this.stopTimer();
    const result = await this.store.write(async q => {
      const done = await work(q);
      if (!this.lostTo) await this.deleteRow(q);
      return done;
    });
    this.released = true;
    return result;
  }

  private async deleteRow(q: Queryable): Promise<void> {
    await q.run('DELETE FROM run_leases WHERE project_id = $1 AND holder_id = $2', [this.projectId, this.holderId]);
  }

  private stopTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}

/** What one attempt to take the lease found. */
type Outcome = { kind: 'held'; holder: LeaseHolder } | { kind: 'taken'; from: LeaseHolder | null; interrupted: string[] };

/** Marks the project's unfinished stage runs interrupted; returns their ids. */
async function interruptOrphans(q: Queryable, projectId: string, holder: LeaseHolder | null): Promise<string[]> {
  const orphans = await q.all<{ id: string }>(`SELECT id FROM stage_runs WHERE project_id = $1 AND status IN ('pending', 'running') ORDER BY id`, [projectId]);
  if (orphans.length === 0) return [];
  const who = holder ? `the process running it (pid ${holder.pid} on ${holder.host}) ended` : 'the process running it ended';
  await q.run(`UPDATE stage_runs SET status = 'failed', error = $1, finished_at = $2 WHERE project_id = $3 AND status IN ('pending', 'running')`, [
    `interrupted: ${who}`,
    new Date(),
    projectId
  ]);
  return orphans.map(o => o.id);
}

/**
 * Takes the project's run lease: at once when free, by taking it over when its holder is dead
 * (marking that holder's unfinished stage runs interrupted), or after waiting up to `waitMs`
 * for a live holder to release it; else RunLeaseHeldError naming the holder. A free lease with
 * stage runs still unfinished (a holder that died before leases existed) is treated like a
 * takeover.
 */
export async function acquireRunLease(store: Store, projectId: string, options: RunLeaseOptions = {}): Promise<RunLease> {
  const staleMs = options.staleMs ?? DEFAULT_STALE_MS;
  const waitMs = options.waitMs ?? 0;
  const holderId = newId('lease');
  const started = Date.now();
  for (;;) {
    const outcome = await store.write(async (q): Promise<Outcome> => {
      const row = await q.get<LeaseRow>('SELECT * FROM run_leases WHERE project_id = $1', [projectId]);
      if (row && !isDead(row, staleMs)) return { kind: 'held', holder: holderOf(row) };
      const now = new Date();
      if (row) {
        await q.run(
          `UPDATE run_leases SET holder_id = $1, holder_pid = $2, holder_host = $3, run_id = $4, acquired_at = $5, heartbeat_at = $5
            WHERE project_id = $6`,
          [holderId, process.pid, os.hostname(), options.runId ?? null, now, projectId]
        );
      } else {
        await q.run(
          `INSERT INTO run_leases (project_id, holder_id, holder_pid, holder_host, run_id, acquired_at, heartbeat_at)
           VALUES ($1, $2, $3, $4, $5, $6, $6)`,
          [projectId, holderId, process.pid, os.hostname(), options.runId ?? null, now]
        );
      }
      const from = row ? holderOf(row) : null;
      return { kind: 'taken', from, interrupted: await interruptOrphans(q, projectId, from) };
    });
    if (outcome.kind === 'taken') {
      return new RunLease(store, projectId, holderId, outcome, options.heartbeatMs ?? DEFAULT_HEARTBEAT_MS, options.onLost);
    }
    const waited = Date.now() - started;
    if (waited >= waitMs) throw new RunLeaseHeldError(projectId, outcome.holder, waited);
    await new Promise(resolve => setTimeout(resolve, Math.min(POLL_MS, waitMs - waited)));
  }
}
