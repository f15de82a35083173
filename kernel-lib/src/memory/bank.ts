/**
 * The memory bank: typed memories with deterministic ids, so a restated memory updates in
 * place (support up, confidence up) instead of duplicating; contradictions lower confidence;
 * relevance decays by kind; user constraints and profile facts are global and cross projects.
 */
import type { Memory } from '@nanoresearch/schema';
import { errorMessage } from '../error-message';
import { stableId } from '../ids';
import type { Llm } from '../llm/types';
import type { StageName } from '../stage-contract';
import type { Queryable } from '../store/queryable';
import { defineDurableWrite, type DurableKind } from '../store/outbox';
import { schemaErrors } from '../validate';
import { indexDocuments, memoryDoc, memoryText, unindexDocuments } from '../retrieval/terms';
import { ALWAYS_CANDIDATE_KINDS } from '../retrieval/weights';
import { GLOBAL_KINDS, GLOBAL_SCOPE, MEMORY_KINDS, MemoryKind, decayFactor, MEMORY_COLUMNS, markMemoriesUsed, memoryFromRow } from '../records/memories';
import { quoteUntrusted, UNTRUSTED_SYSTEM_RULE } from '../llm/untrusted';

/** The part of a `Store` the bank uses. */
export interface MemoryStore {
  read<T>(fn: (q: Queryable) => Promise<T>): Promise<T>;
  write<T>(fn: (q: Queryable) => Promise<T>): Promise<T>;
  writeDurable<P, T>(kind: DurableKind<P, T>, payload: P): Promise<T>;
}

/** Confidence of a memory stated once, when the caller gives none. */
export const DEFAULT_CONFIDENCE = 0.6;
/** Importance of a memory when the caller gives none. */
export const DEFAULT_IMPORTANCE = 0.5;
/** Each support closes this fraction of the gap to certainty (a bounded, Bayesian-like update). */
export const SUPPORT_RATE = 0.25;
/** Each contradiction removes this fraction of the confidence: evidence against weighs more than restating. */
export const CONTRADICTION_RATE = 0.35;
/** Confidence never reaches 1 or 0: one more contradiction or support can always move it. */
export const MAX_CONFIDENCE = 0.98;
export const MIN_CONFIDENCE = 0.02;
/** `applyDecay` retires a memory whose decayed confidence falls below this. */
export const DECAY_RETIRE_FLOOR = 0.05;

export interface RememberInput {
  kind: MemoryKind;
  content: string;
  /** Short statement identifying the memory; defaults to the content. Same key, same memory. */
  key?: string;
  /** Required for project kinds; ignored for global kinds. */
  projectId?: string | null;
  tags?: string[];
  stages?: StageName[];
  conditions?: Memory['conditions'];
  importance?: number;
  confidence?: number;
  source?: string;
}

export interface MemoryFilter {
  /** A project's memories; with `includeGlobal` (default true) global ones too. */
  projectId?: string;
  includeGlobal?: boolean;
  kind?: MemoryKind;
  status?: Memory['status'];
}

/** Editable fields of a memory (identity fields are not: change them and it is another memory). */
export type MemoryPatch = Partial<Pick<Memory, 'content' | 'tags' | 'stages' | 'conditions' | 'importance' | 'confidence' | 'status'>>;

/** Lowercase, punctuation folded, whitespace collapsed: "Always  include a linear baseline." = "always include a linear baseline". */
export function normaliseKey(text: string): string {
  return text
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, ' ')
    .trim()
    .slice(0, 200);
}

/** The scope a memory of this kind gets: 'global' for user kinds, the project id otherwise. */
export function scopeFor(kind: MemoryKind, projectId?: string | null): string {
  if (GLOBAL_KINDS.has(kind)) return GLOBAL_SCOPE;
  if (!projectId) throw new Error(`A ${kind} memory belongs to a project: pass projectId (only ${[...GLOBAL_KINDS].join(' and ')} are global)`);
  return projectId;
}

/** The deterministic id of a memory. */
export function memoryId(kind: MemoryKind, scope: string, key: string): string {
  return stableId('mem', kind, scope, normaliseKey(key));
}

function clamp(x: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, x));
}

function union<T>(a: readonly T[] | undefined, b: readonly T[] | undefined): T[] | undefined {
  if (!a && !b) return undefined;
  return [...new Set([...(a ?? []), ...(b ?? [])])];
}

/** Age of a memory in days at `now`, from its last update or use. */
export function ageDays(memory: Memory, now: Date): number {
  const times = [memory.updated_at, memory.last_used_at, memory.created_at].filter((t): t is string => typeof t === 'string');
  const newest = times.length ? Math.max(...times.map(t => Date.parse(t))) : now.getTime();
  return (now.getTime() - newest) / 86_400_000;
}

/** Confidence after recency decay: what `applyDecay` compares against the retire floor. */
export function effectiveConfidence(memory: Memory, now: Date = new Date()): number {
  return memory.confidence * decayFactor(memory.kind, ageDays(memory, now));
}

/** Writes a memory row (insert or replace) and keeps its postings in step (active memories only are indexed). */
async function writeMemory(q: Queryable, memory: Memory, reindex: boolean): Promise<void> {
  const row: Record<string, unknown> = {};
  for (const c of MEMORY_COLUMNS) row[c] = (memory as unknown as Record<string, unknown>)[c] ?? null;
  await q.run(`INSERT OR REPLACE INTO memories (${MEMORY_COLUMNS.join(', ')}) VALUES (${MEMORY_COLUMNS.map(c => `$${c}`).join(', ')})`, row);
  if (!reindex) return;
  if (memory.status === 'active') await indexDocuments(q, 'memory', [memoryDoc(memory, ALWAYS_CANDIDATE_KINDS)]);
  else await unindexDocuments(q, 'memory', [memory.id]);
}

/** An id list as a JSON parameter (one statement for any batch size). */
const ID_LIST = `SELECT unnest(from_json($ids::JSON, '["VARCHAR"]'))`;

/**
 * The whole of `rememberAll` in a fixed number of statements, whatever the batch size: one read
 * of the memories already stored, one delete and one bulk append of the rows, and one indexing
 * call each for the re-stated and the new memories. Statement count, not row count, is what a
 * write costs here (~1.5 ms each), so per-memory statements capped the path at ~15 memories/s.
 */
async function applyRemember(q: Queryable, inputs: readonly RememberInput[], at: string): Promise<Memory[]> {
  const prepared = inputs.map(input => {
    const { scope, key, id } = identify(input);
    return { input, scope, key, id };
  });
  const ids = [...new Set(prepared.map(p => p.id))];
  const stored = new Map<string, Memory>();
  for (const row of await q.all<Record<string, unknown>>(`SELECT * FROM memories WHERE id IN (${ID_LIST})`, { ids })) {
    const memory = memoryFromRow(row);
    stored.set(memory.id, memory);
  }
  const existed = new Set(stored.keys());
  const current = new Map(stored);
  const out: Memory[] = [];
  for (const { input, scope, key, id } of prepared) {
    const old = current.get(id);
    const memory = old ? strengthened(old, input, at) : created(input, id, scope, key, at);
    for (const k of Object.keys(memory) as (keyof Memory)[]) if (memory[k] === undefined) delete memory[k];
    assertValidMemory(memory);
    current.set(id, memory);
    out.push(memory);
  }
  const rows = [...current.values()].filter(m => !stored.has(m.id) || stored.get(m.id) !== m);
  if (existed.size) await q.run(`DELETE FROM memories WHERE id IN (${ID_LIST})`, { ids: [...existed] });
  await q.appendRows(
    'memories',
    rows.map(m => Object.fromEntries(MEMORY_COLUMNS.map(c => [c, (m as unknown as Record<string, unknown>)[c] ?? null])))
  );
  const docs = (list: Memory[]) => list.map(m => memoryDoc(m, ALWAYS_CANDIDATE_KINDS));
  const restated = rows.filter(m => existed.has(m.id));
  const fresh = rows.filter(m => !existed.has(m.id));
  // A re-stated memory may have been retired (then it is not indexed): unindex-and-index covers both.
  if (restated.length) await indexDocuments(q, 'memory', docs(restated));
  if (fresh.length) await indexDocuments(q, 'memory', docs(fresh), { fresh: true });
  return out;
}

/** Scope, normalised key and id of a memory to remember; throws for input no memory can come from. */
function identify(input: RememberInput): { scope: string; key: string; id: string } {
  if (!input.content || !input.content.trim()) throw new Error(`remember(${input.kind}): content is empty`);
  const scope = scopeFor(input.kind, input.projectId);
  const key = normaliseKey(input.key ?? input.content);
  if (!key) throw new Error(`remember(${input.kind}): the key "${input.key ?? input.content}" has no letters or digits`);
  return { scope, key, id: memoryId(input.kind, scope, key) };
}

/** A memory stated again: content refreshed, lists merged, confidence up one support step. */
function strengthened(old: Memory, input: RememberInput, at: string): Memory {
  return {
    ...old,
    content: input.content.trim(),
    tags: union(old.tags, input.tags),
    stages: union(old.stages, input.stages),
    conditions: input.conditions || old.conditions ? { ...(old.conditions ?? {}), ...(input.conditions ?? {}) } : undefined,
    importance: Math.max(old.importance, input.importance ?? 0),
    confidence: clamp(old.confidence + (1 - old.confidence) * SUPPORT_RATE, MIN_CONFIDENCE, MAX_CONFIDENCE),
    support_count: (old.support_count ?? 0) + 1,
    status: 'active',
    updated_at: at
  };
}

function created(input: RememberInput, id: string, scope: string, key: string, at: string): Memory {
  return {
    id,
    kind: input.kind,
    scope,
    key,
    content: input.content.trim(),
    tags: input.tags,
    stages: input.stages,
    conditions: input.conditions,
    importance: clamp(input.importance ?? DEFAULT_IMPORTANCE, 0, 1),
    confidence: clamp(input.confidence ?? DEFAULT_CONFIDENCE, MIN_CONFIDENCE, MAX_CONFIDENCE),
    support_count: 1,
    contradiction_count: 0,
    usage_count: 0,
    status: 'active',
    source: input.source ?? 'user',
    created_at: at,
    updated_at: at,
    last_used_at: null
  };
}

/**
 * Remembering is a durable write (store/outbox.ts): when the store cannot take it, the inputs
 * are kept in the outbox and remembered by the next open, at the time they were given.
 */
export const REMEMBER = defineDurableWrite<{ inputs: RememberInput[]; at: string }, Memory[]>('memory.remember', (q, payload) =>
  applyRemember(q, payload.inputs, payload.at)
);

function assertValidMemory(memory: Memory): void {
  const errors = schemaErrors('memory', memory);
  if (errors.length) throw new Error(`Memory ${memory.id} is not a valid record: ${errors.join('; ')}`);
}

/** The JSON schema of the memories the judge extracts from feedback. */
export const FEEDBACK_MEMORIES_SCHEMA = {
  title: 'feedback_memories',
  type: 'object',
  additionalProperties: false,
  required: ['memories'],
  properties: {
    memories: {
      type: 'array',
      // Every part bounded: under a grammar a small model repeats itself in an unbounded list or string.
      maxItems: 3,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['kind', 'content'],
        properties: {
          kind: { type: 'string', enum: [...MEMORY_KINDS] },
          content: { type: 'string', minLength: 8, maxLength: 240 },
          key: { type: 'string', maxLength: 60 },
          tags: { type: 'array', maxItems: 4, items: { type: 'string', maxLength: 30 } },
          stages: { type: 'array', maxItems: 3, items: { type: 'string', enum: ['ideation', 'planning', 'experiment', 'analysis', 'writing', 'review'] } },
          conditions: {
            type: 'object',
            additionalProperties: false,
            properties: {
              dataset: { type: 'string', maxLength: 60 },
              method: { type: 'string', maxLength: 60 },
              budget: { type: 'string', maxLength: 60 },
              failure_mode: { type: 'string', maxLength: 60 }
            }
          },
          importance: { type: 'number', minimum: 0, maximum: 1 }
        }
      }
    }
  }
} as const;

interface ExtractedMemory {
  kind: MemoryKind;
  content: string;
  key?: string;
  tags?: string[];
  stages?: StageName[];
  conditions?: Memory['conditions'];
  importance?: number;
}

const FEEDBACK_SYSTEM_PROMPT = `You turn a researcher's feedback on one research stage into durable memories.
Kinds: user_constraint (a rule the researcher wants always applied, e.g. "always include a linear baseline"),
user_profile (a stable preference or fact about the researcher), project_context, decision_history,
promising_direction, failed_direction (give conditions: dataset, method, budget, failure_mode), data_strategy,
training_strategy. Write each memory as one self-contained sentence. Return at most 5; return {"memories": []}
when the feedback holds nothing durable: an empty list is better than a vague memory.`;

export class MemoryBank {
  constructor(private readonly store: MemoryStore) {}

  /** remember() calls waiting for the write in flight; they go in together, in one transaction. */
  private batch: Array<{ input: RememberInput; now: Date; resolve: (m: Memory) => void; reject: (e: unknown) => void }> = [];
  private flushing: Promise<void> | null = null;

  /**
   * Stores a memory, or strengthens the one with the same kind, scope and key. Calls made while
   * another is being written are batched into the next transaction (one commit for all of them).
   */
  async remember(input: RememberInput, now: Date = new Date()): Promise<Memory> {
    identify(input);
    return new Promise<Memory>((resolve, reject) => {
      this.batch.push({ input, now, resolve, reject });
      if (!this.flushing) this.flushing = this.flush();
    });
  }

  private async flush(): Promise<void> {
    // Let the calls of this turn of the event loop join the batch.
    await new Promise(resolve => setImmediate(resolve));
    while (this.batch.length) {
      const batch = this.batch;
      this.batch = [];
      // One timestamp per batch would merge distinct `now`s: calls with their own times go alone.
      const groups = new Map<number, typeof batch>();
      for (const call of batch) groups.set(call.now.getTime(), [...(groups.get(call.now.getTime()) ?? []), call]);
      for (const [time, calls] of groups) {
        try {
          const memories = await this.rememberAll(
            calls.map(c => c.input),
            new Date(time)
          );
          calls.forEach((call, i) => call.resolve(memories[i]));
        } catch (error) {
          if (calls.length === 1) calls[0].reject(error);
          else {
            // One bad input must not fail the others: each goes alone then.
            for (const call of calls) await this.rememberAll([call.input], new Date(time)).then(([m]) => call.resolve(m), call.reject);
          }
        }
      }
    }
    this.flushing = null;
  }

  /**
   * `remember` for several memories in one transaction, in a fixed number of statements (a
   * batch of a thousand costs about what one costs). A durable write: if the store cannot take
   * it, the inputs are kept in the outbox (StoreWriteQueuedError) and remembered on the next open.
   */
  async rememberAll(inputs: readonly RememberInput[], now: Date = new Date()): Promise<Memory[]> {
    if (inputs.length === 0) return [];
    inputs.forEach(identify);
    return this.store.writeDurable(REMEMBER, { inputs: [...inputs], at: now.toISOString() });
  }

  /** Records evidence against a memory: contradiction count up, confidence down. */
  async contradict(id: string, now: Date = new Date()): Promise<Memory> {
    return this.store.write(async q => {
      const memory = await this.mustGet(q, id);
      const updated: Memory = {
        ...memory,
        contradiction_count: (memory.contradiction_count ?? 0) + 1,
        confidence: clamp(memory.confidence * (1 - CONTRADICTION_RATE), MIN_CONFIDENCE, MAX_CONFIDENCE),
        updated_at: now.toISOString()
      };
      await writeMemory(q, updated, false);
      return updated;
    });
  }

  /** Counts a use of each memory (the planner selected it) and stamps the time. */
  async markUsed(ids: readonly string[], now: Date = new Date()): Promise<void> {
    if (ids.length === 0) return;
    await this.store.write(q => markMemoriesUsed(q, ids, now));
  }

  async get(id: string): Promise<Memory | undefined> {
    const row = await this.store.read(q => q.get<Record<string, unknown>>('SELECT * FROM memories WHERE id = $1', [id]));
    return row ? memoryFromRow(row) : undefined;
  }

  async list(filter: MemoryFilter = {}): Promise<Memory[]> {
    const where: string[] = [];
    const params: Record<string, unknown> = {};
    if (filter.projectId !== undefined) {
      params.project = filter.projectId;
      where.push(filter.includeGlobal === false ? 'scope = $project' : `(scope = $project OR scope = '${GLOBAL_SCOPE}')`);
    }
    if (filter.kind) {
      params.kind = filter.kind;
      where.push('kind = $kind');
    }
    if (filter.status) {
      params.status = filter.status;
      where.push('status = $status');
    }
    const sql = `SELECT * FROM memories ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY updated_at DESC, id`;
    const rows = await this.store.read(q => q.all<Record<string, unknown>>(sql, where.length ? params : undefined));
    return rows.map(memoryFromRow);
  }

  /** Edits a memory's content or weights; text changes are reindexed. */
  async update(id: string, patch: MemoryPatch, now: Date = new Date()): Promise<Memory> {
    return this.store.write(async q => {
      const memory = await this.mustGet(q, id);
      const updated: Memory = { ...memory, ...patch, updated_at: now.toISOString() };
      assertValidMemory(updated);
      const indexChanged =
        memoryText(updated) !== memoryText(memory) || JSON.stringify(updated.tags) !== JSON.stringify(memory.tags) || updated.status !== memory.status;
      await writeMemory(q, updated, indexChanged);
      return updated;
    });
  }

  async retire(id: string): Promise<Memory> {
    return this.update(id, { status: 'retired' });
  }

  /**
   * Applies recency decay: retires every active memory whose decayed confidence is below
   * `floor`. Returns the retired ids. (Retrieval applies the same decay at query time.)
   */
  async applyDecay(now: Date = new Date(), floor: number = DECAY_RETIRE_FLOOR): Promise<string[]> {
    const active = await this.list({ status: 'active' });
    const stale = active.filter(m => effectiveConfidence(m, now) < floor).map(m => m.id);
    if (stale.length) {
      await this.store.write(async q => {
        await q.run(`UPDATE memories SET status = 'retired', updated_at = $at WHERE id IN (SELECT unnest(from_json($ids::JSON, '["VARCHAR"]')))`, {
          at: now.toISOString(),
          ids: stale
        });
        await unindexDocuments(q, 'memory', stale);
      });
    }
    return stale;
  }

  /**
   * Asks the judge model to turn feedback into typed memories and stores them. Fails closed:
   * an LLM error or an answer that does not match the schema throws; nothing is stored then.
   */
  async fromFeedback(args: { text: string; stage: StageName; projectId?: string | null; llm: Llm }): Promise<Memory[]> {
    if (!args.text.trim()) return [];
    let extracted: ExtractedMemory[];
    try {
      const answer = await args.llm.completeJson<{ memories: ExtractedMemory[] }>({
        role: 'judge',
        messages: [
          { role: 'system', content: `${FEEDBACK_SYSTEM_PROMPT}\n${UNTRUSTED_SYSTEM_RULE}` },
          // Feedback may be a colleague's, imported with their notebook: it is quoted, never obeyed.
          { role: 'user', content: `Stage: ${args.stage}\nFeedback:\n${quoteUntrusted('feedback', args.text)}` }
        ],
        jsonSchema: FEEDBACK_MEMORIES_SCHEMA as unknown as Record<string, unknown>,
        temperature: 0,
        // A few typed one-line memories; the cap stops a small model rambling to the context limit.
        maxTokens: 512
      });
      extracted = answer.value.memories;
    } catch (error) {
      throw new Error(`Extracting memories from feedback failed (nothing was stored): ${errorMessage(error)}`, {
        cause: error
      });
    }
    const inputs: RememberInput[] = [];
    for (const m of extracted) {
      if (!GLOBAL_KINDS.has(m.kind) && !args.projectId) {
        throw new Error(`The feedback yielded a ${m.kind} memory, which belongs to a project: pass projectId to fromFeedback`);
      }
      inputs.push({ ...m, stages: m.stages ?? [args.stage], projectId: args.projectId, source: 'feedback' });
    }
    return inputs.length ? this.rememberAll(inputs) : [];
  }

  private async mustGet(q: Queryable, id: string): Promise<Memory> {
    const row = await q.get<Record<string, unknown>>('SELECT * FROM memories WHERE id = $1', [id]);
    if (!row) throw new Error(`No memory with id ${id}; list them with memoryBank.list()`);
    return memoryFromRow(row);
  }
}
