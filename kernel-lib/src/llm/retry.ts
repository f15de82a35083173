import { LlmError } from './errors';

/** A provider failure, classified so the retry loop knows whether another try can help. */
export class ProviderFailure extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
    readonly status?: number,
    readonly hint?: string,
    /** The wait the server asked for (Retry-After / retry-after-ms). */
    readonly retryAfterMs?: number,
    options?: { cause?: unknown }
  ) {
    super(message, options);
  }
}

export interface RetryPolicy {
  maxRetries: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

/** A server may ask for a long pause; waiting longer than this blocks a notebook for too long. */
const MAX_RETRY_AFTER_MS = 60_000;

/** The end of a whole call: an epoch time, and the limit it came from (for messages). */
export interface Deadline {
  at: number;
  ms: number;
}

/**
 * Runs `attempt` until it succeeds, retrying a retryable `ProviderFailure` with exponential
 * backoff and full jitter (or the server's Retry-After) up to `maxRetries` times; the final
 * failure becomes an `LlmError` carrying the status and the fix hint. With a `deadline`, a wait
 * that would end past it is not waited: the call fails at once, saying so.
 */
export async function withRetries<T>(attempt: () => Promise<T>, policy: RetryPolicy, deadline?: Deadline): Promise<T> {
  for (let tries = 0; ; tries++) {
    try {
      return await attempt();
    } catch (err) {
      if (!(err instanceof ProviderFailure)) throw err;
      if (!err.retryable || tries >= policy.maxRetries) {
        const after = err.retryable ? ` (gave up after ${tries + 1} attempts)` : '';
        throw new LlmError(`${err.message}${after}`, err.status, err.hint, { cause: err });
      }
      const delay = delayBeforeRetry(tries, policy, err.retryAfterMs);
      if (deadline && Date.now() + delay >= deadline.at) {
        const wait = err.retryAfterMs !== undefined ? `the server asked to wait ${delay} ms (Retry-After)` : `the next try would start in ${delay} ms`;
        throw new LlmError(
          `${err.message} (gave up after ${tries + 1} attempts: ${wait}, past the call's deadline of ${deadline.ms} ms, ` +
            `${Math.max(0, deadline.at - Date.now())} ms left)`,
          err.status,
          'Raise the whole-call deadline: Lab.open({ llm: { ...llmConfigFromEnv(), deadlineMs: 1_200_000 } }), or try again later',
          { cause: err }
        );
      }
      await sleep(delay);
    }
  }
}

function delayBeforeRetry(tries: number, policy: RetryPolicy, retryAfterMs?: number): number {
  if (retryAfterMs !== undefined && retryAfterMs >= 0) return Math.min(retryAfterMs, MAX_RETRY_AFTER_MS);
  const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** tries);
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

/** Milliseconds a response asks to wait: `retry-after-ms`, else `retry-after` (seconds or HTTP date). */
export function retryAfterFromHeaders(get: (name: string) => string | null | undefined): number | undefined {
  const ms = get('retry-after-ms');
  if (ms && Number.isFinite(Number(ms))) return Number(ms);
  const after = get('retry-after');
  if (!after) return undefined;
  if (Number.isFinite(Number(after))) return Number(after) * 1000;
  const date = Date.parse(after);
  return Number.isFinite(date) ? Math.max(0, date - Date.now()) : undefined;
}

function sleep(ms: number): Promise<void> {
  return new Promise(resolve => setTimeout(resolve, ms));
}
