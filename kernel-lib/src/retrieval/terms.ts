/**
 * Term tables behind BM25 (migration 2): postings `doc_terms`, document frequencies `term_df`
 * and per-kind corpus totals `doc_stats`, all maintained incrementally on every skill or
 * memory write, so a query reads precomputed statistics instead of aggregating the corpus.
 */
import type { Memory, Skill } from '@nanoresearch/schema';
import type { Queryable } from '../store/queryable';
import { tagTerm, termFrequencies, termKey, tokenize } from './tokenize';

/** The document collections that have postings. */
export type DocKind = 'skill' | 'memory';

/** One document to index: its text and tags. */
export interface IndexableDoc {
  id: string;
  text: string;
  tags?: readonly string[];
  /** 'global' (default) or the project id: candidate generation filters postings by it. */
  scope?: string;
  /** A candidate for every query in its scope, word overlap or not (standing constraints, built-in skills). */
  always?: boolean;
}

/**
 * The pseudo-term every always-candidate document carries. Its '@' can never come out of
 * `tokenize`, so no query word matches it; retrieval probes it on purpose.
 */
export const ALWAYS_TERM = '@always';

/** Text of a skill as retrieval and the review gate see it. */
export function skillText(skill: Pick<Skill, 'name' | 'description' | 'when_to_use' | 'instructions'>): string {
  return [skill.name, skill.description, skill.when_to_use ?? '', ...skill.instructions].join('\n');
}

/** Text of a memory as retrieval sees it: the statement plus its conditions. */
export function memoryText(memory: Pick<Memory, 'key' | 'content' | 'conditions'>): string {
  const conditions = Object.values(memory.conditions ?? {}).join(' ');
  return `${memory.content}\n${conditions}`;
}

interface Posting {
  term_key: number;
  doc_id: string;
  tf: number;
  doc_len: number;
}

/** Index entry of a memory: its scope, and the standing kinds are always candidates. */
export function memoryDoc(memory: Memory, alwaysKinds: readonly string[]): IndexableDoc {
  return { id: memory.id, text: memoryText(memory), tags: memory.tags, scope: memory.scope, always: alwaysKinds.includes(memory.kind) };
}

/** Index entry of a skill: global; built-ins are always candidates (a handful, curated). */
export function skillDoc(skill: Skill): IndexableDoc {
  return { id: skill.id, text: skillText(skill), tags: skill.tags, scope: 'global', always: skill.source === 'builtin' };
}

/** Postings of one document: words with their frequencies, tags with tf 1 (length counts words only). */
function postingsOf(kind: DocKind, doc: IndexableDoc): { postings: Posting[]; terms: Map<number, string>; len: number } {
  const tokens = tokenize(doc.text);
  const terms = new Map<number, string>();
  const postings: Posting[] = [];
  for (const [term, tf] of termFrequencies(tokens)) {
    const key = termKey(kind, term);
    terms.set(key, term);
    postings.push({ term_key: key, doc_id: doc.id, tf, doc_len: tokens.length });
  }
  const markers = [...new Set((doc.tags ?? []).map(tagTerm))];
  if (doc.always) markers.push(ALWAYS_TERM);
  for (const marker of markers) {
    const key = termKey(kind, marker);
    if (terms.has(key)) continue;
    terms.set(key, marker);
    postings.push({ term_key: key, doc_id: doc.id, tf: 1, doc_len: tokens.length });
  }
  return { postings, terms, len: tokens.length };
}

/**
 * A batch for a `$param::JSON` placeholder read with `from_json`, so a batch of any size is
 * one statement. The store JSON-encodes arrays bound to a JSON parameter (exactly once).
 */
function jsonParam<T>(rows: readonly T[]): readonly T[] {
  return rows;
}

/** A small batch's ids as an SQL IN-list (an ART probe); larger batches go through a JSON parameter. */
const LITERAL_ID_LIST_MAX = 200;

function sqlString(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

/** `column IN (...)` for a batch of ids, with its parameters. */
function idFilter(column: string, ids: readonly string[]): { sql: string; params: Record<string, unknown> } {
  if (ids.length <= LITERAL_ID_LIST_MAX) return { sql: `${column} IN (${ids.map(sqlString).join(', ')})`, params: {} };
  return { sql: `${column} IN (SELECT unnest(from_json($ids::JSON, '["VARCHAR"]')))`, params: { ids: jsonParam(ids) } };
}

function withParams(params: Record<string, unknown>): Record<string, unknown> | undefined {
  return Object.keys(params).length ? params : undefined;
}

/**
 * Generations of `term_changes` kept: a cache further behind than this reloads the whole
 * index instead of the changed documents (the log is pruned when postings are compacted).
 */
export const TERM_CHANGES_KEPT = 10_000;

/**
 * Bumps the term generation and logs the documents this write (re)indexed or removed, in the
 * caller's transaction: caches of the term index (term-index.ts) re-read exactly these.
 * `scope` is null for a removed document.
 */
async function logTermChanges(q: Queryable, kind: DocKind, docs: ReadonlyArray<{ id: string; scope: string | null }>): Promise<void> {
  const bumped = await q.get<{ generation: number }>('UPDATE term_generation SET generation = generation + 1 RETURNING generation');
  if (!bumped) throw new Error('retrieval: the store has no term_generation row; reopen it with Store.open() to run its migrations');
  await q.run(
    `INSERT INTO term_changes
       SELECT $gen, $kind, id, scope FROM (SELECT unnest(from_json($rows::JSON, '[{"id":"VARCHAR","scope":"VARCHAR"}]'), recursive := true))`,
    { gen: Number(bumped.generation), kind, rows: jsonParam(docs) }
  );
}

/**
 * Removes these documents from the index: their postings, their forward entries, and their
 * share of df and the corpus totals. Runs inside the caller's write transaction.
 */
export async function unindexDocuments(q: Queryable, kind: DocKind, ids: readonly string[]): Promise<void> {
  const removed = await removeFromIndex(q, kind, ids);
  if (removed.length) await logTermChanges(q, kind, removed.map(id => ({ id, scope: null })));
}

/** `unindexDocuments` without the change log (the caller logs); returns the ids that were indexed. */
async function removeFromIndex(q: Queryable, kind: DocKind, ids: readonly string[]): Promise<string[]> {
  if (ids.length === 0) return [];
  const filter = idFilter('doc_id', ids);
  // Doc ids are unique within a kind; the kind is checked on the rows, not in the probe,
  // because a second predicate beside the IN-list turns the index probe into a full scan.
  const forward = (await q.all<{ doc_kind: string; doc_id: string; term_key: number; doc_len: number }>(
    `SELECT doc_kind, doc_id, term_key, doc_len FROM doc_terms WHERE ${filter.sql}`,
    withParams(filter.params)
  )).filter(r => r.doc_kind === kind);
  if (forward.length === 0) return [];
  const dfDrop = new Map<number, number>();
  const lengths = new Map<string, number>();
  for (const r of forward) {
    dfDrop.set(Number(r.term_key), (dfDrop.get(Number(r.term_key)) ?? 0) + 1);
    lengths.set(r.doc_id, r.doc_len);
  }
  const docIds = [...lengths.keys()];
  const keys = [...dfDrop.keys()];
  const found = idFilter('doc_id', docIds);
  await q.run(`DELETE FROM doc_terms WHERE doc_kind = $kind AND ${found.sql}`, { kind, ...found.params });
  // Rewrite the posting lists that mention these documents; rows left empty go.
  await q.run(
    `UPDATE term_postings SET postings = list_filter(postings, p -> NOT list_contains(from_json($gone::JSON, '["VARCHAR"]'), p.doc_id))
      WHERE term_key IN (${keys.join(', ')})`,
    { gone: jsonParam(docIds) }
  );
  await q.run(`DELETE FROM term_postings WHERE term_key IN (${keys.join(', ')}) AND len(postings) = 0`);
  await q.run(
    `UPDATE term_df SET df = term_df.df - d.n
       FROM (SELECT unnest(from_json($rows::JSON, '[{"k":"BIGINT","n":"INTEGER"}]'), recursive := true)) AS d
      WHERE term_df.term_key = d.k`,
    { rows: jsonParam([...dfDrop].map(([k, n]) => ({ k, n }))) }
  );
  await q.run('DELETE FROM term_df WHERE df <= 0');
  let removedLen = 0;
  for (const len of lengths.values()) removedLen += len;
  await q.run('UPDATE doc_stats SET n_docs = n_docs - $n, total_len = total_len - $len WHERE doc_kind = $kind', {
    kind,
    n: docIds.length,
    len: removedLen
  });
  return docIds;
}

/**
 * Delta rows of `term_postings` tolerated per distinct term before the table is compacted
 * into one list per term: each write appends a row per term it uses, and a probe reads
 * every row of a term, so the ratio bounds the probe's cost (compaction is O(table)).
 */
export const POSTINGS_COMPACTION_RATIO = 1.5;

/** Merges every term's posting rows into one list. Cheap to call; does the work only when worth it. */
export async function compactPostings(q: Queryable, force = false): Promise<boolean> {
  const counts = await q.get<{ rows: number; terms: number }>(
    'SELECT (SELECT count(*) FROM term_postings)::BIGINT AS rows, (SELECT count(*) FROM term_df)::BIGINT AS terms'
  );
  const rows = Number(counts?.rows ?? 0);
  const terms = Number(counts?.terms ?? 0);
  if (!force && rows <= Math.max(terms * POSTINGS_COMPACTION_RATIO, 1000)) return false;
  await q.run('CREATE TEMP TABLE merged_postings AS SELECT term_key, flatten(list(postings)) AS postings FROM term_postings GROUP BY term_key');
  await q.run('DELETE FROM term_postings');
  await q.run('INSERT INTO term_postings SELECT term_key, postings FROM merged_postings WHERE len(postings) > 0');
  await q.run('DROP TABLE merged_postings');
  await q.run('DELETE FROM term_changes WHERE generation < (SELECT generation FROM term_generation) - $kept', { kept: TERM_CHANGES_KEPT });
  return true;
}

/**
 * (Re)indexes documents: their old postings go, the new ones come in as delta rows, and df
 * and corpus totals move by the difference. Runs inside the caller's write transaction, so
 * the term tables never disagree with the records they index. Only active records are
 * indexed: retiring one unindexes it, so statistics describe what retrieval can return.
 * Bulk loads may pass `fresh: true` (skip the unindex step: the caller knows the documents
 * are new) and `compact: false` (defer compaction, then call `compactPostings(q, true)` once).
 */
export async function indexDocuments(
  q: Queryable,
  kind: DocKind,
  docs: readonly IndexableDoc[],
  options: { fresh?: boolean; compact?: boolean } = {}
): Promise<void> {
  if (docs.length === 0) return;
  if (!options.fresh) {
    await removeFromIndex(
      q,
      kind,
      docs.map(d => d.id)
    );
  }
  const forward: Array<{ doc_kind: string; doc_id: string; term_key: number; tf: number; doc_len: number }> = [];
  const lists = new Map<number, { term: string; postings: Array<{ doc_id: string; tf: number; len: number; scope: string }> }>();
  let totalLen = 0;
  for (const doc of docs) {
    const { postings, terms, len } = postingsOf(kind, doc);
    totalLen += len;
    for (const p of postings) {
      forward.push({ doc_kind: kind, doc_id: p.doc_id, term_key: p.term_key, tf: p.tf, doc_len: p.doc_len });
      let entry = lists.get(p.term_key);
      if (!entry) lists.set(p.term_key, (entry = { term: terms.get(p.term_key) ?? '', postings: [] }));
      entry.postings.push({ doc_id: p.doc_id, tf: p.tf, len: p.doc_len, scope: doc.scope ?? 'global' });
    }
  }
  await q.appendRows('doc_terms', forward);
  await q.run(
    `INSERT INTO term_postings
       SELECT k, p FROM (SELECT unnest(from_json($rows::JSON, '[{"k":"BIGINT","p":[{"doc_id":"VARCHAR","tf":"INTEGER","len":"INTEGER","scope":"VARCHAR"}]}]'), recursive := true))`,
    { rows: jsonParam([...lists].map(([k, v]) => ({ k, p: v.postings }))) }
  );
  await q.run(
    `INSERT INTO term_df (term_key, doc_kind, term, df)
       SELECT k, $kind, t, n FROM (SELECT unnest(from_json($rows::JSON, '[{"k":"BIGINT","t":"VARCHAR","n":"INTEGER"}]'), recursive := true))
     ON CONFLICT (term_key) DO UPDATE SET df = term_df.df + excluded.df`,
    { kind, rows: jsonParam([...lists].map(([k, v]) => ({ k, t: v.term, n: v.postings.length }))) }
  );
  await q.run(
    `INSERT INTO doc_stats (doc_kind, n_docs, total_len) VALUES ($kind, $n, $len)
     ON CONFLICT (doc_kind) DO UPDATE SET n_docs = doc_stats.n_docs + excluded.n_docs, total_len = doc_stats.total_len + excluded.total_len`,
    { kind, n: docs.length, len: totalLen }
  );
  await logTermChanges(q, kind, docs.map(d => ({ id: d.id, scope: d.scope ?? 'global' })));
  if (options.compact !== false) await compactPostings(q);
}
