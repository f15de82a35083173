/**
 * What retrieval's term index is built from (migration 10): one `doc_index` row per indexed
 * skill or memory with its distinct terms, their frequencies, its length and scope, written in
 * the same transaction as the record. Retrieval scores in memory (term-index.ts), so the store
 * keeps no postings, df or corpus totals: those were three extra tables, each updated on every
 * write, and they made a batch of 100 memories cost ~220 ms and the store ~2x its rows' size.
 */
import type { Memory, Skill } from '@nanoresearch/schema';
import type { Queryable } from '../store/queryable';
import { tagTerm, termFrequencies, tokenize } from './tokenize';

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

/** Index entry of a memory: its scope, and the standing kinds are always candidates. */
export function memoryDoc(memory: Memory, alwaysKinds: readonly string[]): IndexableDoc {
  return { id: memory.id, text: memoryText(memory), tags: memory.tags, scope: memory.scope, always: alwaysKinds.includes(memory.kind) };
}

/** Index entry of a skill: global; built-ins are always candidates (a handful, curated). */
export function skillDoc(skill: Skill): IndexableDoc {
  return { id: skill.id, text: skillText(skill), tags: skill.tags, scope: 'global', always: skill.source === 'builtin' };
}

/** A document as `doc_index` holds it: distinct terms (words, then tags and markers) with their frequencies. */
export interface DocTerms {
  terms: string[];
  tfs: number[];
  /** Length in words (tags and markers do not count). */
  len: number;
}

/** Terms of one document: words with their frequencies, tags and the always-marker with tf 1. */
export function docTerms(doc: IndexableDoc): DocTerms {
  const tokens = tokenize(doc.text);
  const tf = termFrequencies(tokens);
  for (const marker of [...(doc.tags ?? []).map(tagTerm), ...(doc.always ? [ALWAYS_TERM] : [])]) if (!tf.has(marker)) tf.set(marker, 1);
  return { terms: [...tf.keys()], tfs: [...tf.values()], len: tokens.length };
}

/**
 * Generations of `term_changes` kept: a cache further behind than this reloads the whole
 * index instead of the changed documents.
 */
export const TERM_CHANGES_KEPT = 10_000;
/** The change log is pruned on every this many generations (a range delete, so not on every write). */
const PRUNE_EVERY = 100;

/**
 * Bumps the term generation and logs the documents this write (re)indexed or removed, in the
 * caller's transaction: caches of the term index (term-index.ts) re-read exactly these.
 * `scope` is null for a removed document.
 */
async function logTermChanges(q: Queryable, kind: DocKind, docs: ReadonlyArray<{ id: string; scope: string | null }>): Promise<void> {
  const bumped = await q.get<{ generation: number }>('UPDATE term_generation SET generation = generation + 1 RETURNING generation');
  if (!bumped) throw new Error('retrieval: the store has no term_generation row; reopen it with Store.open() to run its migrations');
  const generation = Number(bumped.generation);
  await q.run(
    `INSERT INTO term_changes
       SELECT $gen, $kind, id, scope FROM (SELECT unnest(from_json($rows::JSON, '[{"id":"VARCHAR","scope":"VARCHAR"}]'), recursive := true))`,
    { gen: generation, kind, rows: docs }
  );
  if (generation % PRUNE_EVERY === 0) await q.run('DELETE FROM term_changes WHERE generation < $oldest', { oldest: generation - TERM_CHANGES_KEPT });
}

/** Deletes the `doc_index` rows of these documents; returns the ids that had one. */
async function removeFromIndex(q: Queryable, kind: DocKind, ids: readonly string[]): Promise<string[]> {
  if (ids.length === 0) return [];
  const gone = await q.all<{ doc_id: string }>(
    `DELETE FROM doc_index WHERE doc_kind = $kind AND doc_id IN (SELECT unnest(from_json($ids::JSON, '["VARCHAR"]'))) RETURNING doc_id`,
    { kind, ids: [...ids] }
  );
  return gone.map(r => r.doc_id);
}

/** Removes these documents from the index, in the caller's write transaction. */
export async function unindexDocuments(q: Queryable, kind: DocKind, ids: readonly string[]): Promise<void> {
  const removed = await removeFromIndex(q, kind, ids);
  if (removed.length)
    await logTermChanges(
      q,
      kind,
      removed.map(id => ({ id, scope: null }))
    );
}

/**
 * (Re)indexes documents: one `doc_index` row each, replacing any earlier one, in the caller's
 * write transaction, so the index never disagrees with the records it indexes. Only active
 * records are indexed: retiring one unindexes it. `fresh: true` skips the delete of earlier rows
 * (the caller knows the documents are new).
 */
export async function indexDocuments(q: Queryable, kind: DocKind, docs: readonly IndexableDoc[], options: { fresh?: boolean } = {}): Promise<void> {
  if (docs.length === 0) return;
  if (!options.fresh)
    await removeFromIndex(
      q,
      kind,
      docs.map(d => d.id)
    );
  const rows = docs.map(doc => {
    const { terms, tfs, len } = docTerms(doc);
    return { i: doc.id, s: doc.scope ?? 'global', l: len, t: terms, f: tfs };
  });
  // One statement for the batch: the appender has no list columns, a JSON parameter does.
  await q.run(
    `INSERT INTO doc_index (doc_kind, doc_id, scope, len, terms, tfs)
       SELECT $kind, i, s, l, t, f FROM (SELECT unnest(from_json($rows::JSON, '[{"i":"VARCHAR","s":"VARCHAR","l":"INTEGER","t":["VARCHAR"],"f":["INTEGER"]}]'), recursive := true))`,
    { kind, rows }
  );
  await logTermChanges(
    q,
    kind,
    docs.map(d => ({ id: d.id, scope: d.scope ?? 'global' }))
  );
}
