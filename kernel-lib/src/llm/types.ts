/**
 * The LLM layer's public types: one `Llm` interface in front of two providers (an
 * OpenAI-compatible HTTP server, or the embedded GGUF model run by node-llama-cpp).
 */
import type { DurableKind, RowInserts } from '../store/outbox';

/** Who is asking. Each role maps to a model name (`LlmConfig.models`). */
export type Role = 'planner' | 'ideation' | 'planning' | 'coding' | 'writing' | 'review' | 'judge';

export const ROLES: readonly Role[] = ['planner', 'ideation', 'planning', 'coding', 'writing', 'review', 'judge'];

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

/** A JSON Schema (draft 2020-12) as a plain object. */
export type JsonSchema = Record<string, unknown>;

export interface LlmRequest {
  role: Role;
  messages: ChatMessage[];
  temperature?: number;
  maxTokens?: number;
  /** Constrain (local) or request (OpenAI) an answer matching this schema. */
  jsonSchema?: JsonSchema;
  /** Name sent with the schema; defaults to the schema's `title`, then `response`. */
  schemaName?: string;
  /**
   * The planner's LoRA adapter: its GGUF file is applied on top of the embedded model; a
   * LoRA-serving planner endpoint (LlmConfig.plannerServer) is asked to serve it and answers
   * under its name. A plain OpenAI-compatible server cannot take an adapter: there it only takes
   * part in the cache key.
   */
  adapter?: LlmAdapter | null;
  /** The stage run the `llm_calls` row belongs to; defaults to the scope's. */
  stageRunId?: string | null;
  /** Answer identical requests from the response cache (default true). */
  cache?: boolean;
  seed?: number;
}

/** A trained LoRA adapter as the LLM layer uses it (the trainer writes both forms). */
export interface LlmAdapter {
  /** Its name on a LoRA-serving endpoint: unique across the users sharing the server. */
  name: string;
  /** The GGUF LoRA file (the embedded model, llama.cpp server). */
  ggufPath: string;
  /** The PEFT folder, adapter_config.json + adapter_model.safetensors (vLLM). */
  peftDir: string;
}

/** Which LoRA-serving engine runs the planner endpoint (llm/lora-server.ts). */
export type LoraServerKind = 'vllm' | 'llama.cpp';

/** The planner's own OpenAI-compatible endpoint, serving each user's adapter on one base model. */
export interface PlannerServerConfig {
  kind: LoraServerKind;
  /** e.g. `http://gpu-host:8000/v1`. */
  baseURL: string;
  apiKey?: string;
}

export interface TokenUsage {
  promptTokens: number;
  completionTokens: number;
}

export interface LlmResponse {
  /** The answer, with any `<think>…</think>` block removed. */
  text: string;
  model: string;
  usage: TokenUsage;
  costUsd: number;
  latencyMs: number;
  /** True when answered from the response cache (no request made, nothing spent). */
  cached: boolean;
}

/** Limits for one scope; a call is refused once any limit is reached. */
export interface Budget {
  maxTokens?: number;
  maxCalls?: number;
  maxCostUsd?: number;
}

export interface Spent {
  tokens: number;
  calls: number;
  costUsd: number;
}

/** Dollars per million tokens. */
export interface ModelPrice {
  inputPerMTok: number;
  outputPerMTok: number;
}

export type JsonMode = 'json_schema' | 'json_object' | 'none';

export interface LlmConfig {
  provider: 'openai' | 'local';
  /** OpenAI-compatible endpoint, e.g. `http://127.0.0.1:8000/v1`. */
  baseURL?: string;
  apiKey?: string;
  /**
   * The planner role's LoRA-serving endpoint; the planner's model name (models.planner) is the base
   * model it serves. Unset: the planner runs on the provider above, like every role.
   */
  plannerServer?: PlannerServerConfig;
  /** Model name per role; roles without an entry use `default`. */
  models: { default: string } & Partial<Record<Role, string>>;
  /** How the OpenAI provider asks for JSON (default `json_schema`). */
  jsonMode?: JsonMode;
  /**
   * Folder of the embedded models' GGUF files (local provider); a model name maps to a file in it
   * (see llm/embedded.ts).
   */
  modelsDir?: string;
  /** Context window of the embedded model, in tokens (default 4096). */
  contextSize?: number;
  /** CPU threads of the embedded model (default: all cores but one; NANORESEARCH_LLM_THREADS). */
  threads?: number;
  /** Prices per model name; the local provider is free, an unpriced remote model counts as 0. */
  prices?: Record<string, ModelPrice>;
  /** Limits for everything this Llm (and its scopes) spends. */
  budget?: Budget;
  /** Per-request timeout in milliseconds (default 120000). */
  timeoutMs?: number;
  /** Retries after a transient failure: 429, 5xx, timeout, connection reset (default 4). */
  maxRetries?: number;
  /** First backoff delay; doubles each retry, with jitter (default 500). */
  retryBaseDelayMs?: number;
  /** Longest backoff delay, Retry-After excepted (default 20000). */
  retryMaxDelayMs?: number;
  /**
   * Limit for a whole call in milliseconds: every attempt, backoff and Retry-After wait
   * together. A wait that would end past it is not waited; the call fails at once. Default:
   * what the attempts and backoffs could take anyway, timeoutMs × (maxRetries + 1) +
   * retryMaxDelayMs × maxRetries; none for the embedded model unless timeoutMs is set.
   */
  deadlineMs?: number;
  /** Largest HTTP response body the OpenAI-compatible provider reads, in bytes (default 8 MiB). */
  maxResponseBytes?: number;
}

export interface Llm {
  complete(req: LlmRequest): Promise<LlmResponse>;
  /**
   * Complete, parse the first JSON object of the answer and validate it against `jsonSchema`;
   * an invalid answer is re-asked once with the validation errors, then `LlmOutputError`.
   */
  completeJson<T>(req: LlmRequest & { jsonSchema: JsonSchema }): Promise<LlmResponse & { value: T }>;
  /**
   * An Llm sharing this one's cache and accounting, with its own budget; what it spends
   * also counts into this one (and its parents). `onActivity` sees every call made through the
   * new scope and the scopes made from it. With `holdLedger`, the scope's accounting rows and
   * cache entries are handed to the holder instead of committed one call at a time: its owner
   * commits them inside its own write (ledger.ts, HeldLedgerRows).
   */
  scoped(opts: { budget?: Budget; stageRunId?: string | null; onActivity?: LlmActivityListener; holdLedger?: LedgerRowHolder }): Llm;
  /** What this Llm and its scopes have spent so far (cache hits are free). */
  readonly spent: Spent;
  readonly config: LlmConfig;
}

/**
 * What an Llm reports while a call runs, for live displays (the stage card): a call started,
 * text arrived (only from providers that generate incrementally), the call ended. One call is one
 * start and one end, however many attempts it took; a cache hit is both at once.
 */
export type LlmActivity =
  | { type: 'start'; callId: string; role: Role; model: string; startedAt: number }
  | { type: 'text'; callId: string; role: Role; model: string; startedAt: number; tokens: number; text: string }
  | { type: 'end'; callId: string; role: Role; model: string; usage: TokenUsage; costUsd: number; cached: boolean; error?: string };

export type LlmActivityListener = (activity: LlmActivity) => void;

/** One accounting record: exactly what goes into an `llm_calls` row. */
export interface LlmCallRecord {
  id: string;
  stage_run_id: string | null;
  role: Role;
  model: string;
  prompt_tokens: number;
  completion_tokens: number;
  latency_ms: number;
  /** Null when the model has no price in the table (counted as 0 in budgets). */
  cost_usd: number | null;
  cache_hit: boolean;
  /** Null on success; what failed otherwise. */
  error: string | null;
  created_at: string;
}

/** Takes ledger rows (`llm_calls`, `llm_cache` inserts for INSERT_ROWS) for its owner to commit. */
export interface LedgerRowHolder {
  hold(inserts: RowInserts['inserts']): void;
}

/** The part of the kernel `Store` the LLM layer uses (a real `Store` satisfies it). */
export interface LlmStoreQueryable {
  run(sql: string, params?: unknown[] | Record<string, unknown>): Promise<unknown>;
  get<T>(sql: string, params?: unknown[] | Record<string, unknown>): Promise<T | undefined>;
}

export interface LlmStore {
  write<T>(fn: (q: LlmStoreQueryable) => Promise<T>): Promise<T>;
  /** A write kept in the store's outbox when the store cannot take it (store/outbox.ts): the ledger's rows must not be lost. */
  writeDurable<P, T>(kind: DurableKind<P, T>, payload: P): Promise<T>;
  read<T>(fn: (q: LlmStoreQueryable) => Promise<T>): Promise<T>;
}

export interface CreateLlmOptions {
  /** Called with every accounting record after it is stored (live cost display, tests). */
  onCall?: (record: LlmCallRecord) => void;
}
