/**
 * Limits of the LLM layer that must hold against a real HTTP server (the scripted loopback
 * server): budgets reserved before a request goes out (parallel calls included), every attempt
 * counted, cost caps refused for unpriced models, a deadline over headers and body, a bound on
 * Retry-After waits, a response-size cap, and empty answers never cached.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { BudgetExceededError, LlmError, UnpricedModelError, createLlm } from '../src/llm';
import { Store } from '../src/store';
import { scripted, user } from './scripted-llm';
import { sequence, startScriptedLlmServer, type LlmScript } from '../src/testing';

/** Settles every promise; returns the values and the errors. */
async function settleAll<T>(promises: Promise<T>[]): Promise<{ values: T[]; errors: unknown[] }> {
  const results = await Promise.allSettled(promises);
  return {
    values: results.flatMap(r => (r.status === 'fulfilled' ? [r.value] : [])),
    errors: results.flatMap(r => (r.status === 'rejected' ? [r.reason] : []))
  };
}

describe('budgets reserved before sending', () => {
  test('50 parallel calls under maxCalls: 5 send 5 requests; the others are refused before they go out', async () => {
    const { llm, server } = await scripted(() => ({ content: 'ok', delayMs: 200 }), { budget: { maxCalls: 5 } });
    const { values, errors } = await settleAll(Array.from({ length: 50 }, (_, i) => llm.complete({ role: 'writing', messages: user(`q${i}`) })));
    expect(server.chatRequests).toHaveLength(5);
    expect(values).toHaveLength(5);
    expect(errors).toHaveLength(45);
    expect(errors.every(e => e instanceof BudgetExceededError && e.limit === 'maxCalls')).toBe(true);
    expect((errors[0] as Error).message).toMatch(/0 calls spent and 5 reserved by calls in flight of 5 allowed \(maxCalls\)/);
    expect(llm.spent.calls).toBe(5);
  });

  test('token reservations (prompt bound + max_tokens) keep parallel calls under maxTokens', async () => {
    const usage = { prompt_tokens: 10, completion_tokens: 5 };
    const { llm, server } = await scripted(() => ({ content: 'ok', usage, delayMs: 100 }), { budget: { maxTokens: 400 } });
    // Each reserves 26 prompt tokens (2 bytes + template allowance) + 100 = 126: three fit in 400.
    const { values, errors } = await settleAll(
      Array.from({ length: 10 }, (_, i) => llm.complete({ role: 'writing', messages: user(`q${i}`), maxTokens: 100 }))
    );
    expect(server.chatRequests).toHaveLength(3);
    expect(values).toHaveLength(3);
    expect(errors.every(e => e instanceof BudgetExceededError && e.limit === 'maxTokens')).toBe(true);
    expect((errors[0] as Error).message).toMatch(/this call may take up to 126 tokens \(prompt up to 26 tokens \+ max_tokens 100\) and 22 are left/);
    expect(llm.spent).toEqual({ calls: 3, tokens: 45, costUsd: 0 });
    // Settled at what was spent, the room is back. A call without maxTokens could use all of it,
    // so it holds all of it: a second one started with it is refused; the request is sent as written.
    const [alone, second] = await Promise.allSettled([
      llm.complete({ role: 'writing', messages: user('more') }),
      llm.complete({ role: 'writing', messages: user('again') })
    ]);
    expect(alone.status).toBe('fulfilled');
    expect(second).toMatchObject({ status: 'rejected', reason: { limit: 'maxTokens', reservedValue: 400 - 45 } });
    expect(server.chatRequests[3].max_tokens).toBeUndefined();
    expect(llm.spent).toEqual({ calls: 4, tokens: 60, costUsd: 0 });
  });

  test('cost reservations use the price table and cap parallel calls under maxCostUsd', async () => {
    const prices = { 'writer-model': { inputPerMTok: 1000, outputPerMTok: 2000 } };
    const { llm, server } = await scripted(() => ({ content: 'ok', delayMs: 100, usage: { prompt_tokens: 5, completion_tokens: 5 } }), {
      prices,
      budget: { maxCostUsd: 0.3 }
    });
    // Each reserves 26 × $0.001 + 50 × $0.002 = $0.126: two fit in $0.30.
    const { values, errors } = await settleAll(Array.from({ length: 6 }, (_, i) => llm.complete({ role: 'writing', messages: user(`q${i}`), maxTokens: 50 })));
    expect(server.chatRequests).toHaveLength(2);
    expect(values).toHaveLength(2);
    expect(errors.every(e => e instanceof BudgetExceededError && e.limit === 'maxCostUsd')).toBe(true);
    expect(llm.spent.costUsd).toBeCloseTo(2 * 0.015);
  });

  test('every HTTP attempt counts: retries use up maxCalls, and the next retry is refused', async () => {
    const { llm, server, rows } = await scripted(sequence([{ status: 500 }, { status: 500 }, 'ok']), { budget: { maxCalls: 2 } });
    const err = await llm.complete({ role: 'writing', messages: user('a') }).catch(e => e);
    expect(err).toBeInstanceOf(BudgetExceededError);
    expect(err).toMatchObject({ limit: 'maxCalls', spentValue: 2 });
    expect(server.chatRequests).toHaveLength(2);
    expect(llm.spent.calls).toBe(2);
    expect(rows).toHaveLength(1);
    expect(rows[0].error).toMatch(/maxCalls/);
  });

  test('a model without a price under a cost cap is refused up front, naming the model and NANORESEARCH_LLM_PRICES', async () => {
    const { llm, server, rows } = await scripted(() => 'ok', { prices: { other: { inputPerMTok: 1, outputPerMTok: 1 } } });
    const stage = llm.scoped({ budget: { maxCostUsd: 0.5 }, stageRunId: 'sr_1' });
    const err = await stage.complete({ role: 'writing', messages: user('a') }).catch(e => e);
    expect(err).toBeInstanceOf(UnpricedModelError);
    expect(err).toBeInstanceOf(LlmError);
    expect(err.message).toMatch(/The model "writer-model" has no price, so the cost cap of stage run sr_1 \(maxCostUsd \$0\.5\) cannot be kept/);
    expect(err.message).toContain(`NANORESEARCH_LLM_PRICES='{"writer-model": {"inputPerMTok"`);
    expect(server.chatRequests).toHaveLength(0);
    expect(rows).toHaveLength(0);
    // Without a cost cap the same model is used (and its rows say it is unpriced).
    expect((await llm.complete({ role: 'writing', messages: user('a') })).text).toBe('ok');
    expect(rows[0].cost_usd).toBeNull();
  });
});

describe('time limits', () => {
  /** A server that sends the headers at once and then the body one byte per second. */
  const dripping: LlmScript = () => ({ content: 'a slow answer', dripMs: 1000 });

  test('an answer dripping one byte a second is cut at timeoutMs (headers and body), ±10%', async () => {
    // A whole-call deadline well past the attempt's limit: the attempt's timeout is what must cut it.
    const { llm, server } = await scripted(dripping, { timeoutMs: 3000, deadlineMs: 10_000, maxRetries: 0 });
    const started = Date.now();
    const err = await llm.complete({ role: 'writing', messages: user('a') }).catch(e => e);
    const elapsed = Date.now() - started;
    expect(err).toBeInstanceOf(LlmError);
    expect(err.message).toContain('did not answer within 3000 ms (headers and body)');
    expect(elapsed).toBeGreaterThanOrEqual(2700);
    expect(elapsed).toBeLessThanOrEqual(3300);
    expect(server.requests[0].sent).toMatchObject({ complete: false });
    expect(server.requests[0].sent!.bytes).toBeGreaterThan(0);
  });

  test('the whole-call deadline holds across retries, ±10%', async () => {
    const { llm, server } = await scripted(dripping, { timeoutMs: 2000, deadlineMs: 3000, maxRetries: 5 });
    const started = Date.now();
    const err = await llm.complete({ role: 'writing', messages: user('a') }).catch(e => e);
    const elapsed = Date.now() - started;
    expect(err).toBeInstanceOf(LlmError);
    expect(err.message).toMatch(/did not answer within \d+ ms, what was left of the call's deadline/);
    expect(err.message).toContain('deadlineMs');
    expect(elapsed).toBeGreaterThanOrEqual(2700);
    expect(elapsed).toBeLessThanOrEqual(3300);
    expect(server.chatRequests).toHaveLength(2);
  });

  test('a Retry-After wait longer than what is left of the deadline is not waited', async () => {
    const { llm, server } = await scripted(sequence([{ status: 429, headers: { 'retry-after': '30' } }, 'ok']), { deadlineMs: 2000 });
    const started = Date.now();
    const err = await llm.complete({ role: 'writing', messages: user('a') }).catch(e => e);
    expect(Date.now() - started).toBeLessThan(1000);
    expect(err).toBeInstanceOf(LlmError);
    expect(err.status).toBe(429);
    expect(err.message).toMatch(/the server asked to wait 30000 ms \(Retry-After\), past the call's deadline of 2000 ms/);
    expect(server.chatRequests).toHaveLength(1);
  });
});

describe('response size', () => {
  const big = 'x'.repeat(40 * 1024 * 1024);

  test('a 40 MiB answer is refused at the 8 MiB default cap from its content-length, and not retried', async () => {
    const { llm, server } = await scripted(() => big);
    const err = await llm.complete({ role: 'writing', messages: user('a') }).catch(e => e);
    expect(err).toBeInstanceOf(LlmError);
    expect(err.message).toMatch(/the answer is larger than 8388608 bytes \(content-length \d+\)/);
    expect(err.message).toContain('maxResponseBytes');
    expect(server.chatRequests).toHaveLength(1);
  });

  test('without content-length the reading stops at the cap', async () => {
    const { llm, server } = await scripted(() => ({ content: big, chunked: true }));
    const err = await llm.complete({ role: 'writing', messages: user('a') }).catch(e => e);
    expect(err.message).toMatch(/the answer is larger than 8388608 bytes \(more than 8388608 bytes read\)/);
    expect(server.requests[0].sent!.complete).toBe(false);
    expect(server.requests[0].sent!.bytes).toBeLessThan(big.length);
  });

  test('the cap is configurable', async () => {
    const { llm } = await scripted(req => (String(req.messages[0].content) === 'long' ? 'y'.repeat(2000) : 'short'), { maxResponseBytes: 1500 });
    expect((await llm.complete({ role: 'writing', messages: user('short') })).text).toBe('short');
    await expect(llm.complete({ role: 'writing', messages: user('long') })).rejects.toThrow(/larger than 1500 bytes/);
  });
});

describe('empty answers', () => {
  test('null content is an error and is not cached: the same request goes out again', async () => {
    const home = fs.mkdtempSync(path.join(os.tmpdir(), 'nr-llm-limits-'));
    const store = await Store.open({ path: path.join(home, 'store.duckdb') });
    const server = await startScriptedLlmServer(sequence([{ content: null }, 'real answer']));
    try {
      const llm = createLlm({ provider: 'openai', baseURL: server.url, models: { default: 'writer-model' }, maxRetries: 0 }, store);
      const req = { role: 'writing' as const, messages: user('same') };
      const err = await llm.complete(req).catch(e => e);
      expect(err).toBeInstanceOf(LlmError);
      expect(err.message).toMatch(/returned no content \(null\) for model "writer-model"/);
      expect(await store.read(q => q.get('SELECT count(*) AS n FROM llm_cache'))).toEqual({ n: 0 });
      expect((await llm.complete(req)).text).toBe('real answer');
      expect(server.chatRequests).toHaveLength(2);
      expect((await llm.complete(req)).cached).toBe(true);
      expect(server.chatRequests).toHaveLength(2);
    } finally {
      await server.close();
      await store.close();
      fs.rmSync(home, { recursive: true, force: true });
    }
  });

  test('an empty answer is retried; one cut off by the token limit before any text is not', async () => {
    const empty = await scripted(sequence(['', 'second try']));
    expect((await empty.llm.complete({ role: 'writing', messages: user('a') })).text).toBe('second try');
    expect(empty.server.chatRequests).toHaveLength(2);
    await empty.server.close();

    const cut = await scripted(() => ({ content: '', finishReason: 'length' }));
    await expect(cut.llm.complete({ role: 'writing', messages: user('a'), maxTokens: 4 })).rejects.toThrow(
      /an empty answer .*: the token limit \(4\) was reached before any text.*choose a model that answers directly for this role \(NANORESEARCH_MODEL_<ROLE>, then restart the kernel\)/
    );
    expect(cut.server.chatRequests).toHaveLength(1);
  });
});
