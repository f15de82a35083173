/**
 * The Literature facade stages use: providers tried in order, results merged and deduped
 * by DOI / title, cached in the store. When no source answers it reports 'unverified'
 * instead of throwing, so ideation goes on and says its novelty checks are unverified.
 */
import { ArxivProvider } from './providers/arxiv';
import type { RemoteProviderOptions } from './providers/common';
import { CrossrefProvider } from './providers/crossref';
import { LocalCorpusProvider } from './providers/local-corpus';
import { OpenAlexProvider } from './providers/openalex';
import { SemanticScholarProvider } from './providers/semantic-scholar';
import { dedupePapers, normalizeDoi } from './normalize';
import { cacheKey, LiteratureStore, papersByKey, readCache, writeCache, upsertPapers } from './store';
import type { LiteratureProvider, Paper, SearchOptions } from './types';

/** 'searched': a remote source answered; 'offline-corpus': only the local corpus did; 'unverified': none did. */
export type LiteratureStatus = 'searched' | 'offline-corpus' | 'unverified';

export interface SourceReport {
  provider: string;
  ok: boolean;
  cached: boolean;
  count: number;
  error?: string;
}

export interface LiteratureSearchResult {
  status: LiteratureStatus;
  papers: Paper[];
  sources: SourceReport[];
}

export interface LiteratureOptions {
  store?: LiteratureStore;
  /** Tried in this order. Default: the local corpus (when not empty), then `NANORESEARCH_LITERATURE_SOURCES`. */
  providers?: LiteratureProvider[];
  /** How long a cached answer is reused (default 7 days). */
  cacheTtlMs?: number;
}

/** Names accepted in NANORESEARCH_LITERATURE_SOURCES (comma-separated, in order; 'none' = local corpus only). */
export const REMOTE_SOURCES = ['openalex', 'semantic-scholar', 'arxiv', 'crossref'] as const;
export type RemoteSource = (typeof REMOTE_SOURCES)[number];

/** The remote providers named by the environment, default OpenAlex → Semantic Scholar → arXiv. */
export function remoteProvidersFromEnv(env: NodeJS.ProcessEnv = process.env, options: RemoteProviderOptions = {}): LiteratureProvider[] {
  const list = (env.NANORESEARCH_LITERATURE_SOURCES ?? 'openalex,semantic-scholar,arxiv')
    .split(',')
    .map(s => s.trim().toLowerCase())
    .filter(s => s && s !== 'none');
  return list.map(name => {
    const o = { ...options, env };
    switch (name as RemoteSource) {
      case 'openalex':
        return new OpenAlexProvider(o);
      case 'semantic-scholar':
        return new SemanticScholarProvider(o);
      case 'arxiv':
        return new ArxivProvider(o);
      case 'crossref':
        return new CrossrefProvider(o);
      default:
        throw new Error(`NANORESEARCH_LITERATURE_SOURCES names an unknown source '${name}'; known: ${REMOTE_SOURCES.join(', ')}, none`);
    }
  });
}

export class Literature {
  private readonly store?: LiteratureStore;
  private readonly explicitProviders?: LiteratureProvider[];
  private readonly cacheTtlMs: number;
  readonly local?: LocalCorpusProvider;

  constructor(options: LiteratureOptions = {}) {
    this.store = options.store;
    this.explicitProviders = options.providers;
    this.cacheTtlMs = options.cacheTtlMs ?? 7 * 24 * 3600 * 1000;
    if (options.store) this.local = new LocalCorpusProvider(options.store);
  }

  /** Local corpus (if it has papers) then the configured remote sources. */
  async providers(): Promise<LiteratureProvider[]> {
    if (this.explicitProviders) return this.explicitProviders;
    const remote = remoteProvidersFromEnv();
    return this.local && (await this.local.size()) > 0 ? [this.local, ...remote] : remote;
  }

  /** Imports a BibTeX / CSL-JSON file into the local corpus. */
  async importCorpus(file: string): Promise<number> {
    if (!this.local) throw new Error('Literature needs a store to import a corpus: new Literature({ store })');
    return this.local.importFile(file);
  }

  /**
   * Papers for `query` from the sources in order, stopping once `limit` distinct papers are
   * found. Never throws for an unreachable source: its error is in `sources`.
   */
  async search(query: string, options: SearchOptions): Promise<LiteratureSearchResult> {
    const sources: SourceReport[] = [];
    let collected: Paper[] = [];
    for (const provider of await this.providers()) {
      if (collected.length >= options.limit) break;
      try {
        const key = cacheKey(provider.name, query, options);
        const cached = provider.cacheable && this.store ? await readCache(this.store, key, this.cacheTtlMs) : undefined;
        const papers = cached ?? (await provider.search(query, options));
        if (!cached && provider.cacheable && this.store) await writeCache(this.store, key, provider.name, query, papers);
        sources.push({ provider: provider.name, ok: true, cached: Boolean(cached), count: papers.length });
        collected = dedupePapers([...collected, ...papers]);
      } catch (error) {
        sources.push({ provider: provider.name, ok: false, cached: false, count: 0, error: (error as Error).message });
      }
    }
    const answered = sources.filter(s => s.ok);
    const status: LiteratureStatus = answered.some(s => s.provider !== 'local') ? 'searched' : answered.length ? 'offline-corpus' : 'unverified';
    const papers = collected.slice(0, options.limit);
    if (this.store && papers.length) await this.store.write(q => upsertPapers(q, papers));
    return { status, papers, sources };
  }

  /**
   * Verifies a DOI against the sources that can look one up (Crossref first when configured).
   * 'unreachable' when no source answered, so a caller can tell "does not exist" from "could not check".
   */
  async lookupDoi(doi: string): Promise<{ status: 'found' | 'not-found' | 'unreachable'; paper?: Paper; errors: string[] }> {
    const bare = normalizeDoi(doi);
    if (!bare) return { status: 'not-found', errors: [`'${doi}' is not a DOI`] };
    const providers = (await this.providers()).filter(p => p.lookup && p.name !== 'local');
    const errors: string[] = [];
    let answered = false;
    for (const provider of providers) {
      try {
        const paper = await provider.lookup!(bare);
        answered = true;
        if (paper) return { status: 'found', paper, errors };
      } catch (error) {
        errors.push((error as Error).message);
      }
    }
    return { status: answered ? 'not-found' : 'unreachable', errors };
  }

  /** Papers already stored, by citation key. */
  async byKeys(keys: string[]): Promise<Map<string, Paper>> {
    return this.store ? papersByKey(this.store, keys) : new Map();
  }
}
