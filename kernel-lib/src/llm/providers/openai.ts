import OpenAI, { APIConnectionError, APIConnectionTimeoutError, APIError } from 'openai';
import type { ChatCompletionCreateParamsNonStreaming } from 'openai/resources/chat/completions';
import type { JsonMode } from '../types';
import { ProviderFailure, retryAfterFromHeaders } from '../retry';
import { schemaInstruction } from '../validate';
import { withSystemInstruction, type Provider, type ProviderCall, type ProviderResult } from './types';

export interface OpenAiProviderOptions {
  baseURL?: string;
  apiKey?: string;
  jsonMode: JsonMode;
  timeoutMs: number;
}

/**
 * Any OpenAI-compatible chat-completions server (OpenAI, vLLM, llama.cpp server, the scripted
 * test server). The client's own retries are off: the LLM layer retries with its own policy.
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
      timeout: options.timeoutMs
    });
  }

  async generate(call: ProviderCall): Promise<ProviderResult> {
    const body = this.requestBody(call);
    let completion: OpenAI.Chat.Completions.ChatCompletion;
    const started = Date.now();
    try {
      completion = await this.client.chat.completions.create(body);
    } catch (err) {
      throw this.classify(err, call.model, Date.now() - started);
    }
    const choice = completion.choices?.[0];
    if (!choice) {
      throw new ProviderFailure(`The server at ${this.where()} returned no choices for model "${call.model}"`, true);
    }
    return {
      text: choice.message?.content ?? '',
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
      ...(responseFormat && { response_format: responseFormat })
    };
  }

  private classify(err: unknown, model: string, elapsedMs: number): ProviderFailure {
    const where = this.where();
    // The client reports its own timeout as a plain connection error when the abort error comes
    // from another realm (jest's sandbox), so the elapsed time decides as well.
    const timedOut = err instanceof APIConnectionTimeoutError || (err instanceof APIConnectionError && elapsedMs >= this.options.timeoutMs);
    if (timedOut) {
      return new ProviderFailure(
        `The LLM server at ${where} did not answer within ${this.options.timeoutMs} ms`,
        true,
        undefined,
        'Raise timeoutMs (NANORESEARCH_LLM_TIMEOUT_MS) or check the server load',
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
  if (status === 404 || code === 'model_not_found') return `Check that the server serves a model named "${model}" (NANORESEARCH_MODEL, NANORESEARCH_MODEL_<ROLE>)`;
  if (status === 400 || status === 422)
    return 'The server rejected the request; if it does not support response_format, set NANORESEARCH_JSON_MODE=json_object or none';
  if (status === 429) return 'The server is rate limiting: lower the request rate or raise the limit';
  return 'The server failed; check its logs';
}

function describeCause(err: Error): string {
  const cause = (err as { cause?: unknown }).cause;
  if (cause instanceof Error) return `${err.message} (${(cause as NodeJS.ErrnoException).code ?? cause.message})`;
  return err.message;
}
