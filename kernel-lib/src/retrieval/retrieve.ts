/**
 * Retrieval, per table (skills, memories): ONE candidate query computes BM25 and tag overlap
 * in SQL from the precomputed term tables (retrieval/terms.ts) and keeps a bounded pool, a
 * primary-key fetch reads the pool's records, and recency, quality, usage, stage fit and
 * condition match are added with per-stage weights (retrieval/weights.ts). Each item comes
 * back with its score breakdown; top-k and a character budget apply last.
 */
import type { Memory, Skill } from '@nanoresearch/schema';
import type { Queryable } from '../store/queryable';
import type { StageName } from '../orchestrator/types';
import { GLOBAL_SCOPE, MEMORY_HALF_LIFE_DAYS, memoryFromRow } from '../memory/records';
import { skillFromRow } from '../skills/records';
import { ALWAYS_TERM, DocKind } from './terms';
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

/** A memory as it is shown to the planner and stages. */
export function renderMemory(memory: Memory): string {
  const conditions = Object.entries(memory.conditions ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(', ');
  return `[${memory.kind}] ${memory.content}${conditions ? ` (under ${conditions})` : ''}`;
}

/** A SQL literal for a number we computed (never user text). */
function num(x: number): string {
  if (!Number.isFinite(x)) throw new Error(`retrieval: non-finite number ${x} in a query`);
  return String(x);
}

/** A DOUBLE literal (a bare decimal literal would be DECIMAL and can overflow in products). */
function dbl(x: number): string {
  return `${num(x)}::DOUBLE`;
}

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

/** Corpus totals and the df of every query term, both kinds, read in two small queries. */
interface CorpusStats {
  totals: Map<DocKind, { nDocs: number; avgLen: number }>;
  df: Map<number, number>;
}

async function readCorpusStats(q: Queryable, words: readonly string[], tags: readonly string[]): Promise<CorpusStats> {
  const totals = new Map<DocKind, { nDocs: number; avgLen: number }>();
  for (const row of await q.all<{ doc_kind: DocKind; n_docs: number; total_len: number }>('SELECT doc_kind, n_docs, total_len FROM doc_stats')) {
    totals.set(row.doc_kind, { nDocs: row.n_docs, avgLen: row.n_docs > 0 ? Number(row.total_len) / row.n_docs : 0 });
  }
  const keys = (['skill', 'memory'] as const).flatMap(kind => [...words.map(w => termKey(kind, w)), ...tags.map(t => termKey(kind, tagTerm(t)))]);
  const df = new Map<number, number>();
  if (keys.length) {
    for (const row of await q.all<{ term_key: number; df: number }>(`SELECT term_key, df FROM term_df WHERE term_key IN (${keys.map(num).join(', ')})`)) {
      df.set(Number(row.term_key), row.df);
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
 * Candidate generation: probes the posting lists of the query terms (and of the
 * always-candidate pseudo-term) through the ART index on `term_postings`, unnests them,
 * filters to the eligible scopes, and keeps the best
 * CANDIDATE_POOL documents by lexical + tag score plus every always-candidate. Only these go
 * on to the scoring query, so its cost does not grow with the table.
 */
async function candidates(q: Queryable, kind: DocKind, cq: CorpusQuery, scopes: readonly string[], w: ComponentWeights, nTags: number): Promise<Candidate[]> {
  const words = cq.terms.filter(t => !t.isTag);
  const tags = cq.terms.filter(t => t.isTag);
  const idf = words.length ? `CASE term_key ${words.map(t => `WHEN ${num(t.key)} THEN ${dbl(t.idf)}`).join(' ')} ELSE 0.0::DOUBLE END` : '0.0::DOUBLE';
  const tagHits = tags.length ? `count(*) FILTER (WHERE term_key IN (${tags.map(t => num(t.key)).join(', ')}))` : '0';
  const keys = [...cq.terms.map(t => t.key), cq.alwaysKey];
  const rows = await q.all<Candidate>(
    `WITH hit AS (
       SELECT term_key, unnest(postings) AS p FROM term_postings WHERE term_key IN (${keys.map(num).join(', ')})
     ),
     agg AS (
       SELECT p.doc_id AS doc_id,
              sum(${idf} * p.tf * ${dbl(BM25_K1 + 1)} / (p.tf + ${dbl(BM25_K1)} * (${dbl(1 - BM25_B)} + ${dbl(BM25_B)} * p.len / ${dbl(Math.max(cq.avgLen, 1))}))) AS bm25,
              ${tagHits} AS tag_hits,
              bool_or(term_key = ${num(cq.alwaysKey)}) AS always,
              min(p.scope) AS scope
         FROM hit
        GROUP BY p.doc_id
     )
     SELECT doc_id, bm25, tag_hits, always FROM agg
      WHERE scope IN (${scopes.map(str).join(', ')}) AND (bm25 > 0 OR tag_hits > 0 OR always)
      ORDER BY always DESC, ${dbl(w.lexical)} * bm25 / greatest(max(bm25) OVER (), 1e-12) + ${dbl(w.tags)} * tag_hits / ${dbl(Math.max(nTags, 1))} DESC, doc_id
      LIMIT ${num(CANDIDATE_POOL + MAX_ALWAYS_CANDIDATES)}`
  );
  // Always-candidates come first in that order; cap them, then take the lexical pool.
  const always = rows.filter(r => r.always).slice(0, MAX_ALWAYS_CANDIDATES);
  const lexical = rows.filter(r => !r.always).slice(0, CANDIDATE_POOL);
  return [...always, ...lexical];
}

/**
 * Records of the candidate pool by primary key: a literal id IN-list is an ART index probe
 * (a second predicate beside it turned the probe into a full scan, so status is checked here).
 */
async function fetchPool(q: Queryable, table: 'skills' | 'memories', pool: readonly Candidate[]): Promise<Record<string, unknown>[]> {
  const rows = await q.all<Record<string, unknown>>(`SELECT * FROM ${table} WHERE id IN (${pool.map(c => str(c.doc_id)).join(', ')})`);
  return rows.filter(r => r.status === 'active');
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

function weighted(w: ComponentWeights, b: Omit<ScoreBreakdown, 'total' | 'bm25' | 'conditionMismatches' | 'prior' | 'mismatchFactor'>): number {
  return (
    w.lexical * b.lexical + w.tags * b.tags + w.recency * b.recency + w.quality * b.quality + w.usage * b.usage + w.stage * b.stage + w.conditions * b.conditions
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
async function scoreSkills(q: Queryable, query: RetrievalQuery, stats: CorpusStats, words: string[], tags: string[], now: Date, limit: number): Promise<Scored<Skill>[]> {
  const cq = queryTerms(stats, 'skill', words, tags);
  const w = weightsFor(query);
  const nTags = new Set(tags.map(tagTerm)).size;
  const pool = await candidates(q, 'skill', cq, ['global'], w, nTags);
  if (pool.length === 0) return [];
  const lexical = lexicalParts(pool, nTags);
  const scored = (await fetchPool(q, 'skills', pool)).map(row => {
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
    const breakdown: ScoreBreakdown = { bm25: lex.bm25, ...parts, conditionMismatches: 0, prior: 1, mismatchFactor: 1, total };
    return { item, score: total, breakdown, chars: renderSkill(item).length };
  });
  return scored.sort(byScore(s => s.usage_count ?? 0, s => s.id)).slice(0, limit);
}

/** Normalised condition value: case, spacing and punctuation differences are not mismatches. */
export function normaliseCondition(value: string): string {
  return value.toLowerCase().replace(/[^a-z0-9]+/g, ' ').trim();
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
async function scoreMemories(q: Queryable, query: RetrievalQuery, stats: CorpusStats, words: string[], tags: string[], now: Date, limit: number): Promise<Scored<Memory>[]> {
  const cq = queryTerms(stats, 'memory', words, tags);
  const w = weightsFor(query);
  const nTags = new Set(tags.map(tagTerm)).size;
  const scopes = query.projectId ? [GLOBAL_SCOPE, query.projectId] : [GLOBAL_SCOPE];
  const pool = await candidates(q, 'memory', cq, scopes, w, nTags);
  if (pool.length === 0) return [];
  const lexical = lexicalParts(pool, nTags);
  const scored = (await fetchPool(q, 'memories', pool)).map(row => {
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
    const total = prior * mismatchFactor * weighted(w, parts);
    const breakdown: ScoreBreakdown = { bm25: lex.bm25, ...parts, conditionMismatches: cond.mismatched, prior, mismatchFactor, total };
    const result: Scored<Memory> = { item, score: total, breakdown, chars: renderMemory(item).length };
    if (item.kind === 'failed_direction' && cond.matched > 0 && cond.mismatched === 0) {
      result.warning = `Failed before under matching conditions: ${item.content}`;
    }
    return result;
  });
  return scored.sort(byScore(m => m.importance, m => m.id)).slice(0, limit);
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
  const { skills, memories } = await store.read(async q => {
    const stats = await readCorpusStats(q, words, tags);
    return {
      skills: await scoreSkills(q, query, stats, words, tags, now, limit),
      memories: await scoreMemories(q, query, stats, words, tags, now, limit)
    };
  });
  const skillPart = fitBudget(skills, k, Math.floor(budget * SKILL_BUDGET_SHARE));
  const memoryPart = fitBudget(memories, k, budget - skillPart.used);
  return { skills: skillPart.kept, memories: memoryPart.kept };
}
