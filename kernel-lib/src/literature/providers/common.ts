/** Options every remote provider takes: base URL, rate limit and environment overrides. */
import { sharedBucket, TokenBucket } from '../http';

export interface RemoteProviderOptions {
  /** API root; default from NANORESEARCH_<PROVIDER>_URL, else the public API. */
  baseUrl?: string;
  /** Where keys and the contact e-mail are read (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Overrides the published limit (tests); requests per second and burst. */
  rateLimit?: { perSecond: number; capacity?: number };
  timeoutMs?: number;
  maxRetryWaitMs?: number;
}

export function baseUrlFor(envName: string, fallback: string, options: RemoteProviderOptions): string {
  const env = options.env ?? process.env;
  return (options.baseUrl ?? env[envName] ?? fallback).replace(/\/+$/, '');
}

export function bucketFor(name: string, baseUrl: string, published: { perSecond: number; capacity: number }, options: RemoteProviderOptions): TokenBucket {
  if (options.rateLimit) return new TokenBucket(options.rateLimit.capacity ?? 1, options.rateLimit.perSecond);
  return sharedBucket(`${name} ${baseUrl}`, published.capacity, published.perSecond);
}
