/** The `skills` table: skill rows <-> records, use counters, and the small text helpers the bank and the review gate share. */
import type { Skill } from '@nanoresearch/schema';
import type { Queryable } from '../store';

/** A store row of `skills` as a Skill record (null optional fields dropped). */
export function skillFromRow(row: Record<string, unknown>): Skill {
  const s: Record<string, unknown> = {};
  for (const key of [
    'id',
    'name',
    'description',
    'when_to_use',
    'instructions',
    'stages',
    'tags',
    'source',
    'version',
    'status',
    'usage_count',
    'success_count',
    'provenance',
    'created_at',
    'updated_at'
  ]) {
    const value = row[key];
    if (value !== null && value !== undefined) s[key] = value;
  }
  return s as unknown as Skill;
}

/** The row written for a skill: every column, optional ones as NULL. */
export function skillToRow(skill: Skill): Record<string, unknown> {
  return {
    id: skill.id,
    name: skill.name,
    description: skill.description,
    when_to_use: skill.when_to_use ?? null,
    instructions: skill.instructions,
    stages: skill.stages ?? null,
    tags: skill.tags ?? null,
    source: skill.source,
    version: skill.version,
    status: skill.status,
    usage_count: skill.usage_count ?? 0,
    success_count: skill.success_count ?? 0,
    provenance: skill.provenance ?? null,
    created_at: skill.created_at ?? null,
    updated_at: skill.updated_at ?? null
  };
}

/** A slug usable as a skill id and folder name. */
export function slugify(text: string): string {
  const slug = text
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 64)
    .replace(/-+$/g, '');
  return slug || 'skill';
}

/** Adds one to a skill counter (usage or success) of each skill, in the caller's transaction. */
export async function bumpSkillCounter(q: Queryable, column: 'usage_count' | 'success_count', ids: readonly string[]): Promise<void> {
  if (ids.length === 0) return;
  await q.run(`UPDATE skills SET ${column} = coalesce(${column}, 0) + 1 WHERE id IN (SELECT unnest(from_json($ids::JSON, '["VARCHAR"]')))`, {
    ids: [...new Set(ids)]
  });
}
