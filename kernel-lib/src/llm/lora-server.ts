/**
 * The planner's LoRA-serving endpoint: one OpenAI-compatible server that serves every user's
 * planner adapter on one base model (README "Scaling out → a LoRA-serving planner endpoint").
 * Publishing an adapter makes the server serve it; an adapter the server has not accepted is
 * never named in a request.
 *
 * - vLLM (`vllm serve <base> --enable-lora`, VLLM_ALLOW_RUNTIME_LORA_UPDATING=True): adapters are
 *   loaded at run time from their PEFT folder (POST /v1/load_lora_adapter {lora_name, lora_path},
 *   POST /v1/unload_lora_adapter {lora_name}); GET /v1/models lists them. A request names the
 *   adapter as its model.
 * - llama.cpp server (`llama-server -m base.gguf --lora a.gguf … --lora-init-without-apply`): LoRA
 *   GGUF files are loaded only when the server starts; GET /lora-adapters lists them with an id,
 *   and a request picks its adapter with the `lora` field [{id, scale}] (every other adapter
 *   is sent at scale 0). Publishing an adapter the server was not started with is
 *   refused with the command that restarts it with the adapter.
 */
import * as path from 'path';
import type { LlmAdapter, PlannerServerConfig } from './types';

export class LoraServerError extends Error {
  constructor(
    /** What happened, naming the server and its answer. */
    readonly reason: string,
    /** The HTTP status the server answered, undefined when it could not be reached. */
    readonly status: number | undefined,
    /** What to do about it. */
    readonly fix: string
  ) {
    super(`${reason}. Fix: ${fix}`);
    this.name = 'LoraServerError';
  }
}

/** Default limit of one request to the server: loading an adapter reads its weights. */
const DEFAULT_TIMEOUT_MS = 120_000;
const FIX_UNREACHABLE =
  'start the server (README "Scaling out → a LoRA-serving planner endpoint" has the command line) ' +
  'or point NANORESEARCH_PLANNER_BASE_URL at it, including /v1';

interface HttpAnswer {
  status: number;
  text: string;
}

/** One entry of llama.cpp's GET /lora-adapters. */
interface LlamaCppAdapter {
  id: number;
  path: string;
  scale: number;
}

export class LoraServer {
  /** llama.cpp: each published adapter's id on the server, by adapter name. */
  private readonly llamaCppIds = new Map<string, number>();
  /** llama.cpp: the ids of every adapter the server was started with, as last listed. */
  private llamaCppAllIds: number[] = [];

  constructor(
    readonly config: PlannerServerConfig,
    private readonly timeoutMs: number = DEFAULT_TIMEOUT_MS
  ) {}

  /** "vLLM at http://host:8000/v1": how messages name the server. */
  describe(): string {
    return `${this.config.kind === 'vllm' ? 'vLLM' : 'llama.cpp server'} at ${this.config.baseURL}`;
  }

  /**
   * Makes the server serve `adapter` under `adapter.name`; resolves once it does (at once when it
   * already does). Throws a LoraServerError naming the server, its answer and the fix otherwise.
   */
  async publish(adapter: LlmAdapter): Promise<void> {
    if (this.config.kind === 'vllm') return this.publishVllm(adapter);
    return this.publishLlamaCpp(adapter);
  }

  /**
   * Stops serving `name` (vLLM); an adapter the server does not know is already unpublished.
   * llama.cpp cannot drop an adapter at run time: there this only forgets its id.
   */
  async unpublish(name: string): Promise<void> {
    if (this.config.kind === 'llama.cpp') {
      this.llamaCppIds.delete(name);
      return;
    }
    const answer = await this.request('POST', '/unload_lora_adapter', { lora_name: name }, `unload adapter '${name}'`);
    if (answer.status === 200 || answer.status === 404) return;
    throw this.refusal(`unload adapter '${name}'`, answer, 'check the server log');
  }

  /**
   * What a chat request for `adapter` carries: vLLM names the adapter as the model; llama.cpp keeps
   * the base model and selects the adapter by id (publish first: it looks the id up).
   */
  requestFor(adapter: LlmAdapter, baseModel: string): { model: string; extraBody?: Record<string, unknown> } {
    if (this.config.kind === 'vllm') return { model: adapter.name };
    const id = this.llamaCppIds.get(adapter.name);
    if (id === undefined) throw new Error(`adapter '${adapter.name}' was not published to the ${this.describe()}`);
    // Every adapter is named, the others at scale 0: a request never inherits another user's
    // adapter through the server's global scales, whatever the build's default for unnamed ones.
    const lora = [...new Set([...this.llamaCppAllIds, id])].map(other => ({ id: other, scale: other === id ? 1 : 0 }));
    return { model: baseModel, extraBody: { lora } };
  }

  /** Forgets that `name` is published (the server lost it, e.g. a restart): the next publish asks again. */
  forget(name: string): void {
    this.llamaCppIds.delete(name);
  }

  private async publishVllm(adapter: LlmAdapter): Promise<void> {
    const listed = await this.request('GET', '/models', undefined, 'list its models');
    if (listed.status !== 200) throw this.refusal('list its models', listed, this.fixFor(listed.status));
    const ids = modelIds(listed.text);
    if (ids.includes(adapter.name)) return;
    const what = `load adapter '${adapter.name}' from ${adapter.peftDir}`;
    const loaded = await this.request('POST', '/load_lora_adapter', { lora_name: adapter.name, lora_path: adapter.peftDir }, what);
    if (loaded.status === 200) return;
    throw this.refusal(what, loaded, this.loadFix(loaded, adapter));
  }

  private async publishLlamaCpp(adapter: LlmAdapter): Promise<void> {
    const listed = await this.request('GET', '/lora-adapters', undefined, 'list its LoRA adapters', serverRoot(this.config.baseURL));
    if (listed.status === 404) {
      throw this.refusal('list its LoRA adapters', listed, 'use a llama.cpp server build that has the /lora-adapters endpoint');
    }
    if (listed.status !== 200) throw this.refusal('list its LoRA adapters', listed, this.fixFor(listed.status));
    let adapters: LlamaCppAdapter[];
    try {
      adapters = JSON.parse(listed.text) as LlamaCppAdapter[];
      if (!Array.isArray(adapters)) throw new Error('not a list');
    } catch (error) {
      throw new LoraServerError(
        `The ${this.describe()} answered GET /lora-adapters with something that is not a list of adapters (${(error as Error).message})`,
        listed.status,
        'check that NANORESEARCH_PLANNER_BASE_URL points at a llama.cpp server'
      );
    }
    const found = adapters.find(a => samePath(a.path, adapter.ggufPath));
    if (!found) {
      const loaded = adapters.map(a => a.path).join(', ') || 'none';
      throw new LoraServerError(
        `The ${this.describe()} does not serve ${adapter.ggufPath} (it was started with: ${loaded}); llama.cpp loads LoRA adapters only when it starts`,
        listed.status,
        `restart it with the adapter: llama-server -m <base>.gguf --lora ${adapter.ggufPath} --lora-init-without-apply ` +
          "(keep the other users' --lora flags), then publish again with lab.useAdapter(version)"
      );
    }
    this.llamaCppAllIds = adapters.map(a => a.id);
    this.llamaCppIds.set(adapter.name, found.id);
  }

  /** The fix for a refused load: what vLLM's answer says went wrong. */
  private loadFix(answer: HttpAnswer, adapter: LlmAdapter): string {
    const message = errorMessage(answer.text);
    if (answer.status === 404 && /not found/i.test(message) && !/adapter/i.test(message)) {
      return 'the server has no run-time LoRA loading: start vLLM with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and --enable-lora';
    }
    if (answer.status === 404) {
      return `the server cannot read ${adapter.peftDir}: it must see the adapter folder at the same path (the same machine or a shared filesystem)`;
    }
    if (answer.status === 400 || answer.status === 422) {
      return "train the adapter on the base model the server serves (manifest.json base_model) and start vLLM with --max-lora-rank at least the adapter's rank (manifest.json rank)";
    }
    return this.fixFor(answer.status);
  }

  private fixFor(status: number): string {
    if (status === 401 || status === 403) return 'set NANORESEARCH_PLANNER_API_KEY to the key the server was started with (--api-key)';
    if (status === 404) return 'check that NANORESEARCH_PLANNER_BASE_URL ends in /v1';
    return 'check the server log';
  }

  private refusal(what: string, answer: HttpAnswer, fix: string): LoraServerError {
    return new LoraServerError(`The ${this.describe()} refused to ${what}: HTTP ${answer.status}: ${errorMessage(answer.text)}`, answer.status, fix);
  }

  private async request(method: 'GET' | 'POST', route: string, body: unknown, what: string, root = this.config.baseURL): Promise<HttpAnswer> {
    const url = `${root.replace(/\/+$/, '')}${route}`;
    const headers: Record<string, string> = {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (this.config.apiKey) headers.authorization = `Bearer ${this.config.apiKey}`;
    try {
      const response = await fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.timeoutMs)
      });
      return { status: response.status, text: await response.text() };
    } catch (error) {
      const cause = (error as { cause?: NodeJS.ErrnoException }).cause;
      const why =
        (error as Error).name === 'TimeoutError' ? `no answer within ${this.timeoutMs} ms` : (cause?.code ?? cause?.message ?? (error as Error).message);
      throw new LoraServerError(`Could not reach the planner's ${this.describe()} to ${what} (${method} ${url}: ${why})`, undefined, FIX_UNREACHABLE);
    }
  }
}

/** The ids of an OpenAI-style model list ({data: [{id}]}); none when the body is not one. */
function modelIds(text: string): string[] {
  try {
    const data = (JSON.parse(text) as { data?: Array<{ id?: unknown }> }).data;
    return Array.isArray(data) ? data.map(m => String(m.id)) : [];
  } catch {
    return [];
  }
}

/**
 * The message of an error body: vLLM's ErrorResponse ({message} or {error: {message}}), FastAPI's
 * {detail}, llama.cpp's {error: {message}}, else the text itself (cut short).
 */
function errorMessage(text: string): string {
  try {
    const body = JSON.parse(text) as { message?: unknown; detail?: unknown; error?: { message?: unknown } | string };
    const nested = typeof body.error === 'object' ? body.error?.message : body.error;
    const message = body.message ?? nested ?? body.detail;
    if (message !== undefined) return typeof message === 'string' ? message : JSON.stringify(message);
  } catch {
    // Not JSON: the text is the message (vLLM answers a successful load in plain text).
  }
  return text.trim().slice(0, 500) || '(empty answer)';
}

/** llama.cpp's own endpoints live at the server root, beside /v1. */
function serverRoot(baseURL: string): string {
  return baseURL.replace(/\/+$/, '').replace(/\/v1$/, '');
}

/**
 * llama.cpp lists an adapter by the path it was started with. Only an exact match counts: every
 * adapter file is called adapter.gguf, so a relative path could be anyone's (start it with absolute paths).
 */
function samePath(listed: string, wanted: string): boolean {
  return path.normalize(listed) === path.normalize(wanted);
}
