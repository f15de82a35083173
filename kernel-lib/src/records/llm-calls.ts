/**
 * Reads of the `llm_calls` table that a stage run's accounting needs (the LLM's ledger in
 * llm/ledger.ts writes the rows): what one stage run used, what a whole run spent.
 */
import type { Usage } from '@nanoresearch/schema';
import type { Queryable } from '../store';

/** Usage of one stage run, summed from its llm_calls rows (planner call and Update included). */
export async function usageOfStageRun(q: Queryable, stageRunId: string, wallMs: number): Promise<Usage> {
  const row = await q.get<{ prompt: number | null; completion: number | null; calls: number; cost: number | null; hits: number | null }>(
    `select sum(prompt_tokens) as prompt, sum(completion_tokens) as completion, count(*) as calls,
            sum(coalesce(cost_usd, 0)) as cost, sum(case when cache_hit then 1 else 0 end) as hits
       from llm_calls where stage_run_id = $1`,
    [stageRunId]
  );
  return {
    prompt_tokens: Number(row?.prompt ?? 0),
    completion_tokens: Number(row?.completion ?? 0),
    calls: Number(row?.calls ?? 0),
    cost_usd: Number(row?.cost ?? 0),
    wall_ms: wallMs,
    cache_hits: Number(row?.hits ?? 0)
  };
}

/** Tokens and cost of every LLM call made for the stage runs of run `runId`. */
export async function spentByRun(q: Queryable, runId: string): Promise<{ tokens: number; cost: number }> {
  const spent = await q.get<{ tokens: number | null; cost: number | null }>(
    `select sum(coalesce(c.prompt_tokens, 0) + coalesce(c.completion_tokens, 0)) as tokens, sum(coalesce(c.cost_usd, 0)) as cost
       from llm_calls c join stage_runs s on s.id = c.stage_run_id where s.run_id = $1`,
    [runId]
  );
  return { tokens: Number(spent?.tokens ?? 0), cost: Number(spent?.cost ?? 0) };
}
