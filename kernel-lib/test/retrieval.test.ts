import fs from 'fs';
import os from 'os';
import path from 'path';
import { Store } from '../src/store';
import { MemoryBank, memoryId } from '../src/memory';
import { retrieve } from '../src/retrieval';
import { stem, tokenize, termKey } from '../src/retrieval/tokenize';
import { forgetTermIndex, termIndexOf, termSnapshotOf } from '../src/retrieval/term-index';
import type { StageName } from '../src/orchestrator/types';
import { compileStore, startChild } from './store-children';

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
        {
          kind: 'failed_direction',
          projectId: 'p1',
          key: 'adult',
          content: failure,
          conditions: { dataset: 'Adult', method: 'deep ensemble', budget: '1 GPU hour' }
        },
        {
          kind: 'failed_direction',
          projectId: 'p1',
          key: 'higgs',
          content: failure,
          conditions: { dataset: 'HIGGS', method: 'deep ensemble', budget: '1 GPU hour' }
        }
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
    const cut = await retrieve(store, {
      stage: 'analysis',
      query: 'batch size decision',
      projectId: 'p1',
      now: NOW,
      k: 10,
      charBudget: 2 * all.memories[0].chars + 10
    });
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
  const indexRows = () =>
    store.read(q =>
      q.all<{ doc_id: string; scope: string; len: number; terms: string[]; tfs: number[] }>(
        "SELECT doc_id, scope, len, terms, tfs FROM doc_index WHERE doc_kind = 'memory' ORDER BY doc_id"
      )
    );

  it('hold one row per active memory, in step with updates, retirement and reactivation', async () => {
    const a = await bank.remember({ kind: 'decision_history', projectId: 'p1', key: 'a', content: 'Adam optimiser with warmup.', tags: ['optim'] }, NOW);
    const b = await bank.remember({ kind: 'decision_history', projectId: 'p1', key: 'b', content: 'Warmup warmup for five epochs.' }, NOW);
    await bank.update(a.id, { content: 'SGD optimiser with momentum.' });
    let rows = await indexRows();
    expect(rows.map(r => r.doc_id).sort()).toEqual([a.id, b.id].sort());
    const byId = new Map(rows.map(r => [r.doc_id, r]));
    expect(byId.get(a.id)).toMatchObject({ scope: 'p1', len: 3 }); // sgd optimiser momentum
    expect(byId.get(a.id)?.terms).toEqual(expect.arrayContaining(['sgd', 'momentum', '#optim']));
    expect(byId.get(a.id)?.terms).not.toContain('adam');
    const warmup = byId.get(b.id)!;
    expect(warmup.tfs[warmup.terms.indexOf('warmup')]).toBe(2);

    await bank.retire(a.id);
    rows = await indexRows();
    expect(rows.map(r => r.doc_id)).toEqual([b.id]);
    const gone = await retrieve(store, { stage: 'planning', query: 'SGD momentum', projectId: 'p1', now: NOW });
    expect(gone.memories).toEqual([]);
    await bank.remember({ kind: 'decision_history', projectId: 'p1', key: 'a', content: 'SGD optimiser with momentum.' }, NOW);
    const back = await retrieve(store, { stage: 'planning', query: 'SGD momentum', projectId: 'p1', now: NOW });
    expect(back.memories.map(m => m.item.id)).toEqual([a.id]);
  });

  it('weight overrides change the order as designed', async () => {
    await bank.remember(
      { kind: 'decision_history', projectId: 'p1', key: 'old', content: 'Label smoothing 0.1 with mixup and cutmix on tabular.' },
      daysAgo(200)
    );
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
      const added = await new MemoryBank(other).remember(
        { kind: 'data_strategy', projectId: 'p1', content: 'Quantile-normalise the covertype features.' },
        NOW
      );
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

describe('term index snapshot', () => {
  const query = { stage: 'ideation' as const, query: 'mixup cutout augmentation tabular', projectId: 'p1', now: NOW };
  const contents = (r: Awaited<ReturnType<typeof retrieve>>) => r.memories.map(m => [m.item.content, m.breakdown.bm25]);
  const tick = () => new Promise(resolve => setImmediate(resolve));

  it('is written after a full load; a new cache loads it and catches up with later writes', async () => {
    await bank.rememberAll(
      [
        { kind: 'promising_direction', projectId: 'p1', content: 'Mixup augmentation helps small tabular MLPs.' },
        { kind: 'failed_direction', projectId: 'p1', content: 'Cutout augmentation hurt tabular MLPs.' }
      ],
      NOW
    );
    await retrieve(store, query);
    await tick();
    expect(fs.existsSync(termSnapshotOf(store.path))).toBe(true);
    await bank.remember({ kind: 'data_strategy', projectId: 'p1', content: 'Tabular augmentation needs care.' }, NOW);
    forgetTermIndex(store.path);
    const fromSnapshot = await retrieve(store, query);
    forgetTermIndex(store.path, { withSnapshot: false });
    const rebuilt = await retrieve(store, query);
    expect(fromSnapshot.memories).toHaveLength(3);
    expect(contents(fromSnapshot)).toEqual(contents(rebuilt));
  });

  it('rewritten after re-indexing, keeps the lists it never handed out and drops dead documents', async () => {
    const [mixup] = await bank.rememberAll(
      [
        { kind: 'promising_direction', projectId: 'p1', key: 'mixup', content: 'Mixup augmentation helps small tabular MLPs.' },
        { kind: 'failed_direction', projectId: 'p1', content: 'Cutout augmentation hurt tabular MLPs.' },
        { kind: 'data_strategy', projectId: 'p1', content: 'Quantile normalisation of skewed features.' }
      ],
      NOW
    );
    await retrieve(store, query);
    await tick();
    forgetTermIndex(store.path);
    // Loaded from the snapshot; the query asks for some terms' lists only, then a re-index leaves a dead slot.
    await retrieve(store, query);
    await bank.remember(
      { kind: 'promising_direction', projectId: 'p1', key: 'mixup', content: 'Mixup augmentation helps small tabular MLPs, with quantile inputs.' },
      NOW
    );
    const index = termIndexOf(store);
    await store.read(q => index.sync(q));
    index.saveSnapshot();
    forgetTermIndex(store.path);
    const quantile = { ...query, query: 'quantile normalisation' };
    const fromSnapshot = await retrieve(store, quantile);
    forgetTermIndex(store.path, { withSnapshot: false });
    const rebuilt = await retrieve(store, quantile);
    expect(contents(fromSnapshot)).toEqual(contents(rebuilt));
    expect(fromSnapshot.memories.map(m => m.item.id)).toContain(mixup.id);
    expect(termIndexOf(store).postingCount).toBe(index.postingCount);
  });

  it('serves the lists a loaded snapshot kept in its file, even after the file is replaced', async () => {
    await bank.rememberAll(
      [
        { kind: 'promising_direction', projectId: 'p1', content: 'Mixup augmentation helps small tabular MLPs.' },
        { kind: 'data_strategy', projectId: 'p1', content: 'Quantile normalisation of skewed features.' }
      ],
      NOW
    );
    await retrieve(store, query);
    await tick();
    forgetTermIndex(store.path);
    await retrieve(store, query);
    const index = termIndexOf(store);
    expect(index.reads).toEqual({ full: 0, snapshot: 1, changes: 0 });
    // A newer snapshot renamed over it (as another process writes one): this index still reads its own.
    const snapshot = termSnapshotOf(store.path);
    fs.writeFileSync(`${snapshot}.other`, 'garbage');
    fs.renameSync(`${snapshot}.other`, snapshot);
    const quantile = { ...query, query: 'quantile normalisation skewed' };
    const fromFile = await retrieve(store, quantile);
    forgetTermIndex(store.path, { withSnapshot: false });
    expect(fromFile.memories.map(m => [m.item.content, m.breakdown.bm25])).toEqual(contents(await retrieve(store, quantile)));
    expect(fromFile.memories[0].item.content).toBe('Quantile normalisation of skewed features.');
  });

  it('is ignored when it does not match the store (garbage, or totals that disagree)', async () => {
    await bank.remember({ kind: 'promising_direction', projectId: 'p1', content: 'Mixup augmentation helps small tabular MLPs.' }, NOW);
    const expected = contents(await retrieve(store, query));
    await tick();
    const snapshot = termSnapshotOf(store.path);
    const good = fs.readFileSync(snapshot);
    fs.writeFileSync(snapshot, Buffer.concat([good.subarray(0, 40), Buffer.from('garbage')]));
    forgetTermIndex(store.path);
    expect(contents(await retrieve(store, query))).toEqual(expected);
    // A snapshot of the same generation whose totals no longer match doc_index (the store was changed behind its back).
    await tick();
    fs.writeFileSync(snapshot, good);
    await store.write(q => q.run("UPDATE doc_index SET len = len + 1 WHERE doc_kind = 'memory'"));
    forgetTermIndex(store.path);
    const reloaded = await retrieve(store, query);
    expect(reloaded.memories.map(m => m.item.content)).toEqual(['Mixup augmentation helps small tabular MLPs.']);
  });
});

describe('same-project boost', () => {
  const STAGES: StageName[] = ['ideation', 'planning', 'experiment', 'analysis', 'writing', 'review'];

  it('ranks the current project’s memory above global ones of equal text match, in every stage', async () => {
    const text = 'Prefer gradient boosting baselines on tabular benchmarks.';
    await bank.rememberAll(
      [
        { kind: 'project_context', projectId: 'p1', key: 'mine', content: text },
        { kind: 'user_profile', key: 'profile', content: text },
        { kind: 'user_constraint', key: 'constraint', content: text },
        { kind: 'project_context', projectId: 'p2', key: 'other', content: text }
      ],
      NOW
    );
    for (const stage of STAGES) {
      const r = await retrieve(store, { stage, query: 'gradient boosting tabular baselines', projectId: 'p1', now: NOW });
      expect([stage, [...r.memories.map(m => m.item.key)].sort()]).toEqual([stage, ['constraint', 'mine', 'profile']]);
      expect([stage, r.memories[0].item.key, r.memories[0].breakdown.projectFactor]).toEqual([stage, 'mine', 1.5]);
      expect(r.memories.map(m => m.item.key)).not.toContain('other');
      expect(r.memories.filter(m => m.item.scope === 'global').every(m => m.breakdown.projectFactor === 1)).toBe(true);
    }
  });
});

describe('term index cache under concurrent reads', () => {
  it('gives concurrent retrievals after a write the same, single-counted statistics', async () => {
    const query = { stage: 'ideation' as const, query: 'mixup augmentation', projectId: 'p1', now: NOW };
    await bank.remember({ kind: 'promising_direction', projectId: 'p1', content: 'Mixup augmentation helps small MLPs.' }, NOW);
    await retrieve(store, query);
    await bank.remember({ kind: 'promising_direction', projectId: 'p1', content: 'Cutout augmentation hurts tabular MLPs.' }, NOW);
    const results = await Promise.all([retrieve(store, query), retrieve(store, query), retrieve(store, query)]);
    // A second Store on the same file shares the cache: drop it (and its snapshot) to read the index afresh.
    const other = await Store.open({ home: dir });
    try {
      forgetTermIndex(other.path, { withSnapshot: false });
      const fresh = await retrieve(other, query);
      expect(fresh.memories).toHaveLength(2);
      for (const r of results)
        expect(r.memories.map(m => [m.item.content, m.breakdown.bm25])).toEqual(fresh.memories.map(m => [m.item.content, m.breakdown.bm25]));
    } finally {
      await other.close();
    }
  });
});

describe('term index across a hand-off of the file (real processes)', () => {
  let buildDir: string;
  beforeAll(() => {
    buildDir = compileStore(['store/index.ts', 'memory/index.ts']);
  });
  afterAll(() => fs.rmSync(buildDir, { recursive: true, force: true }));

  it('is kept when the file is released and re-opened; a write by another process is caught up from the change log', async () => {
    const query = { stage: 'ideation' as const, query: 'mixup augmentation tabular', projectId: 'p1', now: NOW };
    await bank.rememberAll(
      [
        { kind: 'promising_direction', projectId: 'p1', content: 'Mixup augmentation helps small tabular MLPs.' },
        { kind: 'failed_direction', projectId: 'p1', content: 'Cutout augmentation hurt tabular MLPs.' }
      ],
      NOW
    );
    const index = termIndexOf(store);
    const first = await retrieve(store, query);
    const reads = { ...index.reads };
    const opens = store.stats.acquisitions;
    // Idle past the release (50 ms): the file is closed, and the next retrieval opens it again.
    await new Promise(resolve => setTimeout(resolve, 300));
    const afterIdle = await retrieve(store, query);
    expect(store.stats.acquisitions).toBe(opens + 1);
    expect(termIndexOf(store)).toBe(index);
    expect(index.reads).toEqual(reads);
    expect(afterIdle.memories.map(m => [m.item.id, m.breakdown.bm25])).toEqual(first.memories.map(m => [m.item.id, m.breakdown.bm25]));

    const content = 'Mixup augmentation with label smoothing helps tabular MLPs more.';
    await new Promise(resolve => setTimeout(resolve, 300));
    const writer = startChild('retrieval-writer.js', [buildDir, store.path, 'p1', content]);
    expect(await writer.exited).toEqual({ code: 0, signal: null });
    expect(writer.lines).toEqual(['written']);
    const afterWrite = await retrieve(store, query);
    expect(afterWrite.memories.map(m => m.item.content)).toContain(content);
    expect(index.reads).toEqual({ ...reads, changes: reads.changes + 1 });
    // The same answer as an index read afresh from doc_index.
    forgetTermIndex(store.path, { withSnapshot: false });
    const fresh = await retrieve(store, query);
    expect(afterWrite.memories.map(m => [m.item.id, m.breakdown.bm25])).toEqual(fresh.memories.map(m => [m.item.id, m.breakdown.bm25]));
  }, 60_000);
});
