import type { Profile } from '@nanoresearch/schema';
import type { Budget, BudgetExceededError } from '../llm';
import { spentByRun } from '../records';
import type { Queryable } from '../store';

/** The LLM budget left to a stage and how to explain running out of it. */
export interface RunBudget {
  limits: Budget;
  /** Set when nothing is left: why the stage cannot start. */
  exhausted?: string;
  /** Says which of the profile's budgets a BudgetExceededError hit. */
  describe: (error: BudgetExceededError) => string;
}

/** The real options when a budget ran out: the profile's resources (lab.useProfile) or a new run with a fresh budget. */
function raise(field: string, value: number): string {
  return (
    `Raise it in the profile: lab.useProfile({ ...profile, resources: { ...profile.resources, ${field}: ${value * 2} } }), ` +
    'or start a new run with project.run({ restart: true })'
  );
}

/** The scoped LLM only knows what was left for this stage: this says which of the profile's budgets ran out. */
function describer(maxTokens: number | undefined, maxCost: number | undefined): (error: BudgetExceededError) => string {
  return error =>
    error.limit === 'maxTokens' && maxTokens !== undefined
      ? `the run's token budget ran out (profile resources.max_tokens_per_run ${maxTokens}): ${error.problem}. ${raise('max_tokens_per_run', maxTokens)}`
      : error.limit === 'maxCostUsd' && maxCost !== undefined
        ? `the run's cost budget ran out (profile resources.max_llm_cost_usd $${maxCost}): ${error.problem}. ${raise('max_llm_cost_usd', maxCost)}`
        : error.message;
}

/**
 * What is left of the run's budget (profile resources: max_tokens_per_run, max_llm_cost_usd)
 * after the stage runs before this one, so a resumed run does not get a fresh budget.
 */
export async function runBudget(q: Queryable, runId: string, profile: Profile): Promise<RunBudget> {
  const maxTokens = profile.resources.max_tokens_per_run;
  const maxCost = profile.resources.max_llm_cost_usd;
  const describe = describer(maxTokens, maxCost);
  if (maxTokens === undefined && maxCost === undefined) return { limits: {}, describe };
  const { tokens, cost } = await spentByRun(q, runId);
  const limits: Budget = {};
  if (maxTokens !== undefined) limits.maxTokens = maxTokens - tokens;
  if (maxCost !== undefined) limits.maxCostUsd = maxCost - cost;
  if (maxTokens !== undefined && limits.maxTokens! <= 0) {
    return {
      limits,
      describe,
      exhausted: `stopped: the run's token budget is spent (${tokens} of max_tokens_per_run ${maxTokens}). ${raise('max_tokens_per_run', maxTokens)}`
    };
  }
  if (maxCost !== undefined && limits.maxCostUsd! <= 0) {
    return {
      limits,
      describe,
      exhausted: `stopped: the run's cost budget is spent ($${cost.toFixed(4)} of max_llm_cost_usd $${maxCost}). ${raise('max_llm_cost_usd', maxCost)}`
    };
  }
  return { limits, describe };
}
