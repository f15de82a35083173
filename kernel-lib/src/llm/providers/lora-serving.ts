import { LoraServer, LoraServerError } from '../lora-server';
import { ProviderFailure } from '../retry';
import type { LlmAdapter } from '../types';
import type { OpenAiProvider } from './openai';
import type { Provider, ProviderCall, ProviderResult } from './types';

/**
 * The planner role on a LoRA-serving endpoint (llm/lora-server.ts): a call without an adapter asks
 * the base model; a call with one first makes sure the server serves it (once per adapter in this
 * process: a GET of its list, a load only when it is missing), then names it in the request. A
 * server that lost the adapter (restarted: vLLM keeps run-time adapters in memory only) answers
 * 404; the adapter is published again and the request sent once more. An adapter the server will
 * not take fails the call with the server's reason: the answer never comes from another model than
 * the one the call names.
 */
export class LoraServingProvider implements Provider {
  readonly name = 'openai' as const;
  /** Adapters this process has seen the server serve, by name (the publish in flight included). */
  private readonly published = new Map<string, Promise<void>>();

  constructor(
    private readonly server: LoraServer,
    private readonly chat: OpenAiProvider
  ) {}

  async generate(call: ProviderCall): Promise<ProviderResult> {
    const adapter = call.adapter;
    if (!adapter) return this.chat.generate(call);
    await this.ensurePublished(adapter);
    try {
      return await this.chat.generate({ ...call, ...this.server.requestFor(adapter, call.model) });
    } catch (error) {
      if (!(error instanceof ProviderFailure) || error.status !== 404) throw error;
      this.forget(adapter.name);
      await this.ensurePublished(adapter);
      return this.chat.generate({ ...call, ...this.server.requestFor(adapter, call.model) });
    }
  }

  private ensurePublished(adapter: LlmAdapter): Promise<void> {
    let publishing = this.published.get(adapter.name);
    if (!publishing) {
      publishing = this.server.publish(adapter).catch((error: unknown) => {
        this.forget(adapter.name);
        throw asProviderFailure(error);
      });
      this.published.set(adapter.name, publishing);
    }
    return publishing;
  }

  private forget(name: string): void {
    this.published.delete(name);
    this.server.forget(name);
  }
}

/** A server that cannot be reached may come back (retried); one that refused the adapter will not. */
function asProviderFailure(error: unknown): ProviderFailure {
  if (!(error instanceof LoraServerError)) return new ProviderFailure(String((error as Error)?.message ?? error), false);
  return new ProviderFailure(error.reason, error.status === undefined || error.status >= 500, error.status, error.fix, undefined, { cause: error });
}
