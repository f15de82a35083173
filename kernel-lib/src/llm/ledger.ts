import { createHash } from 'crypto';
import { INSERT_ROWS, type RowInserts } from '../store/outbox';
import type { ChatMessage, JsonSchema, LedgerRowHolder, LlmCallRecord, LlmStore, TokenUsage } from './types';

/** What the response cache keeps of an answer. */
export interface CachedResponse {
  text: string;
  model: string;
  usage: TokenUsage;
  /** The token limit cut the answer off (absent in entries written before this was kept). */
  truncated?: boolean;
}

/** Everything that determines an answer; its hash is the cache key. */
export interface CacheKeyParts {
  provider: string;
  model: string;
  adapterPath: string | null;
  messages: ChatMessage[];
  temperature: number | null;
  maxTokens: number | null;
  jsonSchema: JsonSchema | null;
  seed: number | null;
}

export function cacheKey(parts: CacheKeyParts): string {
  const ordered = [
    parts.provider,
    parts.model,
    parts.adapterPath,
    parts.messages.map(m => [m.role, m.content]),
    parts.temperature,
    parts.maxTokens,
    parts.jsonSchema,
    parts.seed
  ];
  return createHash('sha256').update(JSON.stringify(ordered)).digest('hex');
}

/**
 * The response cache and the `llm_calls` accounting, in the store when there is one (the cache
 * then survives the process), else in memory. A call's row and its cache entry are written in
 * one transaction, so a crash cannot keep an answer without its accounting or the reverse.
 */
export class LlmLedger {
  private readonly memory = new Map<string, CachedResponse>();

  constructor(
    private readonly store: LlmStore | undefined,
    private readonly onCall: ((record: LlmCallRecord) => void) | undefined
  ) {}

  async lookup(key: string): Promise<CachedResponse | undefined> {
    const hit = this.memory.get(key);
    if (hit || !this.store) return hit;
    const row = await this.store.read(q => q.get<{ response: unknown }>('SELECT response FROM llm_cache WHERE key = $1', [key]));
    if (!row) return undefined;
    const response = (typeof row.response === 'string' ? JSON.parse(row.response) : row.response) as CachedResponse;
    this.memory.set(key, response);
    return response;
  }

  /**
   * Stores the accounting row, and the answer under `cache.key` when given. A durable write:
   * a call that was paid for is recorded even when the store is busy past its lock timeout
   * (then from the store's outbox, on its next open; StoreWriteQueuedError is thrown meanwhile).
   * With a `holder`, the rows go to it instead, for its owner to commit in its own write.
   */
  async record(row: LlmCallRecord, cache?: { key: string; response: CachedResponse }, holder?: LedgerRowHolder): Promise<void> {
    if (this.store) {
      const inserts: RowInserts['inserts'] = [{ table: 'llm_calls', rows: [{ ...row }] }];
      if (cache) {
        inserts.push({
          table: 'llm_cache',
          rows: [{ key: cache.key, model: cache.response.model, response: JSON.stringify(cache.response), created_at: row.created_at }]
        });
      }
      if (holder) holder.hold(inserts);
      else await this.store.writeDurable(INSERT_ROWS, { inserts });
    }
    if (cache) this.memory.set(cache.key, cache.response);
    this.onCall?.(row);
  }
}

/**
 * Ledger rows held for a write of their owner's: the planner's calls are committed with the stage
 * run they planned (orchestrator/runs.ts commitPlan), one commit instead of one per call.
 */
export class HeldLedgerRows implements LedgerRowHolder {
  /** The held inserts, oldest first. */
  readonly rows: RowInserts['inserts'] = [];

  hold(inserts: RowInserts['inserts']): void {
    this.rows.push(...inserts);
  }
}
