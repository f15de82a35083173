/**
 * Budgets that hold with calls in parallel: before an HTTP attempt goes out it reserves, in its
 * scope and every enclosing one, one call, an upper bound of its tokens and of its cost; after
 * the attempt, the reservation is replaced by what was actually spent. A call that does not fit
 * next to what is spent and reserved is refused before it is sent, so 50 calls started together
 * under `maxCalls: 5` send 5 requests. The bound comes from the call's max_tokens, which a
 * server keeps to; a call without max_tokens may use everything left, so it holds everything
 * left while it runs (calls meant to run in parallel under a token or cost budget pass
 * maxTokens, as the library's stages do). The request itself is never altered.
 */
import { BudgetExceededError, UnpricedModelError } from './errors';
import type { Budget, ChatMessage, JsonSchema, ModelPrice, Spent } from './types';

/** Tokens a chat template adds per message and per request, generously (OpenAI's are 3-4 and 3). */
const TOKENS_PER_MESSAGE = 8;
const TOKENS_PER_REQUEST = 16;
/** Bytes of the instruction the json_object / none modes wrap around a schema (schemaInstruction). */
const SCHEMA_INSTRUCTION_BYTES = 512;

/**
 * An upper bound of a request's prompt tokens. Byte-level BPE (GPT, Llama 3, Qwen) and
 * SentencePiece tokenizers cover at least one byte of text with each token, so the UTF-8 size
 * of the messages (and of the schema, sent as response_format or in the system prompt) bounds
 * the count; the chat template adds a few tokens per message.
 */
export function promptTokenBound(messages: readonly ChatMessage[], jsonSchema?: JsonSchema): number {
  const text = messages.reduce((bytes, m) => bytes + Buffer.byteLength(m.content, 'utf8') + TOKENS_PER_MESSAGE, 0);
  const schema = jsonSchema ? Buffer.byteLength(JSON.stringify(jsonSchema), 'utf8') + SCHEMA_INSTRUCTION_BYTES : 0;
  return text + schema + TOKENS_PER_REQUEST;
}

/** What one attempt holds in every scope of the chain until it settles. */
export interface Reservation {
  readonly amount: Spent;
}

/** How a model is priced: a table entry, free (the embedded model), or unknown. */
export type Pricing = ModelPrice | 'free' | undefined;

/** One attempt about to be sent. */
export interface AttemptPlan {
  model: string;
  /** promptTokenBound of the request. */
  promptTokens: number;
  /** The caller's max_tokens, if any. */
  maxTokens?: number;
  pricing: Pricing;
}

const zero = (): Spent => ({ tokens: 0, calls: 0, costUsd: 0 });

function costOf(price: ModelPrice, promptTokens: number, completionTokens: number): number {
  return (promptTokens * price.inputPerMTok + completionTokens * price.outputPerMTok) / 1e6;
}

/** Spending of one scope, checked against its budget; what it spends also counts in its parents. */
export class Meter {
  readonly spent: Spent = zero();
  /** Held by attempts in flight. */
  readonly reserved: Spent = zero();

  constructor(
    readonly budget: Budget | undefined,
    readonly parent: Meter | undefined,
    readonly stageRunId: string | null
  ) {}

  private chain(): Meter[] {
    return this.parent ? [this, ...this.parent.chain()] : [this];
  }

  /**
   * Reserves one attempt in this scope and every enclosing one, or throws (nothing reserved):
   * BudgetExceededError when it does not fit, UnpricedModelError when a cost cap applies to a
   * model without a price. The completion is bounded by the call's max_tokens; a call without
   * one could use all that is left, so it reserves all that is left.
   */
  reserve(plan: AttemptPlan): Reservation {
    const chain = this.chain();
    for (const meter of chain) {
      const max = meter.budget?.maxCalls;
      if (max !== undefined && meter.spent.calls + meter.reserved.calls + 1 > max) {
        throw new BudgetExceededError('maxCalls', meter.spent.calls, max, meter.stageRunId, meter.reserved.calls);
      }
    }
    const wanted = plan.maxTokens ?? 1;
    const asked = `(prompt up to ${plan.promptTokens} tokens${plan.maxTokens !== undefined ? ` + max_tokens ${plan.maxTokens}` : ''})`;
    let tokens = plan.maxTokens === undefined ? Infinity : plan.promptTokens + plan.maxTokens;
    for (const meter of chain) {
      const max = meter.budget?.maxTokens;
      if (max === undefined) continue;
      const room = max - meter.spent.tokens - meter.reserved.tokens;
      if (room < plan.promptTokens + wanted) {
        const detail = room > 0 ? `this call may take up to ${plan.promptTokens + wanted} tokens ${asked} and ${room} are left` : undefined;
        throw new BudgetExceededError('maxTokens', meter.spent.tokens, max, meter.stageRunId, meter.reserved.tokens, detail);
      }
      tokens = Math.min(tokens, room);
    }
    const price = plan.pricing === 'free' ? undefined : plan.pricing;
    let costUsd = price && plan.maxTokens !== undefined ? costOf(price, plan.promptTokens, plan.maxTokens) : Infinity;
    for (const meter of chain) {
      const max = meter.budget?.maxCostUsd;
      if (max === undefined) continue;
      if (plan.pricing === undefined) throw new UnpricedModelError(plan.model, max, meter.stageRunId);
      const room = max - meter.spent.costUsd - meter.reserved.costUsd;
      const needed = price ? costOf(price, plan.promptTokens, wanted) : 0;
      if (room <= 0 || room < needed) {
        const detail = room > 0 ? `this call may cost up to $${needed.toFixed(6)} ${asked} and $${room.toFixed(6)} is left` : undefined;
        throw new BudgetExceededError('maxCostUsd', meter.spent.costUsd, max, meter.stageRunId, meter.reserved.costUsd, detail);
      }
      if (price) costUsd = Math.min(costUsd, room);
    }
    // Where no limit bounds an amount, what is reserved does not matter: only the prompt is held.
    const amount: Spent = {
      calls: 1,
      tokens: tokens === Infinity ? plan.promptTokens : tokens,
      costUsd: costUsd === Infinity ? (price ? costOf(price, plan.promptTokens, 0) : 0) : costUsd
    };
    for (const meter of chain) add(meter.reserved, amount, 1);
    return { amount };
  }

  /** Replaces a reservation by what the attempt spent (a failed attempt: one call, nothing else). */
  settle(reservation: Reservation, actual: Spent): void {
    for (const meter of this.chain()) {
      add(meter.reserved, reservation.amount, -1);
      add(meter.spent, actual, 1);
    }
  }
}

function add(target: Spent, amount: Spent, sign: 1 | -1): void {
  target.calls += sign * amount.calls;
  target.tokens += sign * amount.tokens;
  // Floating-point subtraction can leave a reservation at -1e-18; what is held is never negative.
  target.costUsd = Math.max(0, target.costUsd + sign * amount.costUsd);
}
