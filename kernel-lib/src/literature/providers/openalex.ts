/**
 * OpenAlex works search (https://docs.openalex.org/api-entities/works/search-works).
 * Rate limit: the docs' "Rate limits and authentication" page gives a maximum of 10 requests
 * per second (newer pages allow up to 100 with a key); we stay at 10/s. A polite `mailto`
 * comes from NANORESEARCH_CONTACT_EMAIL and a key, where one is set, from OPENALEX_API_KEY.
 */
import { getJson } from '../http';
import { makePaper } from '../normalize';
import type { LiteratureProvider, Paper, SearchOptions } from '../types';
import { baseUrlFor, bucketFor, RemoteProviderOptions } from './common';
import type { TokenBucket } from '../http';

interface OpenAlexWork {
  id: string;
  doi?: string | null;
  title?: string | null;
  display_name?: string | null;
  publication_year?: number | null;
  authorships?: { author?: { display_name?: string } }[];
  primary_location?: { source?: { display_name?: string } | null; landing_page_url?: string | null } | null;
  abstract_inverted_index?: Record<string, number[]> | null;
}

/** OpenAlex ships abstracts as word → positions; rebuild the text. */
export function abstractFromInvertedIndex(index: Record<string, number[]> | null | undefined): string {
  if (!index) return '';
  const words: string[] = [];
  for (const [word, positions] of Object.entries(index)) for (const p of positions) words[p] = word;
  return words.filter(w => w !== undefined).join(' ');
}

function toPaper(work: OpenAlexWork): Paper | null {
  const title = work.title ?? work.display_name;
  if (!title) return null;
  return makePaper({
    title,
    authors: (work.authorships ?? []).map(a => a.author?.display_name ?? '').filter(Boolean),
    year: work.publication_year ?? null,
    venue: work.primary_location?.source?.display_name ?? undefined,
    doi: work.doi ?? null,
    url: work.primary_location?.landing_page_url ?? work.id,
    abstract: abstractFromInvertedIndex(work.abstract_inverted_index),
    source: 'openalex'
  });
}

export class OpenAlexProvider implements LiteratureProvider {
  readonly name = 'openalex';
  readonly cacheable = true;
  private readonly baseUrl: string;
  private readonly bucket: TokenBucket;

  constructor(private readonly options: RemoteProviderOptions = {}) {
    this.baseUrl = baseUrlFor('NANORESEARCH_OPENALEX_URL', 'https://api.openalex.org', options);
    this.bucket = bucketFor(this.name, this.baseUrl, { perSecond: 10, capacity: 10 }, options);
  }

  private politeParams(): URLSearchParams {
    const env = this.options.env ?? process.env;
    const params = new URLSearchParams();
    if (env.NANORESEARCH_CONTACT_EMAIL) params.set('mailto', env.NANORESEARCH_CONTACT_EMAIL);
    if (env.OPENALEX_API_KEY) params.set('api_key', env.OPENALEX_API_KEY);
    return params;
  }

  private http() {
    return { provider: this.name, bucket: this.bucket, timeoutMs: this.options.timeoutMs, maxRetryWaitMs: this.options.maxRetryWaitMs };
  }

  async search(query: string, { limit, yearFrom }: SearchOptions): Promise<Paper[]> {
    const params = this.politeParams();
    params.set('search', query);
    params.set('per_page', String(Math.min(limit, 200)));
    if (yearFrom) params.set('filter', `from_publication_date:${yearFrom}-01-01`);
    const body = await getJson<{ results?: OpenAlexWork[] }>(`${this.baseUrl}/works?${params}`, this.http());
    return (body?.results ?? []).map(toPaper).filter((p): p is Paper => p !== null);
  }

  async lookup(doi: string): Promise<Paper | null> {
    const params = this.politeParams();
    const work = await getJson<OpenAlexWork>(`${this.baseUrl}/works/doi:${encodeURIComponent(doi)}?${params}`, this.http());
    return work ? toPaper(work) : null;
  }
}
