/**
 * The embedded provider with the REAL embedded planner model, SmolLM2-135M (node-llama-cpp on
 * the CPU): schema-constrained planner output, a LoRA adapter that changes the generation, and
 * calls that reuse the kept context sequence. Needs models/ (npm start / scripts/setup) and, for
 * the adapter, the `gguf` Python package in the repository's .venv.
 */
import { execFileSync } from 'child_process';
import { existsSync, mkdtempSync, rmSync } from 'fs';
import { tmpdir } from 'os';
import * as path from 'path';
import type { Memory, PlannerOutput, Skill } from '@nanoresearch/schema';
import { plannerMaxTokens, plannerSchemaFor } from '../src/planner';
import { schemaErrors } from '../src/validate';
import {
  createLlm,
  disposeLocalModels,
  findRepoRoot,
  ggufPathFor,
  LlmError,
  llmConfigFromEnv,
  validateAgainst,
  type LlmActivity,
  type LlmCallRecord
} from '../src/llm';

const repoRoot = findRepoRoot(__dirname)!;
const python = path.join(repoRoot, '.venv', 'bin', 'python');
const work = mkdtempSync(path.join(tmpdir(), 'nr-llm-local-'));
afterAll(async () => {
  await disposeLocalModels();
  rmSync(work, { recursive: true, force: true });
});

/** Unloaded, the whole file takes about 30 s on 2 cores; the limits leave room for a busy machine. */
const SLOW_MS = 240_000;
const config = { ...llmConfigFromEnv({}), contextSize: 2048 };
const rows: LlmCallRecord[] = [];
const llm = createLlm(config, undefined, { onCall: row => rows.push(row) });

test('the default config points at the embedded models in the repository, each file present', () => {
  expect(config.provider).toBe('local');
  expect(config.modelsDir).toBe(path.join(repoRoot, 'models'));
  for (const model of Object.values(config.models)) expect(existsSync(ggufPathFor(model, config.modelsDir!))).toBe(true);
});

test(
  'the 135M planner under its per-call schema returns a valid plan whose ids are candidates',
  async () => {
    const candidates = {
      skills: [{ id: 'sk_baseline' }, { id: 'sk_ablate' }] as Skill[],
      memories: [{ id: 'mem_small' }] as Memory[]
    };
    const schema = plannerSchemaFor(candidates);
    const r = await llm.completeJson<PlannerOutput>({
      role: 'planner',
      jsonSchema: schema,
      maxTokens: plannerMaxTokens(schema),
      temperature: 0,
      messages: [
        { role: 'system', content: 'You choose skills and memories for a research stage. Use only the given ids.' },
        {
          role: 'user',
          content:
            'Stage: ideation. Skills: sk_baseline (start with a linear baseline), sk_ablate (ablate one factor). ' +
            'Memories: mem_small (the user prefers small MLPs). Choose the relevant ones and write a short prompt plan.'
        }
      ]
    });
    expect(validateAgainst(schema, r.value)).toEqual([]);
    expect(schemaErrors('planner-output', r.value)).toEqual([]);
    for (const id of r.value.selected_skill_ids) expect(['sk_baseline', 'sk_ablate']).toContain(id);
    for (const id of r.value.selected_memory_ids) expect(id).toBe('mem_small');
    expect(typeof r.value.prompt_plan).toBe('string');
    expect(r.usage.promptTokens).toBeGreaterThan(50);
    expect(r.usage.completionTokens).toBeGreaterThan(5);
    expect(r.costUsd).toBe(0);
    expect(rows[rows.length - 1]).toMatchObject({ role: 'planner', cost_usd: 0, error: null, model: 'SmolLM2-135M-Instruct.Q4_1' });
  },
  SLOW_MS
);

test(
  'a LoRA adapter GGUF loads per call and changes the generation',
  async () => {
    const adapter = path.join(work, 'adapter.gguf');
    execFileSync(python, ['-c', WRITE_LORA, adapter], { stdio: 'pipe' });
    const ask = { role: 'planner' as const, messages: [{ role: 'user' as const, content: 'Name three colours.' }], maxTokens: 12, temperature: 0 };
    const base = await llm.complete(ask);
    const adapted = await llm.complete({ ...ask, adapter: { name: 'test-lora', ggufPath: adapter, peftDir: path.dirname(adapter) } });
    const baseAgain = await llm.complete({ ...ask, cache: false });
    expect(base.text.length).toBeGreaterThan(0);
    expect(adapted.cached).toBe(false);
    expect(adapted.text).not.toBe(base.text);
    // Greedy decoding without the adapter is reproducible: the difference is the adapter's.
    expect(baseAgain.text).toBe(base.text);
  },
  SLOW_MS
);

test(
  'a call in flight reports its text as it is generated, for the live card',
  async () => {
    const seen: LlmActivity[] = [];
    const live = llm.scoped({ onActivity: a => seen.push(a) });
    const r = await live.complete({
      role: 'planner',
      messages: [{ role: 'user', content: 'Count from one to five in words.' }],
      maxTokens: 16,
      temperature: 0,
      cache: false
    });
    const texts = seen.filter((a): a is Extract<LlmActivity, { type: 'text' }> => a.type === 'text');
    expect(seen[0].type).toBe('start');
    expect(seen[seen.length - 1].type).toBe('end');
    // Several updates before the end, each the answer so far (a short answer: not cut to the preview's tail), counting up.
    expect(texts.length).toBeGreaterThan(1);
    expect(texts.map(t => t.tokens)).toEqual(texts.map((_, i) => i + 1));
    expect(r.text.trim().startsWith(texts[0].text.trim())).toBe(true);
    expect(texts[texts.length - 1].text.trim()).toBe(r.text.trim());
  },
  SLOW_MS
);

test('a missing adapter file fails with a clear error', async () => {
  const err = await llm
    .complete({ role: 'planner', messages: [{ role: 'user', content: 'x' }], adapter: { name: 'none', ggufPath: path.join(work, 'none.gguf'), peftDir: work } })
    .catch(e => e);
  expect(err).toBeInstanceOf(LlmError);
  expect(err.message).toMatch(/LoRA adapter file .*none\.gguf is missing/);
});

/**
 * Writes a rank-4 LoRA adapter for SmolLM2-135M (hidden 576, 30 layers, 3 KV heads of 64) on
 * attn_q and attn_v, in the layout llama.cpp reads: lora_a (r, in), lora_b (out, r).
 */
const WRITE_LORA = `
import sys, numpy as np, gguf
rank, hidden, kv = 4, 576, 192
rng = np.random.default_rng(0)
w = gguf.GGUFWriter(sys.argv[1], "llama")
w.add_type("adapter")
w.add_string("adapter.type", "lora")
w.add_float32("adapter.lora.alpha", float(rank))
for i in range(30):
    for name, out in (("attn_q", hidden), ("attn_v", kv)):
        w.add_tensor(f"blk.{i}.{name}.weight.lora_a", (rng.standard_normal((rank, hidden)) * 0.3).astype(np.float32))
        w.add_tensor(f"blk.{i}.{name}.weight.lora_b", (rng.standard_normal((out, rank)) * 0.3).astype(np.float32))
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
`;
