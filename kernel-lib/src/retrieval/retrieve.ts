/**
 * Retrieval: one scoring query per table (skills, memories). BM25 is computed in SQL from
 * the precomputed term tables (retrieval/terms.ts); tag overlap, recency, quality, usage,
 * stage fit and condition match are added with per-stage weights (retrieval/weights.ts).
 * Each item comes back with its score breakdown, then top-k and a character budget apply.
 */
import type { Memory, Skill } from '@nanoresearch/schema';
import type { Queryable } from '../store/queryable';
import type { StageName } from '../orchestrator/types';
import { MEMORY_HALF_LIFE_DAYS, MEMORY_KINDS, memoryFromRow } from '../memory/records';
import { skillFromRow } from '../skills/records';
import { DocKind, corpusStats } from './terms';
import { tagTerm, termKey, tokenize } from './tokenize';
import {
  ALWAYS_CANDIDATE_KINDS,
  BM25_B,
  BM25_K1,
  COMMON_TERM_DF_FRACTION,
  COMMON_TERM_MIN_DOCS,
  ComponentWeights,
  CONDITION_MISMATCH_PENALTY,
  DEFAULT_K,
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

/** A SQL string literal. */
function str(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

interface QueryTerm {
  key: number;
  idf: number;
  isTag: boolean;
}

/** Query terms of one kind with their BM25 idf (terms absent from the corpus are dropped). */
async function queryTerms(q: Queryable, kind: DocKind, words: readonly string[], tags: readonly string[]): Promise<{ terms: QueryTerm[]; avgLen: number }> {
  const { nDocs, avgLen } = await corpusStats(q, kind);
  const wanted = new Map<number, boolean>();
  for (const w of words) wanted.set(termKey(kind, w), false);
  for (const t of tags) wanted.set(termKey(kind, tagTerm(t)), true);
  if (nDocs === 0 || wanted.size === 0) return { terms: [], avgLen };
  const rows = await q.all<{ term_key: number; df: number }>(
    `SELECT term_key, df FROM term_df WHERE term_key IN (${[...wanted.keys()].map(num).join(', ')})`
  );
  const terms = rows
    .map(r => ({
      key: Number(r.term_key),
      df: r.df,
      // Lucene's BM25 idf: always positive, so a very common term still counts a little.
      idf: Math.log(1 + (nDocs - r.df + 0.5) / (r.df + 0.5)),
      isTag: wanted.get(Number(r.term_key)) === true
    }))
    // Corpus stop-words: words in more than COMMON_TERM_DF_FRACTION of the documents carry
    // little idf but most of the postings to read, so they are left out of the probe (tags,
    // chosen on purpose by the caller, always stay).
    .filter(t => t.isTag || nDocs < COMMON_TERM_MIN_DOCS || t.df <= COMMON_TERM_DF_FRACTION * nDocs)
    .sort((a, b) => a.df - b.df);
  return { terms: terms.map(({ key, idf, isTag }) => ({ key, idf, isTag })), avgLen };
}

/** The `hits` CTE: BM25 and tag hits per document, probing postings by term key. */
function hitsCte(terms: readonly QueryTerm[], avgLen: number): string {
  if (terms.length === 0) return 'hits AS (SELECT NULL::VARCHAR AS doc_id, 0.0::DOUBLE AS bm25, 0 AS tag_hits WHERE false)';
  const values = terms.map(t => `(${num(t.key)}::BIGINT, ${num(t.idf)}::DOUBLE, ${t.isTag})`).join(', ');
  const avg = num(Math.max(avgLen, 1));
  return `qt(term_key, idf, is_tag) AS (VALUES ${values}),
  hits AS (
    SELECT p.doc_id,
           sum(CASE WHEN qt.is_tag THEN 0 ELSE qt.idf * p.tf * ${num(BM25_K1 + 1)} / (p.tf + ${num(BM25_K1)} * (${num(1 - BM25_B)} + ${num(BM25_B)} * p.doc_len / ${avg})) END) AS bm25,
           sum(CASE WHEN qt.is_tag THEN 1 ELSE 0 END) AS tag_hits
      FROM doc_terms p JOIN qt ON qt.term_key = p.term_key
     WHERE p.term_key IN (${terms.map(t => num(t.key)).join(', ')})
     GROUP BY p.doc_id
  )`;
}

/** SQL of the stage-fit component over a JSON `stages` column. */
function stageSql(stage: StageName): string {
  return `CASE WHEN stages IS NULL OR json_array_length(stages) = 0 THEN 0.5
               WHEN list_contains(from_json(stages, '["VARCHAR"]'), ${str(stage)}) THEN 1.0 ELSE 0.0 END`;
}

/** SQL of the usage component. */
function usageSql(): string {
  return `least(1.0, ln(1 + coalesce(usage_count, 0)) / ${num(Math.log(1 + USAGE_SATURATION))})`;
}

/** SQL of the age in days of a row at `now`, from its newest timestamp. */
function ageDaysSql(now: Date, columns: string): string {
  return `greatest(0, (${num(now.getTime() / 1000)} - epoch(${columns})) / 86400.0)`;
}

function weightsFor(query: RetrievalQuery): ComponentWeights {
  return { ...STAGE_WEIGHTS[query.stage], ...(query.weights ?? {}) };
}

function weightedSum(w: ComponentWeights): string {
  return `(${num(w.lexical)} * c_lexical + ${num(w.tags)} * c_tags + ${num(w.recency)} * c_recency + ${num(w.quality)} * c_quality +
           ${num(w.usage)} * c_usage + ${num(w.stage)} * c_stage + ${num(w.conditions)} * c_conditions)`;
}

interface ComponentRow {
  bm25: number;
  c_lexical: number;
  c_tags: number;
  c_recency: number;
  c_quality: number;
  c_usage: number;
  c_stage: number;
  c_conditions: number;
  mismatches: number;
  prior: number;
  mismatch_factor: number;
  total: number;
}

function breakdownOf(row: ComponentRow): ScoreBreakdown {
  return {
    bm25: Number(row.bm25),
    lexical: Number(row.c_lexical),
    tags: Number(row.c_tags),
    recency: Number(row.c_recency),
    quality: Number(row.c_quality),
    usage: Number(row.c_usage),
    stage: Number(row.c_stage),
    conditions: Number(row.c_conditions),
    conditionMismatches: Number(row.mismatches),
    prior: Number(row.prior),
    mismatchFactor: Number(row.mismatch_factor),
    total: Number(row.total)
  };
}

/** How many rows a scoring query returns: top-k plus slack for items the budget skips. */
function candidateLimit(k: number): number {
  return k * 4;
}

async function scoreSkills(q: Queryable, query: RetrievalQuery, words: string[], tags: string[], now: Date, limit: number): Promise<Scored<Skill>[]> {
  const { terms, avgLen } = await queryTerms(q, 'skill', words, tags);
  const w = weightsFor(query);
  const nTags = new Set(tags.map(tagTerm)).size;
  const sourceQuality = `CASE source ${Object.entries(SKILL_SOURCE_QUALITY)
    .map(([s, v]) => `WHEN ${str(s)} THEN ${num(v)}`)
    .join(' ')} ELSE 0.5 END`;
  const rows = await q.all<Record<string, unknown> & ComponentRow>(
    `WITH ${hitsCte(terms, avgLen)},
     cand AS (
       SELECT s.*, coalesce(h.bm25, 0) AS bm25, coalesce(h.tag_hits, 0) AS tag_hits
         FROM skills s LEFT JOIN hits h ON h.doc_id = s.id
        WHERE s.status = 'active'
     ),
     parts AS (
       SELECT *,
              coalesce(bm25 / nullif(max(bm25) OVER (), 0), 0) AS c_lexical,
              ${nTags > 0 ? `tag_hits / ${num(nTags)}` : '0.0'} AS c_tags,
              pow(0.5, ${ageDaysSql(now, 'coalesce(updated_at, created_at, TIMESTAMP \'1970-01-01\')')} / ${num(SKILL_HALF_LIFE_DAYS)}) AS c_recency,
              ${sourceQuality} AS c_quality,
              ${usageSql()} AS c_usage,
              ${stageSql(query.stage)} AS c_stage,
              0.0 AS c_conditions, 0 AS mismatches, 1.0 AS prior, 1.0 AS mismatch_factor
         FROM cand
     )
     SELECT *, ${weightedSum(w)} AS total FROM parts
      ORDER BY total DESC, usage_count DESC, id
      LIMIT ${num(limit)}`
  );
  return rows.map(row => {
    const item = skillFromRow(row);
    return { item, score: Number(row.total), breakdown: breakdownOf(row), chars: renderSkill(item).length };
  });
}

/** Normalised condition value: case, spacing and punctuation differences are not mismatches. */
export function normaliseCondition(value: string): string {
  return value.toLowerCase().replace(/[^a-z0-9]+/g, ' ').trim();
}

const CONDITION_KEYS = ['dataset', 'method', 'budget', 'failure_mode'] as const;

async function scoreMemories(q: Queryable, query: RetrievalQuery, words: string[], tags: string[], now: Date, limit: number): Promise<Scored<Memory>[]> {
  const { terms, avgLen } = await queryTerms(q, 'memory', words, tags);
  const w = weightsFor(query);
  const nTags = new Set(tags.map(tagTerm)).size;
  const asked = CONDITION_KEYS.filter(key => (query.conditions?.[key] ?? '').trim() !== '');
  // Per asked condition: +1 match, -1 mismatch, 0 when the memory does not say.
  const conditionCases = asked.map(key => {
    const column = `regexp_replace(lower(json_extract_string(conditions, '$.${key}')), '[^a-z0-9]+', ' ', 'g')`;
    return `CASE WHEN json_extract_string(conditions, '$.${key}') IS NULL THEN 0
                 WHEN trim(${column}) = ${str(normaliseCondition(query.conditions?.[key] ?? ''))} THEN 1 ELSE -1 END`;
  });
  const matches = conditionCases.length ? conditionCases.map(c => `(CASE WHEN ${c} = 1 THEN 1 ELSE 0 END)`).join(' + ') : '0';
  const mismatches = conditionCases.length ? conditionCases.map(c => `(CASE WHEN ${c} = -1 THEN 1 ELSE 0 END)`).join(' + ') : '0';
  const halfLife = `CASE kind ${MEMORY_KINDS.map(k => `WHEN ${str(k)} THEN ${num(MEMORY_HALF_LIFE_DAYS[k])}`).join(' ')} ELSE 60 END`;
  const prior = `CASE kind ${MEMORY_KINDS.map(k => `WHEN ${str(k)} THEN ${num(MEMORY_KIND_PRIOR[query.stage][k])}`).join(' ')} ELSE 1.0 END`;
  const nAsked = Math.max(asked.length, 1);
  const scopeFilter = query.projectId ? `(m.scope = 'global' OR m.scope = ${str(query.projectId)})` : `m.scope = 'global'`;
  const rows = await q.all<Record<string, unknown> & ComponentRow>(
    `WITH ${hitsCte(terms, avgLen)},
     cand AS (
       SELECT m.*, coalesce(h.bm25, 0) AS bm25, coalesce(h.tag_hits, 0) AS tag_hits
         FROM memories m LEFT JOIN hits h ON h.doc_id = m.id
        WHERE m.status = 'active' AND ${scopeFilter}
          AND (h.doc_id IS NOT NULL OR m.kind IN (${ALWAYS_CANDIDATE_KINDS.map(str).join(', ')}))
     ),
     conds AS (
       SELECT *, (${matches}) AS matched, (${mismatches}) AS mismatches FROM cand
     ),
     parts AS (
       SELECT *,
              coalesce(bm25 / nullif(max(bm25) OVER (), 0), 0) AS c_lexical,
              ${nTags > 0 ? `tag_hits / ${num(nTags)}` : '0.0'} AS c_tags,
              pow(0.5, ${ageDaysSql(now, 'greatest(coalesce(updated_at, created_at), coalesce(last_used_at, updated_at, created_at))')} / (${halfLife})) AS c_recency,
              importance * confidence AS c_quality,
              ${usageSql()} AS c_usage,
              ${stageSql(query.stage)} AS c_stage,
              matched / ${num(nAsked)} AS c_conditions,
              ${prior} AS prior,
              1.0 - (CASE WHEN kind = 'failed_direction' THEN ${num(CONDITION_MISMATCH_PENALTY.failed_direction)} ELSE ${num(CONDITION_MISMATCH_PENALTY.other)} END)
                    * mismatches / ${num(nAsked)} AS mismatch_factor
         FROM conds
     )
     SELECT *, prior * mismatch_factor * ${weightedSum(w)} AS total FROM parts
      ORDER BY total DESC, importance DESC, id
      LIMIT ${num(limit)}`
  );
  return rows.map(row => {
    const item = memoryFromRow(row);
    const breakdown = breakdownOf(row);
    const scored: Scored<Memory> = { item, score: breakdown.total, breakdown, chars: renderMemory(item).length };
    if (item.kind === 'failed_direction' && asked.length > 0 && breakdown.conditions > 0 && breakdown.conditionMismatches === 0) {
      scored.warning = `Failed before under matching conditions: ${item.content}`;
    }
    return scored;
  });
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
  const limit = candidateLimit(k);
  const { skills, memories } = await store.read(async q => ({
    skills: await scoreSkills(q, query, words, tags, now, limit),
    memories: await scoreMemories(q, query, words, tags, now, limit)
  }));
  const skillPart = fitBudget(skills, k, Math.floor(budget * SKILL_BUDGET_SHARE));
  const memoryPart = fitBudget(memories, k, budget - skillPart.used);
  return { skills: skillPart.kept, memories: memoryPart.kept };
}
