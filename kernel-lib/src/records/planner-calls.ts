/** The `planner_calls` table: each planner call's x, y and plan (the SDPO training data). Its row↔record mapping and point queries. */
import type { PlannerCall } from '@nanoresearch/schema';
import type { RowInserts } from '../store/outbox';
import type { Queryable } from '../store';

/** A planner call as a durable insert (INSERT_ROWS): how it reaches the store, or the outbox when the store is busy. */
export function plannerCallInsert(call: PlannerCall): RowInserts['inserts'][number] {
  return { table: 'planner_calls', rows: [{ ...call }] };
}

export async function plannerCallById(q: Queryable, id: string): Promise<PlannerCall | undefined> {
  return q.get<PlannerCall>('select * from planner_calls where id = $1', [id]);
}

/** The planner call a stage run used: the one it names, else the latest made for it. */
export async function plannerCallOfStageRun(q: Queryable, run: { id: string; planner_call_id?: string | null }): Promise<PlannerCall | undefined> {
  return run.planner_call_id
    ? plannerCallById(q, run.planner_call_id)
    : q.get<PlannerCall>('select * from planner_calls where stage_run_id = $1 order by created_at desc limit 1', [run.id]);
}

/** The latest `limit` planner calls that hold the model's own answer (no fallback), newest first, one per distinct x. */
export async function recentAnsweredPlannerCalls(q: Queryable, limit: number): Promise<PlannerCall[]> {
  return q.all<PlannerCall>(
    `select * from planner_calls where fallback is null and y <> ''
     qualify row_number() over (partition by x order by created_at desc, id) = 1
     order by created_at desc, id limit $1`,
    [limit]
  );
}

/** Stores a call unless one with its id is there (a re-sampled call is made once). */
export async function insertPlannerCallOnce(q: Queryable, call: PlannerCall): Promise<void> {
  await q.run(
    `insert into planner_calls (id, stage_run_id, stage, x, y, parsed, candidate_skill_ids, candidate_memory_ids,
                                model, adapter_version, fallback, created_at)
     values ($id, $stage_run_id, $stage, $x, $y, $parsed, $candidate_skill_ids, $candidate_memory_ids,
             $model, $adapter_version, $fallback, $created_at)
     on conflict (id) do nothing`,
    { ...call }
  );
}

/** The row of a planner call from elsewhere (a shared notebook): every column, absent ones as NULL. */
export function plannerCallToRow(call: PlannerCall): Record<string, unknown> {
  return {
    id: call.id,
    stage_run_id: call.stage_run_id,
    stage: call.stage,
    x: call.x,
    y: call.y,
    parsed: call.parsed ?? null,
    candidate_skill_ids: call.candidate_skill_ids ?? null,
    candidate_memory_ids: call.candidate_memory_ids ?? null,
    model: call.model,
    adapter_version: call.adapter_version,
    fallback: call.fallback,
    created_at: call.created_at ?? null
  };
}
