import { mkdtempSync, readFileSync } from 'fs';
import { tmpdir } from 'os';
import * as path from 'path';
import {
  ArxivProvider,
  CrossrefProvider,
  Literature,
  LocalCorpusProvider,
  OpenAlexProvider,
  SemanticScholarProvider,
  TokenBucket,
  papersFromBibtex,
  remoteProvidersFromEnv
} from '../src/literature';
import { Store } from '../src/store';
import { startLiteratureFixtureServer, LiteratureFixtureServer } from '../src/testing/literature-fixture-server';

const FIXTURES = path.join(__dirname, 'fixtures', 'literature');
const fast = { rateLimit: { perSecond: 1000, capacity: 100 } };

let server: LiteratureFixtureServer;
let store: Store;

beforeAll(async () => {
  server = await startLiteratureFixtureServer();
  store = await Store.open({ path: path.join(mkdtempSync(path.join(tmpdir(), 'nr-lit-')), 'store.duckdb') });
});
afterAll(async () => {
  await server.close();
  await store.close();
});

describe('providers parse each API shape', () => {
  test('OpenAlex: works list with abstract_inverted_index, polite mailto', async () => {
    const p = new OpenAlexProvider({ ...fast, env: { ...server.env, NANORESEARCH_CONTACT_EMAIL: 'me@example.org' } });
    const papers = await p.search('nearest centroid', { limit: 2, yearFrom: 1960 });
    expect(papers).toHaveLength(2);
    expect(papers[0]).toMatchObject({
      key: 'tibshirani2002diagnosis',
      title: 'Diagnosis of multiple cancer types by shrunken centroids of gene expression',
      year: 2002,
      doi: '10.1073/pnas.082099299',
      venue: 'Proceedings of the National Academy of Sciences',
      source: 'openalex'
    });
    expect(papers[0].abstract).toBe('We describe the nearest shrunken centroid method for class prediction from gene expression data.');
    const req = server.requests.filter(r => r.api === 'openalex').pop()!;
    expect(req.query).toMatchObject({ search: 'nearest centroid', per_page: '2', mailto: 'me@example.org', filter: 'from_publication_date:1960-01-01' });
  });

  test('arXiv: Atom feed with entities, DOI and journal_ref', async () => {
    const papers = await new ArxivProvider({ ...fast, env: server.env }).search('tabular deep learning', { limit: 5 });
    expect(papers.map(p => p.key)).toEqual(['grinsztajn2022why', 'shwartzziv2021tabular']);
    expect(papers[0].title).toBe('Why do tree-based models still outperform deep learning on tabular data?');
    expect(papers[0].authors).toEqual(['Léo Grinsztajn', 'Edouard Oyallon', 'Gaël Varoquaux']);
    expect(papers[0].abstract).toContain('tree-based models & more.');
    expect(papers[0].url).toBe('http://arxiv.org/abs/2207.08815v1');
    expect(papers[1]).toMatchObject({ doi: '10.1016/j.inffus.2021.11.011', venue: 'Information Fusion 81 (2022) 84-90' });
    expect(server.requests.filter(r => r.api === 'arxiv').pop()!.query.search_query).toBe('all:tabular AND all:deep AND all:learning');
    const recent = await new ArxivProvider({ ...fast, env: server.env }).search('tabular', { limit: 5, yearFrom: 2022 });
    expect(recent.map(p => p.year)).toEqual([2022]);
  });

  test('Semantic Scholar: {total, offset, data} with externalIds and the x-api-key header', async () => {
    const p = new SemanticScholarProvider({ ...fast, env: { ...server.env, SEMANTIC_SCHOLAR_API_KEY: 's2-test-key' } });
    const papers = await p.search('iris taxonomy', { limit: 2, yearFrom: 1900 });
    expect(papers[0]).toMatchObject({ key: 'fisher1936use', doi: '10.1111/j.1469-1809.1936.tb02137.x', venue: 'Annals of Eugenics', year: 1936 });
    const req = server.requests.filter(r => r.api === 's2').pop()!;
    expect(req.headers['x-api-key']).toBe('s2-test-key');
    expect(req.query).toMatchObject({ query: 'iris taxonomy', limit: '2', year: '1900-' });
  });

  test('Crossref: search items and DOI lookup (found / not found)', async () => {
    const p = new CrossrefProvider({ ...fast, env: server.env });
    const papers = await p.search('nearest centroid classification', { limit: 5 });
    expect(papers.map(x => x.key)).toEqual(['cover1967nearest', 'fisher1936use']);
    expect(papers[1].abstract).toBe('The articles published by the Annals of Eugenics (1925–1954) have been made available online.');
    expect(await p.lookup('10.1109/tit.1967.1053964')).toMatchObject({ title: 'Nearest neighbor pattern classification', year: 1967 });
    expect(await p.lookup('10.9999/does-not-exist')).toBeNull();
  });
});

describe('rate limits and backoff', () => {
  test('a 429 with Retry-After is waited out, then the request succeeds', async () => {
    server.failNext('s2', 1, { retryAfterSeconds: 1 });
    const before = server.requests.length;
    const started = Date.now();
    const papers = await new SemanticScholarProvider({ ...fast, env: server.env }).search('q', { limit: 1 });
    expect(papers).toHaveLength(1);
    expect(Date.now() - started).toBeGreaterThanOrEqual(950);
    expect(server.requests.slice(before).map(r => r.status)).toEqual([429, 200]);
  });

  test('a Retry-After longer than the caller will wait gives up at once', async () => {
    server.failNext('openalex', 1, { retryAfterSeconds: 120 });
    await expect(new OpenAlexProvider({ ...fast, env: server.env, maxRetryWaitMs: 5000 }).search('q', { limit: 1 })).rejects.toThrow(/rate limited/);
  });

  test('the token bucket spaces requests at the published rate', async () => {
    const bucket = new TokenBucket(1, 10);
    const started = Date.now();
    for (let i = 0; i < 4; i++) await bucket.take();
    // One immediately, then three at 100 ms intervals.
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
  });

  test('arXiv keeps its published 1 request / 3 s by default', async () => {
    const p = new ArxivProvider({ env: { NANORESEARCH_ARXIV_URL: `${server.url}/arxiv/` } });
    const started = Date.now();
    await p.search('a b', { limit: 1 });
    await p.search('c d', { limit: 1 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(2900);
  }, 20_000);
});

describe('Literature facade', () => {
  test('merges and dedupes across sources, and a cache hit makes no request', async () => {
    const lit = new Literature({
      store,
      providers: [new OpenAlexProvider({ ...fast, env: server.env }), new SemanticScholarProvider({ ...fast, env: server.env })]
    });
    const first = await lit.search('shrunken centroids', { limit: 5 });
    expect(first.status).toBe('searched');
    // Tibshirani 2002 comes from both sources and appears once.
    expect(first.papers.filter(p => p.doi === '10.1073/pnas.082099299')).toHaveLength(1);
    expect(first.papers.map(p => p.key)).toEqual(['tibshirani2002diagnosis', 'cover1967nearest', 'shwartzziv2022tabular', 'fisher1936use']);
    const stored = await store.read(q => q.all<{ key: string }>("select key from papers where source in ('openalex', 'semantic-scholar') order by key"));
    expect(stored.map(r => r.key)).toEqual(expect.arrayContaining(['tibshirani2002diagnosis', 'fisher1936use']));

    const before = server.requests.length;
    const second = await lit.search('Shrunken  Centroids', { limit: 5 });
    expect(server.requests.length).toBe(before);
    expect(second.sources.every(s => s.cached)).toBe(true);
    expect(second.papers).toEqual(first.papers);
  });

  test('stops asking further sources once it has enough papers', async () => {
    const lit = new Literature({ providers: [new OpenAlexProvider({ ...fast, env: server.env }), new CrossrefProvider({ ...fast, env: server.env })] });
    const before = server.requests.length;
    const r = await lit.search('enough', { limit: 2 });
    expect(r.sources.map(s => s.provider)).toEqual(['openalex']);
    expect(server.requests.length - before).toBe(1);
  });

  test('no reachable source: status unverified, errors reported, nothing thrown', async () => {
    const dead = { NANORESEARCH_OPENALEX_URL: 'http://127.0.0.1:9/x', NANORESEARCH_ARXIV_URL: 'http://127.0.0.1:9/y' };
    const lit = new Literature({ providers: [new OpenAlexProvider({ ...fast, env: dead }), new ArxivProvider({ ...fast, env: dead })] });
    const r = await lit.search('anything', { limit: 3 });
    expect(r.status).toBe('unverified');
    expect(r.papers).toEqual([]);
    expect(r.sources.map(s => [s.provider, s.ok])).toEqual([
      ['openalex', false],
      ['arxiv', false]
    ]);
    expect(r.sources[0].error).toMatch(/cannot reach http:\/\/127\.0\.0\.1:9/);
    expect((await lit.lookupDoi('10.1109/tit.1967.1053964')).status).toBe('unreachable');
  });

  test('DOI lookup through Crossref distinguishes found and not found', async () => {
    const lit = new Literature({ providers: [new CrossrefProvider({ ...fast, env: server.env })] });
    expect((await lit.lookupDoi('https://doi.org/10.1109/TIT.1967.1053964')).status).toBe('found');
    expect((await lit.lookupDoi('10.1234/made-up')).status).toBe('not-found');
  });

  test('remote providers come from NANORESEARCH_LITERATURE_SOURCES', () => {
    expect(remoteProvidersFromEnv({ NANORESEARCH_LITERATURE_SOURCES: 'crossref, arxiv' }).map(p => p.name)).toEqual(['crossref', 'arxiv']);
    expect(remoteProvidersFromEnv({ NANORESEARCH_LITERATURE_SOURCES: 'none' })).toEqual([]);
    expect(() => remoteProvidersFromEnv({ NANORESEARCH_LITERATURE_SOURCES: 'scholar' })).toThrow(/unknown source 'scholar'/);
  });
});

describe('local corpus', () => {
  test('BibTeX parsing: braces, quotes, bare numbers, LaTeX, author order, @string/@comment skipped', () => {
    const papers = papersFromBibtex(readFileSync(path.join(FIXTURES, 'corpus.bib'), 'utf8'));
    expect(papers.map(p => p.key)).toEqual(['breiman2001random', 'chen2016xgboost', 'hand2001idiot']);
    expect(papers[0]).toMatchObject({
      title: 'Random Forests',
      authors: ['Leo Breiman'],
      year: 2001,
      venue: 'Machine Learning',
      doi: '10.1023/a:1010933404324'
    });
    expect(papers[1]).toMatchObject({ title: 'XGBoost: A Scalable Tree Boosting System', authors: ['Tianqi Chen', 'Carlos Guestrin'], year: 2016 });
    expect(papers[2].title).toBe("Idiot's Bayes---Not So Stupid After All?");
  });

  test('imports BibTeX and CSL-JSON into papers (source local) and ranks them with BM25', async () => {
    const s = await Store.open({ path: path.join(mkdtempSync(path.join(tmpdir(), 'nr-corpus-')), 'store.duckdb') });
    try {
      const lit = new Literature({ store: s, providers: [] });
      expect(await lit.importCorpus(path.join(FIXTURES, 'corpus.bib'))).toBe(3);
      expect(await lit.importCorpus(path.join(FIXTURES, 'corpus.csl.json'))).toBe(2);
      const local = new LocalCorpusProvider(s);
      expect(await local.size()).toBe(5);
      const hits = await local.search('nearest neighbour classification rule', { limit: 3 });
      expect(hits[0].key).toBe('cover1967nearest');
      const trees = await local.search('boosted tree forests', { limit: 5 });
      expect(trees.map(p => p.key).sort()).toEqual(['breiman2001random', 'chen2016xgboost']);
      // A CSL id that is a URL is not a usable citation key: one is generated.
      expect((await local.search('shrunken centroids', { limit: 1 }))[0]).toMatchObject({
        key: 'tibshirani2002diagnosis',
        authors: ['Robert Tibshirani', 'Hastie T'],
        year: 2002
      });
      expect(await local.search('quantum chromodynamics', { limit: 3 })).toEqual([]);
      // With remote sources off, the facade answers from the corpus and says so.
      const offline = new Literature({ store: s, providers: [local] });
      const r = await offline.search('naive bayes classifiers', { limit: 2 });
      expect(r.status).toBe('offline-corpus');
      expect(r.papers[0].key).toBe('hand2001idiot');
    } finally {
      await s.close();
    }
  });
});
