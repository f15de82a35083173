import fs from 'fs';
import os from 'os';
import path from 'path';
import { Store } from '../src/store';
import { MemoryBank, memoryId } from '../src/memory';
import { retrieve } from '../src/retrieval';
import { stem, tokenize, termKey } from '../src/retrieval/tokenize';
import { compactPostings } from '../src/retrieval/terms';

let dir: string;
let store: Store;
let bank: MemoryBank;
const NOW = new Date('2026-06-01T00:00:00Z');
const daysAgo = (d: number) => new Date(NOW.getTime() - d * 86_400_000);

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nr-retrieval-'));
  store = await Store.open({ home: dir });
  bank = new MemoryBank(store);
});
afterEach(async () => {
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('tokenize', () => {
  it('lowercases, strips accents and punctuation, drops stop-words, stems lightly', () => {
    expect(tokenize('The Baselines, ablations & Résumé-ranking!')).toEqual(['baseline', 'ablate', 'resume', 'rank']);
    expect(stem('studies')).toBe('study');
    expect(stem('f1')).toBe('f1');
    expect(termKey('memory', 'seed')).not.toBe(termKey('skill', 'seed'));
    expect(Number.isSafeInteger(termKey('memory', 'seed'))).toBe(true);
  });
});

describe('retrieve memories', () => {
  it('ranks first the only memory sharing the rare query terms', async () => {
    await bank.rememberAll(
      [
        { kind: 'project_context', projectId: 'p1', content: 'The project studies small MLPs on tabular classification benchmarks.' },
        { kind: 'decision_history', projectId: 'p1', content: 'We chose Adam with cosine schedule for every tabular model.' },
        { kind: 'data_strategy', projectId: 'p1', content: 'Quantile-normalise the covertype features before the MLP sees them.' },
        { kind: 'decision_history', projectId: 'p1', content: 'Early stopping on validation loss with patience five epochs.' }
      ],
      NOW
    );
    const r = await retrieve(store, { stage: 'experiment', query: 'quantile normalisation of covertype', projectId: 'p1', now: NOW });
    expect(r.memories[0].item.content).toMatch(/Quantile-normalise the covertype/);
    expect(r.memories[0].breakdown.lexical).toBe(1);
    expect(r.memories.slice(1).every(m => m.breakdown.bm25 === 0 || m.breakdown.bm25 < r.memories[0].breakdown.bm25)).toBe(true);
  });

  it('breaks ties by importance', async () => {
    await bank.rememberAll(
      [
        { kind: 'decision_history', projectId: 'p1', key: 'a', content: 'Use gradient clipping at norm one.', importance: 0.3, confidence: 0.5 },
        { kind: 'decision_history', projectId: 'p1', key: 'b', content: 'Use gradient clipping at norm one.', importance: 0.9, confidence: 0.5 }
      ],
      NOW
    );
    // Quality (importance x confidence) is weighted 0 so the scores tie exactly.
    const r = await retrieve(store, { stage: 'planning', query: 'gradient clipping', projectId: 'p1', now: NOW, weights: { quality: 0 } });
    expect(r.memories).toHaveLength(2);
    expect(r.memories[0].score).toBeCloseTo(r.memories[1].score, 12);
    expect(r.memories[0].item.importance).toBe(0.9);
  });

  it('an old memory loses to a new identical one under decay', async () => {
    await bank.remember({ kind: 'promising_direction', projectId: 'p1', key: 'old', content: 'Mixup helps small tabular MLPs.' }, daysAgo(300));
    await bank.remember({ kind: 'promising_direction', projectId: 'p1', key: 'new', content: 'Mixup helps small tabular MLPs.' }, daysAgo(1));
    const r = await retrieve(store, { stage: 'ideation', query: 'mixup tabular', projectId: 'p1', now: NOW });
    expect(r.memories.map(m => m.item.key)).toEqual(['new', 'old']);
    expect(r.memories[0].breakdown.recency).toBeGreaterThan(r.memories[1].breakdown.recency);
    expect(r.memories[0].breakdown.lexical).toBeCloseTo(r.memories[1].breakdown.lexical, 9);
  });

  it('surfaces a failed direction under matching conditions as a warning and ranks a mismatching one lower', async () => {
    const failure = 'Deep ensembles of MLPs did not beat gradient boosting.';
    await bank.rememberAll(
      [
        { kind: 'failed_direction', projectId: 'p1', key: 'adult', content: failure, conditions: { dataset: 'Adult', method: 'deep ensemble', budget: '1 GPU hour' } },
        { kind: 'failed_direction', projectId: 'p1', key: 'higgs', content: failure, conditions: { dataset: 'HIGGS', method: 'deep ensemble', budget: '1 GPU hour' } }
      ],
      NOW
    );
    const r = await retrieve(store, {
      stage: 'planning',
      query: 'deep ensembles MLP versus gradient boosting',
      projectId: 'p1',
      conditions: { dataset: 'adult', budget: '1 gpu hour' },
      now: NOW
    });
    expect(r.memories.map(m => m.item.key)).toEqual(['adult', 'higgs']);
    expect(r.memories[0].warning).toMatch(/matching conditions/);
    expect(r.memories[1].warning).toBeUndefined();
    expect(r.memories[1].breakdown.conditionMismatches).toBe(1);
    expect(r.memories[1].breakdown.mismatchFactor).toBeLessThan(1);
    // Down-weighted, not blocked.
    expect(r.memories[1].score).toBeGreaterThan(0);
  });

  it('includes global memories in every project and a project memory only in its own', async () => {
    await bank.rememberAll(
      [
        { kind: 'user_constraint', projectId: 'p1', content: 'Always include a linear baseline.' },
        { kind: 'project_context', projectId: 'p1', content: 'Linear probes on frozen features for project one.' }
      ],
      NOW
    );
    const inP2 = await retrieve(store, { stage: 'planning', query: 'linear baseline probe', projectId: 'p2', now: NOW });
    expect(inP2.memories.map(m => m.item.kind)).toEqual(['user_constraint']);
    expect(inP2.memories[0].item.scope).toBe('global');
    const inP1 = await retrieve(store, { stage: 'planning', query: 'linear baseline probe', projectId: 'p1', now: NOW });
    expect(inP1.memories.map(m => m.item.kind).sort()).toEqual(['project_context', 'user_constraint']);
    // A global constraint is a candidate even with no word in common with the query.
    const unrelated = await retrieve(store, { stage: 'planning', query: 'protein folding', projectId: 'p3', now: NOW });
    expect(unrelated.memories.map(m => m.item.id)).toEqual([memoryId('user_constraint', 'global', 'Always include a linear baseline.')]);
  });

  it('cuts at the character budget', async () => {
    const inputs = Array.from({ length: 6 }, (_, i) => ({
      kind: 'decision_history' as const,
      projectId: 'p1',
      key: `d${i}`,
      content: `Batch size decision ${i}: `.padEnd(100, 'x')
    }));
    await bank.rememberAll(inputs, NOW);
    const all = await retrieve(store, { stage: 'analysis', query: 'batch size decision', projectId: 'p1', now: NOW, k: 10, charBudget: 10_000 });
    expect(all.memories).toHaveLength(6);
    const cut = await retrieve(store, { stage: 'analysis', query: 'batch size decision', projectId: 'p1', now: NOW, k: 10, charBudget: 2 * all.memories[0].chars + 10 });
    expect(cut.memories).toHaveLength(2);
    expect(cut.memories.reduce((s, m) => s + m.chars, 0)).toBeLessThanOrEqual(2 * all.memories[0].chars + 10);
  });

  it('per-stage kind priors change the order as designed', async () => {
    await bank.rememberAll(
      [
        { kind: 'promising_direction', projectId: 'p1', content: 'Attention over feature tokens for tabular data looks promising.' },
        { kind: 'training_strategy', projectId: 'p1', content: 'Attention over feature tokens needs warmup of 500 steps for tabular data.' }
      ],
      NOW
    );
    const q = { query: 'attention feature tokens tabular', projectId: 'p1', now: NOW };
    const ideation = await retrieve(store, { ...q, stage: 'ideation' });
    const experiment = await retrieve(store, { ...q, stage: 'experiment' });
    expect(ideation.memories[0].item.kind).toBe('promising_direction');
    expect(experiment.memories[0].item.kind).toBe('training_strategy');
    expect(ideation.memories[0].breakdown.prior).toBe(1.5);
  });
});

describe('term tables', () => {
  const stats = () =>
    store.read(async q => ({
      docs: await q.get<{ n_docs: number; total_len: number }>("SELECT n_docs, total_len FROM doc_stats WHERE doc_kind = 'memory'"),
      df: await q.all<{ term: string; df: number }>("SELECT term, df FROM term_df WHERE doc_kind = 'memory' ORDER BY term"),
      postings: await q.all<{ term_key: number; n: number }>('SELECT term_key, sum(len(postings))::INTEGER AS n FROM term_postings GROUP BY term_key')
    }));

  it('keep df and corpus totals equal to a recount after updates, retirement and reactivation', async () => {
    const a = await bank.remember({ kind: 'decision_history', projectId: 'p1', key: 'a', content: 'Adam optimiser with warmup.', tags: ['optim'] }, NOW);
    await bank.remember({ kind: 'decision_history', projectId: 'p1', key: 'b', content: 'Warmup for five epochs.' }, NOW);
    await bank.update(a.id, { content: 'SGD optimiser with momentum.' });
    let s = await stats();
    expect(s.docs).toEqual({ n_docs: 2, total_len: 6 }); // sgd optimiser momentum + warmup five epoch
    expect(s.df.find(t => t.term === 'warmup')?.df).toBe(1);
    expect(s.df.find(t => t.term === 'momentum')?.df).toBe(1);
    expect(s.df.find(t => t.term === 'adam')).toBeUndefined();
    const recount = await store.read(q =>
      q.all<{ term_key: number; n: number }>("SELECT term_key, count(*)::INTEGER AS n FROM doc_terms WHERE doc_kind = 'memory' GROUP BY term_key")
    );
    expect(new Map(s.postings.map(p => [Number(p.term_key), p.n]))).toEqual(new Map(recount.map(r => [Number(r.term_key), r.n])));

    await bank.retire(a.id);
    s = await stats();
    expect(s.docs?.n_docs).toBe(1);
    expect(s.df.find(t => t.term === 'momentum')).toBeUndefined();
    const gone = await retrieve(store, { stage: 'planning', query: 'SGD momentum', projectId: 'p1', now: NOW });
    expect(gone.memories).toEqual([]);
    await bank.remember({ kind: 'decision_history', projectId: 'p1', key: 'a', content: 'SGD optimiser with momentum.' }, NOW);
    const back = await retrieve(store, { stage: 'planning', query: 'SGD momentum', projectId: 'p1', now: NOW });
    expect(back.memories.map(m => m.item.id)).toEqual([a.id]);
  });

  it('compaction merges posting rows without changing results', async () => {
    for (let i = 0; i < 5; i++) await bank.remember({ kind: 'data_strategy', projectId: 'p1', key: `s${i}`, content: `Cache features of split ${i} to parquet.` }, NOW);
    const before = await retrieve(store, { stage: 'experiment', query: 'cache parquet features', projectId: 'p1', now: NOW });
    const rowsBefore = await store.read(q => q.get<{ n: number }>("SELECT count(*)::INTEGER AS n FROM term_postings"));
    expect(await store.write(q => compactPostings(q, true))).toBe(true);
    const rowsAfter = await store.read(q => q.get<{ n: number }>("SELECT count(*)::INTEGER AS n FROM term_postings"));
    expect(rowsAfter!.n).toBeLessThan(rowsBefore!.n);
    const after = await retrieve(store, { stage: 'experiment', query: 'cache parquet features', projectId: 'p1', now: NOW });
    expect(after.memories.map(m => [m.item.id, m.score])).toEqual(before.memories.map(m => [m.item.id, m.score]));
  });

  it('weight overrides change the order as designed', async () => {
    await bank.remember({ kind: 'decision_history', projectId: 'p1', key: 'old', content: 'Label smoothing 0.1 with mixup and cutmix on tabular.' }, daysAgo(200));
    await bank.remember({ kind: 'decision_history', projectId: 'p1', key: 'new', content: 'Label smoothing tried once.' }, daysAgo(0));
    const q = { stage: 'analysis' as const, query: 'label smoothing mixup cutmix tabular', projectId: 'p1', now: NOW };
    expect((await retrieve(store, q)).memories[0].item.key).toBe('old');
    const recencyOnly = await retrieve(store, { ...q, weights: { lexical: 0, tags: 0, quality: 0, usage: 0, stage: 0, conditions: 0, recency: 1 } });
    expect(recencyOnly.memories[0].item.key).toBe('new');
  });
});

describe('term index cache', () => {
  it('sees documents written and retired through another Store on the same file', async () => {
    const query = { stage: 'experiment' as const, query: 'covertype quantile normalisation', projectId: 'p1', now: NOW };
    await bank.remember({ kind: 'decision_history', projectId: 'p1', content: 'Early stopping on validation loss.' }, NOW);
    expect((await retrieve(store, query)).memories).toHaveLength(0);
    const other = await Store.open({ home: dir });
    try {
      const added = await new MemoryBank(other).remember({ kind: 'data_strategy', projectId: 'p1', content: 'Quantile-normalise the covertype features.' }, NOW);
      const seen = await retrieve(store, query);
      expect(seen.memories.map(m => m.item.id)).toEqual([added.id]);
      expect(seen.memories[0].breakdown.lexical).toBe(1);
      await new MemoryBank(other).retire(added.id);
      expect((await retrieve(store, query)).memories).toHaveLength(0);
    } finally {
      await other.close();
    }
  });

  it('reloads the whole index when the change log no longer covers its generation', async () => {
    await bank.remember({ kind: 'decision_history', projectId: 'p1', content: 'Early stopping on validation loss.' }, NOW);
    const query = { stage: 'experiment' as const, query: 'mixup augmentation', projectId: 'p1', now: NOW };
    expect((await retrieve(store, query)).memories).toHaveLength(0);
    await bank.remember({ kind: 'promising_direction', projectId: 'p1', content: 'Mixup augmentation helps small MLPs.' }, NOW);
    // As after pruning: the log lost the generations the cache would need.
    await store.write(q => q.run('DELETE FROM term_changes'));
    const r = await retrieve(store, query);
    expect(r.memories.map(m => m.item.content)).toEqual(['Mixup augmentation helps small MLPs.']);
    const log = await store.read(q => q.get<{ generation: number }>('SELECT generation FROM term_generation'));
    expect(Number(log?.generation)).toBeGreaterThanOrEqual(2);
  });
});

describe('term index cache under concurrent reads', () => {
  it('gives concurrent retrievals after a write the same, single-counted statistics', async () => {
    const query = { stage: 'ideation' as const, query: 'mixup augmentation', projectId: 'p1', now: NOW };
    await bank.remember({ kind: 'promising_direction', projectId: 'p1', content: 'Mixup augmentation helps small MLPs.' }, NOW);
    await retrieve(store, query);
    await bank.remember({ kind: 'promising_direction', projectId: 'p1', content: 'Cutout augmentation hurts tabular MLPs.' }, NOW);
    const results = await Promise.all([retrieve(store, query), retrieve(store, query), retrieve(store, query)]);
    // A second Store on the same file starts with an empty cache, so it reads the index afresh.
    const other = await Store.open({ home: dir });
    try {
      const fresh = await retrieve(other, query);
      expect(fresh.memories).toHaveLength(2);
      for (const r of results) expect(r.memories.map(m => [m.item.content, m.breakdown.bm25])).toEqual(fresh.memories.map(m => [m.item.content, m.breakdown.bm25]));
    } finally {
      await other.close();
    }
  });
});
