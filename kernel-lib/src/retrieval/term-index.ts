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
 *
 * The cache belongs to the store file, not to a Store object: a store opened again in the same
 * process (a notebook cell that re-opens the Lab) finds it and checks it by the generation. It
 * is also persisted beside the store (`<store>.duckdb.terms`, a snapshot tagged with the store
 * id and generation), so a new process loads the index from it and re-reads only what changed
 * since, instead of rebuilding it from `doc_index` (one row per document, terms.ts). The
 * snapshot is only a cache: one that does not match the store (another store id, a newer
 * generation, totals that disagree with `doc_index` after catching up) is ignored and rewritten.
 */
import * as fs from 'fs';
import type { Queryable } from '../store/queryable';
import type { DocKind } from './terms';
import { termKey } from './tokenize';

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

/** `doc_index` rows read per statement by a full reload. */
const RELOAD_ROWS = 5_000;
/** Changed documents beyond which a full reload is cheaper than re-reading them one IN-list at a time. */
const MAX_DELTA_DOCS = 2_000;
/** Dead slots tolerated before a rebuild (and at least this fraction of all slots). */
const REBUILD_MIN_DEAD = 1_000;
const REBUILD_DEAD_FRACTION = 0.1;

function docKey(kind: string, id: string): string {
  return `${kind}\u0000${id}`;
}

/** A snapshot holding this many changed documents fewer than the index is rewritten (and at least this fraction). */
const SNAPSHOT_STALE_DOCS = 1_000;
const SNAPSHOT_STALE_FRACTION = 0.05;
/** Version 2: term keys sorted, so lists are found by binary search and made on first use. */
const SNAPSHOT_MAGIC = 'NRTERMS2';

export class TermIndex {
  /** Documents (re)read since the snapshot was written. */
  private changedSinceSnapshot = 0;
  private savePending = false;

  constructor(
    /** Where the index is persisted; null keeps it in memory only. */
    readonly snapshotFile: string | null = null
  ) {}

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
  /**
   * The lists of the loaded snapshot that were not asked for yet: term keys (sorted) and each
   * list's range in the shared slot and tf arrays. A PostingList object per term cost ~250 bytes
   * (the object, two views, a Map entry): ~50 MiB at 100k records, whose vocabulary is ~200k terms.
   */
  private base: { keys: Float64Array; offsets: Int32Array; slots: Int32Array; tfs: Uint16Array; taken: Uint8Array } | null = null;
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
    const fromSnapshot = !this.loaded && this.loadSnapshot(head.store_id, generation);
    if (head.store_id === this.storeId && generation === this.generation) {
      if (!fromSnapshot || (await this.agreesWithStore(q))) return;
    } else if (head.store_id === this.storeId && generation > this.generation && (await this.applyChanges(q, generation))) {
      if (!fromSnapshot || (await this.agreesWithStore(q))) {
        this.saveSoonIfStale();
        return;
      }
    }
    await this.reload(q);
    this.storeId = head.store_id;
    this.generation = generation;
    this.changedSinceSnapshot = Number.POSITIVE_INFINITY;
    this.saveSoonIfStale();
  }

  /** After loading a snapshot: do the index's corpus totals match the store's (`doc_index`)? */
  private async agreesWithStore(q: Queryable): Promise<boolean> {
    const rows = await q.all<{ doc_kind: DocKind; n_docs: number; total_len: number }>(
      'SELECT doc_kind, count(*)::INTEGER AS n_docs, sum(len)::BIGINT AS total_len FROM doc_index GROUP BY doc_kind'
    );
    const stored = new Map(rows.map(r => [r.doc_kind, r]));
    for (const kind of ['skill', 'memory'] as const) {
      const mine = this.totalsOf(kind);
      const theirs = stored.get(kind);
      if (mine.nDocs !== Number(theirs?.n_docs ?? 0) || mine.totalLen !== Number(theirs?.total_len ?? 0)) return false;
    }
    return true;
  }

  /**
   * Fills the index from the snapshot file when it is of this store and not ahead of it; returns
   * false (index left empty) otherwise. Posting lists are views into the file's buffer, no copy.
   */
  private loadSnapshot(storeId: string, generation: number): boolean {
    if (!this.snapshotFile) return false;
    let buf: Buffer;
    try {
      buf = fs.readFileSync(this.snapshotFile);
    } catch {
      return false;
    }
    try {
      if (buf.toString('latin1', 0, SNAPSHOT_MAGIC.length) !== SNAPSHOT_MAGIC) return false;
      const headerLength = buf.readUInt32LE(SNAPSHOT_MAGIC.length);
      const headerStart = SNAPSHOT_MAGIC.length + 4;
      const header = JSON.parse(buf.toString('utf8', headerStart, headerStart + headerLength)) as SnapshotHeader;
      if (header.storeId !== storeId || header.generation > generation) return false;
      // Typed arrays need aligned offsets; a copy of the buffer is aligned from 0.
      const data = buf.byteOffset % 8 === 0 ? buf : Buffer.from(buf);
      let at = align8(headerStart + headerLength);
      const take = <A>(make: (buffer: ArrayBuffer, offset: number, length: number) => A, length: number, bytes: number): A => {
        const array = make(data.buffer as ArrayBuffer, data.byteOffset + at, length);
        at = align8(at + length * bytes);
        return array;
      };
      const nDocs = header.ids.length;
      const termKeys = take((b, o, n) => new Float64Array(b, o, n), header.nTerms, 8);
      const offsets = take((b, o, n) => new Int32Array(b, o, n), header.nTerms + 1, 4);
      const slots = take((b, o, n) => new Int32Array(b, o, n), header.nPostings, 4);
      const tfs = take((b, o, n) => new Uint16Array(b, o, n), header.nPostings, 2);
      const scopeIds = take((b, o, n) => new Int32Array(b, o, n), nDocs, 4);
      const lens = take((b, o, n) => new Int32Array(b, o, n), nDocs, 4);
      if (at > data.length) return false;
      for (let t = 1; t < header.nTerms; t++) if (!(termKeys[t - 1] < termKeys[t])) return false;
      for (let i = 0; i < nDocs; i++) this.addSlot(header.kinds[i] === 's' ? 'skill' : 'memory', header.ids[i], header.scopes[scopeIds[i]], lens[i]);
      this.base = { keys: termKeys, offsets, slots, tfs, taken: new Uint8Array(header.nTerms) };
      this.storeId = header.storeId;
      this.generation = header.generation;
      this.changedSinceSnapshot = 0;
      return true;
    } catch {
      this.clear();
      return false;
    }
  }

  /** Rewrites the snapshot after this turn of the event loop when it lags the index by enough. */
  private saveSoonIfStale(): void {
    if (!this.snapshotFile || this.savePending) return;
    if (this.changedSinceSnapshot < Math.max(SNAPSHOT_STALE_DOCS, SNAPSHOT_STALE_FRACTION * this.ids.length)) return;
    this.savePending = true;
    setImmediate(() => {
      this.savePending = false;
      try {
        this.saveSnapshot();
      } catch (error) {
        process.emitWarning(`Could not write the retrieval index snapshot ${this.snapshotFile}: ${(error as Error).message}`, {
          code: 'NANORESEARCH_TERMS_SNAPSHOT'
        });
      }
    });
  }

  /** Writes the index (live documents only) to the snapshot file, atomically (temp file + rename). */
  saveSnapshot(): void {
    if (!this.snapshotFile || !this.loaded) return;
    if (this.deadSlots > 0) this.rebuild();
    // Lists asked for since the load, and the snapshot's others as views: nothing is copied twice.
    const terms: Array<[number, Int32Array, Uint16Array]> = [];
    for (const [key, list] of this.postings) terms.push([key, list.slots.subarray(0, list.length), list.tfs.subarray(0, list.length)]);
    if (this.base) {
      const { keys, offsets, slots, tfs, taken } = this.base;
      for (let t = 0; t < keys.length; t++) if (!taken[t]) terms.push([keys[t], slots.subarray(offsets[t], offsets[t + 1]), tfs.subarray(offsets[t], offsets[t + 1])]);
    }
    terms.sort((a, b) => a[0] - b[0]);
    const nPostings = terms.reduce((n, [, slots]) => n + slots.length, 0);
    const header: SnapshotHeader = {
      storeId: this.storeId,
      generation: this.generation,
      ids: this.ids,
      kinds: this.kinds.map(k => (k === 'skill' ? 's' : 'm')).join(''),
      scopes: this.scopes,
      nTerms: terms.length,
      nPostings
    };
    const headerBytes = Buffer.from(JSON.stringify(header), 'utf8');
    const nDocs = this.ids.length;
    const parts: Array<[number, number]> = [
      [terms.length, 8],
      [terms.length + 1, 4],
      [nPostings, 4],
      [nPostings, 2],
      [nDocs, 4],
      [nDocs, 4]
    ];
    let size = align8(SNAPSHOT_MAGIC.length + 4 + headerBytes.length);
    const starts = parts.map(([n, bytes]) => {
      const start = size;
      size = align8(size + n * bytes);
      return start;
    });
    const out = Buffer.alloc(size);
    out.write(SNAPSHOT_MAGIC, 0, 'latin1');
    out.writeUInt32LE(headerBytes.length, SNAPSHOT_MAGIC.length);
    headerBytes.copy(out, SNAPSHOT_MAGIC.length + 4);
    const termKeys = new Float64Array(out.buffer, out.byteOffset + starts[0], terms.length);
    const offsets = new Int32Array(out.buffer, out.byteOffset + starts[1], terms.length + 1);
    const slots = new Int32Array(out.buffer, out.byteOffset + starts[2], nPostings);
    const tfs = new Uint16Array(out.buffer, out.byteOffset + starts[3], nPostings);
    let at = 0;
    terms.forEach(([key, termSlots, termTfs], t) => {
      termKeys[t] = key;
      offsets[t] = at;
      slots.set(termSlots, at);
      tfs.set(termTfs, at);
      at += termSlots.length;
    });
    offsets[terms.length] = at;
    new Int32Array(out.buffer, out.byteOffset + starts[4], nDocs).set(this.scopeIds);
    new Int32Array(out.buffer, out.byteOffset + starts[5], nDocs).set(this.lens);
    const temp = `${this.snapshotFile}.${process.pid}.tmp`;
    fs.writeFileSync(temp, out);
    fs.renameSync(temp, this.snapshotFile);
    this.changedSinceSnapshot = 0;
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
    const list = this.postingList(key);
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
    return this.postings.get(key) ?? this.fromBase(key);
  }

  /** Makes the snapshot's list of `key` a PostingList (views into the snapshot, no copy), once. */
  private fromBase(key: number): PostingList | undefined {
    const base = this.base;
    if (!base) return undefined;
    let lo = 0;
    let hi = base.keys.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const at = base.keys[mid];
      if (at < key) lo = mid + 1;
      else if (at > key) hi = mid - 1;
      else {
        if (base.taken[mid]) return undefined;
        base.taken[mid] = 1;
        const list = new PostingList();
        list.slots = base.slots.subarray(base.offsets[mid], base.offsets[mid + 1]);
        list.tfs = base.tfs.subarray(base.offsets[mid], base.offsets[mid + 1]);
        list.length = list.live = base.offsets[mid + 1] - base.offsets[mid];
        this.postings.set(key, list);
        return list;
      }
    }
    return undefined;
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
    if (this.base) {
      const { offsets, taken } = this.base;
      for (let t = 0; t < taken.length; t++) if (!taken[t]) n += offsets[t + 1] - offsets[t];
    }
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
    this.changedSinceSnapshot += latest.size;
    for (const c of latest.values()) this.remove(c.kind, c.id);
    const indexed = [...latest.values()].filter(c => c.scope !== null);
    if (indexed.length) {
      const rows = await q.all<{ doc_kind: DocKind; doc_id: string; scope: string; len: number; terms: string; tfs: string }>(
        `SELECT doc_kind, doc_id, scope, len, to_json(terms)::VARCHAR AS terms, to_json(tfs)::VARCHAR AS tfs
           FROM doc_index WHERE doc_id IN (${indexed.map(c => `'${c.id.replace(/'/g, "''")}'`).join(', ')})`
      );
      const wanted = new Set(indexed.map(c => docKey(c.kind, c.id)));
      for (const r of rows) {
        if (wanted.has(docKey(r.doc_kind, r.doc_id))) this.addDoc(r.doc_kind, r.doc_id, r.scope, r.len, JSON.parse(r.terms), JSON.parse(r.tfs));
      }
    }
    this.generation = generation;
    if (this.deadSlots > REBUILD_MIN_DEAD && this.deadSlots > REBUILD_DEAD_FRACTION * this.ids.length) this.rebuild();
    return true;
  }

  /**
   * Reads the whole index from `doc_index` (once per process without a snapshot, or after a long
   * absence), a range of rows at a time. DuckDB packs each range into one JSON text: handing rows
   * over one by one costs a value conversion per term (~4M at 100k records), and one text for
   * all of them held ~1 GiB at 100k records.
   */
  private async reload(q: Queryable): Promise<void> {
    this.clear();
    const range = await q.get<{ lo: number | null; hi: number | null }>('SELECT min(rowid) AS lo, max(rowid) AS hi FROM doc_index');
    if (range?.lo === null || range?.lo === undefined || range.hi === null) return;
    for (let from = Number(range.lo); from <= Number(range.hi); from += RELOAD_ROWS) {
      const packed = await q.get<{ docs: string | null }>(
        `SELECT to_json(list({k: doc_kind, i: doc_id, s: scope, l: len, t: terms, f: tfs}))::VARCHAR AS docs
           FROM doc_index WHERE rowid >= $from AND rowid < $to`,
        { from, to: from + RELOAD_ROWS }
      );
      const docs = JSON.parse(packed?.docs ?? '[]') as Array<{ k: DocKind; i: string; s: string; l: number; t: string[]; f: number[] }>;
      for (const d of docs) this.addDoc(d.k, d.i, d.s, d.l, d.t, d.f);
    }
  }

  /** Term keys of each kind by term: a reload meets the same few thousand terms millions of times. */
  private readonly keyOf = { skill: new Map<string, number>(), memory: new Map<string, number>() };

  private addDoc(kind: DocKind, id: string, scope: string, len: number, terms: readonly string[], tfs: readonly number[]): void {
    const slot = this.addSlot(kind, id, scope, len);
    const keys = this.keyOf[kind];
    for (let i = 0; i < terms.length; i++) {
      let key = keys.get(terms[i]);
      if (key === undefined) keys.set(terms[i], (key = termKey(kind, terms[i])));
      this.listOf(key).push(slot, tfs[i]);
    }
  }

  private clear(): void {
    this.ids.length = this.scopeIds.length = this.lens.length = this.live.length = this.scopes.length = 0;
    this.kinds = [];
    this.scopeIdOf.clear();
    this.slotOf.clear();
    this.postings = new Map();
    this.base = null;
    this.totals.clear();
    this.deadSlots = 0;
    this.storeId = '';
    this.generation = -1;
  }

  private listOf(term: number): PostingList {
    let list = this.postingList(term);
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
    if (this.base) {
      // The snapshot's lists not asked for yet are filtered into new packed arrays, still lazy.
      const base = this.base;
      const keys: number[] = [];
      const offsets: number[] = [0];
      const slots = new Int32Array(base.slots.length);
      const tfs = new Uint16Array(base.tfs.length);
      let at = 0;
      for (let t = 0; t < base.keys.length; t++) {
        if (base.taken[t]) continue;
        const start = at;
        for (let i = base.offsets[t]; i < base.offsets[t + 1]; i++) {
          const slot = renumber[base.slots[i]];
          if (slot < 0) continue;
          slots[at] = slot;
          tfs[at++] = base.tfs[i];
        }
        if (at > start) {
          keys.push(base.keys[t]);
          offsets.push(at);
        }
      }
      this.base = { keys: Float64Array.from(keys), offsets: Int32Array.from(offsets), slots: slots.subarray(0, at), tfs: tfs.subarray(0, at), taken: new Uint8Array(keys.length) };
    }
    this.deadSlots = 0;
  }
}

interface SnapshotHeader {
  storeId: string;
  generation: number;
  ids: string[];
  /** One letter per document: 's' skill, 'm' memory. */
  kinds: string;
  scopes: string[];
  nTerms: number;
  nPostings: number;
}

function align8(n: number): number {
  return (n + 7) & ~7;
}

/** Caches of store files (by absolute path), kept across re-opens; other stores get one per object. */
const byFile = new Map<string, TermIndex>();
const byObject = new WeakMap<object, TermIndex>();

/** The snapshot file of a store file's term index. */
export function termSnapshotOf(storeFile: string): string {
  return `${storeFile}.terms`;
}

/** The term index cache of this store, created empty on first use (fill it with `sync`). */
export function termIndexOf(store: object): TermIndex {
  const file = (store as { path?: unknown }).path;
  if (typeof file === 'string') {
    let index = byFile.get(file);
    if (!index) byFile.set(file, (index = new TermIndex(termSnapshotOf(file))));
    return index;
  }
  let index = byObject.get(store);
  if (!index) byObject.set(store, (index = new TermIndex()));
  return index;
}

/**
 * Drops this process's cache of a store file's index, so the next retrieval loads it again (from
 * the snapshot when there is one; `withSnapshot: false` also deletes the snapshot, so the index is
 * rebuilt from `doc_index`). For benchmarks that compare a cold start with a warm one.
 */
export function forgetTermIndex(storeFile: string, options: { withSnapshot?: boolean } = {}): void {
  byFile.delete(storeFile);
  if (options.withSnapshot === false) fs.rmSync(termSnapshotOf(storeFile), { force: true });
}
