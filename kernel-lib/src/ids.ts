import { createHash, randomBytes } from 'crypto';

/**
 * A new unique id: `prefix_` + 10 hex digits of milliseconds + 12 random hex digits.
 * Time-ordered, so ids sort by creation time in the store and in listings.
 */
export function newId(prefix: string): string {
  const time = Date.now().toString(16).padStart(12, '0').slice(-10);
  return `${prefix}_${time}${randomBytes(6).toString('hex')}`;
}

/**
 * A deterministic id from its parts: the same parts always give the same id, so a record
 * written twice (a memory restated, a notebook imported twice) updates in place.
 */
export function stableId(prefix: string, ...parts: string[]): string {
  const hash = createHash('sha256').update(parts.join('\u241f')).digest('hex');
  return `${prefix}_${hash.slice(0, 20)}`;
}

/** Current time as the ISO 8601 string every record stores. */
export function nowIso(): string {
  return new Date().toISOString();
}
