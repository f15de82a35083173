/**
 * Crossref REST API (https://api.crossref.org/swagger-ui/index.html): /works?query= for
 * search and /works/{doi} to verify citations. Rate limit: Crossref's REST API documentation
 * ("Etiquette" / rate limits, https://www.crossref.org/documentation/retrieve-metadata/rest-api/)
 * gives the public and polite pools 50 requests per second; the polite pool is entered with
 * `mailto` (NANORESEARCH_CONTACT_EMAIL).
 */
import { getJson, TokenBucket } from '../http';
import { makePaper } from '../normalize';
import type { LiteratureProvider, Paper, SearchOptions } from '../types';
import { baseUrlFor, bucketFor, RemoteProviderOptions } from './common';

interface CrossrefWork {
  DOI?: string;
  title?: string[];
  author?: { given?: string; family?: string; name?: string }[];
  issued?: { 'date-parts'?: (number | null)[][] };
  'container-title'?: string[];
  URL?: string;
  abstract?: string;
}

function toPaper(work: CrossrefWork): Paper | null {
  const title = work.title?.[0];
  if (!title) return null;
  return makePaper({
    title,
    authors: (work.author ?? []).map(a => a.name ?? [a.given, a.family].filter(Boolean).join(' ')).filter(Boolean),
    year: work.issued?.['date-parts']?.[0]?.[0] ?? null,
    venue: work['container-title']?.[0],
    doi: work.DOI ?? null,
    url: work.URL ?? null,
    abstract: work.abstract,
    source: 'crossref'
  });
}

export class CrossrefProvider implements LiteratureProvider {
  readonly name = 'crossref';
  readonly cacheable = true;
  private readonly baseUrl: string;
  private readonly bucket: TokenBucket;

  constructor(private readonly options: RemoteProviderOptions = {}) {
    this.baseUrl = baseUrlFor('NANORESEARCH_CROSSREF_URL', 'https://api.crossref.org', options);
    this.bucket = bucketFor(this.name, this.baseUrl, { perSecond: 50, capacity: 5 }, options);
  }

  private http() {
    return { provider: this.name, bucket: this.bucket, timeoutMs: this.options.timeoutMs, maxRetryWaitMs: this.options.maxRetryWaitMs };
  }

  private mailto(params: URLSearchParams): URLSearchParams {
    const email = (this.options.env ?? process.env).NANORESEARCH_CONTACT_EMAIL;
    if (email) params.set('mailto', email);
    return params;
  }

  async search(query: string, { limit, yearFrom }: SearchOptions): Promise<Paper[]> {
    const params = this.mailto(new URLSearchParams({ query, rows: String(Math.min(limit, 100)) }));
    if (yearFrom) params.set('filter', `from-pub-date:${yearFrom}`);
    const body = await getJson<{ status?: string; message?: { items?: CrossrefWork[] } }>(`${this.baseUrl}/works?${params}`, this.http());
    return (body?.message?.items ?? []).map(toPaper).filter((p): p is Paper => p !== null);
  }

  async lookup(doi: string): Promise<Paper | null> {
    const params = this.mailto(new URLSearchParams());
    const body = await getJson<{ status?: string; message?: CrossrefWork }>(`${this.baseUrl}/works/${encodeURIComponent(doi)}?${params}`, this.http());
    return body?.message ? toPaper(body.message) : null;
  }
}
