/**
 * One rendering, used by both sides (issue 10, item 2), on the REAL embedded planner
 * (SmolLM2-135M-Instruct Q4_1, node-llama-cpp on the CPU) and the REAL trainer (.venv):
 *
 * - the x the planner stores is the prompt the model evaluates, token for token (chat template,
 *   the JSON instruction's system message, up to the assistant header);
 * - the trainer reads x back to the very same ids, renders the same call from its messages to the
 *   same ids, and puts the feedback block at the one documented place (before the template's
 *   end-of-turn + assistant header);
 * - log p(y|x): llama.cpp's distribution vs the trainer's scoring. The trainer computes with the
 *   GGUF's weights dequantised to float32; llama.cpp on the shipped Q4_1 file computes with
 *   quantised activations and an F16 KV cache, which moves single tokens by up to a few tenths of
 *   a nat (measured and printed, bounded loosely). On an F32 copy of the same weights with an F32
 *   KV cache the two agree within 1e-3 per token: the rendering and the scoring are the same, the
 *   rest is llama.cpp's quantised arithmetic.
 *
 * Needs models/ and .venv (npm start / scripts/setup). About 3-5 minutes on 2 loaded cores.
 */
import { execFileSync } from 'child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'fs';
import { tmpdir } from 'os';
import * as path from 'path';
import type { Memory, Skill } from '@nanoresearch/schema';
import { createLlm, disposeLocalModels, findRepoRoot, ggufPathFor, llmConfigFromEnv } from '../src/llm';
import { LocalProvider } from '../src/llm/providers/local';
import { Planner, buildPlannerInput, plannerSchemaFor, plannerUserText } from '../src/planner';
import { getArchetype } from '../src/profiles';
import { Store } from '../src/store';

const repoRoot = findRepoRoot(__dirname)!;
const python = path.join(repoRoot, '.venv', 'bin', 'python');
const work = mkdtempSync(path.join(tmpdir(), 'nr-render-'));
const config = { ...llmConfigFromEnv({}), contextSize: 2048, threads: 1 };
const plannerModel = config.models.planner ?? config.models.default;
const q4Path = ggufPathFor(plannerModel, config.modelsDir!);
const f32Path = path.join(work, 'planner-f32.gguf');
const SLOW_MS = 900_000;

const now = '2026-01-01T00:00:00.000Z';
const skill = (id: string, name: string, description: string): Skill =>
  ({ id, name, description, instructions: ['Do it.'], source: 'builtin', version: 1, status: 'active' }) as Skill;
const memory = (id: string, content: string, kind: Memory['kind'] = 'user_constraint'): Memory =>
  ({ id, kind, scope: 'global', key: content.toLowerCase(), content, importance: 0.5, confidence: 0.5, status: 'active', created_at: now }) as Memory;
const request = {
  stageRunId: 'sr_render',
  stage: 'planning' as const,
  topic: 'Small MLPs on tabular data',
  profile: getArchetype('ablation-focused'),
  skills: [
    skill('linear-baseline', 'Linear baseline', 'Compare every model against a linear baseline.'),
    skill('ablation-grid', 'Ablation grid', 'Ablate one component at a time.'),
    skill('seed-variance', 'Seed variance', 'Report the spread over three seeds.')
  ],
  memories: [memory('mem_cpu', 'Experiments must run on a CPU in minutes.'), memory('mem_mlp', 'A 4-layer MLP overfit.', 'failed_direction')]
};
const feedback = 'Always include a linear baseline and report three seeds.';

let store: Store;
const provider = new LocalProvider({ modelsDir: config.modelsDir, contextSize: 2048, threads: 1, timeoutMs: 0 });
const promptTokens: number[] = [];

beforeAll(async () => {
  store = await Store.open({ path: path.join(work, 'store.duckdb') });
});
afterAll(async () => {
  await store?.close();
  await disposeLocalModels();
  rmSync(work, { recursive: true, force: true });
});

interface ScoreRow {
  rendered: boolean;
  prompt_ids: number[];
  teacher_prompt_ids: number[];
  response_ids: number[];
  eos_appended: boolean;
  logprobs: number[];
}

/** llama.cpp's own tokenisation of a plain text (no special tokens parsed). */
async function llamaTokenize(modelPath: string, text: string): Promise<number[]> {
  const lib = await import('node-llama-cpp');
  const llama = await lib.getLlama({ gpu: false, build: 'never', logLevel: lib.LlamaLogLevel.error });
  try {
    const model = await llama.loadModel({ modelPath, vocabOnly: true });
    return [...model.tokenize(text, false)] as number[];
  } finally {
    await llama.dispose();
  }
}

/** log p(tokens[i] | tokens[<i]) for i >= from, from llama.cpp with an F32 KV cache and no flash attention. */
async function llamaLogprobsF32(modelPath: string, tokens: number[], from: number): Promise<number[]> {
  const lib = await import('node-llama-cpp');
  const llama = await lib.getLlama({ gpu: false, build: 'never', logLevel: lib.LlamaLogLevel.error });
  try {
    const model = await llama.loadModel({ modelPath });
    const context = await model.createContext({
      contextSize: 2048,
      threads: 1,
      sequences: 1,
      flashAttention: false,
      experimentalKvCacheKeyType: 'F32',
      experimentalKvCacheValueType: 'F32'
    });
    const ids = tokens as never[];
    const out = await context
      .getSequence()
      .controlledEvaluate(ids.map((t, i) => (i >= from - 1 ? [t, { generateNext: { probabilities: true } }] : t)) as never);
    return tokens.slice(from).map((t, j) => Math.log(out[from + j - 1]!.next.probabilities!.get(t as never) ?? 0));
  } finally {
    await llama.dispose();
  }
}

function gap(a: number[], b: number[]): { maxAbs: number; sum: number } {
  let maxAbs = 0;
  let sum = 0;
  a.forEach((v, i) => {
    maxAbs = Math.max(maxAbs, Math.abs(v - b[i]!));
    sum += v - b[i]!;
  });
  return { maxAbs, sum: Math.abs(sum) };
}

test(
  'the planner stores the prompt the model evaluates; the trainer reads and renders it to the same ids, and scores y as llama.cpp does',
  async () => {
    const llm = createLlm(config, undefined, { onCall: row => promptTokens.push(row.prompt_tokens) });
    const result = await new Planner(llm).plan(request);
    const call = result.call;
    expect(call.fallback).toBeNull();

    // x is the rendered prompt of exactly this call, and it is what the model was given.
    const userText = buildPlannerInput(request);
    const schema = plannerSchemaFor(request);
    const rendered = await provider.renderPrompt({ model: plannerModel, messages: [{ role: 'user', content: userText }], jsonSchema: schema });
    expect(call.x).toBe(rendered.text);
    expect(call.x.startsWith('<|im_start|>system\n')).toBe(true); // the GGUF's own template: one <|im_start|>, not two
    expect(call.x.endsWith('<|im_end|>\n<|im_start|>assistant\n')).toBe(true);
    expect(call.x).toContain(userText);
    expect(promptTokens).toEqual([rendered.tokens.length]); // the generation counted the same prompt
    // ...and the planner can recover the user message from x (used to re-ask x for fallback plans).
    expect(await plannerUserText(llm, call.x, schema)).toBe(userText);

    // The trainer's side, in one process: the shipped Q4_1 file and an F32 copy of its weights.
    execFileSync(python, [path.join(repoRoot, 'trainer', 'bench', 'dequantize_gguf.py'), q4Path, f32Path]);
    const system = /<\|im_start\|>system\n([\s\S]*?)<\|im_end\|>/.exec(call.x)![1]!;
    const requestFile = path.join(work, 'request.json');
    writeFileSync(requestFile, JSON.stringify({ rows: [{ id: 'r1', x: call.x, y: call.y, feedback }], system, user: userText, bases: [q4Path, f32Path] }));
    const out = JSON.parse(
      execFileSync(python, [path.join(repoRoot, 'trainer', 'bench', 'render_and_score.py'), requestFile], {
        encoding: 'utf8',
        maxBuffer: 64 << 20,
        env: { ...process.env, HF_HUB_DISABLE_PROGRESS_BARS: '1', TQDM_DISABLE: '1' }
      })
    ) as { template_ids: number[]; suffix_ids: number[]; scores: Record<string, ScoreRow[]> };
    const q4 = out.scores[q4Path]![0]!;
    const f32 = out.scores[f32Path]![0]!;

    // Token ids: x read back by the trainer == the call rendered by the trainer == what llama.cpp evaluates.
    expect(q4.rendered).toBe(true);
    expect(q4.prompt_ids).toEqual(rendered.tokens);
    expect(out.template_ids).toEqual(rendered.tokens);
    expect(f32.prompt_ids).toEqual(rendered.tokens);
    // Teacher: the same ids with the feedback block inserted right before the end-of-turn + assistant header.
    const cut = rendered.tokens.length - out.suffix_ids.length;
    expect(rendered.tokens.slice(cut)).toEqual(out.suffix_ids);
    expect(q4.teacher_prompt_ids.slice(0, cut)).toEqual(rendered.tokens.slice(0, cut));
    expect(q4.teacher_prompt_ids.slice(-out.suffix_ids.length)).toEqual(out.suffix_ids);
    expect(q4.teacher_prompt_ids.length).toBeGreaterThan(rendered.tokens.length + 10);

    // y: the trainer's ids of y are llama.cpp's ids of y (the EOS the trainer appends is not part of y).
    const yIds = q4.response_ids.slice(0, q4.eos_appended ? -1 : undefined);
    expect(await llamaTokenize(q4Path, call.y)).toEqual(yIds);

    // log p(y|x), token by token.
    const tokens = [...rendered.tokens, ...yIds];
    const shipped = await provider.tokenLogprobs({ model: plannerModel, tokens, from: rendered.tokens.length });
    const exactWeights = await llamaLogprobsF32(f32Path, tokens, rendered.tokens.length);
    const trainerQ4 = q4.logprobs.slice(0, yIds.length);
    const trainerF32 = f32.logprobs.slice(0, yIds.length);
    const shippedGap = gap(shipped, trainerQ4);
    const exactGap = gap(exactWeights, trainerF32);
    const sum = (v: number[]) => v.reduce((a, b) => a + b, 0);
    process.stdout.write(
      `log p(y|x) over ${yIds.length} tokens of y: trainer ${sum(trainerQ4).toFixed(4)} nats; ` +
        `llama.cpp Q4_1 (shipped, F16 KV) ${sum(shipped).toFixed(4)} (max per-token gap ${shippedGap.maxAbs.toFixed(4)}, total gap ${shippedGap.sum.toFixed(4)}); ` +
        `llama.cpp F32 weights + F32 KV ${sum(exactWeights).toFixed(4)} (max per-token gap ${exactGap.maxAbs.toExponential(2)}, total gap ${exactGap.sum.toExponential(2)})\n`
    );
    // The trainer computes with the Q4_1 weights dequantised: the F32 copy holds the very same numbers.
    expect(gap(trainerF32, trainerQ4).maxAbs).toBeLessThan(1e-6);
    expect(exactGap.maxAbs).toBeLessThanOrEqual(1e-3);
    expect(shippedGap.maxAbs).toBeLessThan(1); // llama.cpp's Q4_1 arithmetic, not a different context
  },
  SLOW_MS
);
