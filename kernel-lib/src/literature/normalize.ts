/** Shared helpers that turn each source's record into one `Paper` with a citation key. */
import type { Paper } from './types';

/** Lower-case bare DOI ("10.1/abc") from a DOI, a doi.org URL or a "doi:" form; null when absent. */
export function normalizeDoi(doi: string | null | undefined): string | null {
  if (!doi) return null;
  const bare = doi
    .trim()
    .replace(/^https?:\/\/(dx\.)?doi\.org\//i, '')
    .replace(/^doi:/i, '');
  return /^10\.\d{4,9}\/\S+$/.test(bare) ? bare.toLowerCase() : null;
}

/** Title reduced to lower-case letters and digits, for matching across sources. */
export function normalizeTitle(title: string): string {
  return title
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, ' ')
    .trim();
}

const TITLE_STOP_WORDS = new Set(['a', 'an', 'the', 'on', 'of', 'in', 'for', 'to', 'and', 'with', 'towards', 'toward', 'via', 'is', 'are']);

/**
 * A BibTeX-style citation key, `lastname` + `year` + first significant title word
 * (e.g. `vaswani2017attention`): deterministic, so the same paper from two sources
 * gets the same key, and readable in the draft's `[@key]` citations.
 */
export function citationKey(paper: { title: string; authors?: string[]; year?: number | null }): string {
  const first = paper.authors?.[0] ?? '';
  const last = (first.includes(',') ? first.split(',')[0] : (first.trim().split(/\s+/).pop() ?? '')) || 'anon';
  const word =
    normalizeTitle(paper.title)
      .split(' ')
      .find(w => w.length > 2 && !TITLE_STOP_WORDS.has(w)) ?? 'paper';
  const ascii = (s: string) => normalizeTitle(s).replace(/ /g, '');
  return `${ascii(last) || 'anon'}${paper.year ?? 'nd'}${ascii(word)}`;
}

/** Collapses whitespace and strips tags (Crossref abstracts are JATS XML). */
export function cleanText(text: string | null | undefined): string {
  return (text ?? '')
    .replace(/<[^>]+>/g, ' ')
    .replace(/\s+/g, ' ')
    .trim();
}

/** A Paper with its key and only the fields that have values. */
export function makePaper(fields: Omit<Paper, 'key'> & { key?: string }): Paper {
  const paper: Paper = { key: fields.key ?? citationKey(fields), title: cleanText(fields.title) };
  if (fields.authors?.length) paper.authors = fields.authors.map(a => cleanText(a)).filter(Boolean);
  paper.year = fields.year ?? null;
  if (fields.venue) paper.venue = cleanText(fields.venue);
  paper.doi = normalizeDoi(fields.doi);
  paper.url = fields.url ?? null;
  if (fields.abstract) paper.abstract = cleanText(fields.abstract);
  if (fields.source) paper.source = fields.source;
  return paper;
}

/** Merges papers from several sources: one per DOI or normalised title, the first seen wins, gaps filled from later ones. */
export function dedupePapers(papers: Paper[]): Paper[] {
  const out: Paper[] = [];
  const byId = new Map<string, Paper>();
  for (const paper of papers) {
    const ids = [paper.doi ? `doi:${paper.doi}` : '', `title:${normalizeTitle(paper.title)}`].filter(Boolean);
    const existing = ids.map(id => byId.get(id)).find(Boolean);
    if (existing) {
      for (const field of ['abstract', 'venue', 'doi', 'url', 'authors'] as const) {
        if (!existing[field] && paper[field]) (existing as unknown as Record<string, unknown>)[field] = paper[field];
      }
      if (existing.year == null && paper.year != null) existing.year = paper.year;
      if (existing.doi) byId.set(`doi:${existing.doi}`, existing);
      continue;
    }
    const copy = { ...paper };
    out.push(copy);
    for (const id of ids) byId.set(id, copy);
  }
  // Two different papers may share a generated key; suffix later ones so citations stay unambiguous.
  const seen = new Map<string, number>();
  for (const paper of out) {
    const n = seen.get(paper.key) ?? 0;
    seen.set(paper.key, n + 1);
    if (n > 0) paper.key = `${paper.key}${String.fromCharCode(97 + n)}`;
  }
  return out;
}
