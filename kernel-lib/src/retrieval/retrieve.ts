/**
 * Retrieval, per table (skills, memories): BM25 and tag overlap are scored in memory over the
 * process's cached term index (retrieval/term-index.ts) to keep a bounded candidate pool, ONE
 * statement reads both pools' current records together with the term generation (so a write
 * by any process is noticed), and recency, quality, usage, stage fit and condition match are
 * added with per-stage weights (retrieval/weights.ts). Each item comes back with its score
 * breakdown; top-k and a character budget apply last.
 */
import type { Memory, Skill } from '@nanoresearch/schema';
import type { Queryable } from '../store/queryable';
import type { StageName } from '../stage-contract';
import { GLOBAL_SCOPE, MEMORY_HALF_LIFE_DAYS, memoryFromRow, renderMemory } from '../records/memories';
import { skillFromRow } from '../records/skills';
import { ALWAYS_TERM, DocKind } from './terms';
import { TermIndex, termIndexOf } from './term-index';
import { tagTerm, termKey, tokenize } from './tokenize';
import {
  BM25_B,
  BM25_K1,
  CANDIDATE_POOL,
  COMMON_TERM_DF_FRACTION,
  COMMON_TERM_MIN_DOCS,
  ComponentWeights,
  CONDITION_MISMATCH_PENALTY,
  DEFAULT_K,
  MAX_ALWAYS_CANDIDATES,
  MAX_PROBED_POSTINGS,
  MEMORY_KIND_PRIOR,
  PROJECT_SCOPE_BOOST,
  SKILL_BUDGET_SHARE,
  SKILL_HALF_LIFE_DAYS,
  SKILL_SOURCE_QUALITY,
  STAGE_CHAR_BUDGET,
  STAGE_WEIGHTS,
  USAGE_SATURATION
} from './weights';

/** The part of a `Store` retrieval needs. */
export interface ReadableStore {
  read<T>(fn: (q: Queryable) => Promise<T>): Promise<T>;
}

export type Conditions = NonNullable<Memory['conditions']>;

export interface RetrievalQuery {
  stage: StageName;
  /** Free text: the topic, the stage's task, the previous stage's summary. */
  query: string;
  tags?: readonly string[];
  /** The project whose own memories are eligible; global memories always are. */
  projectId?: string | null;
  /** Conditions of the work at hand, matched against directions' conditions. */
  conditions?: Conditions;
  /** Top-k per table (default 5). */
  k?: number;
  /** Characters of rendered context for skills + memories (default: per stage). */
  charBudget?: number;
  /** Overrides of this stage's component weights. */
  weights?: Partial<ComponentWeights>;
  /** Reference time for recency (default now); tests pin it. */
  now?: Date;
}

/** Every component of an item's score, before and after weighting. */
export interface ScoreBreakdown {
  bm25: number;
  lexical: number;
  tags: number;
  recency: number;
  quality: number;
  usage: number;
  stage: number;
  conditions: number;
  /** Query conditions the item's conditions contradict. */
  conditionMismatches: number;
  /** Memory-kind prior for this stage (1 for skills). */
  prior: number;
  /** Multiplier from condition mismatches (1 when none). */
  mismatchFactor: number;
  /** PROJECT_SCOPE_BOOST for a memory of the query's project, 1 otherwise (global memories, skills). */
  projectFactor: number;
  total: number;
}

export interface Scored<T> {
  item: T;
  score: number;
  breakdown: ScoreBreakdown;
  /** Set for a failed direction whose conditions match the query: the stage should avoid repeating it. */
  warning?: string;
  /** Length of `renderSkill` / `renderMemory` of the item, counted against the budget. */
  chars: number;
}

export interface RetrievalResult {
  skills: Scored<Skill>[];
  memories: Scored<Memory>[];
}

/** A skill as it is shown to the planner and stages. */
export function renderSkill(skill: Skill): string {
  return `${skill.name}: ${skill.description}\n${skill.instructions.map((s, i) => `${i + 1}. ${s}`).join('\n')}`;
}

/** A memory as it is shown to the planner and stages: the one rendering, in records/memories.ts. */
export { renderMemory };

/** A SQL string literal. */
function str(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

interface QueryTerm {
  key: number;
  idf: number;
  isTag: boolean;
}

interface CorpusQuery {
  terms: QueryTerm[];
  avgLen: number;
  alwaysKey: number;
}

/** Corpus totals and the df of every query term, both kinds, from the cached term index. */
interface CorpusStats {
  totals: Map<DocKind, { nDocs: number; avgLen: number }>;
  df: Map<number, number>;
}

function readCorpusStats(index: TermIndex, words: readonly string[], tags: readonly string[]): CorpusStats {
  const totals = new Map<DocKind, { nDocs: number; avgLen: number }>();
  const df = new Map<number, number>();
  for (const kind of ['skill', 'memory'] as const) {
    const { nDocs, totalLen } = index.totalsOf(kind);
    if (nDocs > 0) totals.set(kind, { nDocs, avgLen: totalLen / nDocs });
    for (const key of [...words.map(w => termKey(kind, w)), ...tags.map(t => termKey(kind, tagTerm(t)))]) {
      const n = index.df(key);
      if (n > 0) df.set(key, n);
    }
  }
  return { totals, df };
}

/**
 * Query terms of one kind with their BM25 idf. Terms absent from the corpus are dropped, and
 * so are corpus stop-words: the most common words are dropped first until the postings to
 * read fit MAX_PROBED_POSTINGS, and any word in more than COMMON_TERM_DF_FRACTION of the
 * documents goes regardless. Tags, chosen on purpose by the caller, always stay.
 */
function queryTerms(stats: CorpusStats, kind: DocKind, words: readonly string[], tags: readonly string[]): CorpusQuery {
  const { nDocs, avgLen } = stats.totals.get(kind) ?? { nDocs: 0, avgLen: 0 };
  const alwaysKey = termKey(kind, ALWAYS_TERM);
  const wanted = new Map<number, boolean>();
  for (const w of words) wanted.set(termKey(kind, w), false);
  for (const t of tags) wanted.set(termKey(kind, tagTerm(t)), true);
  const found = [...wanted]
    .filter(([key]) => stats.df.has(key))
    .map(([key, isTag]) => {
      const df = stats.df.get(key) ?? 0;
      // Lucene's BM25 idf: always positive, so a common word still counts a little.
      return { key, df, isTag, idf: Math.log(1 + (nDocs - df + 0.5) / (df + 0.5)) };
    })
    .sort((a, b) => a.df - b.df);
  const terms: QueryTerm[] = [];
  let postings = 0;
  for (const t of found) {
    const common = nDocs >= COMMON_TERM_MIN_DOCS && (t.df > COMMON_TERM_DF_FRACTION * nDocs || postings + t.df > MAX_PROBED_POSTINGS);
    if (common && !t.isTag && terms.length > 0) continue;
    terms.push({ key: t.key, idf: t.idf, isTag: t.isTag });
    postings += t.df;
  }
  return { terms, avgLen, alwaysKey };
}

/** Lexical candidates of one table: BM25, tag hits, always-candidate flag. */
interface Candidate {
  doc_id: string;
  bm25: number;
  tag_hits: number;
  always: boolean;
}

/**
 * Candidate generation over the cached term index: BM25 of the probed words, hits of the
 * query's tags and the always-candidate flag per document of an eligible scope; keeps every
 * always-candidate (up to MAX_ALWAYS_CANDIDATES) and the best CANDIDATE_POOL others by
 * normalised lexical + tag score, ties by id. Only these are fetched and scored in full.
 */
/** Per-slot accumulators of `candidates`, reused between calls and zeroed after each (only the slots it visited). */
const scratch = {
  size: 0,
  bm25: new Float64Array(0),
  score: new Float64Array(0),
  tagHits: new Int32Array(0),
  always: new Uint8Array(0),
  state: new Uint8Array(0)
};

function scratchFor(n: number): typeof scratch {
  if (scratch.size < n) {
    const size = Math.max(n, scratch.size * 2, 1024);
    Object.assign(scratch, {
      size,
      bm25: new Float64Array(size),
      score: new Float64Array(size),
      tagHits: new Int32Array(size),
      always: new Uint8Array(size),
      state: new Uint8Array(size)
    });
  }
  return scratch;
}

function candidates(index: TermIndex, cq: CorpusQuery, scopes: readonly string[], w: ComponentWeights, nTags: number): Candidate[] {
  const eligible = new Uint8Array(index.scopeCount);
  for (const id of index.scopeIdsOf(scopes)) eligible[id] = 1;
  const { live, scopeIds, lens } = index;
  const norm = Math.max(cq.avgLen, 1);
  // Per-slot accumulators: a common word can hit most of a 100k corpus, so no object per posting.
  const { bm25, score, tagHits, always, state } = scratchFor(index.slotCount);
  /** state: 0 not seen yet, 1 eligible and touched, 2 not eligible (dead or other scope). */
  const visited: number[] = [];
  const touched: number[] = [];
  const admit = (slot: number): boolean => {
    if (state[slot] === 0) {
      visited.push(slot);
      state[slot] = live[slot] && eligible[scopeIds[slot]] ? 1 : 2;
      if (state[slot] === 1) touched.push(slot);
    }
    return state[slot] === 1;
  };
  const k = BM25_K1 * (1 - BM25_B);
  const perLen = (BM25_K1 * BM25_B) / norm;
  for (const t of cq.terms) {
    const list = index.postingList(t.key);
    if (!list) continue;
    for (let i = 0; i < list.length; i++) {
      const slot = list.slots[i];
      if (!admit(slot)) continue;
      if (t.isTag) tagHits[slot]++;
      else bm25[slot] += (t.idf * list.tfs[i] * (BM25_K1 + 1)) / (list.tfs[i] + k + perLen * lens[slot]);
    }
  }
  const alwaysList = index.postingList(cq.alwaysKey);
  for (let i = 0; alwaysList && i < alwaysList.length; i++) if (admit(alwaysList.slots[i])) always[alwaysList.slots[i]] = 1;
  let best = 1e-12;
  for (const slot of touched) if (bm25[slot] > best) best = bm25[slot];
  const tagScale = Math.max(nTags, 1);
  const alwaysSlots: number[] = [];
  const lexicalSlots: number[] = [];
  for (const slot of touched) {
    if (!(bm25[slot] > 0 || tagHits[slot] > 0 || always[slot])) continue;
    score[slot] = (w.lexical * bm25[slot]) / best + (w.tags * tagHits[slot]) / tagScale;
    (always[slot] ? alwaysSlots : lexicalSlots).push(slot);
  }
  const ids = index.ids;
  const order = (a: number, b: number) => score[b] - score[a] || (ids[a] < ids[b] ? -1 : ids[a] > ids[b] ? 1 : 0);
  const chosen = [...topBy(alwaysSlots, MAX_ALWAYS_CANDIDATES, order), ...topBy(lexicalSlots, CANDIDATE_POOL, order)];
  const pool = chosen.map(slot => ({ doc_id: ids[slot], bm25: bm25[slot], tag_hits: tagHits[slot], always: always[slot] === 1 }));
  for (const slot of visited) bm25[slot] = tagHits[slot] = always[slot] = state[slot] = 0;
  return pool;
}

/** The first `n` of `items` in `order`, without sorting all of them (a common word can hit most of a 100k corpus). */
function topBy<T>(items: T[], n: number, order: (a: T, b: T) => number): T[] {
  if (items.length <= n * 4) return items.sort(order).slice(0, n);
  const kept: T[] = [];
  for (const item of items) {
    if (kept.length === n && order(item, kept[n - 1]) >= 0) continue;
    let i = kept.length === n ? n - 1 : kept.length;
    if (kept.length === n) kept.pop();
    while (i > 0 && order(item, kept[i - 1]) < 0) i--;
    kept.splice(i, 0, item);
  }
  return kept;
}

/** Columns stored as TIMESTAMP: `to_json` writes them as 'YYYY-MM-DD HH:MM:SS[.ffffff]'. */
const TIMESTAMP_COLUMNS = ['created_at', 'updated_at', 'last_used_at'] as const;

/** A record as `to_json` wrote it, with timestamps as the store's reads return them (ISO 8601, UTC). */
function recordFromJson(text: string): Record<string, unknown> {
  const row = JSON.parse(text) as Record<string, unknown>;
  for (const column of TIMESTAMP_COLUMNS) {
    const value = row[column];
    if (typeof value !== 'string') continue;
    const ms = Date.parse(`${value.replace(' ', 'T')}Z`);
    // Infinite timestamps have no Date; keep DuckDB's text, as the store's reads do.
    if (Number.isFinite(ms)) row[column] = new Date(ms).toISOString();
  }
  return row;
}

/** The pools' current records (active ones only) and the term generation they were read at. */
interface FetchedPools {
  generation: number;
  storeId: string;
  skills: Record<string, unknown>[];
  memories: Record<string, unknown>[];
}

/**
 * Reads both pools' records and the term generation in ONE statement (each statement costs
 * ~1.5-2 ms fixed here). A literal id IN-list is an ART index probe (a second predicate
 * beside it turned the probe into a full scan, so status is checked here); rows come back as
 * JSON text because the two tables' columns differ.
 */
async function fetchPools(q: Queryable, skillPool: readonly Candidate[], memoryPool: readonly Candidate[]): Promise<FetchedPools> {
  const parts = [`SELECT 'g' AS t, generation::VARCHAR || ' ' || store_id AS j FROM term_generation`];
  if (skillPool.length) parts.push(`SELECT 's', to_json(s)::VARCHAR FROM skills s WHERE id IN (${skillPool.map(c => str(c.doc_id)).join(', ')})`);
  if (memoryPool.length) parts.push(`SELECT 'm', to_json(m)::VARCHAR FROM memories m WHERE id IN (${memoryPool.map(c => str(c.doc_id)).join(', ')})`);
  const fetched: FetchedPools = { generation: -1, storeId: '', skills: [], memories: [] };
  for (const row of await q.all<{ t: 'g' | 's' | 'm'; j: string }>(parts.join(' UNION ALL '))) {
    if (row.t === 'g') {
      const space = row.j.indexOf(' ');
      fetched.generation = Number(row.j.slice(0, space));
      fetched.storeId = row.j.slice(space + 1);
      continue;
    }
    const record = recordFromJson(row.j);
    if (record.status !== 'active') continue;
    (row.t === 's' ? fetched.skills : fetched.memories).push(record);
  }
  return fetched;
}

function weightsFor(query: RetrievalQuery): ComponentWeights {
  return { ...STAGE_WEIGHTS[query.stage], ...(query.weights ?? {}) };
}

const DAY_MS = 86_400_000;

/** Age in days at `now` of the newest of these timestamps (0 when none). */
function ageDays(now: Date, ...times: unknown[]): number {
  const ms = times.filter((t): t is string => typeof t === 'string').map(t => Date.parse(t));
  return ms.length ? Math.max(0, (now.getTime() - Math.max(...ms)) / DAY_MS) : 0;
}

/** 1 when the item is written for this stage, 0.5 when for every stage, 0 otherwise. */
function stageFit(stages: readonly string[] | undefined, stage: StageName): number {
  if (!stages || stages.length === 0) return 0.5;
  return stages.includes(stage) ? 1 : 0;
}

function usageComponent(count: number | undefined): number {
  return Math.min(1, Math.log(1 + (count ?? 0)) / Math.log(1 + USAGE_SATURATION));
}

/** Lexical and tag components of a candidate: BM25 normalised by the pool's best, tag hits by the query's tags. */
function lexicalParts(pool: readonly Candidate[], nTags: number): Map<string, { bm25: number; lexical: number; tags: number }> {
  const best = Math.max(1e-12, ...pool.map(c => Number(c.bm25)));
  return new Map(pool.map(c => [c.doc_id, { bm25: Number(c.bm25), lexical: Number(c.bm25) / best, tags: nTags > 0 ? Number(c.tag_hits) / nTags : 0 }]));
}

function weighted(
  w: ComponentWeights,
  b: Omit<ScoreBreakdown, 'total' | 'bm25' | 'conditionMismatches' | 'prior' | 'mismatchFactor' | 'projectFactor'>
): number {
  return (
    w.lexical * b.lexical +
    w.tags * b.tags +
    w.recency * b.recency +
    w.quality * b.quality +
    w.usage * b.usage +
    w.stage * b.stage +
    w.conditions * b.conditions
  );
}

/** Order: score, then the table's tie-breaker, then id (deterministic). */
function byScore<T>(tieBreak: (item: T) => number, id: (item: T) => string): (a: Scored<T>, b: Scored<T>) => number {
  return (a, b) => b.score - a.score || tieBreak(b.item) - tieBreak(a.item) || (id(a.item) < id(b.item) ? -1 : id(a.item) > id(b.item) ? 1 : 0);
}

/**
 * Scores the skill candidates. The non-lexical components are computed here over the pool
 * (<= CANDIDATE_POOL + MAX_ALWAYS_CANDIDATES rows) rather than in SQL: measured on these 2
 * cores, DuckDB spent ~10 ms planning the scoring expressions (CASE/MAP literals through its
 * expression rewriter) against ~2 ms for the plain fetch, the largest cost of a retrieval.
 */
function skillPool(index: TermIndex, query: RetrievalQuery, stats: CorpusStats, words: string[], tags: string[]): Candidate[] {
  const cq = queryTerms(stats, 'skill', words, tags);
  return candidates(index, cq, ['global'], weightsFor(query), new Set(tags.map(tagTerm)).size);
}

function scoreSkills(
  pool: readonly Candidate[],
  rows: readonly Record<string, unknown>[],
  query: RetrievalQuery,
  tags: string[],
  now: Date,
  limit: number
): Scored<Skill>[] {
  const w = weightsFor(query);
  const lexical = lexicalParts(pool, new Set(tags.map(tagTerm)).size);
  const scored = rows.map(row => {
    const item = skillFromRow(row);
    const lex = lexical.get(item.id) ?? { bm25: 0, lexical: 0, tags: 0 };
    const parts = {
      lexical: lex.lexical,
      tags: lex.tags,
      recency: Math.pow(0.5, ageDays(now, item.updated_at ?? item.created_at) / SKILL_HALF_LIFE_DAYS),
      quality: SKILL_SOURCE_QUALITY[item.source] ?? 0.5,
      usage: usageComponent(item.usage_count),
      stage: stageFit(item.stages, query.stage),
      conditions: 0
    };
    const total = weighted(w, parts);
    const breakdown: ScoreBreakdown = { bm25: lex.bm25, ...parts, conditionMismatches: 0, prior: 1, mismatchFactor: 1, projectFactor: 1, total };
    return { item, score: total, breakdown, chars: renderSkill(item).length };
  });
  return scored
    .sort(
      byScore(
        s => s.usage_count ?? 0,
        s => s.id
      )
    )
    .slice(0, limit);
}

/** Normalised condition value: case, spacing and punctuation differences are not mismatches. */
export function normaliseCondition(value: string): string {
  return value
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, ' ')
    .trim();
}

const CONDITION_KEYS = ['dataset', 'method', 'budget', 'failure_mode'] as const;

/** Matches and mismatches of a memory's conditions against the query's (a key the memory does not state is neither). */
function conditionMatch(memory: Memory, asked: Conditions): { matched: number; mismatched: number; askedCount: number } {
  let matched = 0;
  let mismatched = 0;
  let askedCount = 0;
  for (const key of CONDITION_KEYS) {
    const want = asked[key];
    if (!want || !want.trim()) continue;
    askedCount++;
    const have = memory.conditions?.[key];
    if (!have || !have.trim()) continue;
    if (normaliseCondition(have) === normaliseCondition(want)) matched++;
    else mismatched++;
  }
  return { matched, mismatched, askedCount };
}

/** Scores the memory candidates (see `scoreSkills` for why the non-lexical part is computed here). */
function memoryPool(index: TermIndex, query: RetrievalQuery, stats: CorpusStats, words: string[], tags: string[]): Candidate[] {
  const cq = queryTerms(stats, 'memory', words, tags);
  const scopes = query.projectId ? [GLOBAL_SCOPE, query.projectId] : [GLOBAL_SCOPE];
  return candidates(index, cq, scopes, weightsFor(query), new Set(tags.map(tagTerm)).size);
}

function scoreMemories(
  pool: readonly Candidate[],
  rows: readonly Record<string, unknown>[],
  query: RetrievalQuery,
  tags: string[],
  now: Date,
  limit: number
): Scored<Memory>[] {
  const w = weightsFor(query);
  const lexical = lexicalParts(pool, new Set(tags.map(tagTerm)).size);
  const scored = rows.map(row => {
    const item = memoryFromRow(row);
    const lex = lexical.get(item.id) ?? { bm25: 0, lexical: 0, tags: 0 };
    const cond = conditionMatch(item, query.conditions ?? {});
    const asked = Math.max(cond.askedCount, 1);
    const parts = {
      lexical: lex.lexical,
      tags: lex.tags,
      recency: Math.pow(0.5, ageDays(now, item.updated_at ?? item.created_at, item.last_used_at) / MEMORY_HALF_LIFE_DAYS[item.kind]),
      quality: item.importance * item.confidence,
      usage: usageComponent(item.usage_count),
      stage: stageFit(item.stages, query.stage),
      conditions: cond.matched / asked
    };
    const prior = MEMORY_KIND_PRIOR[query.stage][item.kind];
    const penalty = item.kind === 'failed_direction' ? CONDITION_MISMATCH_PENALTY.failed_direction : CONDITION_MISMATCH_PENALTY.other;
    const mismatchFactor = 1 - (penalty * cond.mismatched) / asked;
    const projectFactor = query.projectId && item.scope === query.projectId ? PROJECT_SCOPE_BOOST : 1;
    const total = prior * mismatchFactor * projectFactor * weighted(w, parts);
    const breakdown: ScoreBreakdown = { bm25: lex.bm25, ...parts, conditionMismatches: cond.mismatched, prior, mismatchFactor, projectFactor, total };
    const result: Scored<Memory> = { item, score: total, breakdown, chars: renderMemory(item).length };
    if (item.kind === 'failed_direction' && cond.matched > 0 && cond.mismatched === 0) {
      result.warning = `Failed before under matching conditions: ${item.content}`;
    }
    return result;
  });
  return scored
    .sort(
      byScore(
        m => m.importance,
        m => m.id
      )
    )
    .slice(0, limit);
}

/** Keeps items in score order while they fit the budget (an item too long is skipped, not cut). */
function fitBudget<T>(items: Scored<T>[], k: number, budget: number): { kept: Scored<T>[]; used: number } {
  const kept: Scored<T>[] = [];
  let used = 0;
  for (const item of items) {
    if (kept.length >= k) break;
    if (used + item.chars > budget) continue;
    kept.push(item);
    used += item.chars;
  }
  return { kept, used };
}

/** How many scored items each table returns: top-k plus slack for items the budget skips. */
function resultLimit(k: number): number {
  return k * 4;
}

/**
 * Retrieves the skills and memories for one stage. Global memories are eligible in every
 * project; a project's own memories only in that project.
 */
export async function retrieve(store: ReadableStore, query: RetrievalQuery): Promise<RetrievalResult> {
  const k = query.k ?? DEFAULT_K;
  const budget = query.charBudget ?? STAGE_CHAR_BUDGET[query.stage];
  const now = query.now ?? new Date();
  const words = [...new Set(tokenize(query.query))];
  const tags = [...new Set(query.tags ?? [])];
  const limit = resultLimit(k);
  const index = termIndexOf(store);
  const pools = () => {
    const stats = readCorpusStats(index, words, tags);
    return { skillsIn: skillPool(index, query, stats, words, tags), memoriesIn: memoryPool(index, query, stats, words, tags) };
  };
  let early: (ReturnType<typeof pools> & { stamp: string }) | null = null;
  const reading = store.read(async q => {
    if (!index.loaded) await index.sync(q);
    // Optimistic: score with the cached index and read the generation beside the pools' rows;
    // if another write moved it, bring the index to this snapshot and redo (once suffices).
    for (let attempt = 0; ; attempt++) {
      // The early pools count only if no sync (a concurrent retrieval's) changed the index since.
      const { skillsIn, memoriesIn } = attempt === 0 && early?.stamp === index.stamp ? early : pools();
      const fetched = await fetchPools(q, skillsIn, memoriesIn);
      if (index.isAt(fetched.generation, fetched.storeId)) {
        return {
          skills: skillsIn.length ? scoreSkills(skillsIn, fetched.skills, query, tags, now, limit) : [],
          memories: memoriesIn.length ? scoreMemories(memoriesIn, fetched.memories, query, tags, now, limit) : []
        };
      }
      if (attempt > 0)
        throw new Error(
          `retrieval: the term index did not reach the store's generation ${fetched.generation} after a sync; this is a bug in retrieval/term-index.ts`
        );
      await index.sync(q);
    }
  });
  // store.read() has started opening the file (its DuckDB work runs off the main thread), so the
  // pools are scored meanwhile: after a hand-off the open and the scoring overlap.
  if (index.loaded) early = { ...pools(), stamp: index.stamp };
  const { skills, memories } = await reading;
  const skillPart = fitBudget(skills, k, Math.floor(budget * SKILL_BUDGET_SHARE));
  const memoryPart = fitBudget(memories, k, budget - skillPart.used);
  return { skills: skillPart.kept, memories: memoryPart.kept };
}
