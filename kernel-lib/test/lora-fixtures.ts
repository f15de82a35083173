/**
 * Loopback stand-ins for the two LoRA-serving engines, speaking their documented HTTP API:
 *
 * - vLLM's OpenAI server started with `--enable-lora --max-lora-rank N` and
 *   VLLM_ALLOW_RUNTIME_LORA_UPDATING=True: GET /v1/models (the base model, then each loaded
 *   adapter with `root` = its path and `parent` = the base), POST /v1/load_lora_adapter
 *   {lora_name, lora_path} (plain-text success; 400 InvalidUserInput for a missing field or a
 *   name already loaded, 404 NotFoundError when the folder holds no adapter, 400 BadRequestError
 *   when the engine cannot take it: here a rank above --max-lora-rank), POST
 *   /v1/unload_lora_adapter {lora_name} (404 for an unknown name), and /v1/chat/completions
 *   answering for the base model or a loaded adapter only (404 "The model `x` does not exist.").
 *   Errors are vLLM's ErrorResponse {object: "error", message, type, param, code}.
 * - llama.cpp's llama-server started with `--lora FILE … --lora-init-without-apply`: GET
 *   /lora-adapters [{id, path, scale}] and /v1/chat/completions with the per-request `lora` field.
 */
import { existsSync, readFileSync } from 'fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'http';
import type { AddressInfo } from 'net';
import * as path from 'path';

export interface ChatRequestSeen {
  model: string;
  lora?: Array<{ id: number; scale: number }>;
}

export interface LoraFixture {
  /** The OpenAI-style base URL, ending in /v1. */
  url: string;
  port: number;
  chats: ChatRequestSeen[];
  /** Every load request, accepted or not. */
  loads: Array<{ lora_name?: string; lora_path?: string; status: number }>;
  unloads: string[];
  /** Names of the adapters loaded now. */
  loaded(): string[];
  /** What a server restart does to run-time adapters: they are gone. */
  forgetAdapters(): void;
  close(): Promise<void>;
}

const ANSWER = '{"ok": true}';

function vllmError(res: ServerResponse, status: number, type: string, message: string): void {
  send(res, status, { object: 'error', message, type, param: null, code: status });
}

function send(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  let text = '';
  for await (const chunk of req) text += chunk;
  return text ? (JSON.parse(text) as Record<string, unknown>) : {};
}

function completion(model: string): unknown {
  return {
    id: 'chatcmpl-fixture',
    object: 'chat.completion',
    created: Math.floor(Date.now() / 1000),
    model,
    choices: [{ index: 0, message: { role: 'assistant', content: ANSWER }, finish_reason: 'stop' }],
    usage: { prompt_tokens: 12, completion_tokens: 4, total_tokens: 16 }
  };
}

async function listen(server: Server, port: number): Promise<number> {
  await new Promise<void>(resolve => server.listen(port, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

/** vLLM serving `baseModel` with run-time LoRA updating; `port` 0 picks a free one. */
export async function startVllmFixture(options: {
  baseModel: string;
  maxLoraRank: number;
  apiKey?: string;
  port?: number;
  /** false: started without VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, so the load/unload routes do not exist. */
  runtimeLoraUpdating?: boolean;
}): Promise<LoraFixture> {
  const adapters = new Map<string, string>();
  const chats: ChatRequestSeen[] = [];
  const loads: LoraFixture['loads'] = [];
  const unloads: string[] = [];
  const server = createServer(async (req, res) => {
    if (options.apiKey && req.headers.authorization !== `Bearer ${options.apiKey}`) return send(res, 401, { error: 'Unauthorized' });
    const route = `${req.method} ${req.url}`;
    if (route === 'GET /v1/models') {
      const card = (id: string, root: string, parent: string | null) => ({ id, object: 'model', created: 0, owned_by: 'vllm', root, parent, permission: [] });
      return send(res, 200, {
        object: 'list',
        data: [card(options.baseModel, options.baseModel, null), ...[...adapters].map(([name, root]) => card(name, root, options.baseModel))]
      });
    }
    const body = await readJson(req);
    if (options.runtimeLoraUpdating === false && /_lora_adapter$/.test(req.url ?? '')) return send(res, 404, { detail: 'Not Found' });
    if (route === 'POST /v1/load_lora_adapter') {
      const { lora_name, lora_path } = body as { lora_name?: string; lora_path?: string };
      const refuse = (status: number, type: string, message: string) => {
        loads.push({ lora_name, lora_path, status });
        vllmError(res, status, type, message);
      };
      if (!lora_name || !lora_path) return refuse(400, 'InvalidUserInput', "Both 'lora_name' and 'lora_path' must be provided.");
      if (adapters.has(lora_name)) return refuse(400, 'InvalidUserInput', `The lora adapter '${lora_name}' has already been loaded.`);
      const config = path.join(lora_path, 'adapter_config.json');
      if (!existsSync(config)) return refuse(404, 'NotFoundError', `Loading lora ${lora_name} failed: No adapter found for ${lora_path}`);
      const rank = Number((JSON.parse(readFileSync(config, 'utf8')) as { r?: number }).r);
      if (rank > options.maxLoraRank) {
        return refuse(400, 'BadRequestError', `LoRA rank ${rank} is greater than max_lora_rank ${options.maxLoraRank}.`);
      }
      adapters.set(lora_name, lora_path);
      loads.push({ lora_name, lora_path, status: 200 });
      return res.writeHead(200, { 'content-type': 'text/plain' }).end(`Success: LoRA adapter '${lora_name}' added successfully.`);
    }
    if (route === 'POST /v1/unload_lora_adapter') {
      const name = String(body.lora_name ?? '');
      if (!adapters.delete(name)) return vllmError(res, 404, 'NotFoundError', `The lora adapter '${name}' cannot be found.`);
      unloads.push(name);
      return res.writeHead(200, { 'content-type': 'text/plain' }).end(`Success: LoRA adapter '${name}' removed successfully.`);
    }
    if (route === 'POST /v1/chat/completions') {
      const model = String(body.model);
      chats.push({ model });
      if (model !== options.baseModel && !adapters.has(model)) return vllmError(res, 404, 'NotFoundError', `The model \`${model}\` does not exist.`);
      return send(res, 200, completion(model));
    }
    send(res, 404, { detail: 'Not Found' });
  });
  const port = await listen(server, options.port ?? 0);
  return {
    url: `http://127.0.0.1:${port}/v1`,
    port,
    chats,
    loads,
    unloads,
    loaded: () => [...adapters.keys()],
    forgetAdapters: () => adapters.clear(),
    close: () => new Promise(resolve => server.close(() => resolve()))
  };
}

/** llama-server with `model` and the LoRA GGUF files it was started with (ids in that order). */
export async function startLlamaCppFixture(options: { model: string; loraFiles: string[] }): Promise<LoraFixture> {
  const chats: ChatRequestSeen[] = [];
  const server = createServer(async (req, res) => {
    const route = `${req.method} ${req.url}`;
    if (route === 'GET /lora-adapters')
      return send(
        res,
        200,
        options.loraFiles.map((file, id) => ({ id, path: file, scale: 0 }))
      );
    if (route === 'POST /v1/chat/completions') {
      const body = await readJson(req);
      const lora = body.lora as ChatRequestSeen['lora'];
      chats.push({ model: String(body.model), lora });
      const unknown = (lora ?? []).find(l => l.id < 0 || l.id >= options.loraFiles.length);
      if (unknown) return send(res, 400, { error: { code: 400, message: `invalid adapter id ${unknown.id}`, type: 'invalid_request_error' } });
      return send(res, 200, completion(options.model));
    }
    send(res, 404, { error: { code: 404, message: 'File Not Found', type: 'not_found_error' } });
  });
  const port = await listen(server, 0);
  return {
    url: `http://127.0.0.1:${port}/v1`,
    port,
    chats,
    loads: [],
    unloads: [],
    loaded: () => [...options.loraFiles],
    forgetAdapters: () => undefined,
    close: () => new Promise(resolve => server.close(() => resolve()))
  };
}
