import * as os from 'os';
import { newId, nowIso } from '../ids';
import { Meter, promptTokenBound, type Pricing, type Reservation } from './budget';
import { LlmOutputError } from './errors';
import { LlmLedger, cacheKey, type CachedResponse } from './ledger';
import { LoraServer } from './lora-server';
import { LocalProvider } from './providers/local';
import { LoraServingProvider } from './providers/lora-serving';
import { OpenAiProvider } from './providers/openai';
import type { Provider } from './providers/types';
import { withRetries, type Deadline, type RetryPolicy } from './retry';
import { extractJson, stripThinking } from './text';
import type {
  Budget,
  CreateLlmOptions,
  JsonSchema,
  LedgerRowHolder,
  Llm,
  LlmActivity,
  LlmActivityListener,
  LlmCallRecord,
  LlmConfig,
  LlmRequest,
  LlmResponse,
  LlmStore,
  Spent,
  TokenUsage
} from './types';
import { schemaNameOf, validateAgainst } from './validate';

const DEFAULT_TIMEOUT_MS = 120_000;
const DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024;
/** Characters of generated text a 'text' activity carries: enough for a preview line. */
const ACTIVITY_TEXT_CHARS = 200;

/**
 * An Llm for `config`. With a store, every call writes an `llm_calls` row and answers are cached
 * in `llm_cache`; without one, the cache lives in memory and only `options.onCall` sees the rows.
 */
/**
 * Threads for the embedded model: all cores but one, and both cores of a 2-core machine. With
 * every core busy elsewhere (test workers, another kernel) llama.cpp's spinning threads contend and
 * generation slowed 6-20x in measurements here, so on bigger machines one core stays free; on 2
 * cores one thread leaves half the machine idle while the kernel waits (prompt evaluation of the
 * 1.5B stage model: 27 tok/s on one thread, 54 on two). NANORESEARCH_LLM_THREADS overrides.
 */
function defaultLocalThreads(): number {
  const cores = os.cpus().length;
  return Math.max(Math.min(2, cores), cores - 1);
}

export function createLlm(config: LlmConfig, store?: LlmStore, options: CreateLlmOptions = {}): Llm {
  const timeoutMs = config.provider === 'local' ? (config.timeoutMs ?? 0) : (config.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  const retry: RetryPolicy = {
    maxRetries: config.maxRetries ?? 4,
    baseDelayMs: config.retryBaseDelayMs ?? 500,
    maxDelayMs: config.retryMaxDelayMs ?? 20_000
  };
  const provider: Provider =
    config.provider === 'local'
      ? new LocalProvider({
          modelsDir: config.modelsDir,
          contextSize: config.contextSize ?? 4096,
          threads: config.threads ?? defaultLocalThreads(),
          timeoutMs: config.timeoutMs ?? 0
        })
      : new OpenAiProvider({
          baseURL: config.baseURL,
          apiKey: config.apiKey,
          jsonMode: config.jsonMode ?? 'json_schema',
          timeoutMs,
          maxResponseBytes: config.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES
        });
  // The planner's LoRA-serving endpoint speaks the same chat API, with its own URL and key, and
  // is a remote server even when the other roles run on the embedded model.
  const plannerTimeoutMs = config.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const plannerProvider: Provider | undefined = config.plannerServer
    ? new LoraServingProvider(
        new LoraServer(config.plannerServer, plannerTimeoutMs),
        new OpenAiProvider({
          baseURL: config.plannerServer.baseURL,
          apiKey: config.plannerServer.apiKey,
          jsonMode: config.jsonMode ?? 'json_schema',
          timeoutMs: plannerTimeoutMs,
          maxResponseBytes: config.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES
        })
      )
    : undefined;
  // By default the deadline is what the attempts and backoffs could take anyway; it matters for
  // Retry-After waits, which it bounds, and when set lower than that.
  const deadlineMs = config.deadlineMs ?? (timeoutMs > 0 ? timeoutMs * (retry.maxRetries + 1) + retry.maxDelayMs * retry.maxRetries : undefined);
  const core: Core = { config, provider, plannerProvider, ledger: new LlmLedger(store, options.onCall), retry, deadlineMs };
  return new ScopedLlm(core, new Meter(config.budget, undefined, null));
}

/** What every scope of one Llm shares. */
interface Core {
  config: LlmConfig;
  provider: Provider;
  /** Serves the planner role when config.plannerServer is set. */
  plannerProvider: Provider | undefined;
  ledger: LlmLedger;
  retry: RetryPolicy;
  /** Limit of a whole call (all attempts and waits); undefined: none. */
  deadlineMs: number | undefined;
}

class ScopedLlm implements Llm {
  constructor(
    private readonly core: Core,
    private readonly meter: Meter,
    /** This scope's activity listeners and those of the scopes it was made from. */
    private readonly listeners: readonly LlmActivityListener[] = [],
    /** Takes this scope's ledger rows for its owner's commit; absent: each call commits its own. */
    private readonly ledgerHolder?: LedgerRowHolder
  ) {}

  get config(): LlmConfig {
    return this.core.config;
  }

  get spent(): Spent {
    return { ...this.meter.spent };
  }

  scoped(opts: { budget?: Budget; stageRunId?: string | null; onActivity?: LlmActivityListener; holdLedger?: LedgerRowHolder }): Llm {
    const stageRunId = opts.stageRunId !== undefined ? opts.stageRunId : this.meter.stageRunId;
    const listeners = opts.onActivity ? [...this.listeners, opts.onActivity] : this.listeners;
    return new ScopedLlm(this.core, new Meter(opts.budget, this.meter, stageRunId), listeners, opts.holdLedger ?? this.ledgerHolder);
  }

  /** Tells the listeners; a failing listener (a display) never fails the call. */
  private emit(activity: LlmActivity): void {
    for (const listener of this.listeners) {
      try {
        listener(activity);
      } catch {
        // Live displays are best effort.
      }
    }
  }

  async complete(req: LlmRequest): Promise<LlmResponse> {
    const { truncated: _truncated, ...response } = await this.call(req);
    return response;
  }

  async completeJson<T>(req: LlmRequest & { jsonSchema: JsonSchema }): Promise<LlmResponse & { value: T }> {
    const name = schemaNameOf(req.jsonSchema, req.schemaName);
    const parse = (text: string, truncated = false): { value: T } | { errors: string[] } => {
      const found = extractJson(text);
      if (!found && truncated)
        return { errors: [`the answer was cut off at the token limit (${req.maxTokens ?? 'server default'}) before the JSON ended; answer more briefly`] };
      if (!found) return { errors: ['the answer contains no JSON object'] };
      const errors = validateAgainst(req.jsonSchema, found.value);
      return errors.length ? { errors } : { value: found.value as T };
    };
    const accept = (text: string) => 'value' in parse(text);

    const first = await this.call(req, accept);
    const firstParsed = parse(first.text, first.truncated);
    const { truncated: _truncated, ...firstResponse } = first;
    if ('value' in firstParsed) return { ...firstResponse, value: firstParsed.value };

    const reask: LlmRequest = {
      ...req,
      messages: [
        ...req.messages,
        { role: 'assistant', content: first.text },
        {
          role: 'user',
          content: `Your answer does not match the JSON schema "${name}": ${firstParsed.errors.join('; ')}. ` + `Reply with only the corrected JSON object.`
        }
      ]
    };
    const second = await this.call(reask, accept);
    const secondParsed = parse(second.text, second.truncated);
    if (!('value' in secondParsed)) throw new LlmOutputError(name, secondParsed.errors, second.text);
    return {
      text: second.text,
      model: second.model,
      usage: addUsage(first.usage, second.usage),
      costUsd: first.costUsd + second.costUsd,
      latencyMs: first.latencyMs + second.latencyMs,
      cached: first.cached && second.cached,
      value: secondParsed.value
    };
  }

  /**
   * One call: from the cache when possible (free, allowed over budget), else through the
   * provider with retries, each attempt reserved against the budgets before it is sent
   * (budget.ts) and settled after. `accept` keeps answers it rejects out of the cache.
   */
  private async call(req: LlmRequest, accept?: (text: string) => boolean): Promise<CallResult> {
    const { config, ledger, deadlineMs } = this.core;
    const provider = this.providerFor(req);
    const model = config.models[req.role] ?? config.models.default;
    const started = Date.now();
    const stageRunId = req.stageRunId !== undefined ? req.stageRunId : this.meter.stageRunId;
    const row = (fields: Partial<LlmCallRecord>): LlmCallRecord => ({
      id: newId('llm'),
      stage_run_id: stageRunId,
      role: req.role,
      model,
      prompt_tokens: 0,
      completion_tokens: 0,
      latency_ms: Date.now() - started,
      cost_usd: 0,
      cache_hit: false,
      error: null,
      created_at: nowIso(),
      ...fields
    });

    const key =
      req.cache === false
        ? undefined
        : cacheKey({
            // The planner endpoint is another server: its answers are not the main provider's.
            provider: provider === this.core.provider ? provider.name : `planner-server:${config.plannerServer?.baseURL}`,
            model,
            adapterPath: req.adapter?.ggufPath ?? null,
            messages: req.messages,
            temperature: req.temperature ?? null,
            maxTokens: req.maxTokens ?? null,
            jsonSchema: req.jsonSchema ?? null,
            seed: req.seed ?? null
          });
    const hit = key ? await ledger.lookup(key) : undefined;
    const activity = { callId: newId('call'), role: req.role, model };
    if (hit) {
      const record = row({ cache_hit: true });
      await ledger.record(record, undefined, this.ledgerHolder);
      this.emit({ type: 'start', ...activity, startedAt: started });
      this.emit({ type: 'end', ...activity, usage: { ...hit.usage }, costUsd: 0, cached: true });
      return {
        text: hit.text,
        model: hit.model,
        usage: { ...hit.usage },
        costUsd: 0,
        latencyMs: record.latency_ms,
        cached: true,
        truncated: hit.truncated ?? false
      };
    }

    const plan = {
      model,
      promptTokens: promptTokenBound(req.messages, req.jsonSchema),
      maxTokens: req.maxTokens,
      pricing: this.pricingOf(model, provider)
    };
    // The first reservation is made before anything else: a call refused by its budget leaves no llm_calls row.
    let first: Reservation | undefined = this.meter.reserve(plan);
    const deadline: Deadline | undefined = deadlineMs === undefined ? undefined : { at: started + deadlineMs, ms: deadlineMs };
    let answer: CachedResponse;
    let cost: number | null = null;
    this.emit({ type: 'start', ...activity, startedAt: started });
    try {
      const result = await withRetries(
        async () => {
          const reservation = first ?? this.meter.reserve(plan);
          first = undefined;
          // What this attempt has generated so far, for the listeners (a retry starts again from nothing).
          let tokens = 0;
          let text = '';
          const onText =
            this.listeners.length > 0
              ? (piece: string) => {
                  tokens += 1;
                  text = (text + piece).slice(-ACTIVITY_TEXT_CHARS);
                  this.emit({ type: 'text', ...activity, startedAt: started, tokens, text });
                }
              : undefined;
          try {
            const generated = await provider.generate({
              model,
              messages: req.messages,
              temperature: req.temperature,
              maxTokens: req.maxTokens,
              jsonSchema: req.jsonSchema,
              schemaName: req.jsonSchema ? schemaNameOf(req.jsonSchema, req.schemaName) : 'response',
              adapter: req.adapter,
              seed: req.seed,
              deadlineAt: deadline?.at,
              ...(onText && { onText })
            });
            cost = this.costOf(model, generated, provider);
            this.meter.settle(reservation, { calls: 1, tokens: generated.usage.promptTokens + generated.usage.completionTokens, costUsd: cost ?? 0 });
            return generated;
          } catch (err) {
            this.meter.settle(reservation, { calls: 1, tokens: 0, costUsd: 0 });
            throw err;
          }
        },
        this.core.retry,
        deadline
      );
      answer = { text: stripThinking(result.text), model: result.model, usage: result.usage, truncated: result.truncated };
    } catch (err) {
      await ledger.record(row({ error: (err as Error).message }), undefined, this.ledgerHolder);
      this.emit({ type: 'end', ...activity, usage: { promptTokens: 0, completionTokens: 0 }, costUsd: 0, cached: false, error: (err as Error).message });
      throw err;
    }

    const record = row({
      model: answer.model,
      prompt_tokens: answer.usage.promptTokens,
      completion_tokens: answer.usage.completionTokens,
      cost_usd: cost
    });
    const cacheable = key !== undefined && (!accept || accept(answer.text));
    await ledger.record(record, cacheable ? { key, response: answer } : undefined, this.ledgerHolder);
    this.emit({ type: 'end', ...activity, usage: answer.usage, costUsd: cost ?? 0, cached: false });
    return {
      text: answer.text,
      model: answer.model,
      usage: answer.usage,
      costUsd: cost ?? 0,
      latencyMs: record.latency_ms,
      cached: false,
      truncated: answer.truncated ?? false
    };
  }

  private providerFor(req: LlmRequest): Provider {
    return req.role === 'planner' && this.core.plannerProvider ? this.core.plannerProvider : this.core.provider;
  }

  /** How a model is priced for budgets: the embedded model is free, a remote one needs a table entry. */
  private pricingOf(model: string, provider: Provider): Pricing {
    if (provider.name === 'local') return 'free';
    return this.core.config.prices?.[model];
  }

  /** Dollars for an answer; null when a remote model has no price (the row shows it unpriced). */
  private costOf(requestedModel: string, answer: { model: string; usage: TokenUsage }, provider: Provider): number | null {
    if (provider.name === 'local') return 0;
    const price = this.core.config.prices?.[requestedModel] ?? this.core.config.prices?.[answer.model];
    if (!price) return null;
    return (answer.usage.promptTokens * price.inputPerMTok + answer.usage.completionTokens * price.outputPerMTok) / 1e6;
  }
}

/** A response plus what completeJson needs to explain a failure. */
type CallResult = LlmResponse & { truncated: boolean };

function addUsage(a: TokenUsage, b: TokenUsage): TokenUsage {
  return { promptTokens: a.promptTokens + b.promptTokens, completionTokens: a.completionTokens + b.completionTokens };
}
