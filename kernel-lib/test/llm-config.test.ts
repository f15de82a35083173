import * as path from 'path';
import { createLlm, extractJson, findRepoRoot, LlmError, ggufPathFor, llmConfigFromEnv, stripThinking } from '../src/llm';

describe('llmConfigFromEnv', () => {
  test('a base URL selects the OpenAI-compatible provider with per-role models and JSON mode', () => {
    const config = llmConfigFromEnv({
      NANORESEARCH_LLM_BASE_URL: 'http://127.0.0.1:8000/v1',
      OPENAI_BASE_URL: 'http://ignored/v1',
      OPENAI_API_KEY: 'sk-test',
      NANORESEARCH_MODEL: 'qwen',
      NANORESEARCH_MODEL_PLANNER: 'planner-lora',
      NANORESEARCH_MODEL_JUDGE: 'big',
      NANORESEARCH_JSON_MODE: 'json_object',
      NANORESEARCH_LLM_TIMEOUT_MS: '5000',
      NANORESEARCH_LLM_PRICES: '{"qwen": {"inputPerMTok": 0.1, "outputPerMTok": 0.2}}'
    });
    expect(config).toEqual({
      provider: 'openai',
      baseURL: 'http://127.0.0.1:8000/v1',
      apiKey: 'sk-test',
      models: { default: 'qwen', planner: 'planner-lora', judge: 'big' },
      jsonMode: 'json_object',
      timeoutMs: 5000,
      prices: { qwen: { inputPerMTok: 0.1, outputPerMTok: 0.2 } }
    });
  });

  test('OPENAI_BASE_URL works alone, and NANORESEARCH_LLM_API_KEY wins over OPENAI_API_KEY', () => {
    const config = llmConfigFromEnv({ OPENAI_BASE_URL: 'http://h/v1', OPENAI_API_KEY: 'a', NANORESEARCH_LLM_API_KEY: 'b' });
    expect(config).toMatchObject({ provider: 'openai', baseURL: 'http://h/v1', apiKey: 'b', models: { default: 'gpt-4o-mini' } });
  });

  test('without a base URL the embedded models serve their roles, from NANORESEARCH_MODELS_DIR or the repository', () => {
    expect(llmConfigFromEnv({ NANORESEARCH_MODELS_DIR: '/opt/models' })).toEqual({
      provider: 'local',
      modelsDir: '/opt/models',
      models: { default: 'qwen2.5-coder-1.5b-instruct-q4_k_m', planner: 'SmolLM2-135M-Instruct.Q4_1' }
    });
    const repo = findRepoRoot(__dirname)!;
    expect(llmConfigFromEnv({}).modelsDir).toBe(path.join(repo, 'models'));
    // One model named for every role replaces the embedded roles; a role's own still wins.
    expect(llmConfigFromEnv({ NANORESEARCH_MODEL: 'my.gguf', NANORESEARCH_MODEL_PLANNER: 'SmolLM2-135M-Instruct.Q4_1' }).models).toEqual({
      default: 'my.gguf',
      planner: 'SmolLM2-135M-Instruct.Q4_1'
    });
  });

  test('a model name maps to its GGUF file: an embedded model, a .gguf path, or <name>.gguf in the folder', () => {
    expect(ggufPathFor('SmolLM2-135M-Instruct.Q4_1', '/m')).toBe('/m/SmolLM2-135M-Instruct.Q4_1.gguf');
    expect(ggufPathFor('qwen2.5-coder-1.5b-instruct-q4_k_m', '/m')).toBe('/m/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf');
    expect(ggufPathFor('/data/other.gguf', '/m')).toBe('/data/other.gguf');
    expect(ggufPathFor('mine', '/m')).toBe('/m/mine.gguf');
  });

  test('bad values are refused with the variable named', () => {
    expect(() => llmConfigFromEnv({ NANORESEARCH_JSON_MODE: 'xml' })).toThrow(/NANORESEARCH_JSON_MODE=xml/);
    expect(() => llmConfigFromEnv({ NANORESEARCH_LLM_MAX_RETRIES: '-1' })).toThrow(/NANORESEARCH_LLM_MAX_RETRIES/);
    expect(() => llmConfigFromEnv({ NANORESEARCH_LLM_PRICES: '{"m": {}}' })).toThrow(/NANORESEARCH_LLM_PRICES\["m"\]/);
  });

  test('a missing embedded model says how to get it, and the failed call is recorded', async () => {
    const rows: unknown[] = [];
    const llm = createLlm({ provider: 'local', modelsDir: '/nonexistent', models: { default: 'model' } }, undefined, {
      onCall: row => rows.push(row)
    });
    const err = await llm.complete({ role: 'planner', messages: [{ role: 'user', content: 'x' }] }).catch(e => e);
    expect(err).toBeInstanceOf(LlmError);
    expect(err.message).toContain('/nonexistent/model.gguf (model model) is missing');
    expect(err.message).toContain('npm start');
    expect(rows).toEqual([expect.objectContaining({ role: 'planner', model: 'model', error: expect.stringContaining('missing') })]);
  });
});

describe('answer cleaning', () => {
  test('stripThinking removes closed, orphan-closing and unterminated leading blocks', () => {
    expect(stripThinking('<think>a</think>B<think>c</think>D')).toBe('BD');
    expect(stripThinking('reasoning without the opening tag</think>\nAnswer')).toBe('Answer');
    expect(stripThinking('<THINK>cut off')).toBe('');
    expect(stripThinking('no thinking at all')).toBe('no thinking at all');
  });

  test('extractJson takes the whole answer, a fence, or the first balanced object', () => {
    expect(extractJson('[1, 2]')).toEqual({ value: [1, 2] });
    expect(extractJson('```\n{"a": 1}\n```')).toEqual({ value: { a: 1 } });
    expect(extractJson('x {"a": "}{", "b": [1, {"c": "\\"}"}]} y {"d": 2}')).toEqual({ value: { a: '}{', b: [1, { c: '"}' }] } });
    expect(extractJson('{broken {"ok": true}')).toEqual({ value: { ok: true } });
    expect(extractJson('{"unterminated": ')).toBeUndefined();
    expect(extractJson('plain prose')).toBeUndefined();
  });
});
