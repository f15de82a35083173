/**
 * Learning from feedback as a background job. Storing feedback answers at once; what the
 * system learns from it (memories extracted from the text, skills distilled from the stage's
 * trajectory with the feedback) runs afterwards in this queue, one job at a time, with the
 * Lab's own LLM (so with the per-call limits the notebook set), never while a stage of the
 * same Lab runs.
 *
 * Each job is a `learning_jobs` row (migration 8) written in the feedback's own transaction,
 * so stored feedback always has its job and a kernel that dies mid-job loses nothing: the
 * next queue that starts (a kernel restart, another notebook) finds the row and resumes it.
 * A job is claimed in one transaction (owner id, pid, host, heartbeat); another queue takes it
 * over only when that owner is gone (its pid is dead on this host, or its heartbeat is stale),
 * so two kernels on one store never learn the same feedback twice. Steps that succeeded are
 * kept: a retry runs only the step that failed.
 *
 * Nothing here writes to stdout or stderr: in a notebook kernel that output would land in
 * whatever cell happens to run. What happened is in the job row, which the sidebar and
 * `lab.learningStates()` read.
 */
import * as os from 'os';
import type { Feedback, LearningState, StageRun } from '@nanoresearch/schema';
import { errorMessage } from '../error-message';
import { newId, nowIso } from '../ids';
import { stageRunById } from '../records';
import type { Llm } from '../llm';
import type { MemoryBank } from '../memory';
import type { StageRunInput } from '../stage-contract';
import type { SkillBank } from '../skills';
import type { Queryable, Store } from '../store';
import { pidAlive } from '../store/run-lease';

/** What the UI and `lab.learningStates()` show of one feedback item's learning: the bridge's schema type, the one contract with the extension. */
export type { LearningState };
export type LearningStatus = LearningState['status'];

/** What Update-from-feedback needs: the LLM (role 'judge') and the banks it updates. */
export interface FeedbackLearners {
  llm: Llm;
  memory: MemoryBank;
  skills: SkillBank;
}

/** The outcome of each step of a job, kept so that a retry repeats only what failed. */
interface Steps {
  memories?: { ok: true; memories: LearningState['memories'] } | { ok: false; error: string };
  skills?: { ok: true; skills: LearningState['skills']; discarded: number } | { ok: false; error: string };
}

interface JobRow {
  feedback_id: string;
  status: LearningStatus;
  attempts: number;
  error: string | null;
  steps: Steps;
  owner_id: string | null;
  owner_pid: number | null;
  owner_host: string | null;
  heartbeat_at: string | null;
  updated_at: string;
}

/** A claimed job with what it learns from (either may be gone: the job then fails, saying so). */
interface Job {
  row: JobRow;
  feedback: Feedback | undefined;
  run: StageRun | undefined;
}

export interface LearningQueueOptions {
  /**
   * False: this queue records and reports jobs but never runs them (the bridge's own Lab,
   * opened before the notebook's: it has not the notebook's LLM limits). Default true.
   */
  run?: boolean;
  /** True while a stage runs in this process: jobs wait for it rather than compete for the model. */
  isBusy?: () => boolean;
  /** Turns a step's error into the text shown (adds what to change). */
  describe?: (error: unknown) => string;
  /** How often a running job refreshes its heartbeat (ms, default 15000). */
  heartbeatMs?: number;
  /** A heartbeat older than this means the worker is gone (ms, default 120000). */
  staleMs?: number;
  /** How often a waiting queue looks again whether the stage is over (ms, default 500). */
  busyPollMs?: number;
}

const DEFAULT_HEARTBEAT_MS = 15_000;
const DEFAULT_STALE_MS = 120_000;
const DEFAULT_BUSY_POLL_MS = 500;

/** Writes the job of a just-stored feedback row, inside the caller's transaction. */
export async function enqueueLearning(q: Queryable, feedbackId: string): Promise<void> {
  const now = nowIso();
  await q.run(
    `insert into learning_jobs (feedback_id, status, attempts, error, steps, created_at, updated_at)
     values ($1, 'queued', 0, null, $2, $3, $3) on conflict do nothing`,
    [feedbackId, {}, now]
  );
}

export class LearningQueue {
  private readonly ownerId = newId('learner');
  private readonly runs: boolean;
  private worker: Promise<void> | null = null;
  private again = false;
  private closed = false;
  private current: string | null = null;
  private idleWaiters: Array<() => void> = [];

  constructor(
    private readonly store: Store,
    private readonly learners: FeedbackLearners,
    private readonly options: LearningQueueOptions = {}
  ) {
    this.runs = options.run !== false;
  }

  /** Starts working through the queued jobs (and ones whose worker died), unless already at it. */
  kick(): void {
    if (!this.runs || this.closed) return;
    if (this.worker) {
      this.again = true;
      return;
    }
    this.worker = this.work()
      // A store error (busy file, closed store) ends this round; the jobs stay queued for the next kick.
      .catch(() => undefined)
      .finally(() => {
        this.worker = null;
        if (this.again && !this.closed) {
          this.again = false;
          this.kick();
        } else {
          for (const resolve of this.idleWaiters.splice(0)) resolve();
        }
      });
  }

  /** Resolves when this queue has no job left that it can run now (tests, `lab.learningIdle()`). */
  idle(): Promise<void> {
    if (!this.worker) return Promise.resolve();
    return new Promise(resolve => this.idleWaiters.push(resolve));
  }

  /** The learning state of each feedback id; null for feedback without a job (imported, or stored before jobs existed). */
  async states(ids: string[]): Promise<Record<string, LearningState | null>> {
    const unique = [...new Set(ids)];
    const rows = unique.length
      ? await this.store.read(q => q.all<JobRow>(`select * from learning_jobs where feedback_id in (${unique.map((_, i) => `$${i + 1}`).join(', ')})`, unique))
      : [];
    const byId = new Map(rows.map(r => [r.feedback_id, r]));
    return Object.fromEntries(unique.map(id => [id, byId.has(id) ? this.stateOf(byId.get(id)!) : null]));
  }

  /**
   * Queues a failed job again (its successful steps are kept), or learns from feedback that has
   * no job yet (imported, or stored before background learning). Refused for a job that is
   * queued, running or done.
   */
  async retry(feedbackId: string): Promise<LearningState> {
    const row = await this.store.write(async q => {
      const feedback = await q.get<{ id: string }>('select id from feedback where id = $1', [feedbackId]);
      if (!feedback) throw new Error(`no feedback '${feedbackId}' in this store, so there is nothing to learn from`);
      const job = await q.get<JobRow>('select * from learning_jobs where feedback_id = $1', [feedbackId]);
      if (!job) {
        await enqueueLearning(q, feedbackId);
      } else if (job.status === 'failed') {
        await q.run(`update learning_jobs set status = 'queued', error = null, updated_at = $2 where feedback_id = $1`, [feedbackId, nowIso()]);
      } else {
        throw new Error(`learning from feedback ${feedbackId} is ${job.status}, not failed: there is nothing to retry`);
      }
      return (await q.get<JobRow>('select * from learning_jobs where feedback_id = $1', [feedbackId]))!;
    });
    this.kick();
    return this.stateOf(row);
  }

  /**
   * Stops taking jobs. A job in flight gets up to `graceMs` to finish; if it does not, its
   * claim is given back so the next queue resumes it (its result, if it arrives, is dropped).
   */
  async close(graceMs = 2000): Promise<void> {
    this.closed = true;
    const worker = this.worker;
    if (!worker) return;
    const finished = await Promise.race([worker.then(() => true), new Promise<boolean>(r => setTimeout(() => r(false), graceMs).unref())]);
    if (!finished && this.current) {
      const id = this.current;
      await this.store
        .write(q =>
          q.run(
            `update learning_jobs set status = 'queued', owner_id = null, owner_pid = null, owner_host = null, updated_at = $3
              where feedback_id = $1 and owner_id = $2`,
            [id, this.ownerId, nowIso()]
          )
        )
        .catch(() => undefined);
    }
  }

  private async work(): Promise<void> {
    while (!this.closed) {
      if (this.options.isBusy?.()) {
        await sleep(this.options.busyPollMs ?? DEFAULT_BUSY_POLL_MS);
        continue;
      }
      const job = await this.claim();
      if (!job) return;
      this.current = job.row.feedback_id;
      try {
        await this.runJob(job);
      } finally {
        this.current = null;
      }
    }
  }

  /** Takes the oldest job that is queued or whose worker is gone, in one transaction. */
  private async claim(): Promise<Job | null> {
    const staleMs = this.options.staleMs ?? DEFAULT_STALE_MS;
    return this.store.write(async q => {
      const candidates = await q.all<JobRow>(`select * from learning_jobs where status in ('queued', 'learning') order by created_at, feedback_id`);
      const row = candidates.find(r => r.status === 'queued' || ownerGone(r, staleMs));
      if (!row) return null;
      const now = nowIso();
      await q.run(
        `update learning_jobs set status = 'learning', attempts = attempts + 1, error = null, owner_id = $2, owner_pid = $3,
                owner_host = $4, heartbeat_at = $5, started_at = $5, finished_at = null, updated_at = $5
          where feedback_id = $1`,
        [row.feedback_id, this.ownerId, process.pid, os.hostname(), now]
      );
      const feedback = await q.get<Feedback>('select * from feedback where id = $1', [row.feedback_id]);
      const run = feedback ? await stageRunById(q, feedback.stage_run_id) : undefined;
      return { row: { ...row, status: 'learning' as const, attempts: row.attempts + 1 }, feedback, run };
    });
  }

  private async runJob(job: Job): Promise<void> {
    const steps: Steps = { ...job.row.steps };
    const heartbeat = setInterval(
      () => void this.save(job.row.feedback_id, { heartbeat: true }).catch(() => undefined),
      this.options.heartbeatMs ?? DEFAULT_HEARTBEAT_MS
    );
    // A heartbeat alone must not keep a finished process alive.
    heartbeat.unref();
    try {
      const { feedback, run } = job;
      if (!feedback || !run) {
        const reason = feedback ? `its stage run ${feedback.stage_run_id} is not in this store` : 'the feedback is no longer in this store';
        steps.memories = { ok: false, error: `memory extraction did not run: ${reason}` };
        steps.skills = { ok: false, error: `skill distillation did not run: ${reason}` };
      } else {
        if (!steps.memories?.ok) {
          steps.memories = await this.step('memory extraction', async () => {
            const memories = await this.learners.memory.fromFeedback({
              text: feedback.text,
              stage: run.stage,
              projectId: run.project_id,
              llm: this.learners.llm
            });
            return { ok: true as const, memories: memories.map(m => ({ id: m.id, kind: m.kind, content: m.content })) };
          });
          // Saved at once: a crash before the next step does not extract the memories again.
          if (!(await this.save(job.row.feedback_id, { steps }))) return;
        }
        if (!steps.skills?.ok) {
          steps.skills = await this.step('skill distillation', async () => {
            const input = (run.input ?? {}) as Partial<StageRunInput>;
            const outcomes = await this.learners.skills.distill({
              stage: run.stage,
              trajectory: input.trajectory || run.summary || '',
              feedback: feedback.text,
              llm: this.learners.llm,
              stageRunId: run.id
            });
            return {
              ok: true as const,
              skills: outcomes.flatMap(o => (o.skill ? [{ id: o.skill.id, name: o.skill.name, decision: o.decision }] : [])),
              discarded: outcomes.filter(o => !o.skill).length
            };
          });
        }
      }
      const errors = [steps.memories, steps.skills].flatMap(s => (s && !s.ok ? [s.error] : []));
      await this.save(job.row.feedback_id, { steps, status: errors.length ? 'failed' : 'learned', error: errors.join('; ') || null });
    } finally {
      clearInterval(heartbeat);
    }
  }

  private async step<T>(name: string, run: () => Promise<T>): Promise<T | { ok: false; error: string }> {
    try {
      return await run();
    } catch (error) {
      const describe = this.options.describe ?? errorMessage;
      // The banks wrap the LLM's error in their own ("... failed (nothing was stored): <cause>"),
      // which reads as if the feedback were lost; the step name and the cause say it exactly.
      const cause = error instanceof Error && error.cause !== undefined ? error.cause : error;
      return { ok: false, error: `${name} failed: ${describe(cause)}` };
    }
  }

  /** Writes the job's progress if this queue still owns it; false when another queue took it over. */
  private async save(feedbackId: string, change: { steps?: Steps; status?: LearningStatus; error?: string | null; heartbeat?: boolean }): Promise<boolean> {
    const now = nowIso();
    const finished = change.status === 'learned' || change.status === 'failed';
    const result = await this.store.write(q =>
      q.run(
        `update learning_jobs set
            steps = coalesce($3, steps), status = coalesce($4, status),
            error = case when $5 then $6 else error end,
            heartbeat_at = $7, updated_at = case when $8 then updated_at else $7 end,
            finished_at = case when $9 then $7 else finished_at end,
            owner_id = case when $9 then null else owner_id end,
            owner_pid = case when $9 then null else owner_pid end,
            owner_host = case when $9 then null else owner_host end
          where feedback_id = $1 and owner_id = $2`,
        [
          feedbackId,
          this.ownerId,
          change.steps ?? null,
          change.status ?? null,
          change.error !== undefined,
          change.error ?? null,
          now,
          change.heartbeat === true,
          finished
        ]
      )
    );
    return result.rowsChanged > 0;
  }

  private stateOf(row: JobRow): LearningState {
    const steps = row.steps ?? {};
    let waiting: string | null = null;
    if (row.status === 'queued') {
      if (!this.runs || this.closed) {
        waiting = "it runs in the notebook's lab: run the set-up cell (Lab.open) and it starts";
      } else if (this.options.isBusy?.()) {
        waiting = 'it starts when the running stage ends';
      }
    }
    return {
      feedback_id: row.feedback_id,
      status: row.status,
      attempts: Number(row.attempts),
      error: row.error,
      memories: steps.memories?.ok ? steps.memories.memories : [],
      skills: steps.skills?.ok ? steps.skills.skills : [],
      discarded: steps.skills?.ok ? steps.skills.discarded : 0,
      waiting,
      updated_at: row.updated_at
    };
  }
}

/** Has the worker that claimed this job gone (dead pid on this host, or a stale heartbeat)? */
function ownerGone(row: JobRow, staleMs: number): boolean {
  if (!row.owner_id) return true;
  if (row.owner_host === os.hostname() && row.owner_pid !== null && !pidAlive(Number(row.owner_pid))) return true;
  return !row.heartbeat_at || Date.now() - Date.parse(row.heartbeat_at) > staleMs;
}

function sleep(ms: number): Promise<void> {
  return new Promise(resolve => setTimeout(resolve, ms).unref());
}
