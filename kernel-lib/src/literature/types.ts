import type { Paper } from '@nanoresearch/schema';

export type { Paper };

export interface SearchOptions {
  limit: number;
  /** Only papers published in or after this year. */
  yearFrom?: number;
}

/** One literature source behind one interface. Providers throw on failure; the Literature facade degrades. */
export interface LiteratureProvider {
  /** Short stable name: 'openalex', 'arxiv', 'semantic-scholar', 'crossref', 'local'. */
  readonly name: string;
  /** Whether results may be cached in literature_cache (remote sources: yes; the local corpus: no). */
  readonly cacheable: boolean;
  search(query: string, options: SearchOptions): Promise<Paper[]>;
  /** One record by DOI (or provider key); null when the source knows no such record. */
  lookup?(id: string): Promise<Paper | null>;
}

/** A source could not be reached or answered with an error (after retries). */
export class ProviderUnavailableError extends Error {
  constructor(
    readonly provider: string,
    message: string,
    readonly status?: number
  ) {
    super(`${provider}: ${message}`);
    this.name = 'ProviderUnavailableError';
  }
}
