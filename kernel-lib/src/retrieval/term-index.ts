/**
 * In-process cache of a store's term index (postings, document lengths and scopes, df, corpus
 * totals), so a retrieval scores its candidates in memory instead of running a DuckDB query
 * per table (each statement costs ~1.5-2 ms fixed on these 2 cores). The cache is valid for
 * one `term_generation` of the store file: every (un)indexing bumps it and logs the touched
 * documents in the same transaction (terms.ts), so a cache in any process notices writes of
 * every process and re-reads only the changed documents.
 *
 * Memory: 6 bytes per posting (slot Int32 + tf Uint16, lists grown by doubling) plus ~100
 * bytes per document. Removed or re-indexed documents leave dead slots that lookups skip;
 * a rebuild reclaims them once they are more than a tenth of the slots.
 */
import type { Queryable } from '../store/queryable';
import type { DocKind } from './terms';

/** Inverted list of one term: document slots and term frequencies; entries of dead slots are skipped. */
export class PostingList {
  slots = new Int32Array(4);
  tfs = new Uint16Array(4);
  length = 0;
  /** Live entries (the term's df), valid while `countedAt` equals the index's dead-slot count. */
  live = 0;
  countedAt = 0;

  push(slot: number, tf: number): void {
    if (this.length === this.slots.length) {
      const slots = new Int32Array(this.length * 2);
      slots.set(this.slots);
      this.slots = slots;
      const tfs = new Uint16Array(this.length * 2);
      tfs.set(this.tfs);
      this.tfs = tfs;
    }
    this.slots[this.length] = slot;
    this.tfs[this.length] = tf;
    this.length++;
    this.live++;
  }
}

/** A document's postings as read from the store. */
interface LoadedDoc {
  kind: DocKind;
  id: string;
  scope: string;
  len: number;
  terms: number[];
  tfs: number[];
}

/** Changed documents beyond which a full reload is cheaper than re-reading them one IN-list at a time. */
const MAX_DELTA_DOCS = 2_000;
/** Dead slots tolerated before a rebuild (and at least this fraction of all slots). */
const REBUILD_MIN_DEAD = 1_000;
const REBUILD_DEAD_FRACTION = 0.1;

function docKey(kind: string, id: string): string {
  return `${kind}\u0000${id}`;
}

export class TermIndex {
  private storeId = '';
  private generation = -1;
  /** Per slot: document id, kind, scope id, length in words, 1 while live. */
  readonly ids: string[] = [];
  private kinds: DocKind[] = [];
  readonly scopeIds: number[] = [];
  readonly lens: number[] = [];
  readonly live: number[] = [];
  private readonly scopes: string[] = [];
  private readonly scopeIdOf = new Map<string, number>();
  private readonly slotOf = new Map<string, number>();
  private postings = new Map<number, PostingList>();
  private readonly totals = new Map<DocKind, { nDocs: number; totalLen: number }>();
  private deadSlots = 0;

  /** Syncs run one at a time: two interleaved ones would add a changed document twice. */
  private syncing: Promise<unknown> = Promise.resolve();

  /** Brings the cache to the generation of the transaction `q` reads (one query when nothing changed). */
  sync(q: Queryable): Promise<void> {
    const run = this.syncing.then(() => this.syncNow(q));
    this.syncing = run.catch(() => undefined);
    return run;
  }

  private async syncNow(q: Queryable): Promise<void> {
    const head = await q.get<{ generation: number; store_id: string }>('SELECT generation, store_id FROM term_generation');
    if (!head) throw new Error('retrieval: the store has no term_generation row; reopen it with Store.open() to run its migrations');
    const generation = Number(head.generation);
    if (head.store_id === this.storeId && generation === this.generation) return;
    if (head.store_id === this.storeId && generation > this.generation && (await this.applyChanges(q, generation))) return;
    await this.reload(q);
    this.storeId = head.store_id;
    this.generation = generation;
  }

  /** True once the index was read from a store. */
  get loaded(): boolean {
    return this.generation >= 0;
  }

  /** True when the index is that of this store file at this generation. */
  isAt(generation: number, storeId: string): boolean {
    return generation === this.generation && storeId === this.storeId;
  }

  /** Corpus totals of a kind (documents, summed lengths). */
  totalsOf(kind: DocKind): { nDocs: number; totalLen: number } {
    return this.totals.get(kind) ?? { nDocs: 0, totalLen: 0 };
  }

  /** Documents containing the term (0 when absent). */
  df(key: number): number {
    const list = this.postings.get(key);
    if (!list) return 0;
    if (list.countedAt !== this.deadSlots) {
      let live = 0;
      for (let i = 0; i < list.length; i++) live += this.live[list.slots[i]];
      list.live = live;
      list.countedAt = this.deadSlots;
    }
    return list.live;
  }

  /** The term's inverted list (entries may point at dead slots: check `live`). */
  postingList(key: number): PostingList | undefined {
    return this.postings.get(key);
  }

  /** Slots allocated (live and dead): the size of per-slot scratch arrays. */
  get slotCount(): number {
    return this.ids.length;
  }

  /** Scope ids of these scopes (unknown scopes have none). */
  scopeIdsOf(scopes: readonly string[]): number[] {
    return scopes.flatMap(s => (this.scopeIdOf.has(s) ? [this.scopeIdOf.get(s) as number] : []));
  }

  /** Number of distinct scopes: the size of a scope filter. */
  get scopeCount(): number {
    return this.scopes.length;
  }

  /** Postings held (live and dead), for reporting the cache's size. */
  get postingCount(): number {
    let n = 0;
    for (const list of this.postings.values()) n += list.length;
    return n;
  }

  /**
   * Re-reads the documents logged since the cached generation. Returns false when the log no
   * longer covers that span (pruned) or too many documents changed: the caller reloads.
   */
  private async applyChanges(q: Queryable, generation: number): Promise<boolean> {
    const oldest = await q.get<{ oldest: number | null }>('SELECT min(generation) AS oldest FROM term_changes');
    if (oldest?.oldest === null || oldest?.oldest === undefined || Number(oldest.oldest) > this.generation + 1) return false;
    const changes = await q.all<{ doc_kind: DocKind; doc_id: string; scope: string | null }>(
      'SELECT doc_kind, doc_id, scope FROM term_changes WHERE generation > $from AND generation <= $to ORDER BY generation',
      { from: this.generation, to: generation }
    );
    // The last change of a document wins: its scope, or null when it was removed.
    const latest = new Map<string, { kind: DocKind; id: string; scope: string | null }>();
    for (const c of changes) latest.set(docKey(c.doc_kind, c.doc_id), { kind: c.doc_kind, id: c.doc_id, scope: c.scope });
    if (latest.size > MAX_DELTA_DOCS) return false;
    for (const c of latest.values()) this.remove(c.kind, c.id);
    const indexed = [...latest.values()].filter(c => c.scope !== null);
    if (indexed.length) {
      const wanted = new Map(indexed.map(c => [docKey(c.kind, c.id), c]));
      const rows = await q.all<{ doc_kind: DocKind; doc_id: string; term_key: number; tf: number; doc_len: number }>(
        `SELECT doc_kind, doc_id, term_key, tf, doc_len FROM doc_terms WHERE doc_id IN (${indexed.map(c => `'${c.id.replace(/'/g, "''")}'`).join(', ')})`
      );
      const docs = new Map<string, LoadedDoc>();
      for (const r of rows) {
        const key = docKey(r.doc_kind, r.doc_id);
        const change = wanted.get(key);
        if (!change) continue;
        let doc = docs.get(key);
        if (!doc) docs.set(key, (doc = { kind: r.doc_kind, id: r.doc_id, scope: change.scope ?? 'global', len: r.doc_len, terms: [], tfs: [] }));
        doc.terms.push(Number(r.term_key));
        doc.tfs.push(r.tf);
      }
      for (const doc of docs.values()) {
        const slot = this.addSlot(doc.kind, doc.id, doc.scope, doc.len);
        for (let i = 0; i < doc.terms.length; i++) this.listOf(doc.terms[i]).push(slot, doc.tfs[i]);
      }
    }
    this.generation = generation;
    if (this.deadSlots > REBUILD_MIN_DEAD && this.deadSlots > REBUILD_DEAD_FRACTION * this.ids.length) this.rebuild();
    return true;
  }

  /**
   * Reads the whole index from `term_postings` (once per process, or after a long absence).
   * DuckDB numbers the documents and packs documents and posting lists into two JSON texts:
   * handing ~4M postings over row by row took ~20 s at 100k records.
   */
  private async reload(q: Queryable): Promise<void> {
    this.ids.length = this.scopeIds.length = this.lens.length = this.live.length = this.scopes.length = 0;
    this.kinds = [];
    this.scopeIdOf.clear();
    this.slotOf.clear();
    this.postings = new Map();
    this.totals.clear();
    this.deadSlots = 0;
    const packed = await q.get<{ docs: string | null; lists: string | null }>(
      `WITH u AS (
         SELECT d.doc_kind, x.term_key, x.doc_id, x.tf, x.len, x.scope
           FROM (SELECT term_key, unnest(postings, recursive := true) FROM term_postings) x JOIN term_df d USING (term_key)
       ),
       docs AS (
         SELECT doc_kind, doc_id, min(len) AS len, min(scope) AS scope, (row_number() OVER (ORDER BY doc_kind, doc_id) - 1)::INTEGER AS slot
           FROM u GROUP BY doc_kind, doc_id
       ),
       lists AS (
         SELECT term_key, list(slot ORDER BY slot) AS s, list(tf ORDER BY slot) AS f FROM u JOIN docs USING (doc_kind, doc_id) GROUP BY term_key
       )
       SELECT (SELECT to_json(list({k: doc_kind, i: doc_id, s: scope, l: len} ORDER BY slot)) FROM docs)::VARCHAR AS docs,
              (SELECT to_json(list({t: term_key, s: s, f: f})) FROM lists)::VARCHAR AS lists`
    );
    const docs = JSON.parse(packed?.docs ?? '[]') as Array<{ k: DocKind; i: string; s: string; l: number }>;
    for (const d of docs) this.addSlot(d.k, d.i, d.s, d.l);
    const lists = JSON.parse(packed?.lists ?? '[]') as Array<{ t: number; s: number[]; f: number[] }>;
    for (const l of lists) {
      const list = new PostingList();
      list.slots = Int32Array.from(l.s);
      list.tfs = Uint16Array.from(l.f);
      list.length = list.live = l.s.length;
      this.postings.set(l.t, list);
    }
  }

  private listOf(term: number): PostingList {
    let list = this.postings.get(term);
    if (!list) this.postings.set(term, (list = new PostingList()));
    return list;
  }

  private addSlot(kind: DocKind, id: string, scope: string, len: number): number {
    let scopeId = this.scopeIdOf.get(scope);
    if (scopeId === undefined) {
      scopeId = this.scopes.length;
      this.scopes.push(scope);
      this.scopeIdOf.set(scope, scopeId);
    }
    const slot = this.ids.length;
    this.ids.push(id);
    this.kinds.push(kind);
    this.scopeIds.push(scopeId);
    this.lens.push(len);
    this.live.push(1);
    this.slotOf.set(docKey(kind, id), slot);
    const totals = this.totalsOf(kind);
    this.totals.set(kind, { nDocs: totals.nDocs + 1, totalLen: totals.totalLen + len });
    return slot;
  }

  private remove(kind: DocKind, id: string): void {
    const key = docKey(kind, id);
    const slot = this.slotOf.get(key);
    if (slot === undefined) return;
    this.slotOf.delete(key);
    this.live[slot] = 0;
    this.deadSlots++;
    const totals = this.totalsOf(kind);
    this.totals.set(kind, { nDocs: totals.nDocs - 1, totalLen: totals.totalLen - this.lens[slot] });
  }

  /** Drops dead slots: renumbers the live ones and filters every posting list. */
  private rebuild(): void {
    const renumber = new Int32Array(this.ids.length).fill(-1);
    let next = 0;
    for (let slot = 0; slot < this.ids.length; slot++) {
      if (!this.live[slot]) continue;
      renumber[slot] = next;
      this.ids[next] = this.ids[slot];
      this.kinds[next] = this.kinds[slot];
      this.scopeIds[next] = this.scopeIds[slot];
      this.lens[next] = this.lens[slot];
      this.live[next] = 1;
      this.slotOf.set(docKey(this.kinds[next], this.ids[next]), next);
      next++;
    }
    this.ids.length = this.kinds.length = this.scopeIds.length = this.lens.length = this.live.length = next;
    for (const [term, list] of this.postings) {
      const kept = new PostingList();
      for (let i = 0; i < list.length; i++) if (renumber[list.slots[i]] >= 0) kept.push(renumber[list.slots[i]], list.tfs[i]);
      if (kept.length) this.postings.set(term, kept);
      else this.postings.delete(term);
    }
    this.deadSlots = 0;
  }
}

/** One cache per store object (a store is one file); dropped with the store. */
const caches = new WeakMap<object, TermIndex>();

/** The term index cache of this store, created empty on first use (fill it with `sync`). */
export function termIndexOf(store: object): TermIndex {
  let index = caches.get(store);
  if (!index) caches.set(store, (index = new TermIndex()));
  return index;
}
