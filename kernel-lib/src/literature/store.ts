/**
 * Literature persistence: the response cache (literature_cache) and the papers table.
 * Typed against the two store methods used, so any `Store` fits.
 */
import type { Queryable } from '../store/queryable';
import { stableId, nowIso } from '../ids';
import type { Paper } from './types';

export interface LiteratureStore {
  read<T>(fn: (q: Queryable) => Promise<T>): Promise<T>;
  write<T>(fn: (q: Queryable) => Promise<T>): Promise<T>;
}

/** The cache key of one provider request: same provider, query and options → same row. */
export function cacheKey(provider: string, query: string, options: { limit: number; yearFrom?: number }): string {
  return stableId('lit', provider, query.trim().toLowerCase().replace(/\s+/g, ' '), String(options.limit), String(options.yearFrom ?? ''));
}

export async function readCache(store: LiteratureStore, key: string, maxAgeMs: number): Promise<Paper[] | undefined> {
  const row = await store.read(q =>
    q.get<{ response: Paper[]; fetched_at: string }>('select response, fetched_at from literature_cache where key = $key', { key })
  );
  if (!row) return undefined;
  if (Date.now() - Date.parse(row.fetched_at) > maxAgeMs) return undefined;
  return row.response;
}

/** Stores a provider's answer and upserts its papers, in one transaction. */
export async function writeCache(store: LiteratureStore, key: string, provider: string, query: string, papers: Paper[]): Promise<void> {
  await store.write(async q => {
    await q.run('delete from literature_cache where key = $key', { key });
    await q.run('insert into literature_cache (key, provider, query, response, fetched_at) values ($key, $provider, $query, $response, $at)', {
      key,
      provider,
      query,
      response: papers,
      at: nowIso()
    });
    await upsertPapers(q, papers);
  });
}

/** Inserts or replaces papers by key (inside a write transaction). */
export async function upsertPapers(q: Queryable, papers: Paper[]): Promise<void> {
  const at = nowIso();
  for (const p of papers) {
    await q.run('delete from papers where key = $key', { key: p.key });
    await q.run(
      `insert into papers (key, title, authors, year, venue, doi, url, abstract, source, fetched_at)
       values ($key, $title, $authors, $year, $venue, $doi, $url, $abstract, $source, $at)`,
      {
        key: p.key,
        title: p.title,
        authors: p.authors ?? [],
        year: p.year ?? null,
        venue: p.venue ?? null,
        doi: p.doi ?? null,
        url: p.url ?? null,
        abstract: p.abstract ?? null,
        source: p.source ?? 'unknown',
        at
      }
    );
  }
}

interface PaperRow {
  key: string;
  title: string;
  authors: string[] | null;
  year: number | null;
  venue: string | null;
  doi: string | null;
  url: string | null;
  abstract: string | null;
  source: string;
}

export function paperFromRow(row: PaperRow): Paper {
  const paper: Paper = { key: row.key, title: row.title, year: row.year, doi: row.doi, url: row.url, source: row.source };
  if (row.authors?.length) paper.authors = row.authors;
  if (row.venue) paper.venue = row.venue;
  if (row.abstract) paper.abstract = row.abstract;
  return paper;
}

/** Papers by key from the papers table (missing keys are absent from the map). */
export async function papersByKey(store: LiteratureStore, keys: string[]): Promise<Map<string, Paper>> {
  if (!keys.length) return new Map();
  const rows = await store.read(q => q.all<PaperRow>(`select * from papers where key in (select unnest($keys::VARCHAR[]))`, { keys }));
  return new Map(rows.map(r => [r.key, paperFromRow(r)]));
}

export async function papersBySource(store: LiteratureStore, source: string): Promise<Paper[]> {
  const rows = await store.read(q => q.all<PaperRow>('select * from papers where source = $source order by key', { source }));
  return rows.map(paperFromRow);
}
