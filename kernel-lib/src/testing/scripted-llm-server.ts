/**
 * A scripted OpenAI-compatible chat-completions server for tests: a real HTTP server on
 * 127.0.0.1 whose answers come from a script function, recording every request it receives.
 *
 * ```ts
 * const server = await startScriptedLlmServer(routeByModel({
 *   planner: sequence(['{"selected_skill_ids": []}', { status: 429, headers: { 'retry-after': '0' } }]),
 *   writer: req => `You said: ${req.messages.at(-1)?.content}`
 * }));
 * const llm = createLlm({ provider: 'openai', baseURL: server.url, models: { default: 'writer', planner: 'planner' } });
 * ...
 * expect(server.requests).toHaveLength(2);
 * await server.close();
 * ```
 *
 * Endpoints: `POST /v1/chat/completions` (non-streaming; the answer is OpenAI's documented
 * `chat.completion` object) and `GET /v1/models`. Anything else is answered 404, an unknown
 * model (see `routeByModel`) 400, both with OpenAI's error body `{ error: { message, type, param, code } }`.
 * A script that throws is answered 500 with the thrown message.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'http';
import type { AddressInfo, Socket } from 'net';

/** A chat message as the client sent it. */
export interface ScriptMessage {
  role: string;
  content: string | null | unknown[];
  [key: string]: unknown;
}

/** What a script sees of one chat-completions request. */
export interface ScriptRequest {
  model: string;
  messages: ScriptMessage[];
  response_format?: { type: string; json_schema?: { name: string; schema?: unknown; strict?: boolean | null } };
  temperature?: number;
  /** `max_tokens`, or `max_completion_tokens` when the client sent that. */
  max_tokens?: number;
  /** The whole parsed JSON body. */
  body: Record<string, unknown>;
}

export interface ScriptUsage {
  prompt_tokens: number;
  completion_tokens: number;
}

/**
 * What a script answers:
 * - a string: the assistant message content;
 * - `{ content, usage?, finishReason?, delayMs?, dripMs?, chunked? }`: content (null: a message
 *   without content) with explicit usage (default: about one token per 4 characters), finish
 *   reason (default `stop`), a delay before answering, the body sent one byte every `dripMs`
 *   after the headers (a stalling server), and `chunked` to leave out content-length;
 * - `{ status, body?, headers?, delayMs? }`: an HTTP error (body default: OpenAI's error shape);
 * - `{ reset: true }`: the connection is destroyed without an answer (a connection reset).
 */
export type ScriptReply =
  | string
  | {
      content: string | null;
      usage?: Partial<ScriptUsage>;
      finishReason?: string;
      delayMs?: number;
      dripMs?: number;
      chunked?: boolean;
    }
  | { status: number; body?: unknown; headers?: Record<string, string>; delayMs?: number }
  | { reset: true };

export type LlmScript = ((req: ScriptRequest) => ScriptReply | Promise<ScriptReply>) & {
  /** Model ids listed by `GET /v1/models` (set by `routeByModel`). */
  models?: string[];
};

/** One request the server received, in arrival order. */
export interface RecordedRequest {
  method: string;
  /** Path without the query string, e.g. `/v1/chat/completions`. */
  path: string;
  headers: Record<string, string | string[] | undefined>;
  /** Parsed JSON body (undefined for GET or an empty body). */
  body: Record<string, unknown> | undefined;
  /** The reply given (`undefined` for GET /v1/models and malformed requests). */
  reply?: ScriptReply;
  /** Body bytes written, and whether the whole body went out before the client closed the connection. */
  sent?: { bytes: number; complete: boolean };
}

export interface ScriptedLlmServer {
  /** Base URL for an OpenAI client, e.g. `http://127.0.0.1:40123/v1`. */
  url: string;
  port: number;
  requests: RecordedRequest[];
  /** Only the chat-completions requests' bodies, in order. */
  readonly chatRequests: ScriptRequest[];
  close(): Promise<void>;
}

/** Starts the server on 127.0.0.1 (`opts.port`, default any free port). */
export async function startScriptedLlmServer(script: LlmScript, opts: { port?: number } = {}): Promise<ScriptedLlmServer> {
  const requests: RecordedRequest[] = [];
  const chatRequests: ScriptRequest[] = [];
  const sockets = new Set<Socket>();
  let counter = 0;

  const server = createServer((req, res) => {
    void handle(req, res).catch(err => {
      if (!res.headersSent) sendJson(res, 500, errorBody(`scripted server failed: ${(err as Error).message}`, 'server_error'));
      else res.destroy();
    });
  });
  server.on('connection', socket => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0].replace(/\/+$/, '') || '/';
    const raw = await readBody(req);
    const recorded: RecordedRequest = { method: req.method ?? 'GET', path, headers: req.headers, body: undefined };
    requests.push(recorded);

    if (req.method === 'GET' && path === '/v1/models') {
      const created = Math.floor(Date.now() / 1000);
      const data = (script.models ?? ['scripted']).map(id => ({ id, object: 'model', created, owned_by: 'scripted' }));
      return sendJson(res, 200, { object: 'list', data });
    }
    if (req.method !== 'POST' || path !== '/v1/chat/completions') {
      return sendJson(res, 404, errorBody(`Unknown route ${req.method} ${path}`, 'invalid_request_error'));
    }
    let body: Record<string, unknown>;
    try {
      body = JSON.parse(raw.toString('utf8')) as Record<string, unknown>;
    } catch {
      return sendJson(res, 400, errorBody('The request body is not valid JSON', 'invalid_request_error'));
    }
    recorded.body = body;
    if (typeof body.model !== 'string' || !Array.isArray(body.messages)) {
      return sendJson(res, 400, errorBody('The request needs a string "model" and an array "messages"', 'invalid_request_error'));
    }
    if (body.stream === true) {
      return sendJson(res, 400, errorBody('The scripted server does not stream; send stream: false', 'invalid_request_error'));
    }
    const scriptRequest: ScriptRequest = {
      model: body.model,
      messages: body.messages as ScriptMessage[],
      ...(body.response_format !== undefined && { response_format: body.response_format as ScriptRequest['response_format'] }),
      ...(typeof body.temperature === 'number' && { temperature: body.temperature }),
      ...(typeof (body.max_tokens ?? body.max_completion_tokens) === 'number' && {
        max_tokens: (body.max_tokens ?? body.max_completion_tokens) as number
      }),
      body
    };
    chatRequests.push(scriptRequest);

    let reply: ScriptReply;
    try {
      reply = await script(scriptRequest);
    } catch (err) {
      return sendJson(res, 500, errorBody(`The test script threw: ${(err as Error).message}`, 'server_error'));
    }
    recorded.reply = reply;
    if (typeof reply === 'object' && 'reset' in reply) {
      req.socket.destroy();
      return;
    }
    const delayMs = typeof reply === 'object' && 'delayMs' in reply ? reply.delayMs : undefined;
    if (delayMs) await new Promise(r => setTimeout(r, delayMs));
    if (typeof reply === 'object' && 'status' in reply) {
      return sendJson(res, reply.status, reply.body ?? errorBody(`Scripted HTTP ${reply.status}`, errorType(reply.status)), reply.headers);
    }
    const content = typeof reply === 'string' ? reply : reply.content;
    const scripted = typeof reply === 'string' ? undefined : reply;
    const usage = {
      prompt_tokens: scripted?.usage?.prompt_tokens ?? estimateTokens(scriptRequest.messages),
      completion_tokens: scripted?.usage?.completion_tokens ?? Math.ceil((content ?? '').length / 4)
    };
    counter += 1;
    const sent = { bytes: 0, complete: false };
    recorded.sent = sent;
    await sendBody(
      res,
      200,
      {
        id: `chatcmpl-scripted-${counter}`,
        object: 'chat.completion',
        created: Math.floor(Date.now() / 1000),
        model: scriptRequest.model,
        choices: [
          {
            index: 0,
            message: { role: 'assistant', content, refusal: null },
            logprobs: null,
            finish_reason: scripted?.finishReason ?? 'stop'
          }
        ],
        usage: { ...usage, total_tokens: usage.prompt_tokens + usage.completion_tokens }
      },
      { dripMs: scripted?.dripMs, chunked: scripted?.chunked, sent }
    );
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/v1`,
    port,
    requests,
    get chatRequests() {
      return chatRequests;
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        for (const socket of sockets) socket.destroy();
        server.close(err => (err ? reject(err) : resolve()));
      })
  };
}

/**
 * A script answering each model with its own script; other models get HTTP 400 (OpenAI's
 * `model_not_found` error), or `fallback` when given. `GET /v1/models` lists the handled models.
 */
export function routeByModel(handlers: Record<string, LlmScript>, fallback?: LlmScript): LlmScript {
  const route: LlmScript = req => {
    const handler = Object.prototype.hasOwnProperty.call(handlers, req.model) ? handlers[req.model] : fallback;
    if (handler) return handler(req);
    return {
      status: 400,
      body: {
        error: {
          message: `The model \`${req.model}\` does not exist on this scripted server (known: ${Object.keys(handlers).join(', ')})`,
          type: 'invalid_request_error',
          param: 'model',
          code: 'model_not_found'
        }
      }
    };
  };
  route.models = Object.keys(handlers);
  return route;
}

/**
 * A script giving one reply per call, in order: a reply, or a script to call. After the last,
 * it repeats the last (`exhausted: 'repeat'`, default) or answers HTTP 400 (`'error'`).
 */
export function sequence(replies: Array<ScriptReply | LlmScript>, opts: { exhausted?: 'repeat' | 'error' } = {}): LlmScript {
  if (replies.length === 0) throw new Error('sequence() needs at least one reply');
  let next = 0;
  return req => {
    if (next >= replies.length && opts.exhausted === 'error') {
      return { status: 400, body: errorBody(`Scripted sequence exhausted after ${replies.length} replies`, 'invalid_request_error') };
    }
    const reply = replies[Math.min(next, replies.length - 1)];
    next += 1;
    return typeof reply === 'function' ? reply(req) : reply;
  };
}

/** OpenAI's error body. */
export function errorBody(message: string, type: string, code: string | null = null) {
  return { error: { message, type, param: null, code } };
}

function errorType(status: number): string {
  if (status === 401) return 'authentication_error';
  if (status === 429) return 'rate_limit_exceeded';
  if (status >= 500) return 'server_error';
  return 'invalid_request_error';
}

function estimateTokens(messages: ScriptMessage[]): number {
  const chars = messages.reduce((n, m) => n + (typeof m.content === 'string' ? m.content.length : JSON.stringify(m.content ?? '').length), 0);
  return Math.ceil(chars / 4) + 3 * messages.length;
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

/** Bytes written per write() when a body is sent at full speed. */
const SEND_CHUNK_BYTES = 64 * 1024;

/**
 * Sends a JSON body in chunks, waiting for the socket to drain, or one byte every `dripMs`;
 * stops when the client goes away. `sent` counts what went out.
 */
async function sendBody(
  res: ServerResponse,
  status: number,
  body: unknown,
  opts: { dripMs?: number; chunked?: boolean; sent: { bytes: number; complete: boolean } }
): Promise<void> {
  const data = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { 'content-type': 'application/json', ...(!opts.chunked && { 'content-length': data.length }) });
  res.flushHeaders();
  const closed = new Promise<void>(resolve => res.once('close', resolve));
  res.on('error', () => undefined);
  const step = opts.dripMs ? 1 : SEND_CHUNK_BYTES;
  for (let at = 0; at < data.length; at += step) {
    if (res.destroyed) return;
    const drained = res.write(data.subarray(at, at + step));
    opts.sent.bytes += Math.min(step, data.length - at);
    if (opts.dripMs) await Promise.race([new Promise(r => setTimeout(r, opts.dripMs)), closed]);
    else if (!drained) await Promise.race([new Promise(r => res.once('drain', r)), closed]);
  }
  if (res.destroyed) return;
  res.end();
  opts.sent.complete = true;
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}
