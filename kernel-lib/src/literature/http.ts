/**
 * HTTP for literature providers: a client-side token bucket per source, a time-out, and
 * backoff on 429 (honouring Retry-After) and 5xx.
 */
import { ProviderUnavailableError } from './types';

/** A token bucket: `capacity` requests at once, refilled at `perSecond`. Callers wait their turn in order. */
export class TokenBucket {
  private tokens: number;
  private last = Date.now();
  private queue: Promise<void> = Promise.resolve();

  constructor(
    readonly capacity: number,
    readonly perSecond: number
  ) {
    this.tokens = capacity;
  }

  /** Resolves when one request may go. */
  take(): Promise<void> {
    const turn = this.queue.then(async () => {
      for (;;) {
        const now = Date.now();
        this.tokens = Math.min(this.capacity, this.tokens + ((now - this.last) / 1000) * this.perSecond);
        this.last = now;
        if (this.tokens >= 1) {
          this.tokens -= 1;
          return;
        }
        await sleep(((1 - this.tokens) / this.perSecond) * 1000);
      }
    });
    this.queue = turn;
    return turn;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise(resolve => setTimeout(resolve, ms));
}

/** Buckets shared per source and host, so two provider objects for one API share its limit. */
const buckets = new Map<string, TokenBucket>();

export function sharedBucket(key: string, capacity: number, perSecond: number): TokenBucket {
  let bucket = buckets.get(key);
  if (!bucket) buckets.set(key, (bucket = new TokenBucket(capacity, perSecond)));
  return bucket;
}

export interface HttpOptions {
  provider: string;
  bucket: TokenBucket;
  headers?: Record<string, string>;
  timeoutMs?: number;
  /** Attempts in all, including the first (default 4). */
  maxAttempts?: number;
  /** Longest wait honoured from Retry-After before giving up on this source (default 30 s). */
  maxRetryWaitMs?: number;
}

/** Seconds or an HTTP date, as Retry-After allows; undefined when absent or unreadable. */
function retryAfterMs(header: string | null): number | undefined {
  if (!header) return undefined;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(header);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

/**
 * GET `url` and return the body text; null on 404. Waits for the bucket before every attempt.
 * Throws ProviderUnavailableError when the source cannot be reached or keeps failing.
 */
export async function getText(url: string, options: HttpOptions): Promise<string | null> {
  const attempts = options.maxAttempts ?? 4;
  const maxWait = options.maxRetryWaitMs ?? 30_000;
  let lastError = '';
  for (let attempt = 1; attempt <= attempts; attempt++) {
    await options.bucket.take();
    let response: Response;
    try {
      response = await fetch(url, {
        headers: { 'user-agent': 'nanoresearch-notebook/0.1', ...options.headers },
        signal: AbortSignal.timeout(options.timeoutMs ?? 15_000)
      });
    } catch (error) {
      lastError = `cannot reach ${new URL(url).origin}: ${(error as Error).message}`;
      // An unreachable host stays unreachable within a run; one retry covers a blip.
      if (attempt >= 2) break;
      await sleep(200);
      continue;
    }
    if (response.ok) return response.text();
    if (response.status === 404) return null;
    const body = (await response.text()).slice(0, 200);
    lastError = `HTTP ${response.status} from ${new URL(url).pathname}: ${body}`;
    if (response.status === 429 || response.status >= 500) {
      const wait = retryAfterMs(response.headers.get('retry-after')) ?? Math.min(8000, 500 * 2 ** (attempt - 1));
      if (wait > maxWait)
        throw new ProviderUnavailableError(
          options.provider,
          `rate limited; Retry-After ${Math.round(wait / 1000)} s exceeds the ${maxWait / 1000} s this search waits`,
          response.status
        );
      if (attempt < attempts) await sleep(wait);
      continue;
    }
    throw new ProviderUnavailableError(options.provider, lastError, response.status);
  }
  throw new ProviderUnavailableError(options.provider, `${lastError} (gave up after retries)`);
}

export async function getJson<T>(url: string, options: HttpOptions): Promise<T | null> {
  const text = await getText(url, options);
  if (text === null) return null;
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new ProviderUnavailableError(options.provider, `answered with text that is not JSON: ${text.slice(0, 120)}`);
  }
}
