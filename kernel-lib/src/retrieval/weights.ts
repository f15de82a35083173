/**
 * Retrieval weights: one named table per concern, per stage, so a reader can see why an
 * item ranked where it did and a test can change one weight and predict the new order.
 * Every score component is normalised to [0, 1] before weighting.
 */
import type { StageName } from '../stage-contract';
import type { MemoryKind } from '../records/memories';

/** Weights of the score components. */
export interface ComponentWeights {
  /** BM25 over the text, normalised by the best candidate's BM25. */
  lexical: number;
  /** Fraction of the query's tags the item carries. */
  tags: number;
  /** Exponential decay by age (half-life per kind). */
  recency: number;
  /** Memories: importance × confidence. Skills: trust in the skill's source. */
  quality: number;
  /** How often the planner already chose it (log-saturated). */
  usage: number;
  /** 1 when the item is written for this stage, 0.5 when for every stage, 0 otherwise. */
  stage: number;
  /** Fraction of the query's conditions (dataset, method, budget, failure mode) the item matches. */
  conditions: number;
}

/**
 * Per-stage weights. Ideation leans on text and novelty-relevant directions; planning and
 * experiment weigh conditions (a failure under the same dataset/budget is what they must
 * avoid); writing and review weigh recency less because constraints on style are durable.
 */
export const STAGE_WEIGHTS: Readonly<Record<StageName, ComponentWeights>> = {
  ideation: { lexical: 0.45, tags: 0.15, recency: 0.1, quality: 0.15, usage: 0.05, stage: 0.1, conditions: 0.0 },
  planning: { lexical: 0.35, tags: 0.1, recency: 0.1, quality: 0.15, usage: 0.05, stage: 0.1, conditions: 0.15 },
  experiment: { lexical: 0.3, tags: 0.1, recency: 0.1, quality: 0.15, usage: 0.05, stage: 0.1, conditions: 0.2 },
  analysis: { lexical: 0.4, tags: 0.1, recency: 0.1, quality: 0.15, usage: 0.05, stage: 0.1, conditions: 0.1 },
  writing: { lexical: 0.4, tags: 0.15, recency: 0.05, quality: 0.2, usage: 0.05, stage: 0.15, conditions: 0.0 },
  review: { lexical: 0.4, tags: 0.15, recency: 0.05, quality: 0.2, usage: 0.05, stage: 0.15, conditions: 0.0 }
};

/**
 * Prior multiplier of a memory kind per stage (like the official per-task tables): ideation
 * and planning want directions, experiment wants data and training strategies, writing and
 * review want the researcher's constraints and profile.
 */
export const MEMORY_KIND_PRIOR: Readonly<Record<StageName, Readonly<Record<MemoryKind, number>>>> = {
  ideation: {
    user_constraint: 1.0,
    user_profile: 1.1,
    project_context: 1.1,
    decision_history: 0.9,
    promising_direction: 1.5,
    failed_direction: 1.3,
    data_strategy: 0.6,
    training_strategy: 0.6
  },
  planning: {
    user_constraint: 1.4,
    user_profile: 1.0,
    project_context: 1.2,
    decision_history: 1.1,
    promising_direction: 1.4,
    failed_direction: 1.4,
    data_strategy: 0.9,
    training_strategy: 0.9
  },
  experiment: {
    user_constraint: 1.3,
    user_profile: 0.8,
    project_context: 1.1,
    decision_history: 1.1,
    promising_direction: 0.8,
    failed_direction: 1.2,
    data_strategy: 1.5,
    training_strategy: 1.5
  },
  analysis: {
    user_constraint: 1.2,
    user_profile: 0.9,
    project_context: 1.1,
    decision_history: 1.2,
    promising_direction: 0.9,
    failed_direction: 1.1,
    data_strategy: 1.0,
    training_strategy: 1.0
  },
  writing: {
    user_constraint: 1.4,
    user_profile: 1.4,
    project_context: 1.0,
    decision_history: 1.1,
    promising_direction: 0.8,
    failed_direction: 0.8,
    data_strategy: 0.6,
    training_strategy: 0.6
  },
  review: {
    user_constraint: 1.4,
    user_profile: 1.2,
    project_context: 1.0,
    decision_history: 1.2,
    promising_direction: 0.8,
    failed_direction: 0.9,
    data_strategy: 0.6,
    training_strategy: 0.6
  }
};

/**
 * Multiplier of a memory of the query's own project. Global memories (the researcher's profile
 * and constraints) are candidates in every project, decay slowly and carry the highest kind
 * priors in several stages, so at equal text match they outranked the project's own context
 * (at 10k records, 43 of 50 top-5 results were global). 1.5 is above the largest ratio of a
 * global kind's prior to a project kind's in any stage (writing: user_profile 1.4 against
 * project_context 1.0), so the project's memory wins a tie on text in every stage.
 */
export const PROJECT_SCOPE_BOOST = 1.5;

/** Trust in a skill by where it came from: built-ins are curated, distilled and imported ones passed the review gate only. */
export const SKILL_SOURCE_QUALITY: Readonly<Record<'builtin' | 'distilled' | 'imported', number>> = {
  builtin: 0.8,
  distilled: 0.6,
  imported: 0.5
};

/** Skills age slowly: a procedure stays valid much longer than a project fact. */
export const SKILL_HALF_LIFE_DAYS = 365;

/** Usage count at which the usage component saturates at 1 (log scale). */
export const USAGE_SATURATION = 20;

/**
 * How much a condition mismatch scales an item down, per mismatched fraction of the query's
 * conditions. A failed direction under other conditions is weaker evidence, not no evidence,
 * so it is down-weighted rather than filtered; the penalty is larger for failures because a
 * failure is the kind most specific to its conditions.
 */
export const CONDITION_MISMATCH_PENALTY = { failed_direction: 0.6, other: 0.3 } as const;

/** Characters of retrieved context per stage (skills + memories); planning and experiment carry the most procedure. */
export const STAGE_CHAR_BUDGET: Readonly<Record<StageName, number>> = {
  ideation: 2400,
  planning: 3600,
  experiment: 3600,
  analysis: 2800,
  writing: 2800,
  review: 2400
};

/** Share of the character budget that goes to skills; memories get the rest (and any unused skill share). */
export const SKILL_BUDGET_SHARE = 0.5;

/** Default top-k per table. */
export const DEFAULT_K = 5;

/** BM25 parameters (the usual Robertson values). */
export const BM25_K1 = 1.2;
export const BM25_B = 0.75;

/**
 * Query words found in more than this fraction of a kind's documents are not probed: their
 * idf is under ~1.6 (against ~7 for a rare word) while their postings are most of what a
 * query would read, which kept 100k-record retrieval far above its 10 ms target.
 */
export const COMMON_TERM_DF_FRACTION = 0.15;

/** Below this many documents every word is probed: a small corpus has no reliable "common" words. */
export const COMMON_TERM_MIN_DOCS = 200;

/**
 * Postings a query may read per table: the rarest words are probed first and common ones
 * dropped once this is reached (their idf is low anyway). Bounds the cost of one query.
 */
export const MAX_PROBED_POSTINGS = 20_000;

/**
 * Lexical candidates per table passed on to the scoring query. Scoring re-ranks by recency,
 * quality, usage, stage and conditions, which move an item by at most ~half the score, so
 * items far down the lexical order rarely reach the top k (the pool is 10x the default k);
 * the pool keeps the scoring query's cost independent of the table size (measured: its
 * planning and row fetch grow with the pool, ~3 ms at 50 and ~15 ms at 160 on these 2 cores).
 */
export const CANDIDATE_POOL = 50;

/**
 * Always-candidates (standing constraints, built-ins) per table, best first by score: bounded so a
 * huge set cannot crowd the pool. 20 is well above the k a stage shows (5) and keeps the pool's row
 * fetch, the bulk of a retrieval's cost, near 10 ms at 100k records (50 measured 11-12 ms).
 */
export const MAX_ALWAYS_CANDIDATES = 20;

/** Kinds that are candidates for every query even without term overlap: the researcher's standing constraints. */
export const ALWAYS_CANDIDATE_KINDS: readonly MemoryKind[] = ['user_constraint', 'user_profile'];
