/**
 * The researcher's own corpus: a BibTeX file or a CSL-JSON export (Zotero: "Export
 * Collection… → CSL JSON" or Better BibTeX) imported into the papers table with source
 * 'local', searched with BM25 over title, abstract, authors and venue. Works offline.
 */
import { readFileSync } from 'fs';
import { tokenize, termFrequencies } from '../../retrieval/tokenize';
import { makePaper } from '../normalize';
import { LiteratureStore, papersBySource, upsertPapers } from '../store';
import type { LiteratureProvider, Paper, SearchOptions } from '../types';

/** LaTeX markup in BibTeX values to plain text: accents, braces, `\&`, `~`. */
function latexToText(value: string): string {
  return value
    .replace(/\\[`'^"~=.uvHtcdbk]\s*\{?(\w)\}?/g, '$1')
    .replace(/\\(?:textit|textbf|emph|mathrm|url)\{([^}]*)\}/g, '$1')
    .replace(/\\([&%$#_])/g, '$1')
    .replace(/~/g, ' ')
    .replace(/[{}]/g, '')
    .replace(/\s+/g, ' ')
    .trim();
}

export interface BibEntry {
  type: string;
  key: string;
  fields: Record<string, string>;
}

/** Entries of a BibTeX file: `@type{key, field = {…} | "…" | 123, …}`; @string/@comment/@preamble are skipped. */
export function parseBibtex(text: string): BibEntry[] {
  const entries: BibEntry[] = [];
  let i = 0;
  while ((i = text.indexOf('@', i)) >= 0) {
    const head = /^@(\w+)\s*[{(]/.exec(text.slice(i));
    if (!head) {
      i++;
      continue;
    }
    const type = head[1].toLowerCase();
    let pos = i + head[0].length;
    // Find the matching close of the entry, respecting nested braces.
    let depth = 1;
    let end = pos;
    while (end < text.length && depth > 0) {
      if (text[end] === '{' || text[end] === '(') depth++;
      else if (text[end] === '}' || text[end] === ')') depth--;
      end++;
    }
    const body = text.slice(pos, end - 1);
    i = end;
    if (type === 'comment' || type === 'preamble' || type === 'string') continue;
    const comma = body.indexOf(',');
    if (comma < 0) continue;
    const key = body.slice(0, comma).trim();
    const fields: Record<string, string> = {};
    pos = comma + 1;
    while (pos < body.length) {
      const name = /^\s*([\w-]+)\s*=\s*/.exec(body.slice(pos));
      if (!name) break;
      pos += name[0].length;
      let value = '';
      if (body[pos] === '{') {
        let d = 0;
        const start = pos;
        do {
          if (body[pos] === '{') d++;
          else if (body[pos] === '}') d--;
          pos++;
        } while (pos < body.length && d > 0);
        value = body.slice(start + 1, pos - 1);
      } else if (body[pos] === '"') {
        const close = body.indexOf('"', pos + 1);
        value = body.slice(pos + 1, close < 0 ? body.length : close);
        pos = close < 0 ? body.length : close + 1;
      } else {
        const bare = /^[^,}\s]+/.exec(body.slice(pos));
        value = bare ? bare[0] : '';
        pos += value.length;
      }
      fields[name[1].toLowerCase()] = latexToText(value);
      const next = body.indexOf(',', pos);
      pos = next < 0 ? body.length : next + 1;
    }
    entries.push({ type, key, fields });
  }
  return entries;
}

/** "Last, First and Other, A." → ["First Last", "A. Other"]. */
function bibAuthors(field: string | undefined): string[] {
  if (!field) return [];
  return field
    .split(/\s+and\s+/i)
    .map(name => {
      const parts = name.split(',').map(s => s.trim());
      return parts.length >= 2 ? `${parts.slice(1).join(' ')} ${parts[0]}`.trim() : name.trim();
    })
    .filter(Boolean);
}

export function papersFromBibtex(text: string): Paper[] {
  return parseBibtex(text)
    .filter(e => e.fields.title)
    .map(e =>
      makePaper({
        key: e.key,
        title: e.fields.title,
        authors: bibAuthors(e.fields.author),
        year: /^\d{4}$/.test(e.fields.year ?? '') ? Number(e.fields.year) : null,
        venue: e.fields.journal ?? e.fields.booktitle ?? e.fields.publisher,
        doi: e.fields.doi ?? null,
        url: e.fields.url ?? null,
        abstract: e.fields.abstract,
        source: 'local'
      })
    );
}

interface CslItem {
  id?: string | number;
  'citation-key'?: string;
  title?: string;
  author?: { family?: string; given?: string; literal?: string }[];
  issued?: { 'date-parts'?: (number | string)[][]; raw?: string };
  'container-title'?: string;
  publisher?: string;
  DOI?: string;
  URL?: string;
  abstract?: string;
}

export function papersFromCslJson(text: string): Paper[] {
  const items = JSON.parse(text) as CslItem[];
  if (!Array.isArray(items)) throw new Error('CSL-JSON must be an array of items (Zotero: Export Collection → CSL JSON)');
  return items
    .filter(item => item.title)
    .map(item => {
      const year = Number(item.issued?.['date-parts']?.[0]?.[0] ?? item.issued?.raw?.slice(0, 4));
      const id = item['citation-key'] ?? (typeof item.id === 'string' && /^[\w:-]+$/.test(item.id) ? item.id : undefined);
      return makePaper({
        ...(id ? { key: id } : {}),
        title: item.title!,
        authors: (item.author ?? []).map(a => a.literal ?? [a.given, a.family].filter(Boolean).join(' ')),
        year: Number.isFinite(year) && year > 0 ? year : null,
        venue: item['container-title'] ?? item.publisher,
        doi: item.DOI ?? null,
        url: item.URL ?? null,
        abstract: item.abstract,
        source: 'local'
      });
    });
}

/** Papers from a file by its extension: .bib → BibTeX, .json → CSL-JSON. */
export function papersFromFile(file: string): Paper[] {
  const text = readFileSync(file, 'utf8');
  if (/\.bib$/i.test(file)) return papersFromBibtex(text);
  if (/\.json$/i.test(file)) return papersFromCslJson(text);
  throw new Error(`cannot import ${file}: use a BibTeX (.bib) or CSL-JSON (.json) export`);
}

/** BM25 (k1 1.2, b 0.75) over papers' title (counted twice), abstract, authors and venue. */
export function bm25Rank(papers: Paper[], query: string): { paper: Paper; score: number }[] {
  const docs = papers.map(p => termFrequencies(tokenize([p.title, p.title, p.abstract ?? '', (p.authors ?? []).join(' '), p.venue ?? ''].join(' '))));
  const lengths = docs.map(d => [...d.values()].reduce((a, b) => a + b, 0));
  const avg = lengths.reduce((a, b) => a + b, 0) / Math.max(1, lengths.length);
  const terms = [...new Set(tokenize(query))];
  const k1 = 1.2;
  const b = 0.75;
  return papers
    .map((paper, i) => {
      let score = 0;
      for (const term of terms) {
        const tf = docs[i].get(term) ?? 0;
        if (!tf) continue;
        const df = docs.filter(d => d.has(term)).length;
        const idf = Math.log(1 + (papers.length - df + 0.5) / (df + 0.5));
        score += (idf * tf * (k1 + 1)) / (tf + k1 * (1 - b + (b * lengths[i]) / (avg || 1)));
      }
      return { paper, score };
    })
    .filter(r => r.score > 0)
    .sort((x, y) => y.score - x.score);
}

export class LocalCorpusProvider implements LiteratureProvider {
  readonly name = 'local';
  readonly cacheable = false;

  constructor(private readonly store: LiteratureStore) {}

  /** Imports a BibTeX or CSL-JSON file into the papers table; returns the number of papers. */
  async importFile(file: string): Promise<number> {
    const papers = papersFromFile(file);
    await this.store.write(q => upsertPapers(q, papers));
    return papers.length;
  }

  async size(): Promise<number> {
    const row = await this.store.read(q => q.get<{ n: number }>("select count(*) as n from papers where source = 'local'"));
    return row?.n ?? 0;
  }

  async search(query: string, { limit, yearFrom }: SearchOptions): Promise<Paper[]> {
    const papers = (await papersBySource(this.store, 'local')).filter(p => !yearFrom || (p.year ?? 0) >= yearFrom);
    return bm25Rank(papers, query)
      .slice(0, limit)
      .map(r => r.paper);
  }

  async lookup(id: string): Promise<Paper | null> {
    const papers = await papersBySource(this.store, 'local');
    const doi = id.toLowerCase();
    return papers.find(p => p.key === id || p.doi === doi) ?? null;
  }
}
