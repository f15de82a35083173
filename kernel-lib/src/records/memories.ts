/**
 * The `memories` table: memory kinds, scopes, decay constants, the row <-> record mapping and
 * the one rendering of a memory, shared by the memory bank, retrieval, the planner and the stages.
 */
import type { Memory } from '@nanoresearch/schema';
import type { Queryable } from '../store';

export type MemoryKind = Memory['kind'];

/** Kinds about the researcher rather than a project: they are stored once and cross projects. */
export const GLOBAL_KINDS: ReadonlySet<MemoryKind> = new Set<MemoryKind>(['user_constraint', 'user_profile']);

export const MEMORY_KINDS: readonly MemoryKind[] = [
  'user_constraint',
  'user_profile',
  'project_context',
  'decision_history',
  'promising_direction',
  'failed_direction',
  'data_strategy',
  'training_strategy'
];

/** The scope of global memories. */
export const GLOBAL_SCOPE = 'global';

/**
 * Half-life of a memory's relevance, in days, by kind. Constraints and profile facts are
 * about the person and change slowly; directions go stale as data and methods move on;
 * decisions and context of a project are most useful while it is active.
 */
export const MEMORY_HALF_LIFE_DAYS: Readonly<Record<MemoryKind, number>> = {
  user_constraint: 365,
  user_profile: 365,
  project_context: 60,
  decision_history: 45,
  promising_direction: 60,
  failed_direction: 90,
  data_strategy: 120,
  training_strategy: 120
};

/** Relevance decay factor in (0, 1] after `ageDays` for a kind (exponential, by half-life). */
export function decayFactor(kind: MemoryKind, ageDays: number): number {
  return Math.pow(0.5, Math.max(0, ageDays) / MEMORY_HALF_LIFE_DAYS[kind]);
}

/** The columns of the `memories` table, in the order they are written. */
export const MEMORY_COLUMNS = [
  'id',
  'kind',
  'scope',
  'key',
  'content',
  'tags',
  'stages',
  'conditions',
  'importance',
  'confidence',
  'support_count',
  'contradiction_count',
  'usage_count',
  'status',
  'source',
  'created_at',
  'updated_at',
  'last_used_at'
] as const;

/** A store row of `memories` as a Memory record (null optional fields dropped). */
export function memoryFromRow(row: Record<string, unknown>): Memory {
  const m: Record<string, unknown> = {};
  for (const key of MEMORY_COLUMNS) {
    const value = row[key];
    if (value !== null && value !== undefined) m[key] = value;
    else if (key === 'last_used_at' && key in row) m[key] = null;
  }
  return m as unknown as Memory;
}

/** Counts one use of each memory (a stage was given it), in the caller's transaction. */
export async function markMemoriesUsed(q: Queryable, ids: readonly string[], at: Date = new Date()): Promise<void> {
  if (ids.length === 0) return;
  await q.run(
    `UPDATE memories SET usage_count = coalesce(usage_count, 0) + 1, last_used_at = $at
      WHERE id IN (SELECT unnest(from_json($ids::JSON, '["VARCHAR"]')))`,
    { at: at.toISOString(), ids: [...new Set(ids)] }
  );
}

/**
 * A memory as the planner, the stages' guidance and the retrieval budget see it: its kind, its
 * text (cut to `maxChars` when given, whitespace folded) and the conditions it holds under. The
 * one rendering of a memory, so what is budgeted is what is shown.
 */
export function renderMemory(memory: Pick<Memory, 'kind' | 'content' | 'conditions'>, options: { maxChars?: number } = {}): string {
  const conditions = Object.entries(memory.conditions ?? {})
    .filter(([, v]) => v)
    .map(([k, v]) => `${k}=${v}`)
    .join(', ');
  const content = options.maxChars === undefined ? memory.content : clipText(memory.content, options.maxChars);
  return `[${memory.kind}] ${content}${conditions ? ` (under ${conditions})` : ''}`;
}

/** `text` on one line, cut to `max` characters with an ellipsis. */
export function clipText(text: string, max: number): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length <= max ? flat : `${flat.slice(0, max - 1)}…`;
}
