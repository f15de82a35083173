import { PlannerOutputSchema } from '@nanoresearch/schema';
import { BudgetExceededError, createLlm, LlmError, LlmOutputError } from '../src/llm';
import { routeByModel, sequence, startScriptedLlmServer } from '../src/testing';
import { scripted, user } from './scripted-llm';

const plannerSchema = PlannerOutputSchema as Record<string, unknown>;
const validPlan = {
  selected_skill_ids: ['sk_baseline'],
  selected_memory_ids: [],
  prompt_plan: 'Start with a linear baseline.',
  update_memory: [],
  update_skill: []
};

describe('role → model routing', () => {
  test('each role is sent as its configured model, others as the default', async () => {
    const { llm, server } = await scripted(routeByModel({ 'planner-model': () => 'from planner', 'writer-model': () => 'from writer' }));
    expect((await llm.complete({ role: 'planner', messages: user('a') })).text).toBe('from planner');
    const writing = await llm.complete({ role: 'writing', messages: user('b') });
    expect(writing).toMatchObject({ text: 'from writer', model: 'writer-model', cached: false });
    expect(server.chatRequests.map(r => r.model)).toEqual(['planner-model', 'writer-model']);
  });

  test('a model the server does not serve fails at once with status and a fix hint', async () => {
    const { llm, server } = await scripted(routeByModel({ 'planner-model': () => 'x' }));
    const err = await llm.complete({ role: 'review', messages: user('a') }).catch(e => e);
    expect(err).toBeInstanceOf(LlmError);
    expect(err.status).toBe(400);
    expect(err.message).toMatch(/writer-model/);
    expect(err.message).toMatch(/NANORESEARCH_MODEL/);
    expect(server.chatRequests).toHaveLength(1);
  });
});

describe('JSON mode request shape', () => {
  test('json_schema sends response_format with the schema, strict false', async () => {
    const { llm, server } = await scripted(() => JSON.stringify(validPlan));
    const r = await llm.completeJson({ role: 'planner', messages: user('plan'), jsonSchema: plannerSchema });
    expect(r.value).toEqual(validPlan);
    const sent = server.chatRequests[0];
    expect(sent.response_format).toEqual({
      type: 'json_schema',
      json_schema: { name: 'PlannerOutput', schema: plannerSchema, strict: false }
    });
    expect(sent.messages).toEqual([{ role: 'user', content: 'plan' }]);
  });

  test('json_object sends {type: json_object} and puts the schema in the system prompt', async () => {
    const { llm, server } = await scripted(() => JSON.stringify(validPlan), { jsonMode: 'json_object' });
    await llm.completeJson({
      role: 'planner',
      messages: [{ role: 'system', content: 'You plan.' }, ...user('plan')],
      jsonSchema: plannerSchema
    });
    const sent = server.chatRequests[0];
    expect(sent.response_format).toEqual({ type: 'json_object' });
    expect(sent.messages).toHaveLength(2);
    expect(sent.messages[0].content).toMatch(/^You plan\./);
    expect(sent.messages[0].content).toContain('"selected_skill_ids"');
  });

  test('none sends no response_format and prepends a system message with the schema', async () => {
    const { llm, server } = await scripted(() => JSON.stringify(validPlan), { jsonMode: 'none' });
    await llm.completeJson({ role: 'planner', messages: user('plan'), jsonSchema: plannerSchema, schemaName: 'plan' });
    const sent = server.chatRequests[0];
    expect(sent.response_format).toBeUndefined();
    expect(sent.messages[0]).toMatchObject({ role: 'system' });
    expect(sent.messages[0].content).toContain('("plan")');
    expect(sent.body.max_tokens).toBeUndefined();
  });

  test('temperature, maxTokens and seed are passed through', async () => {
    const { llm, server } = await scripted(() => 'ok');
    await llm.complete({ role: 'writing', messages: user('a'), temperature: 0.3, maxTokens: 77, seed: 5 });
    expect(server.chatRequests[0]).toMatchObject({ temperature: 0.3, max_tokens: 77, body: { seed: 5 } });
  });
});

describe('think blocks', () => {
  test('a closed <think> block is removed', async () => {
    const { llm } = await scripted(() => '<think>the user wants a greeting</think>\n\nHello there.');
    expect((await llm.complete({ role: 'writing', messages: user('hi') })).text).toBe('Hello there.');
  });

  test('an unterminated leading <think> block leaves no answer text', async () => {
    const { llm } = await scripted(() => '<think>still reasoning when the tokens ran out');
    expect((await llm.complete({ role: 'writing', messages: user('hi') })).text).toBe('');
  });

  test('JSON after a think block is found', async () => {
    const { llm } = await scripted(() => `<think>{"not": "this"}</think>${JSON.stringify(validPlan)}`);
    const r = await llm.completeJson({ role: 'planner', messages: user('p'), jsonSchema: plannerSchema });
    expect(r.value).toEqual(validPlan);
  });
});

describe('JSON extraction, validation and re-ask', () => {
  test('a fenced answer after prose is extracted', async () => {
    const { llm, server } = await scripted(() => 'Sure! Here is the plan:\n```json\n' + JSON.stringify(validPlan, null, 2) + '\n```\nHope it helps.');
    const r = await llm.completeJson({ role: 'planner', messages: user('p'), jsonSchema: plannerSchema });
    expect(r.value).toEqual(validPlan);
    expect(server.chatRequests).toHaveLength(1);
  });

  test('the first balanced object is taken, braces inside strings do not confuse it', async () => {
    const plan = { ...validPlan, prompt_plan: 'use {braces} and "quotes" }' };
    const { llm } = await scripted(() => `The plan is ${JSON.stringify(plan)} and {"another": 1}`);
    const r = await llm.completeJson({ role: 'planner', messages: user('p'), jsonSchema: plannerSchema });
    expect(r.value).toEqual(plan);
  });

  test('an invalid answer is re-asked once with the validation errors', async () => {
    const { llm, server, rows } = await scripted(sequence([JSON.stringify({ ...validPlan, selected_skill_ids: 'sk_1' }), JSON.stringify(validPlan)]));
    const r = await llm.completeJson({ role: 'planner', messages: user('p'), jsonSchema: plannerSchema });
    expect(r.value).toEqual(validPlan);
    expect(server.chatRequests).toHaveLength(2);
    const reask = server.chatRequests[1].messages;
    expect(reask).toHaveLength(3);
    expect(reask[1]).toMatchObject({ role: 'assistant' });
    expect(reask[2].content).toContain('/selected_skill_ids: must be array');
    expect(rows).toHaveLength(2);
    expect(r.usage.completionTokens).toBe(rows[0].completion_tokens + rows[1].completion_tokens);
  });

  test('a second invalid answer throws LlmOutputError naming schema, errors and answer', async () => {
    const bad = JSON.stringify({ ...validPlan, update_memory: [{ kind: 'gossip', content: 'x' }] });
    const { llm, server } = await scripted(() => bad);
    const err = await llm.completeJson({ role: 'planner', messages: user('p'), jsonSchema: plannerSchema }).catch(e => e);
    expect(err).toBeInstanceOf(LlmOutputError);
    expect(err.message).toContain('"PlannerOutput"');
    expect(err.message).toContain('/update_memory/0/kind: must be one of');
    expect(err.message).toContain(bad.slice(0, 40).replace(/"/g, '\\"'));
    expect(server.chatRequests).toHaveLength(2);
  });

  test('prose without JSON is reported as such', async () => {
    const { llm } = await scripted(() => 'I cannot help with planning today.');
    const err = await llm.completeJson({ role: 'planner', messages: user('p'), jsonSchema: plannerSchema }).catch(e => e);
    expect(err).toBeInstanceOf(LlmOutputError);
    expect(err.errors).toEqual(['the answer contains no JSON object']);
    expect(err.answer).toBe('I cannot help with planning today.');
  });

  test('an answer cut off by the token limit is re-asked saying so', async () => {
    const { llm, server } = await scripted(() => ({ content: '{"selected_skill_ids": ["sk_', finishReason: 'length' }));
    const err = await llm.completeJson({ role: 'planner', messages: user('p'), jsonSchema: plannerSchema, maxTokens: 8 }).catch(e => e);
    expect(err).toBeInstanceOf(LlmOutputError);
    expect(err.message).toContain('cut off at the token limit (8)');
    expect(server.chatRequests[1].messages[2].content).toContain('answer more briefly');
    expect(Object.keys(await llm.complete({ role: 'writing', messages: user('x') })).sort()).toEqual([
      'cached',
      'costUsd',
      'latencyMs',
      'model',
      'text',
      'usage'
    ]);
  });

  test('an invalid answer is not cached, a valid one is', async () => {
    const { llm, server } = await scripted(sequence(['{"broken": true}', JSON.stringify(validPlan)]));
    const req = { role: 'planner' as const, messages: user('p'), jsonSchema: plannerSchema };
    await llm.completeJson(req);
    expect(server.chatRequests).toHaveLength(2);
    // The first answer was rejected, so the same request goes to the server again.
    const again = await llm.completeJson(req);
    expect(server.chatRequests).toHaveLength(3);
    expect(again.cached).toBe(false);
    const third = await llm.completeJson(req);
    expect(third.cached).toBe(true);
    expect(server.chatRequests).toHaveLength(3);
  });
});

describe('retries', () => {
  test('429 with Retry-After is retried after the requested wait', async () => {
    const { llm, server, rows } = await scripted(sequence([{ status: 429, headers: { 'retry-after': '1' } }, 'finally']));
    const started = Date.now();
    const r = await llm.complete({ role: 'writing', messages: user('a') });
    expect(r.text).toBe('finally');
    expect(Date.now() - started).toBeGreaterThanOrEqual(950);
    expect(server.chatRequests).toHaveLength(2);
    expect(rows).toHaveLength(1);
    expect(rows[0].error).toBeNull();
  });

  test('retry-after-ms is honoured too, and 5xx and connection resets are retried', async () => {
    const { llm, server } = await scripted(sequence([{ status: 503, headers: { 'retry-after-ms': '30' } }, { status: 500 }, { reset: true }, 'ok']));
    expect((await llm.complete({ role: 'writing', messages: user('a') })).text).toBe('ok');
    expect(server.chatRequests).toHaveLength(4);
  });

  test('after maxRetries the failure is an LlmError with the status, recorded with its error', async () => {
    const { llm, server, rows } = await scripted(() => ({ status: 500 }), { maxRetries: 2 });
    const err = await llm.complete({ role: 'writing', messages: user('a') }).catch(e => e);
    expect(err).toBeInstanceOf(LlmError);
    expect(err.status).toBe(500);
    expect(err.message).toMatch(/gave up after 3 attempts/);
    expect(server.chatRequests).toHaveLength(3);
    expect(rows).toHaveLength(1);
    expect(rows[0].error).toContain('HTTP 500');
    // Every HTTP attempt counts against maxCalls, retries included.
    expect(llm.spent.calls).toBe(3);
  });

  test('a 401 is not retried and says how to fix the key', async () => {
    const { llm, server } = await scripted(() => ({ status: 401 }));
    const err = await llm.complete({ role: 'writing', messages: user('a') }).catch(e => e);
    expect(err.status).toBe(401);
    expect(err.message).toContain('OPENAI_API_KEY');
    expect(server.chatRequests).toHaveLength(1);
  });

  test('a timeout is retried, then reported with the limit', async () => {
    // A deadline well past both attempts, so each gets its full timeoutMs (the default deadline is just enough).
    const { llm, server } = await scripted(() => ({ content: 'late', delayMs: 400 }), { timeoutMs: 100, maxRetries: 1, deadlineMs: 10_000 });
    const err = await llm.complete({ role: 'writing', messages: user('a') }).catch(e => e);
    expect(err).toBeInstanceOf(LlmError);
    expect(err.message).toContain('did not answer within 100 ms');
    expect(server.chatRequests).toHaveLength(2);
  });

  test('an unreachable server is a connection error with a hint', async () => {
    const closed = await startScriptedLlmServer(() => 'x');
    await closed.close();
    const llm = createLlm({
      provider: 'openai',
      baseURL: closed.url,
      models: { default: 'm' },
      maxRetries: 1,
      retryBaseDelayMs: 1
    });
    const err = await llm.complete({ role: 'writing', messages: user('a') }).catch(e => e);
    expect(err).toBeInstanceOf(LlmError);
    expect(err.status).toBeUndefined();
    expect(err.message).toMatch(/Could not reach the LLM server at http:\/\/127\.0\.0\.1/);
    expect(err.message).toContain('NANORESEARCH_LLM_BASE_URL');
  });
});

describe('budgets', () => {
  const usage = { prompt_tokens: 60, completion_tokens: 40 };

  test('maxCalls refuses the next call before any request', async () => {
    const { llm, server } = await scripted(() => ({ content: 'ok', usage }), { budget: { maxCalls: 2 } });
    await llm.complete({ role: 'writing', messages: user('1') });
    await llm.complete({ role: 'writing', messages: user('2') });
    const err = await llm.complete({ role: 'writing', messages: user('3') }).catch(e => e);
    expect(err).toBeInstanceOf(BudgetExceededError);
    expect(err).toMatchObject({ limit: 'maxCalls', spentValue: 2, maxValue: 2 });
    expect(err.message).toMatch(/2 calls spent of 2 allowed \(maxCalls\)/);
    expect(server.chatRequests).toHaveLength(2);
  });

  test('maxTokens stops once the tokens spent reach the limit', async () => {
    const { llm } = await scripted(() => ({ content: 'ok', usage }), { budget: { maxTokens: 150 } });
    await llm.complete({ role: 'writing', messages: user('1') });
    await llm.complete({ role: 'writing', messages: user('2') }); // 100 < 150: allowed, ends at 200
    const err = await llm.complete({ role: 'writing', messages: user('3') }).catch(e => e);
    expect(err).toMatchObject({ name: 'BudgetExceededError', limit: 'maxTokens', spentValue: 200, maxValue: 150 });
    expect(llm.spent).toEqual({ tokens: 200, calls: 2, costUsd: 0 });
  });

  test('maxCostUsd uses the price table; scopes count into the parent but keep their own limits', async () => {
    const prices = { 'writer-model': { inputPerMTok: 1000, outputPerMTok: 2000 } }; // 0.06 + 0.08 = $0.14 per call
    const { llm, rows } = await scripted(() => ({ content: 'ok', usage }), { prices });
    const stage = llm.scoped({ budget: { maxCostUsd: 0.2 }, stageRunId: 'sr_1' });
    const first = await stage.complete({ role: 'writing', messages: user('1') });
    expect(first.costUsd).toBeCloseTo(0.14);
    await stage.complete({ role: 'writing', messages: user('2') });
    const err = await stage.complete({ role: 'writing', messages: user('3') }).catch(e => e);
    expect(err).toMatchObject({ name: 'BudgetExceededError', limit: 'maxCostUsd', stageRunId: 'sr_1' });
    expect(err.message).toContain('stage run sr_1');
    // A sibling scope has its own counters; the parent saw everything.
    const sibling = llm.scoped({ budget: { maxCostUsd: 0.2 }, stageRunId: 'sr_2' });
    await sibling.complete({ role: 'writing', messages: user('4') });
    expect(stage.spent.costUsd).toBeCloseTo(0.28);
    expect(sibling.spent.calls).toBe(1);
    expect(llm.spent.calls).toBe(3);
    expect(llm.spent.costUsd).toBeCloseTo(0.42);
    expect(rows.map(r => r.stage_run_id)).toEqual(['sr_1', 'sr_1', 'sr_2']);
  });

  test("a parent's budget also stops its scopes", async () => {
    const { llm } = await scripted(() => 'ok', { budget: { maxCalls: 1 } });
    const stage = llm.scoped({ budget: { maxCalls: 10 }, stageRunId: 'sr_x' });
    await stage.complete({ role: 'writing', messages: user('1') });
    const err = await stage.complete({ role: 'writing', messages: user('2') }).catch(e => e);
    expect(err).toMatchObject({ name: 'BudgetExceededError', limit: 'maxCalls', stageRunId: null });
  });
});

describe('accounting and cache', () => {
  test('one row per call with tokens, cost, latency and stage run; unpriced models are marked', async () => {
    const { llm, rows } = await scripted(
      routeByModel({
        'planner-model': () => ({ content: 'p', usage: { prompt_tokens: 11, completion_tokens: 3 } }),
        'writer-model': () => ({ content: 'w', usage: { prompt_tokens: 5, completion_tokens: 7 } })
      }),
      { prices: { 'planner-model': { inputPerMTok: 1, outputPerMTok: 1 } } }
    );
    const stage = llm.scoped({ stageRunId: 'sr_9' });
    await stage.complete({ role: 'planner', messages: user('a') });
    await stage.complete({ role: 'writing', messages: user('a'), stageRunId: 'sr_other' });
    expect(rows).toHaveLength(2);
    expect(rows[0]).toMatchObject({
      stage_run_id: 'sr_9',
      role: 'planner',
      model: 'planner-model',
      prompt_tokens: 11,
      completion_tokens: 3,
      cost_usd: 14 / 1e6,
      cache_hit: false,
      error: null
    });
    expect(rows[0].id).toMatch(/^llm_/);
    expect(rows[0].latency_ms).toBeGreaterThanOrEqual(0);
    expect(Date.parse(rows[0].created_at)).not.toBeNaN();
    // No price for writer-model: counted as 0, row marked with a null cost.
    expect(rows[1]).toMatchObject({ stage_run_id: 'sr_other', model: 'writer-model', cost_usd: null });
  });

  test('a cache hit makes no request, costs nothing, is recorded, and is allowed over budget', async () => {
    const { llm, server, rows } = await scripted(() => ({ content: 'answer', usage: { prompt_tokens: 10, completion_tokens: 10 } }), {
      budget: { maxCalls: 1 }
    });
    const req = { role: 'writing' as const, messages: user('same'), temperature: 0 };
    const first = await llm.complete(req);
    const second = await llm.complete(req);
    expect(server.chatRequests).toHaveLength(1);
    expect(first.cached).toBe(false);
    expect(second).toMatchObject({ text: 'answer', cached: true, costUsd: 0 });
    expect(llm.spent).toEqual({ tokens: 20, calls: 1, costUsd: 0 });
    expect(rows.map(r => [r.cache_hit, r.prompt_tokens, r.completion_tokens])).toEqual([
      [false, 10, 10],
      [true, 0, 0]
    ]);
  });

  test('the cache key covers temperature, maxTokens, seed, schema and adapter; cache:false skips it', async () => {
    const { llm, server } = await scripted(() => JSON.stringify(validPlan));
    const base = { role: 'planner' as const, messages: user('same') };
    await llm.complete(base);
    await llm.complete({ ...base, temperature: 0.5 });
    await llm.complete({ ...base, maxTokens: 10 });
    await llm.complete({ ...base, seed: 1 });
    await llm.complete({ ...base, adapter: { name: 'a', ggufPath: '/adapters/a.gguf', peftDir: '/adapters/peft' } });
    await llm.complete({ ...base, jsonSchema: plannerSchema });
    await llm.complete({ ...base, messages: user('different') });
    expect(server.chatRequests).toHaveLength(7);
    await llm.complete({ ...base, cache: false });
    expect(server.chatRequests).toHaveLength(8);
    expect((await llm.complete(base)).cached).toBe(true);
    expect(server.chatRequests).toHaveLength(8);
  });

  test('scopes share the cache', async () => {
    const { llm, server } = await scripted(() => 'shared');
    await llm.scoped({ stageRunId: 'a' }).complete({ role: 'writing', messages: user('q') });
    const hit = await llm.scoped({ stageRunId: 'b' }).complete({ role: 'writing', messages: user('q') });
    expect(hit.cached).toBe(true);
    expect(server.chatRequests).toHaveLength(1);
  });
});
