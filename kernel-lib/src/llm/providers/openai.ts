import OpenAI, { APIConnectionError, APIError } from 'openai';
import type { ChatCompletionCreateParamsNonStreaming } from 'openai/resources/chat/completions';
import type { JsonMode } from '../types';
import { ProviderFailure, retryAfterFromHeaders } from '../retry';
import { schemaInstruction } from '../validate';
import { ResponseTooLargeError, cappedFetch } from './capped-fetch';
import { withSystemInstruction, type Provider, type ProviderCall, type ProviderResult } from './types';

export interface OpenAiProviderOptions {
  baseURL?: string;
  apiKey?: string;
  jsonMode: JsonMode;
  /** Limit for one attempt, from connecting to the last byte of the answer. */
  timeoutMs: number;
  /** Largest response body read. */
  maxResponseBytes: number;
}

/**
 * The client's own time-out (which stops at the response headers) is set this much later than
 * the AbortSignal that covers headers and body, so the signal is what ends a slow attempt.
 */
const CLIENT_TIMEOUT_SLACK_MS = 1_000;

/**
 * Any OpenAI-compatible chat-completions server (OpenAI, vLLM, llama.cpp server, the scripted
 * test server). The client's own retries are off: the LLM layer retries with its own policy.
 * Each attempt runs under an AbortSignal for min(timeoutMs, what is left of the call's
 * deadline), covering the headers and the body (capped-fetch.ts reads the body under it).
 */
export class OpenAiProvider implements Provider {
  readonly name = 'openai' as const;
  private readonly client: OpenAI;

  constructor(private readonly options: OpenAiProviderOptions) {
    this.client = new OpenAI({
      baseURL: options.baseURL,
      // Local OpenAI-compatible servers accept any key; the client refuses to start without one.
      apiKey: options.apiKey || 'no-key',
      maxRetries: 0,
      timeout: options.timeoutMs + CLIENT_TIMEOUT_SLACK_MS,
      fetch: cappedFetch(options.maxResponseBytes)
    });
  }

  async generate(call: ProviderCall): Promise<ProviderResult> {
    const body = this.requestBody(call);
    const left = call.deadlineAt === undefined ? Infinity : call.deadlineAt - Date.now();
    const limit = { ms: Math.max(0, Math.min(this.options.timeoutMs, left)), byDeadline: left < this.options.timeoutMs };
    const signal = AbortSignal.timeout(limit.ms);
    let completion: OpenAI.Chat.Completions.ChatCompletion;
    try {
      completion = await this.client.chat.completions.create(body, { signal, timeout: limit.ms + CLIENT_TIMEOUT_SLACK_MS });
    } catch (err) {
      throw this.classify(err, call.model, signal.aborted ? limit : undefined);
    }
    const choice = completion.choices?.[0];
    if (!choice) {
      throw new ProviderFailure(`The server at ${this.where()} returned no choices for model "${call.model}"`, true);
    }
    const text = choice.message?.content;
    if (typeof text !== 'string' || text.trim() === '') throw this.emptyAnswer(call, choice);
    return {
      text,
      model: completion.model || call.model,
      truncated: choice.finish_reason === 'length',
      usage: {
        promptTokens: completion.usage?.prompt_tokens ?? 0,
        completionTokens: completion.usage?.completion_tokens ?? 0
      }
    };
  }

  private requestBody(call: ProviderCall): ChatCompletionCreateParamsNonStreaming {
    let messages = call.messages;
    let responseFormat: ChatCompletionCreateParamsNonStreaming['response_format'];
    if (call.jsonSchema) {
      if (this.options.jsonMode === 'json_schema') {
        responseFormat = {
          type: 'json_schema',
          json_schema: { name: call.schemaName, schema: call.jsonSchema, strict: false }
        };
      } else {
        messages = withSystemInstruction(messages, schemaInstruction(call.jsonSchema, call.schemaName));
        if (this.options.jsonMode === 'json_object') responseFormat = { type: 'json_object' };
      }
    }
    return {
      model: call.model,
      messages,
      ...(call.temperature !== undefined && { temperature: call.temperature }),
      ...(call.maxTokens !== undefined && { max_tokens: call.maxTokens }),
      ...(call.seed !== undefined && { seed: call.seed }),
      ...(responseFormat && { response_format: responseFormat }),
      ...call.extraBody
    };
  }

  /**
   * An answer without text. Empty or null content is never a result (it would be cached as
   * one): a refusal or an answer cut off before any text is final, anything else may be a
   * transient server fault and is retried.
   */
  private emptyAnswer(call: ProviderCall, choice: OpenAI.Chat.Completions.ChatCompletion.Choice): ProviderFailure {
    const what = `The LLM server at ${this.where()} returned ${choice.message?.content == null ? 'no content (null)' : 'an empty answer'} for model "${call.model}"`;
    const refusal = choice.message?.refusal;
    if (refusal) return new ProviderFailure(`${what}; the model refused: ${refusal}`, false, undefined, 'Rephrase the request');
    if (choice.finish_reason === 'length') {
      return new ProviderFailure(
        `${what}: the token limit (${call.maxTokens ?? 'server default'}) was reached before any text`,
        false,
        undefined,
        'A reasoning model may spend all its tokens before it answers: choose a model that answers directly for this role ' +
          '(NANORESEARCH_MODEL_<ROLE>, then restart the kernel)'
      );
    }
    return new ProviderFailure(`${what} (finish_reason ${choice.finish_reason})`, true, undefined, 'If it persists, check the server and the model');
  }

  /** `limit` is set when this attempt's AbortSignal fired: the attempt ran out of time. */
  private classify(err: unknown, model: string, limit?: { ms: number; byDeadline: boolean }): ProviderFailure {
    const where = this.where();
    // Checked on our own signal, not the error's class: the abort error may come from another
    // realm (jest's sandbox, a notebook's vm context) and the client then reports it as a plain connection error.
    if (limit) {
      const which = limit.byDeadline ? `, what was left of the call's deadline` : '';
      return new ProviderFailure(
        `The LLM server at ${where} did not answer within ${limit.ms} ms${which} (headers and body)`,
        !limit.byDeadline,
        undefined,
        limit.byDeadline
          ? 'Raise the whole-call deadline: Lab.open({ llm: { ...llmConfigFromEnv(), deadlineMs: 1_200_000 } }), or check the server load'
          : 'Raise the per-attempt limit: NANORESEARCH_LLM_TIMEOUT_MS (then restart the kernel) or Lab.open({ llm: { ...llmConfigFromEnv(), timeoutMs: 600_000 } }), or check the server load',
        undefined,
        { cause: err }
      );
    }
    const tooLarge = causes(err).find((e): e is ResponseTooLargeError => (e as Error)?.name === 'ResponseTooLargeError');
    if (tooLarge) {
      return new ProviderFailure(
        `The LLM server at ${where} sent an answer for model "${model}" that was refused: ${tooLarge.message}`,
        false,
        undefined,
        'Raise the answer size limit: Lab.open({ llm: { ...llmConfigFromEnv(), maxResponseBytes: 8_000_000 } })',
        undefined,
        { cause: err }
      );
    }
    if (err instanceof APIConnectionError) {
      return new ProviderFailure(
        `Could not reach the LLM server at ${where}: ${describeCause(err)}`,
        true,
        undefined,
        'Check that the server is running and NANORESEARCH_LLM_BASE_URL / OPENAI_BASE_URL points at it (including /v1)',
        undefined,
        { cause: err }
      );
    }
    if (err instanceof APIError && err.status !== undefined) {
      const status = err.status;
      const retryable = status === 408 || status === 409 || status === 429 || status >= 500;
      const retryAfterMs = err.headers ? retryAfterFromHeaders(name => err.headers?.get(name)) : undefined;
      return new ProviderFailure(
        `The LLM server at ${where} answered HTTP ${status} for model "${model}": ${err.message}`,
        retryable,
        status,
        hintForStatus(status, model, (err as { code?: unknown }).code),
        retryAfterMs,
        { cause: err }
      );
    }
    const message = err instanceof Error ? err.message : String(err);
    return new ProviderFailure(`The LLM request to ${where} failed: ${message}`, false, undefined, undefined, undefined, {
      cause: err
    });
  }

  private where(): string {
    return this.options.baseURL ?? 'api.openai.com';
  }
}

function hintForStatus(status: number, model: string, code: unknown): string {
  if (status === 401 || status === 403) return 'Check the API key (NANORESEARCH_LLM_API_KEY or OPENAI_API_KEY)';
  if (status === 404 || code === 'model_not_found')
    return `Check that the server serves a model named "${model}" (NANORESEARCH_MODEL, NANORESEARCH_MODEL_<ROLE>)`;
  if (status === 400 || status === 422)
    return 'The server rejected the request; if it does not support response_format, set NANORESEARCH_JSON_MODE=json_object or none';
  if (status === 429) return 'The server is rate limiting: lower the request rate or raise the limit';
  return 'The server failed; check its logs';
}

/** An error and its causes, outermost first. */
function causes(err: unknown): unknown[] {
  const chain: unknown[] = [];
  for (let e: unknown = err; e && chain.length < 8; e = (e as { cause?: unknown }).cause) chain.push(e);
  return chain;
}

function describeCause(err: Error): string {
  const cause = (err as { cause?: unknown }).cause;
  if (cause instanceof Error) return `${err.message} (${(cause as NodeJS.ErrnoException).code ?? cause.message})`;
  return err.message;
}
