/**
 * The planner on a LoRA-serving endpoint: the real trainer (the repository's .venv, a tiny random
 * Llama built locally) writes each round's PEFT folder, train() publishes it to a loopback server
 * speaking vLLM's documented LoRA API (test/lora-fixtures.ts), and the planner role asks that
 * server with the adapter's name as the model. A server that refuses the adapter or cannot be
 * reached leaves the previous adapter active, with a message naming the server, its answer and
 * the fix. llama.cpp's server (adapters fixed at start, picked per request by id) likewise.
 */
import { promises as fs } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { createLlm, llmConfigFromEnv, LoraServer, modelsReport, plannerServerFromEnv, type Llm, type PlannerServerConfig } from '../src/llm';
import { Store } from '../src/store';
import { activeAdapter, adapterOf, listAdapters, train, TrainingError, useAdapter, type ActiveAdapter } from '../src/trainer';
import { startLlamaCppFixture, startVllmFixture, type LoraFixture } from './lora-fixtures';
import { writeTinyModel } from './tiny-model';

jest.setTimeout(240_000);

const BASE = 'tiny-llama-base';
const ROWS = [
  { id: 'r1', x: 'topic t1', y: 'alpha a1 a2', feedback: 'likes alpha', stage: 'planning' },
  { id: 'r2', x: 'topic t2', y: 'beta b1', feedback: 'likes alpha', stage: 'planning' }
];
const ask = [{ role: 'user' as const, content: 'plan the stage' }];

let home: string;
let tinyModel: string;
let store: Store;
let vllm: LoraFixture;
const exportRows = async (_store: Store, file: string) => {
  await fs.writeFile(file, ROWS.map(r => JSON.stringify(r)).join('\n') + '\n');
  return ROWS.length;
};

function plannerLlm(plannerServer: PlannerServerConfig): Llm {
  return createLlm({
    provider: 'openai',
    baseURL: 'http://127.0.0.1:9/v1', // the other roles' server: never called here
    models: { default: 'writer-model', planner: BASE },
    plannerServer,
    retryBaseDelayMs: 1,
    retryMaxDelayMs: 5,
    maxRetries: 1
  });
}

const round = (llm: Llm, extra: { fresh?: boolean; rank?: number } = {}) =>
  train(
    { store, home, llm },
    {
      steps: 1,
      base: tinyModel,
      fresh: extra.fresh,
      trainerArgs: ['--rank', String(extra.rank ?? 4), '--alpha', '8', '--threads', '1'],
      display: null,
      exportExamples: exportRows
    }
  );

beforeAll(async () => {
  home = await fs.mkdtemp(path.join(os.tmpdir(), 'nr-lora-serving-'));
  tinyModel = path.join(home, 'tiny-llama');
  writeTinyModel(tinyModel);
  store = await Store.open({ home });
  vllm = await startVllmFixture({ baseModel: BASE, maxLoraRank: 4, apiKey: 'team-key' });
});

afterAll(async () => {
  await vllm?.close();
  await store?.close();
  await fs.rm(home, { recursive: true, force: true });
});

test('NANORESEARCH_PLANNER_* configure the planner endpoint', () => {
  expect(plannerServerFromEnv({})).toBeUndefined();
  const env = {
    NANORESEARCH_PLANNER_BASE_URL: 'http://gpu:8000/v1',
    NANORESEARCH_PLANNER_API_KEY: 'k',
    NANORESEARCH_MODEL_PLANNER: 'Qwen/Qwen2.5-0.5B-Instruct'
  };
  expect(plannerServerFromEnv(env)).toEqual({ kind: 'vllm', baseURL: 'http://gpu:8000/v1', apiKey: 'k' });
  expect(plannerServerFromEnv({ ...env, NANORESEARCH_PLANNER_SERVER: 'llama.cpp' })?.kind).toBe('llama.cpp');
  const config = llmConfigFromEnv({ ...env, NANORESEARCH_LLM_BASE_URL: 'http://main/v1' });
  expect(config.plannerServer?.baseURL).toBe('http://gpu:8000/v1');
  expect(config.models.planner).toBe('Qwen/Qwen2.5-0.5B-Instruct');
  expect(modelsReport(config).roles.find(r => r.role === 'planner')).toEqual({
    role: 'planner',
    model: 'Qwen/Qwen2.5-0.5B-Instruct',
    server: "vllm LoRA server at http://gpu:8000/v1 (each user's adapter on this base model)"
  });
  expect(() => plannerServerFromEnv({ ...env, NANORESEARCH_PLANNER_SERVER: 'tgi' })).toThrow(/NANORESEARCH_PLANNER_SERVER=tgi is not one of vllm, llama.cpp/);
  expect(() => plannerServerFromEnv({ NANORESEARCH_PLANNER_BASE_URL: 'http://gpu:8000/v1' })).toThrow(
    /NANORESEARCH_MODEL_PLANNER is not: set it to the base model the server serves .*GET http:\/\/gpu:8000\/v1\/models/
  );
});

describe('vLLM', () => {
  let llm: Llm;
  let v1: ActiveAdapter;
  let v2: ActiveAdapter;
  beforeAll(() => {
    llm = plannerLlm({ kind: 'vllm', baseURL: vllm.url, apiKey: 'team-key' });
  });

  test('train() publishes the PEFT folder, then activates it; the planner names it as the model; the next round replaces it', async () => {
    const first = await round(llm);
    v1 = (await activeAdapter(store))!;
    expect(first.active).toBe(true);
    expect(v1).toMatchObject({
      version: 'v1',
      peftDir: path.join(home, 'adapters', 'v1', 'peft'),
      ggufPath: path.join(home, 'adapters', 'v1', 'adapter.gguf')
    });
    expect(v1.name).toMatch(/^nanoresearch-v1-[0-9a-f]{12}$/);
    expect(vllm.loads).toEqual([{ lora_name: v1.name, lora_path: v1.peftDir, status: 200 }]);

    const answer = await llm.complete({ role: 'planner', messages: ask, adapter: v1 });
    expect(answer.model).toBe(v1.name);
    const base = await llm.complete({ role: 'planner', messages: ask, adapter: null });
    expect(base.model).toBe(BASE);
    expect(vllm.chats.map(c => c.model)).toEqual([v1.name, BASE]);

    await round(llm);
    v2 = (await activeAdapter(store))!;
    expect(v2.version).toBe('v2');
    expect(vllm.loaded()).toEqual([v2.name]); // v1 was unloaded once the planner named v2
    expect(vllm.unloads).toEqual([v1.name]);
  });

  test('an adapter the server rejects (HTTP 400) is kept inactive; the planner keeps the previous one', async () => {
    const error = await round(llm, { fresh: true, rank: 8 }).catch(e => e);
    expect(error).toBeInstanceOf(TrainingError);
    expect(error.message).toMatch(
      new RegExp(
        `adapter v3 was trained and saved in .*adapters/v3, but the planner's LoRA server did not take it: The vLLM at ${vllm.url} refused to load adapter 'nanoresearch-v3-\\w+' ` +
          `from .*v3/peft: HTTP 400: LoRA rank 8 is greater than max_lora_rank 4.; the planner keeps adapter v2. ` +
          `Fix: .*--max-lora-rank at least the adapter's rank .*\\(this adapter: base model .*, rank 8\\); then lab.useAdapter\\('v3'\\) publishes it`
      )
    );
    expect((await listAdapters(store)).map(a => [a.version, a.active])).toEqual([
      ['v1', false],
      ['v2', true],
      ['v3', false]
    ]);
    expect((await activeAdapter(store))?.name).toBe(v2.name);
    expect(vllm.loaded()).toEqual([v2.name]);
    // Switching to it asks the server again, and the refusal leaves v2 active.
    await expect(useAdapter(store, 'v3', llm.config.plannerServer)).rejects.toThrow(/HTTP 400: LoRA rank 8 is greater than max_lora_rank 4/);
    expect((await activeAdapter(store))?.version).toBe('v2');
  });

  test('a server that is down: the new adapter stays inactive, the message names the server and how to start it', async () => {
    const gone = await startVllmFixture({ baseModel: BASE, maxLoraRank: 4 });
    await gone.close(); // a port nothing listens on
    const down = plannerLlm({ kind: 'vllm', baseURL: gone.url });
    const error = await round(down).catch(e => e);
    expect(error).toBeInstanceOf(TrainingError);
    expect(error.message).toMatch(
      new RegExp(
        `did not take it: Could not reach the planner's vLLM at ${gone.url} to list its models \\(GET ${gone.url}/models: ECONNREFUSED\\); ` +
          `the planner keeps adapter v2. Fix: start the server \\(README "Scaling out → a LoRA-serving planner endpoint"`
      )
    );
    expect((await listAdapters(store)).map(a => [a.version, a.active])).toEqual([
      ['v1', false],
      ['v2', true],
      ['v3', false],
      ['v4', false]
    ]);
    // The planner's own call fails the same way (its stage then runs on the fallback plan).
    await expect(down.complete({ role: 'planner', messages: ask, adapter: v2 })).rejects.toThrow(/Could not reach the planner's vLLM at .*ECONNREFUSED/);
  });

  test('rolling back publishes the old adapter again; a server that lost its adapters (restart) gets it again on the next call', async () => {
    await useAdapter(store, 'v1', llm.config.plannerServer);
    expect((await activeAdapter(store))?.version).toBe('v1');
    expect(vllm.loaded()).toEqual([v2.name, v1.name]);

    const before = vllm.loads.length;
    vllm.forgetAdapters();
    const fresh = plannerLlm({ kind: 'vllm', baseURL: vllm.url, apiKey: 'team-key' }); // a new kernel: publishes before its first call
    expect((await fresh.complete({ role: 'planner', messages: ask, adapter: v1 })).model).toBe(v1.name);
    vllm.forgetAdapters();
    // This process saw v1 served: its request meets a 404, and the adapter is published again.
    expect((await fresh.complete({ role: 'planner', messages: ask, adapter: v1, cache: false })).model).toBe(v1.name);
    expect(vllm.loads.slice(before).map(l => [l.lora_name, l.status])).toEqual([
      [v1.name, 200],
      [v1.name, 200]
    ]);
    expect(vllm.chats.slice(-3).map(c => c.model)).toEqual([v1.name, v1.name, v1.name]);
  });

  test('a wrong key, a folder the server cannot read, run-time loading off: each named with its fix', async () => {
    const wrongKey = await new LoraServer({ kind: 'vllm', baseURL: vllm.url, apiKey: 'wrong' }).publish(v1).catch(e => e);
    expect(wrongKey.message).toMatch(/The vLLM at .* refused to list its models: HTTP 401: Unauthorized. Fix: set NANORESEARCH_PLANNER_API_KEY/);
    const server = new LoraServer({ kind: 'vllm', baseURL: vllm.url, apiKey: 'team-key' });
    const elsewhere = await server.publish({ ...v1, name: 'nanoresearch-elsewhere', peftDir: '/not/on/this/host/peft' }).catch(e => e);
    expect(elsewhere.message).toMatch(
      /HTTP 404: Loading lora nanoresearch-elsewhere failed: No adapter found for \/not\/on\/this\/host\/peft. Fix: the server cannot read \/not\/on\/this\/host\/peft: it must see the adapter folder at the same path/
    );
    const fixed = await startVllmFixture({ baseModel: BASE, maxLoraRank: 16, runtimeLoraUpdating: false });
    try {
      const error = await new LoraServer({ kind: 'vllm', baseURL: fixed.url }).publish(v1).catch(e => e);
      expect(error.message).toMatch(
        /refused to load adapter .*: HTTP 404: Not Found. Fix: .*start vLLM with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and --enable-lora/
      );
    } finally {
      await fixed.close();
    }
  });
});

describe('llama.cpp server', () => {
  test('the planner selects its adapter by id among those the server started with; one it lacks is refused with the restart command', async () => {
    const [v1Adapter, v2Adapter, v3Adapter] = (await listAdapters(store)).map(adapterOf);
    const server = await startLlamaCppFixture({ model: BASE, loraFiles: [v1Adapter.ggufPath, v2Adapter.ggufPath] });
    try {
      const llm = plannerLlm({ kind: 'llama.cpp', baseURL: server.url });
      await llm.complete({ role: 'planner', messages: ask, adapter: v2Adapter });
      await llm.complete({ role: 'planner', messages: ask, adapter: null });
      expect(server.chats).toEqual([
        {
          model: BASE,
          lora: [
            { id: 0, scale: 0 },
            { id: 1, scale: 1 }
          ]
        },
        { model: BASE }
      ]);
      await expect(llm.complete({ role: 'planner', messages: ask, adapter: v3Adapter })).rejects.toThrow(
        new RegExp(`llama.cpp server at ${server.url} does not serve ${v3Adapter.ggufPath}.*llama.cpp loads LoRA adapters only when it starts`)
      );
      await expect(useAdapter(store, 'v3', llm.config.plannerServer)).rejects.toThrow(
        new RegExp(`Fix: restart it with the adapter: llama-server -m <base>.gguf --lora ${v3Adapter.ggufPath} --lora-init-without-apply`)
      );
      expect((await activeAdapter(store))?.version).toBe('v1');
    } finally {
      await server.close();
    }
  });
});
