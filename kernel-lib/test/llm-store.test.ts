/** The LLM layer against a real Store: llm_calls rows and the llm_cache surviving the Llm. */
import { mkdtempSync, rmSync } from 'fs';
import { tmpdir } from 'os';
import * as path from 'path';
import { createLlm, LlmError, type LlmConfig } from '../src/llm';
import { Store } from '../src/store';
import { routeByModel, sequence, startScriptedLlmServer, type ScriptedLlmServer } from '../src/testing';

let dir: string;
let store: Store;
let server: ScriptedLlmServer;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'nr-llm-store-'));
  store = await Store.open({ home: dir });
  server = await startScriptedLlmServer(
    routeByModel({
      good: () => ({ content: '<think>hm</think>stored answer', usage: { prompt_tokens: 12, completion_tokens: 4 } }),
      flaky: sequence([{ status: 503 }], { exhausted: 'repeat' })
    })
  );
});
afterAll(async () => {
  await server.close();
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

const config = (): LlmConfig => ({
  provider: 'openai',
  baseURL: server.url,
  models: { default: 'good', review: 'flaky' },
  prices: { good: { inputPerMTok: 2, outputPerMTok: 4 } },
  maxRetries: 1,
  retryBaseDelayMs: 1
});

test('calls, cache hits and failures each write one llm_calls row; answers go to llm_cache', async () => {
  const llm = createLlm(config(), store).scoped({ stageRunId: 'sr_store' });
  const req = { role: 'writing' as const, messages: [{ role: 'user' as const, content: 'persist me' }] };
  expect((await llm.complete(req)).text).toBe('stored answer');
  expect((await llm.complete(req)).cached).toBe(true);
  await expect(llm.complete({ role: 'review', messages: req.messages })).rejects.toBeInstanceOf(LlmError);

  const rows = await store.read(q =>
    q.all<Record<string, unknown>>(
      'SELECT stage_run_id, role, model, prompt_tokens, completion_tokens, cost_usd, cache_hit, error FROM llm_calls ORDER BY created_at, id'
    )
  );
  expect(rows).toEqual([
    { stage_run_id: 'sr_store', role: 'writing', model: 'good', prompt_tokens: 12, completion_tokens: 4, cost_usd: 40 / 1e6, cache_hit: false, error: null },
    { stage_run_id: 'sr_store', role: 'writing', model: 'good', prompt_tokens: 0, completion_tokens: 0, cost_usd: 0, cache_hit: true, error: null },
    expect.objectContaining({ role: 'review', model: 'flaky', cache_hit: false, error: expect.stringContaining('HTTP 503') })
  ]);
  const cached = await store.read(q => q.all<{ model: string; response: unknown }>('SELECT model, response FROM llm_cache'));
  expect(cached).toHaveLength(1);
  const response = typeof cached[0].response === 'string' ? JSON.parse(cached[0].response) : cached[0].response;
  expect(response).toEqual({ text: 'stored answer', model: 'good', usage: { promptTokens: 12, completionTokens: 4 }, truncated: false });
});

test('a new Llm on the same store answers from llm_cache without a request', async () => {
  const before = server.chatRequests.length;
  const fresh = createLlm(config(), store);
  const r = await fresh.complete({ role: 'writing', messages: [{ role: 'user', content: 'persist me' }] });
  expect(r).toMatchObject({ text: 'stored answer', cached: true, costUsd: 0 });
  expect(server.chatRequests.length).toBe(before);
  expect(fresh.spent).toEqual({ tokens: 0, calls: 0, costUsd: 0 });
});
