/**
 * Retrieval benchmark: stores with 1k, 10k and 100k records (memories + skills, ~40-word
 * texts from a seeded generator), then p50/p99 of one stage's retrieval (skills + memories).
 * Run: `npm run build -w kernel-lib && npm run bench:retrieval -w kernel-lib`.
 * `buildRetrievalStore` is exported so other benches can reuse the same corpus.
 */
import fs from 'fs';
import os from 'os';
import path from 'path';
import type { Memory, Skill } from '@nanoresearch/schema';
import { Store } from '../store';
import { MEMORY_KINDS, memoryFromRow } from '../memory/records';
import { GLOBAL_KINDS } from '../memory/records';
import { indexDocuments, memoryText, skillText } from '../retrieval/terms';
import { retrieve } from '../retrieval/retrieve';
import type { StageName } from '../orchestrator/types';

/** Deterministic PRNG (mulberry32): the same seed always builds the same corpus. */
export function seededRandom(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Research vocabulary, most frequent first; a synthetic tail of dataset/method names follows it. */
const COMMON_WORDS = (
  'model training data baseline experiment result accuracy loss dataset method evaluation ablation seed learning ' +
  'rate batch validation test performance layer network feature metric budget gpu hour compute epoch optimizer ' +
  'adam schedule warmup regularisation dropout weight decay overfitting generalisation benchmark split fold cross ' +
  'variance standard deviation confidence interval significance paired bootstrap table figure paper section claim ' +
  'evidence citation review reviewer novelty related work hypothesis idea direction failure success memory skill ' +
  'planning writing analysis linear logistic regression tree boosting forest transformer attention convolution ' +
  'recurrent embedding token vocabulary pretraining finetuning lora adapter distillation teacher student prompt ' +
  'retrieval index query ranking bm25 precision recall f1 auc calibration robustness shift domain transfer tabular ' +
  'image text audio graph node edge classification detection segmentation generation translation summarisation ' +
  'noise label clean augmentation mixup cutout normalisation quantile standardisation missing imputation outlier ' +
  'sample size small large scale scaling law parameter count memory footprint latency throughput cpu quantisation ' +
  'pruning sparsity sweep grid search hyperparameter tuning random bayesian early stopping patience checkpoint resume ' +
  'crash traceback error bug fix dependency version environment reproducibility log artifact manifest metrics json'
).split(' ');

function zipfSampler(vocabulary: readonly string[], exponent: number, rand: () => number): () => string {
  const cumulative: number[] = [];
  let total = 0;
  for (let i = 0; i < vocabulary.length; i++) {
    total += 1 / Math.pow(i + 1, exponent);
    cumulative.push(total);
  }
  return () => {
    const u = rand() * total;
    let lo = 0;
    let hi = cumulative.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cumulative[mid] < u) lo = mid + 1;
      else hi = mid;
    }
    return vocabulary[lo];
  };
}

/** A generator of research-note-like texts: Zipf over common research words plus a long tail of rare names. */
export function textGenerator(seed: number): { text: (words: number) => string; rand: () => number } {
  const rand = seededRandom(seed);
  const tail = Array.from({ length: 20_000 }, (_, i) => `${['ds', 'net', 'algo', 'corpus'][i % 4]}${i}`);
  const word = zipfSampler([...COMMON_WORDS, ...tail], 1.0, rand);
  return { rand, text: words => Array.from({ length: words }, word).join(' ') };
}

export interface BuildOptions {
  /** Total records; `skillShare` of them are skills, the rest memories. */
  records: number;
  skillShare?: number;
  /** Projects the project memories are spread over. */
  projects?: number;
  seed?: number;
  /** Store folder; a fresh temporary one by default. */
  home?: string;
}

const STAGES: readonly StageName[] = ['ideation', 'planning', 'experiment', 'analysis', 'writing', 'review'];

/** Builds a store with a synthetic corpus of memories and skills, indexed like real writes. */
export async function buildRetrievalStore(options: BuildOptions): Promise<{ store: Store; home: string }> {
  const home = options.home ?? fs.mkdtempSync(path.join(os.tmpdir(), 'nr-bench-retrieval-'));
  const store = await Store.open({ home });
  const gen = textGenerator(options.seed ?? 7);
  const nSkills = Math.round(options.records * (options.skillShare ?? 0.2));
  const nMemories = options.records - nSkills;
  const projects = options.projects ?? 10;
  const at = (i: number) => new Date(Date.UTC(2026, 0, 1) - Math.floor(gen.rand() * 400) * 86_400_000 - i).toISOString();
  const BATCH = 5000;
  for (let start = 0; start < nMemories; start += BATCH) {
    const memories: Memory[] = [];
    for (let i = start; i < Math.min(nMemories, start + BATCH); i++) {
      const kind = MEMORY_KINDS[i % MEMORY_KINDS.length];
      const content = gen.text(40);
      memories.push(
        memoryFromRow({
          id: `mem_bench_${i}`,
          kind,
          scope: GLOBAL_KINDS.has(kind) ? 'global' : `proj_${i % projects}`,
          key: content.slice(0, 60),
          content,
          tags: [`tag${i % 50}`, `tag${(i * 7) % 50}`],
          stages: [STAGES[i % STAGES.length]],
          conditions: kind === 'failed_direction' ? { dataset: `ds${i % 30}`, budget: `${1 + (i % 4)} gpu hours` } : null,
          importance: gen.rand(),
          confidence: gen.rand(),
          support_count: 1,
          contradiction_count: 0,
          usage_count: Math.floor(gen.rand() * 5),
          status: 'active',
          source: 'bench',
          created_at: at(i),
          updated_at: at(i),
          last_used_at: null
        })
      );
    }
    await store.write(async q => {
      await q.appendRows('memories', memories as unknown as Record<string, unknown>[]);
      await indexDocuments(q, 'memory', memories.map(m => ({ id: m.id, text: memoryText(m), tags: m.tags })));
    });
  }
  for (let start = 0; start < nSkills; start += BATCH) {
    const skills: Skill[] = [];
    for (let i = start; i < Math.min(nSkills, start + BATCH); i++) {
      skills.push({
        id: `bench-skill-${i}`,
        name: gen.text(4),
        description: gen.text(12),
        when_to_use: gen.text(8),
        instructions: [gen.text(8), gen.text(8), gen.text(8)],
        stages: [STAGES[i % STAGES.length]],
        tags: [`tag${i % 50}`],
        source: 'distilled',
        version: 1,
        status: 'active',
        usage_count: Math.floor(gen.rand() * 10),
        success_count: 0,
        created_at: at(i),
        updated_at: at(i)
      });
    }
    await store.write(async q => {
      await q.appendRows('skills', skills as unknown as Record<string, unknown>[]);
      await indexDocuments(q, 'skill', skills.map(s => ({ id: s.id, text: skillText(s), tags: s.tags })));
    });
  }
  return { store, home };
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** p50/p99 of `retrieve` for one stage over `queries` seeded queries. */
export async function measureRetrieval(store: Store, queries: number, seed = 99): Promise<{ p50: number; p99: number }> {
  const gen = textGenerator(seed);
  const times: number[] = [];
  const warmup = 5;
  for (let i = 0; i < queries + warmup; i++) {
    const started = performance.now();
    await retrieve(store, {
      stage: STAGES[i % STAGES.length],
      query: gen.text(10),
      tags: [`tag${i % 50}`],
      projectId: `proj_${i % 10}`,
      conditions: { dataset: `ds${i % 30}` }
    });
    if (i >= warmup) times.push(performance.now() - started);
  }
  times.sort((a, b) => a - b);
  return { p50: percentile(times, 50), p99: percentile(times, 99) };
}

async function main(): Promise<void> {
  const sizes = process.argv.slice(2).map(Number).filter(n => n > 0);
  console.log('retrieval bench: one stage = skills + memories, top-5 each; times in ms');
  for (const records of sizes.length ? sizes : [1_000, 10_000, 100_000]) {
    const t0 = performance.now();
    const { store, home } = await buildRetrievalStore({ records });
    const built = (performance.now() - t0) / 1000;
    const { p50, p99 } = await measureRetrieval(store, records >= 100_000 ? 100 : 200);
    console.log(`${String(records).padStart(7)} records  p50 ${p50.toFixed(2).padStart(7)}  p99 ${p99.toFixed(2).padStart(7)}  (built in ${built.toFixed(1)} s)`);
    await store.close();
    fs.rmSync(home, { recursive: true, force: true });
  }
}

if (require.main === module) {
  main().catch(error => {
    console.error(error instanceof Error ? error.stack : error);
    process.exit(1);
  });
}
