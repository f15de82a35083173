/**
 * A loopback HTTP server that answers like the literature APIs, from recorded-shape fixtures
 * in kernel-lib/test/fixtures/literature/: OpenAlex (/openalex/works), arXiv
 * (/arxiv/api/query, Atom), Semantic Scholar (/s2/graph/v1/paper/search) and Crossref
 * (/crossref/works, /crossref/works/{doi}). It can answer 429 (with Retry-After) a given
 * number of times first, to test backoff. Tests point providers at it with `env`.
 */
import { readFileSync } from 'fs';
import { createServer, IncomingMessage, ServerResponse } from 'http';
import type { AddressInfo } from 'net';
import * as path from 'path';

export type FixtureApi = 'openalex' | 'arxiv' | 's2' | 'crossref';

export interface FixtureRequest {
  api: FixtureApi;
  path: string;
  query: Record<string, string>;
  headers: Record<string, string | string[] | undefined>;
  status: number;
  at: number;
}

export interface LiteratureFixtureServer {
  /** http://127.0.0.1:PORT */
  url: string;
  /** Base URLs per provider, as the NANORESEARCH_<PROVIDER>_URL variables take them. */
  env: Record<string, string>;
  requests: FixtureRequest[];
  /** The next `count` requests to `api` answer `status` (default 429 with Retry-After `retryAfterSeconds`, default 1). */
  failNext(api: FixtureApi, count: number, options?: { status?: number; retryAfterSeconds?: number }): void;
  close(): Promise<void>;
}

/** The fixtures folder; the same relative path from src/testing and dist/testing. */
export const LITERATURE_FIXTURES_DIR = path.join(__dirname, '..', '..', 'test', 'fixtures', 'literature');

export async function startLiteratureFixtureServer(options: { fixturesDir?: string; port?: number } = {}): Promise<LiteratureFixtureServer> {
  const dir = options.fixturesDir ?? LITERATURE_FIXTURES_DIR;
  const load = (name: string) => readFileSync(path.join(dir, name), 'utf8');
  const openalex = JSON.parse(load('openalex-works.json'));
  const arxiv = load('arxiv-feed.xml');
  const s2 = JSON.parse(load('semantic-scholar-search.json'));
  const crossref = JSON.parse(load('crossref-works.json'));
  const requests: FixtureRequest[] = [];
  const failures = new Map<FixtureApi, { count: number; status: number; retryAfterSeconds: number }>();

  const send = (res: ServerResponse, status: number, body: unknown, type = 'application/json', headers: Record<string, string> = {}) => {
    res.writeHead(status, { 'content-type': type, ...headers });
    res.end(typeof body === 'string' ? body : JSON.stringify(body));
  };

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const [, prefix] = url.pathname.split('/');
    const api = (['openalex', 'arxiv', 's2', 'crossref'] as FixtureApi[]).find(a => a === prefix);
    const record = (status: number) =>
      requests.push({ api: api ?? 'openalex', path: url.pathname, query: Object.fromEntries(url.searchParams), headers: req.headers, status, at: Date.now() });
    if (!api) {
      record(404);
      return send(res, 404, { error: `no fixture API at ${url.pathname}` });
    }
    const failure = failures.get(api);
    if (failure && failure.count > 0) {
      failure.count--;
      record(failure.status);
      return send(res, failure.status, { message: 'Too Many Requests', code: String(failure.status) }, 'application/json', {
        'retry-after': String(failure.retryAfterSeconds)
      });
    }
    const rest = url.pathname.slice(prefix.length + 1);
    const limit = (name: string, fallback: number) => Number(url.searchParams.get(name) ?? fallback);
    if (api === 'openalex' && rest === '/works') {
      record(200);
      return send(res, 200, { ...openalex, results: openalex.results.slice(0, limit('per_page', 25)) });
    }
    if (api === 'openalex' && rest.startsWith('/works/doi:')) {
      const doi = decodeURIComponent(rest.slice('/works/doi:'.length)).toLowerCase();
      const work = openalex.results.find((w: { doi?: string }) => w.doi?.toLowerCase().endsWith(doi));
      record(work ? 200 : 404);
      return work ? send(res, 200, work) : send(res, 404, { error: 'Not Found' });
    }
    if (api === 'arxiv' && rest === '/api/query') {
      record(200);
      return send(res, 200, arxiv, 'application/atom+xml; charset=utf-8');
    }
    if (api === 's2' && rest === '/graph/v1/paper/search') {
      record(200);
      return send(res, 200, { ...s2, data: s2.data.slice(0, limit('limit', 10)) });
    }
    if (api === 'crossref' && rest === '/works') {
      record(200);
      return send(res, 200, { ...crossref, message: { ...crossref.message, items: crossref.message.items.slice(0, limit('rows', 20)) } });
    }
    if (api === 'crossref' && rest.startsWith('/works/')) {
      const doi = decodeURIComponent(rest.slice('/works/'.length)).toLowerCase();
      const item = crossref.message.items.find((i: { DOI: string }) => i.DOI.toLowerCase() === doi);
      record(item ? 200 : 404);
      // Crossref answers an unknown DOI with a plain-text 404 "Resource not found."
      return item
        ? send(res, 200, { status: 'ok', 'message-type': 'work', 'message-version': '1.0.0', message: item })
        : send(res, 404, 'Resource not found.', 'text/plain');
    }
    record(404);
    return send(res, 404, { error: `no fixture for ${url.pathname}` });
  };

  const server = createServer(handle);
  await new Promise<void>(resolve => server.listen(options.port ?? 0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    env: {
      NANORESEARCH_OPENALEX_URL: `${url}/openalex`,
      NANORESEARCH_ARXIV_URL: `${url}/arxiv`,
      NANORESEARCH_SEMANTIC_SCHOLAR_URL: `${url}/s2`,
      NANORESEARCH_CROSSREF_URL: `${url}/crossref`
    },
    requests,
    failNext(api, count, opts = {}) {
      failures.set(api, { count, status: opts.status ?? 429, retryAfterSeconds: opts.retryAfterSeconds ?? 1 });
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close(err => (err ? reject(err) : resolve()));
      })
  };
}
