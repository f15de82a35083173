/**
 * The `stage_runs` table: one attempt of one stage in a run. The only place its SQL lives (the
 * run lease's takeover in store/run-lease.ts marks orphans failed in its own transaction).
 */
import type { StageRun, Usage } from '@nanoresearch/schema';
import { nowIso } from '../ids';
import type { StageName, StageRunInput } from '../stage-contract';
import type { Queryable } from '../store';

export const NO_USAGE: Usage = { prompt_tokens: 0, completion_tokens: 0, calls: 0, cost_usd: 0, wall_ms: 0, cache_hits: 0 };

/** A new stage run before it is stored: pending, attempt 0 until insertStageRun numbers it. */
export function pendingStageRun(
  identity: Pick<StageRun, 'id' | 'project_id' | 'run_id' | 'stage' | 'started_at'>,
  input: StageRunInput | Record<string, never> = {}
): StageRun {
  return {
    ...identity,
    status: 'pending',
    attempt: 0,
    input: { ...input },
    summary: '',
    error: null,
    planner_call_id: null,
    skills_used: [],
    memories_used: [],
    usage: { ...NO_USAGE },
    finished_at: null,
    origin: 'local'
  };
}

/**
 * Stores `run` as the next attempt of its stage (numbering it), in the caller's transaction. The
 * caller holds the project's run lease, so an earlier attempt still pending or running belongs
 * to a process that ended: it is marked failed (interrupted) here. `newRun`: the run was
 * created in this same transaction.
 */
export async function insertStageRun(q: Queryable, run: StageRun, options: { newRun?: boolean } = {}): Promise<StageRun> {
  // In a run created in this transaction there is nothing to number after or to interrupt.
  const previous = options.newRun
    ? undefined
    : await q.get<{ attempts: number | null; open: number }>(
        `select max(attempt) as attempts, count(*) filter (where status in ('pending', 'running')) as open
       from stage_runs where run_id = $1 and stage = $2`,
        [run.run_id, run.stage]
      );
  if (Number(previous?.open ?? 0) > 0) {
    await q.run(
      `update stage_runs set status = 'failed', error = 'interrupted: the process running it ended', finished_at = $3
        where run_id = $1 and stage = $2 and status in ('pending', 'running')`,
      [run.run_id, run.stage, nowIso()]
    );
  }
  run.attempt = Number(previous?.attempts ?? 0) + 1;
  await q.run(
    `insert into stage_runs (id, project_id, run_id, stage, status, attempt, input, output, summary, error,
                             planner_call_id, skills_used, memories_used, usage, started_at, finished_at, origin)
     values ($id, $project_id, $run_id, $stage, $status, $attempt, $input, $output, $summary, $error,
             $planner_call_id, $skills_used, $memories_used, $usage, $started_at, $finished_at, $origin)`,
    { ...run, output: run.output ?? null }
  );
  return run;
}

/** Writes a stage run's state (everything but its identity) in the caller's transaction. */
export async function saveStageRun(q: Queryable, run: StageRun): Promise<void> {
  await q.run(
    `update stage_runs set status = $status, input = $input, output = $output, summary = $summary, error = $error,
            planner_call_id = $planner_call_id, skills_used = $skills_used, memories_used = $memories_used,
            usage = $usage, finished_at = $finished_at
      where id = $id`,
    {
      id: run.id,
      status: run.status,
      input: run.input,
      output: run.output ?? null,
      summary: run.summary ?? '',
      error: run.error ?? null,
      planner_call_id: run.planner_call_id ?? null,
      skills_used: run.skills_used ?? [],
      memories_used: run.memories_used ?? [],
      usage: run.usage,
      finished_at: run.finished_at ?? null
    }
  );
}

/** The stage run `id`, as stored (SQL NULLs kept: the schema allows null in its optional fields). */
export async function stageRunById(q: Queryable, id: string): Promise<StageRun | undefined> {
  return q.get<StageRun>('select * from stage_runs where id = $1', [id]);
}

/** Whether a stage run `id` is stored. */
export async function hasStageRun(q: Queryable, id: string): Promise<boolean> {
  return (await q.get('select id from stage_runs where id = $1', [id])) !== undefined;
}

/** The latest attempt of each stage in a run. */
export async function latestStageRunsOf(q: Queryable, runId: string): Promise<Map<StageName, StageRun>> {
  const rows = await q.all<StageRun>('select * from stage_runs where run_id = $1 order by attempt, started_at', [runId]);
  return new Map(rows.map(r => [r.stage, r]));
}

/** The input a stage run recorded (StageRunInput), as far as it is there: rows from shared notebooks may lack parts. */
export function inputOf(run: Pick<StageRun, 'input'>): Partial<StageRunInput> {
  return (run.input ?? {}) as Partial<StageRunInput>;
}

/** The row of a stage run from elsewhere (a shared notebook), with the origin it is imported under. */
export function stageRunToRow(run: StageRun, origin: string): Record<string, unknown> {
  return {
    id: run.id,
    project_id: run.project_id,
    run_id: run.run_id,
    stage: run.stage,
    status: run.status,
    attempt: run.attempt ?? null,
    input: run.input ?? null,
    output: run.output ?? null,
    summary: run.summary ?? null,
    error: run.error ?? null,
    planner_call_id: run.planner_call_id ?? null,
    skills_used: run.skills_used ?? null,
    memories_used: run.memories_used ?? null,
    usage: run.usage ?? null,
    started_at: run.started_at ?? null,
    finished_at: run.finished_at ?? null,
    origin
  };
}
