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
}

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
  for (const tag of new Set((doc.tags ?? []).map(tagTerm))) {
    const key = termKey(kind, tag);
    if (terms.has(key)) continue;
    terms.set(key, tag);
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

/**
 * Removes the postings of these documents and takes them out of the statistics.
 * Runs inside the caller's write transaction.
 */
export async function unindexDocuments(q: Queryable, kind: DocKind, ids: readonly string[]): Promise<void> {
  if (ids.length === 0) return;
  const old = await q.all<{ term_key: number; n: number; docs: number; len: number }>(
    `SELECT term_key, count(*)::INTEGER AS n, count(DISTINCT doc_id)::INTEGER AS docs, sum(doc_len)::BIGINT AS len
       FROM doc_terms
      WHERE doc_kind = $kind AND doc_id IN (SELECT unnest(from_json($ids::JSON, '["VARCHAR"]')))
      GROUP BY term_key`,
    { kind, ids: jsonParam(ids) }
  );
  if (old.length === 0) return;
  const docs = await q.get<{ n: number; len: number }>(
    `SELECT count(*)::INTEGER AS n, coalesce(sum(doc_len), 0)::BIGINT AS len FROM
       (SELECT DISTINCT doc_id, doc_len FROM doc_terms
         WHERE doc_kind = $kind AND doc_id IN (SELECT unnest(from_json($ids::JSON, '["VARCHAR"]'))))`,
    { kind, ids: jsonParam(ids) }
  );
  await q.run(
    `DELETE FROM doc_terms WHERE doc_kind = $kind AND doc_id IN (SELECT unnest(from_json($ids::JSON, '["VARCHAR"]')))`,
    { kind, ids: jsonParam(ids) }
  );
  await q.run(
    `UPDATE term_df SET df = term_df.df - d.n
       FROM (SELECT unnest(from_json($rows::JSON, '[{"k":"BIGINT","n":"INTEGER"}]'), recursive := true)) AS d
      WHERE term_df.term_key = d.k`,
    { rows: jsonParam(old.map(o => ({ k: o.term_key, n: o.n }))) }
  );
  await q.run('DELETE FROM term_df WHERE df <= 0');
  await q.run('UPDATE doc_stats SET n_docs = n_docs - $n, total_len = total_len - $len WHERE doc_kind = $kind', {
    kind,
    n: docs?.n ?? 0,
    len: docs?.len ?? 0
  });
}

/**
 * (Re)indexes documents: their old postings go, the new ones come in, and df and corpus
 * totals move by the difference. Runs inside the caller's write transaction, so the term
 * tables never disagree with the records they index.
 */
export async function indexDocuments(q: Queryable, kind: DocKind, docs: readonly IndexableDoc[]): Promise<void> {
  if (docs.length === 0) return;
  await unindexDocuments(
    q,
    kind,
    docs.map(d => d.id)
  );
  const allPostings: Posting[] = [];
  const dfDelta = new Map<number, { term: string; n: number }>();
  let totalLen = 0;
  for (const doc of docs) {
    const { postings, terms, len } = postingsOf(kind, doc);
    totalLen += len;
    for (const p of postings) {
      allPostings.push(p);
      const entry = dfDelta.get(p.term_key);
      if (entry) entry.n += 1;
      else dfDelta.set(p.term_key, { term: terms.get(p.term_key) ?? '', n: 1 });
    }
  }
  await q.appendRows(
    'doc_terms',
    allPostings.map(p => ({ term_key: p.term_key, doc_kind: kind, doc_id: p.doc_id, tf: p.tf, doc_len: p.doc_len }))
  );
  await q.run(
    `INSERT INTO term_df (term_key, doc_kind, term, df)
       SELECT k, $kind, t, n FROM (SELECT unnest(from_json($rows::JSON, '[{"k":"BIGINT","t":"VARCHAR","n":"INTEGER"}]'), recursive := true))
     ON CONFLICT (term_key) DO UPDATE SET df = term_df.df + excluded.df`,
    { kind, rows: jsonParam([...dfDelta].map(([k, v]) => ({ k, t: v.term, n: v.n }))) }
  );
  await q.run(
    `INSERT INTO doc_stats (doc_kind, n_docs, total_len) VALUES ($kind, $n, $len)
     ON CONFLICT (doc_kind) DO UPDATE SET n_docs = doc_stats.n_docs + excluded.n_docs, total_len = doc_stats.total_len + excluded.total_len`,
    { kind, n: docs.length, len: totalLen }
  );
}

/** Corpus totals of one kind (zeros for an empty corpus). */
export async function corpusStats(q: Queryable, kind: DocKind): Promise<{ nDocs: number; avgLen: number }> {
  const row = await q.get<{ n_docs: number; total_len: number }>('SELECT n_docs, total_len FROM doc_stats WHERE doc_kind = $1', [kind]);
  const nDocs = row?.n_docs ?? 0;
  return { nDocs, avgLen: nDocs > 0 ? Number(row?.total_len ?? 0) / nDocs : 0 };
}
