import type { Budget } from './types';

/**
 * How to point the lab at a capable model, for errors where the embedded model is the cause:
 * the environment (read when the kernel starts) or the Lab's own LLM configuration.
 */
export const CAPABLE_ENDPOINT_HINT =
  'For a capable model, point the lab at an OpenAI-compatible endpoint: set NANORESEARCH_LLM_BASE_URL ' +
  '(with NANORESEARCH_LLM_API_KEY and NANORESEARCH_MODEL) and restart the kernel, or open the lab with ' +
  'Lab.open({ llm: { provider: "openai", baseURL: "http://host:8000/v1", apiKey: "...", models: { default: "model-name" } } })';

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

/**
 * A call was refused before it was sent: a budget limit is reached, or what the calls in
 * flight have reserved leaves too little for this one.
 */
export class BudgetExceededError extends Error {
  override name = 'BudgetExceededError';
  /** What ran out, without the advice (a caller that knows which option set the budget gives its own). */
  readonly problem: string;
  constructor(
    readonly limit: keyof Budget,
    /** What the scope has spent (settled calls). */
    readonly spentValue: number,
    readonly maxValue: number,
    /** The scope's stage run, when the exceeded budget is a stage run's. */
    readonly stageRunId: string | null,
    /** What calls in flight have reserved on top of `spentValue`. */
    readonly reservedValue = 0,
    /** Why this call in particular does not fit, when the limit is not simply reached. */
    detail?: string
  ) {
    const what: Record<keyof Budget, string> = { maxTokens: 'tokens', maxCalls: 'calls', maxCostUsd: 'USD' };
    const scope = stageRunId ? `stage run ${stageRunId}` : 'this LLM scope';
    const reserved = reservedValue > 0 ? ` and ${round(reservedValue)} reserved by calls in flight` : '';
    const problem =
      `LLM budget exceeded for ${scope}: ${round(spentValue)} ${what[limit]} spent${reserved} of ${maxValue} allowed (${limit})` +
      `${detail ? `; ${detail}` : ''}`;
    super(`${problem}. Raise the budget (LlmConfig.budget, or llm.scoped({ budget })) or narrow the task.`);
    this.problem = problem;
  }
}

/** A remote model has no price while a cost cap applies: the cap could not be kept, so nothing was sent. */
export class UnpricedModelError extends LlmError {
  override name = 'UnpricedModelError';
  constructor(
    readonly model: string,
    readonly maxCostUsd: number,
    readonly stageRunId: string | null
  ) {
    const scope = stageRunId ? `stage run ${stageRunId}` : 'this LLM scope';
    super(
      `The model "${model}" has no price, so the cost cap of ${scope} (maxCostUsd $${maxCostUsd}) cannot be kept; the call was not sent`,
      undefined,
      `Give its price in NANORESEARCH_LLM_PRICES (e.g. NANORESEARCH_LLM_PRICES='{"${model}": {"inputPerMTok": 0.15, "outputPerMTok": 0.6}}', ` +
        'dollars per million tokens) or in LlmConfig.prices, or remove the cost cap'
    );
  }
}

/** Dollars with at most 6 decimals, counts as they are. */
function round(value: number): number {
  return Number.isInteger(value) ? value : Math.round(value * 1e6) / 1e6;
}
