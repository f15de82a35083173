/**
 * Semantic Scholar Academic Graph API, /graph/v1/paper/search
 * (https://api.semanticscholar.org/api-docs/graph). Rate limit: the S2 API product page
 * (https://www.semanticscholar.org/product/api) gives keyed users 1 request per second;
 * unauthenticated requests share a global pool and are throttled hard (429s are routine), so
 * without a key we keep to 1 request every 3 s. Key from SEMANTIC_SCHOLAR_API_KEY (x-api-key).
 */
import { getJson, TokenBucket } from '../http';
import { makePaper } from '../normalize';
import type { LiteratureProvider, Paper, SearchOptions } from '../types';
import { baseUrlFor, bucketFor, RemoteProviderOptions } from './common';

interface S2Paper {
  paperId: string;
  title?: string | null;
  abstract?: string | null;
  year?: number | null;
  venue?: string | null;
  url?: string | null;
  authors?: { authorId?: string | null; name?: string }[];
  externalIds?: { DOI?: string; ArXiv?: string } | null;
}

const FIELDS = 'title,abstract,year,authors,externalIds,venue,url';

function toPaper(p: S2Paper): Paper | null {
  if (!p.title) return null;
  return makePaper({
    title: p.title,
    authors: (p.authors ?? []).map(a => a.name ?? '').filter(Boolean),
    year: p.year ?? null,
    venue: p.venue ?? undefined,
    doi: p.externalIds?.DOI ?? null,
    url: p.url ?? null,
    abstract: p.abstract ?? undefined,
    source: 'semantic-scholar'
  });
}

export class SemanticScholarProvider implements LiteratureProvider {
  readonly name = 'semantic-scholar';
  readonly cacheable = true;
  private readonly baseUrl: string;
  private readonly bucket: TokenBucket;
  private readonly apiKey: string | undefined;

  constructor(private readonly options: RemoteProviderOptions = {}) {
    this.baseUrl = baseUrlFor('NANORESEARCH_SEMANTIC_SCHOLAR_URL', 'https://api.semanticscholar.org', options);
    this.apiKey = (options.env ?? process.env).SEMANTIC_SCHOLAR_API_KEY || undefined;
    this.bucket = bucketFor(this.name, this.baseUrl, this.apiKey ? { perSecond: 1, capacity: 1 } : { perSecond: 1 / 3, capacity: 1 }, options);
  }

  private http() {
    return {
      provider: this.name,
      bucket: this.bucket,
      headers: this.apiKey ? { 'x-api-key': this.apiKey } : undefined,
      timeoutMs: this.options.timeoutMs,
      maxRetryWaitMs: this.options.maxRetryWaitMs
    };
  }

  async search(query: string, { limit, yearFrom }: SearchOptions): Promise<Paper[]> {
    const params = new URLSearchParams({ query, limit: String(Math.min(limit, 100)), fields: FIELDS });
    if (yearFrom) params.set('year', `${yearFrom}-`);
    const body = await getJson<{ total?: number; offset?: number; data?: S2Paper[] }>(`${this.baseUrl}/graph/v1/paper/search?${params}`, this.http());
    return (body?.data ?? []).map(toPaper).filter((p): p is Paper => p !== null);
  }

  async lookup(doi: string): Promise<Paper | null> {
    const params = new URLSearchParams({ fields: FIELDS });
    const body = await getJson<S2Paper>(`${this.baseUrl}/graph/v1/paper/DOI:${encodeURIComponent(doi)}?${params}`, this.http());
    return body ? toPaper(body) : null;
  }
}
