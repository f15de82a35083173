import type { Budget, Spent } from './types';

/** A provider call failed for good (after retries where retrying made sense). */
export class LlmError extends Error {
  override name = 'LlmError';
  constructor(
    message: string,
    /** HTTP status when the server answered; undefined for connection failures and local errors. */
    readonly status?: number,
    /** What to do about it. */
    readonly hint?: string,
    options?: { cause?: unknown }
  ) {
    super(hint ? `${message}. ${hint}` : message, options);
  }
}

/** The model's answer could not be turned into a value matching the requested JSON schema. */
export class LlmOutputError extends Error {
  override name = 'LlmOutputError';
  constructor(
    readonly schemaName: string,
    readonly errors: string[],
    /** The last answer (think blocks removed). */
    readonly answer: string
  ) {
    super(
      `The model's answer does not match the JSON schema "${schemaName}" (after one re-ask): ` +
        `${errors.join('; ')}. Answer began: ${JSON.stringify(answer.slice(0, 200))}`
    );
  }
}

/** A call was refused because a budget limit was already reached. */
export class BudgetExceededError extends Error {
  override name = 'BudgetExceededError';
  constructor(
    readonly limit: keyof Budget,
    readonly spentValue: number,
    readonly maxValue: number,
    /** The scope's stage run, when the exceeded budget is a stage run's. */
    readonly stageRunId: string | null
  ) {
    const what: Record<keyof Budget, string> = { maxTokens: 'tokens', maxCalls: 'calls', maxCostUsd: 'USD' };
    const scope = stageRunId ? `stage run ${stageRunId}` : 'this LLM scope';
    super(
      `LLM budget exceeded for ${scope}: ${spentValue} ${what[limit]} spent of ${maxValue} allowed (${limit}). ` +
        `Raise the budget or narrow the task.`
    );
  }
}

/** The spent counter a budget limit compares against. */
export function spentFor(limit: keyof Budget, spent: Spent): number {
  return limit === 'maxTokens' ? spent.tokens : limit === 'maxCalls' ? spent.calls : spent.costUsd;
}
