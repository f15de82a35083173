/**
 * In-process cache of a store's term index (postings, document lengths and scopes, df, corpus
 * totals), so a retrieval scores its candidates in memory instead of running a DuckDB query
 * per table (each statement costs ~1.5-2 ms fixed on these 2 cores). The cache is valid for
 * one `term_generation` of the store file: every (un)indexing bumps it and logs the touched
 * documents in the same transaction (terms.ts), so a cache in any process notices writes of
 * every process and re-reads only the changed documents.
 *
 * Memory: 6 bytes per posting (slot Int32 + tf Uint16, lists grown by doubling) of the terms
 * asked for or changed since the snapshot was loaded; the snapshot's other lists stay in its
 * file and are read (one positional read each) when a query first asks for them. Per document:
 * its id string and 10 bytes of typed arrays (scope, length, kind, live). Removed or re-indexed
 * documents leave dead slots that lookups skip; a rebuild reclaims them once they are more than
 * a tenth of the slots.
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
/**
 * Version 3: term keys sorted (lists found by binary search, made on first use); the posting
 * arrays come last, so a load reads everything before them and leaves the postings in the file.
 */
const SNAPSHOT_MAGIC = 'NRTERMS3';
/** Bytes of the magic and the header length before the JSON header. */
const SNAPSHOT_PREFIX = SNAPSHOT_MAGIC.length + 4;

const KIND_CODE: Readonly<Record<DocKind, number>> = { memory: 0, skill: 1 };
const KIND_OF_CODE: readonly DocKind[] = ['memory', 'skill'];

/**
 * The snapshot's posting lists not asked for yet: term keys (sorted), each list's range, and
 * the lists themselves, either in memory or still in the snapshot file (read on demand through
 * `fd`, which keeps the file's contents even after a newer snapshot is renamed over it).
 */
interface BaseLists {
  keys: Float64Array;
  offsets: Int32Array;
  taken: Uint8Array;
  data: { slots: Int32Array; tfs: Uint16Array } | { fd: number; slotsAt: number; tfsAt: number };
}

/** Closes the snapshot file of lists that were dropped without closing it (an index forgotten by `forgetTermIndex`). */
const closeWhenCollected = new FinalizationRegistry<number>(fd => fs.closeSync(fd));

function fileLists(keys: Float64Array, offsets: Int32Array, fd: number, slotsAt: number, tfsAt: number): BaseLists {
  const base: BaseLists = { keys, offsets, taken: new Uint8Array(keys.length), data: { fd, slotsAt, tfsAt } };
  closeWhenCollected.register(base, fd, base);
  return base;
}

function closeFileLists(base: BaseLists): void {
  if (!('fd' in base.data)) return;
  closeWhenCollected.unregister(base);
  fs.closeSync(base.data.fd);
}

export class TermIndex {
  /** Documents (re)read since the snapshot was written. */
  private changedSinceSnapshot = 0;
  private savePending = false;

  constructor(
    /** Where the index is persisted; null keeps it in memory only. */
    readonly snapshotFile: string | null = null
  ) {}

  /** How the index was filled so far: full reads of `doc_index`, snapshot loads, catch-ups over the change log. */
  readonly reads = { full: 0, snapshot: 0, changes: 0 };
  private storeId = '';
  private generation = -1;
  /** Slots allocated (live and dead). Per slot: document id, scope id, length in words, kind code, 1 while live. */
  private count = 0;
  readonly ids: string[] = [];
  scopeIds = new Int32Array(0);
  lens = new Int32Array(0);
  live = new Uint8Array(0);
  private kindCodes = new Uint8Array(0);
  private readonly scopes: string[] = [];
  private readonly scopeIdOf = new Map<string, number>();
  /** Slot of each live document, made on the first change after a load (a cold start with nothing to catch up never needs it). */
  private slotOfDoc: Map<string, number> | null = null;
  private postings = new Map<number, PostingList>();
  /**
   * The lists of the loaded snapshot that were not asked for yet. A PostingList object per term
   * cost ~250 bytes (the object, two views, a Map entry): ~50 MiB at 100k records, whose
   * vocabulary is ~200k terms; and their postings (~21 MiB at 100k records) are read only when asked for.
   */
  private base: BaseLists | null = null;
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
   * false (index left empty) otherwise. Everything but the posting arrays is read (one read);
   * the postings stay in the file, read per term when a query asks for it (`fromBase`).
   */
  private loadSnapshot(storeId: string, generation: number): boolean {
    if (!this.snapshotFile) return false;
    let fd: number;
    try {
      fd = fs.openSync(this.snapshotFile, 'r');
    } catch {
      return false;
    }
    let kept = false;
    try {
      const size = fs.fstatSync(fd).size;
      const prefix = Buffer.alloc(SNAPSHOT_PREFIX);
      if (size < SNAPSHOT_PREFIX || fs.readSync(fd, prefix, 0, SNAPSHOT_PREFIX, 0) !== SNAPSHOT_PREFIX) return false;
      if (prefix.toString('latin1', 0, SNAPSHOT_MAGIC.length) !== SNAPSHOT_MAGIC) return false;
      const headerLength = prefix.readUInt32LE(SNAPSHOT_MAGIC.length);
      if (SNAPSHOT_PREFIX + headerLength > size) return false;
      const headerText = Buffer.alloc(headerLength);
      fs.readSync(fd, headerText, 0, headerLength, SNAPSHOT_PREFIX);
      const header = JSON.parse(headerText.toString('utf8')) as SnapshotHeader;
      if (header.storeId !== storeId || header.generation > generation) return false;
      const nDocs = header.ids.length;
      const layout = snapshotLayout(headerLength, header.nTerms, nDocs, header.nPostings);
      if (layout.size !== size) return false;
      // One read of the sections before the postings, into an aligned buffer of their own.
      const headBytes = layout.slotsAt - layout.keysAt;
      const head = new ArrayBuffer(headBytes);
      if (fs.readSync(fd, new Uint8Array(head), 0, headBytes, layout.keysAt) !== headBytes) return false;
      const view = <A>(make: (b: ArrayBuffer, o: number, n: number) => A, at: number, n: number): A => make(head, at - layout.keysAt, n);
      const termKeys = view((b, o, n) => new Float64Array(b, o, n), layout.keysAt, header.nTerms);
      const offsets = view((b, o, n) => new Int32Array(b, o, n), layout.offsetsAt, header.nTerms + 1);
      const scopeIds = view((b, o, n) => new Int32Array(b, o, n), layout.scopeIdsAt, nDocs);
      const lens = view((b, o, n) => new Int32Array(b, o, n), layout.lensAt, nDocs);
      for (let t = 1; t < header.nTerms; t++) if (!(termKeys[t - 1] < termKeys[t])) return false;
      if (offsets[0] !== 0 || offsets[header.nTerms] !== header.nPostings) return false;
      this.reserve(nDocs);
      for (let i = 0; i < nDocs; i++) this.addSlot(header.kinds[i] === 's' ? 'skill' : 'memory', header.ids[i], header.scopes[scopeIds[i]], lens[i]);
      this.base = fileLists(termKeys, offsets, fd, layout.slotsAt, layout.tfsAt);
      kept = true;
      this.reads.snapshot++;
      this.storeId = header.storeId;
      this.generation = header.generation;
      this.changedSinceSnapshot = 0;
      return true;
    } catch {
      this.clear();
      return false;
    } finally {
      if (!kept) fs.closeSync(fd);
    }
  }

  /** Rewrites the snapshot after this turn of the event loop when it lags the index by enough. */
  private saveSoonIfStale(): void {
    if (!this.snapshotFile || this.savePending) return;
    if (this.changedSinceSnapshot < Math.max(SNAPSHOT_STALE_DOCS, SNAPSHOT_STALE_FRACTION * this.count)) return;
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

  /**
   * Writes the index (live documents only) to the snapshot file, atomically (temp file + rename),
   * then serves its posting lists from that file as a freshly loaded index does, so a long-lived
   * process holds no more of them in memory than a new one.
   */
  saveSnapshot(): void {
    if (!this.snapshotFile || !this.loaded) return;
    if (this.deadSlots > 0) this.rebuild();
    // Lists asked for since the load, and the snapshot's others (read once here): nothing is copied twice.
    const terms: Array<[number, Int32Array, Uint16Array]> = [];
    for (const [key, list] of this.postings) if (list.length) terms.push([key, list.slots.subarray(0, list.length), list.tfs.subarray(0, list.length)]);
    if (this.base) {
      const { keys, offsets, taken } = this.base;
      const { slots, tfs } = this.baseArrays();
      for (let t = 0; t < keys.length; t++)
        if (!taken[t]) terms.push([keys[t], slots.subarray(offsets[t], offsets[t + 1]), tfs.subarray(offsets[t], offsets[t + 1])]);
    }
    terms.sort((a, b) => a[0] - b[0]);
    const nPostings = terms.reduce((n, [, slots]) => n + slots.length, 0);
    const nDocs = this.count;
    const header: SnapshotHeader = {
      storeId: this.storeId,
      generation: this.generation,
      ids: this.ids,
      kinds: Array.from(this.kindCodes.subarray(0, nDocs), code => (code === KIND_CODE.skill ? 's' : 'm')).join(''),
      scopes: this.scopes,
      nTerms: terms.length,
      nPostings
    };
    const headerBytes = Buffer.from(JSON.stringify(header), 'utf8');
    const layout = snapshotLayout(headerBytes.length, terms.length, nDocs, nPostings);
    const out = Buffer.alloc(layout.size);
    out.write(SNAPSHOT_MAGIC, 0, 'latin1');
    out.writeUInt32LE(headerBytes.length, SNAPSHOT_MAGIC.length);
    headerBytes.copy(out, SNAPSHOT_PREFIX);
    const termKeys = new Float64Array(out.buffer, out.byteOffset + layout.keysAt, terms.length);
    const offsets = new Int32Array(out.buffer, out.byteOffset + layout.offsetsAt, terms.length + 1);
    const slots = new Int32Array(out.buffer, out.byteOffset + layout.slotsAt, nPostings);
    const tfs = new Uint16Array(out.buffer, out.byteOffset + layout.tfsAt, nPostings);
    let at = 0;
    terms.forEach(([key, termSlots, termTfs], t) => {
      termKeys[t] = key;
      offsets[t] = at;
      slots.set(termSlots, at);
      tfs.set(termTfs, at);
      at += termSlots.length;
    });
    offsets[terms.length] = at;
    new Int32Array(out.buffer, out.byteOffset + layout.scopeIdsAt, nDocs).set(this.scopeIds.subarray(0, nDocs));
    new Int32Array(out.buffer, out.byteOffset + layout.lensAt, nDocs).set(this.lens.subarray(0, nDocs));
    const temp = `${this.snapshotFile}.${process.pid}.tmp`;
    fs.writeFileSync(temp, out);
    fs.renameSync(temp, this.snapshotFile);
    this.changedSinceSnapshot = 0;
    // Every list is now in the file: serve them from it (the key and offset arrays are copied
    // out of the written buffer, which is then garbage).
    let fd: number;
    try {
      fd = fs.openSync(this.snapshotFile, 'r');
    } catch {
      return;
    }
    this.dropBase();
    this.postings = new Map();
    this.base = fileLists(Float64Array.from(termKeys), Int32Array.from(offsets), fd, layout.slotsAt, layout.tfsAt);
  }

  /** True once the index was read from a store. */
  get loaded(): boolean {
    return this.generation >= 0;
  }

  /** Which store and generation the index holds (changes whenever its contents do). */
  get stamp(): string {
    return `${this.storeId} ${this.generation}`;
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

  /** Makes the snapshot's list of `key` a PostingList (read from the snapshot file, or views into memory), once. */
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
        const from = base.offsets[mid];
        const n = base.offsets[mid + 1] - from;
        const list = new PostingList();
        if ('fd' in base.data) {
          list.slots = new Int32Array(n);
          list.tfs = new Uint16Array(n);
          readExactly(base.data.fd, list.slots, base.data.slotsAt + from * 4);
          readExactly(base.data.fd, list.tfs, base.data.tfsAt + from * 2);
        } else {
          list.slots = base.data.slots.subarray(from, from + n);
          list.tfs = base.data.tfs.subarray(from, from + n);
        }
        list.length = list.live = n;
        base.taken[mid] = 1;
        this.postings.set(key, list);
        return list;
      }
    }
    return undefined;
  }

  /** The snapshot's posting arrays in memory (read from its file once when they are still there). */
  private baseArrays(): { slots: Int32Array; tfs: Uint16Array } {
    const base = this.base as BaseLists;
    if ('fd' in base.data) {
      const n = base.offsets[base.keys.length];
      const slots = new Int32Array(n);
      const tfs = new Uint16Array(n);
      readExactly(base.data.fd, slots, base.data.slotsAt);
      readExactly(base.data.fd, tfs, base.data.tfsAt);
      closeFileLists(base);
      base.data = { slots, tfs };
    }
    return base.data;
  }

  /** Forgets the snapshot's lists, closing its file. */
  private dropBase(): void {
    if (this.base) closeFileLists(this.base);
    this.base = null;
  }

  /** Slots allocated (live and dead): the size of per-slot scratch arrays. */
  get slotCount(): number {
    return this.count;
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
    this.reads.changes++;
    if (this.deadSlots > REBUILD_MIN_DEAD && this.deadSlots > REBUILD_DEAD_FRACTION * this.count) this.rebuild();
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
    this.reads.full++;
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
    this.count = 0;
    this.ids.length = this.scopes.length = 0;
    this.scopeIds = new Int32Array(0);
    this.lens = new Int32Array(0);
    this.live = new Uint8Array(0);
    this.kindCodes = new Uint8Array(0);
    this.scopeIdOf.clear();
    this.slotOfDoc = null;
    this.postings = new Map();
    this.dropBase();
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

  /** Grows the per-slot arrays to hold at least `slots` slots (by doubling). */
  private reserve(slots: number): void {
    if (slots <= this.live.length) return;
    const size = Math.max(slots, this.live.length * 2, 1024);
    const grow = <A extends Int32Array | Uint8Array>(old: A, make: (n: number) => A): A => {
      const grown = make(size);
      grown.set(old);
      return grown;
    };
    this.scopeIds = grow(this.scopeIds, n => new Int32Array(n));
    this.lens = grow(this.lens, n => new Int32Array(n));
    this.live = grow(this.live, n => new Uint8Array(n));
    this.kindCodes = grow(this.kindCodes, n => new Uint8Array(n));
  }

  /** Slot of each live document by kind and id, made on first use. */
  private slotMap(): Map<string, number> {
    if (!this.slotOfDoc) {
      this.slotOfDoc = new Map();
      for (let slot = 0; slot < this.count; slot++) if (this.live[slot]) this.slotOfDoc.set(docKey(KIND_OF_CODE[this.kindCodes[slot]], this.ids[slot]), slot);
    }
    return this.slotOfDoc;
  }

  private addSlot(kind: DocKind, id: string, scope: string, len: number): number {
    let scopeId = this.scopeIdOf.get(scope);
    if (scopeId === undefined) {
      scopeId = this.scopes.length;
      this.scopes.push(scope);
      this.scopeIdOf.set(scope, scopeId);
    }
    const slot = this.count++;
    this.reserve(this.count);
    this.ids.push(id);
    this.kindCodes[slot] = KIND_CODE[kind];
    this.scopeIds[slot] = scopeId;
    this.lens[slot] = len;
    this.live[slot] = 1;
    this.slotOfDoc?.set(docKey(kind, id), slot);
    const totals = this.totalsOf(kind);
    this.totals.set(kind, { nDocs: totals.nDocs + 1, totalLen: totals.totalLen + len });
    return slot;
  }

  private remove(kind: DocKind, id: string): void {
    const slots = this.slotMap();
    const key = docKey(kind, id);
    const slot = slots.get(key);
    if (slot === undefined) return;
    slots.delete(key);
    this.live[slot] = 0;
    this.deadSlots++;
    const totals = this.totalsOf(kind);
    this.totals.set(kind, { nDocs: totals.nDocs - 1, totalLen: totals.totalLen - this.lens[slot] });
  }

  /** Drops dead slots: renumbers the live ones and filters every posting list. */
  private rebuild(): void {
    const renumber = new Int32Array(this.count).fill(-1);
    let next = 0;
    for (let slot = 0; slot < this.count; slot++) {
      if (!this.live[slot]) continue;
      renumber[slot] = next;
      this.ids[next] = this.ids[slot];
      this.kindCodes[next] = this.kindCodes[slot];
      this.scopeIds[next] = this.scopeIds[slot];
      this.lens[next] = this.lens[slot];
      this.live[next] = 1;
      next++;
    }
    this.ids.length = this.count = next;
    this.live.fill(0, next);
    this.slotOfDoc = null;
    for (const [term, list] of this.postings) {
      const kept = new PostingList();
      for (let i = 0; i < list.length; i++) if (renumber[list.slots[i]] >= 0) kept.push(renumber[list.slots[i]], list.tfs[i]);
      if (kept.length) this.postings.set(term, kept);
      else this.postings.delete(term);
    }
    if (this.base) {
      // The snapshot's lists not asked for yet are filtered into new packed arrays, still lazy.
      const base = this.base;
      const data = this.baseArrays();
      const keys: number[] = [];
      const offsets: number[] = [0];
      const slots = new Int32Array(data.slots.length);
      const tfs = new Uint16Array(data.tfs.length);
      let at = 0;
      for (let t = 0; t < base.keys.length; t++) {
        if (base.taken[t]) continue;
        const start = at;
        for (let i = base.offsets[t]; i < base.offsets[t + 1]; i++) {
          const slot = renumber[data.slots[i]];
          if (slot < 0) continue;
          slots[at] = slot;
          tfs[at++] = data.tfs[i];
        }
        if (at > start) {
          keys.push(base.keys[t]);
          offsets.push(at);
        }
      }
      this.base = {
        keys: Float64Array.from(keys),
        offsets: Int32Array.from(offsets),
        taken: new Uint8Array(keys.length),
        data: { slots: slots.subarray(0, at), tfs: tfs.subarray(0, at) }
      };
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

/** Byte offsets of a snapshot's sections (each 8-aligned) after its JSON header, and the file size. */
function snapshotLayout(headerLength: number, nTerms: number, nDocs: number, nPostings: number) {
  const keysAt = align8(SNAPSHOT_PREFIX + headerLength);
  const offsetsAt = align8(keysAt + nTerms * 8);
  const scopeIdsAt = align8(offsetsAt + (nTerms + 1) * 4);
  const lensAt = align8(scopeIdsAt + nDocs * 4);
  const slotsAt = align8(lensAt + nDocs * 4);
  const tfsAt = align8(slotsAt + nPostings * 4);
  const size = align8(tfsAt + nPostings * 2);
  return { keysAt, offsetsAt, scopeIdsAt, lensAt, slotsAt, tfsAt, size };
}

/** Fills `into` from the file at `position`; a short read means the file is not what its header says. */
function readExactly(fd: number, into: Int32Array | Uint16Array, position: number): void {
  const bytes = new Uint8Array(into.buffer, into.byteOffset, into.byteLength);
  let done = 0;
  while (done < bytes.length) {
    const n = fs.readSync(fd, bytes, done, bytes.length - done, position + done);
    if (n === 0) throw new Error(`retrieval: the index snapshot ended early (${done} of ${bytes.length} bytes at ${position}); delete it to rebuild the index`);
    done += n;
  }
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
