/**
 * arXiv export API (Atom feed, https://info.arxiv.org/help/api/user-manual.html).
 * Rate limit: the arXiv API Terms of Use (https://info.arxiv.org/help/api/tou.html) ask for
 * no more than one request every three seconds, on a single connection.
 * The feed is parsed with a small reader for the few Atom elements we use (no XML dependency).
 */
import { getText, TokenBucket } from '../http';
import { makePaper } from '../normalize';
import type { LiteratureProvider, Paper, SearchOptions } from '../types';
import { baseUrlFor, bucketFor, RemoteProviderOptions } from './common';

function decodeXml(text: string): string {
  return text
    .replace(/<!\[CDATA\[([\s\S]*?)\]\]>/g, '$1')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&apos;/g, "'")
    .replace(/&#(\d+);/g, (_, d: string) => String.fromCodePoint(Number(d)))
    .replace(/&#x([0-9a-f]+);/gi, (_, h: string) => String.fromCodePoint(parseInt(h, 16)))
    .replace(/&amp;/g, '&');
}

/** Text content of every `<tag …>…</tag>` directly in `xml` (namespace prefix included in `tag`). */
function elements(xml: string, tag: string): string[] {
  const pattern = new RegExp(`<${tag}(?:\\s[^>]*)?>([\\s\\S]*?)</${tag}>`, 'g');
  return [...xml.matchAll(pattern)].map(m => m[1]);
}

function attributes(xml: string, tag: string): Record<string, string>[] {
  const pattern = new RegExp(`<${tag}\\s([^>]*?)/?>`, 'g');
  return [...xml.matchAll(pattern)].map(m => Object.fromEntries([...m[1].matchAll(/([\w:-]+)="([^"]*)"/g)].map(a => [a[1], decodeXml(a[2])])));
}

/** Papers from an arXiv Atom feed. */
export function parseArxivAtom(xml: string): Paper[] {
  const papers: Paper[] = [];
  for (const entry of elements(xml, 'entry')) {
    const title = decodeXml(elements(entry, 'title')[0] ?? '').trim();
    if (!title) continue;
    const id = decodeXml(elements(entry, 'id')[0] ?? '').trim();
    const published = elements(entry, 'published')[0] ?? '';
    const year = /^\d{4}/.test(published) ? Number(published.slice(0, 4)) : null;
    const doi = elements(entry, 'arxiv:doi')[0];
    const journal = elements(entry, 'arxiv:journal_ref')[0];
    papers.push(
      makePaper({
        title,
        authors: elements(entry, 'author').map(a => decodeXml(elements(a, 'name')[0] ?? '').trim()),
        year,
        venue: journal ? decodeXml(journal) : 'arXiv',
        doi: doi ? decodeXml(doi) : null,
        url: attributes(entry, 'link').find(l => l.rel === 'alternate')?.href ?? (id || null),
        abstract: decodeXml(elements(entry, 'summary')[0] ?? ''),
        source: 'arxiv'
      })
    );
  }
  return papers;
}

/** arXiv's query syntax: each word searched in all fields, joined by AND. */
function arxivQuery(query: string): string {
  const words = query
    .replace(/[^\p{L}\p{N}\s-]/gu, ' ')
    .split(/\s+/)
    .filter(w => w.length > 1);
  return words.map(w => `all:${w}`).join(' AND ');
}

export class ArxivProvider implements LiteratureProvider {
  readonly name = 'arxiv';
  readonly cacheable = true;
  private readonly baseUrl: string;
  private readonly bucket: TokenBucket;

  constructor(private readonly options: RemoteProviderOptions = {}) {
    this.baseUrl = baseUrlFor('NANORESEARCH_ARXIV_URL', 'https://export.arxiv.org', options);
    this.bucket = bucketFor(this.name, this.baseUrl, { perSecond: 1 / 3, capacity: 1 }, options);
  }

  async search(query: string, { limit, yearFrom }: SearchOptions): Promise<Paper[]> {
    const params = new URLSearchParams({
      search_query: arxivQuery(query),
      start: '0',
      // Over-fetch when filtering by year client-side (the API has no year filter on search).
      max_results: String(Math.min(yearFrom ? limit * 3 : limit, 100)),
      sortBy: 'relevance'
    });
    const xml = await getText(`${this.baseUrl}/api/query?${params}`, {
      provider: this.name,
      bucket: this.bucket,
      timeoutMs: this.options.timeoutMs,
      maxRetryWaitMs: this.options.maxRetryWaitMs
    });
    const papers = parseArxivAtom(xml ?? '');
    return papers.filter(p => !yearFrom || (p.year ?? 0) >= yearFrom).slice(0, limit);
  }
}
