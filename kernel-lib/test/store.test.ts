/** Store: migrations, value round-trips, transactions, read-only user SQL without file access, table formatting, lock release. */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { DuckDBInstance } from '@duckdb/node-api';
import {
  INSERT_ROWS,
  Migration,
  Store,
  StoreMigrationError,
  StoreReadOnlyError,
  StoreVersionError,
  formatTable,
  latestVersion,
  migrations,
  resolveStorePath
} from '../src/store';

let dir: string;
const stores: Store[] = [];

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nr-store-'));
});

afterEach(async () => {
  while (stores.length) await stores.pop()!.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function open(options: Parameters<typeof Store.open>[0] = {}): Promise<Store> {
  const store = await Store.open({ path: path.join(dir, 'store.duckdb'), ...options });
  stores.push(store);
  return store;
}

/** Runs statements on a store file directly through DuckDB, as another tool would. */
async function rawDuckDB(file: string, statements: string[]): Promise<void> {
  const instance = await DuckDBInstance.create(file);
  const connection = await instance.connect();
  for (const statement of statements) await connection.run(statement);
  connection.disconnectSync();
  instance.closeSync();
}

const feedbackRow = (id: string) => ({
  id,
  stage_run_id: 'sr_1',
  text: `feedback ${id}`,
  author: 'tester',
  created_at: '2024-05-06T07:08:09.010Z'
});

describe('location', () => {
  it('defaults to $NANORESEARCH_HOME/store.duckdb and creates the folder', async () => {
    const home = path.join(dir, 'nested', 'home');
    const previous = process.env.NANORESEARCH_HOME;
    process.env.NANORESEARCH_HOME = home;
    try {
      expect(resolveStorePath()).toBe(path.join(home, 'store.duckdb'));
      const store = await Store.open();
      stores.push(store);
      expect(store.path).toBe(path.join(home, 'store.duckdb'));
      expect(fs.existsSync(store.path)).toBe(true);
    } finally {
      if (previous === undefined) delete process.env.NANORESEARCH_HOME;
      else process.env.NANORESEARCH_HOME = previous;
    }
  });

  it('falls back to .nanoresearch/ under the cwd', () => {
    const previous = process.env.NANORESEARCH_HOME;
    delete process.env.NANORESEARCH_HOME;
    try {
      expect(resolveStorePath()).toBe(path.join(process.cwd(), '.nanoresearch', 'store.duckdb'));
      expect(resolveStorePath({ home: dir })).toBe(path.join(dir, 'store.duckdb'));
    } finally {
      if (previous !== undefined) process.env.NANORESEARCH_HOME = previous;
    }
  });
});

describe('migrations', () => {
  const coreTables = [
    'adapters',
    'artifacts',
    'feedback',
    'literature_cache',
    'llm_cache',
    'llm_calls',
    'memories',
    'papers',
    'planner_calls',
    'profiles',
    'projects',
    'runs',
    'schema_migrations',
    'skill_reviews',
    'skills',
    'stage_runs'
  ];

  it('creates every table on a fresh store and records the version', async () => {
    const store = await open();
    const tables = await store.read(q => q.all<{ table_name: string }>('SELECT table_name FROM duckdb_tables() ORDER BY 1'));
    expect(tables.map(t => t.table_name)).toEqual(expect.arrayContaining(coreTables));
    const applied = await store.read(q => q.all('SELECT version, name FROM schema_migrations ORDER BY version'));
    expect(applied).toEqual(migrations.map(m => ({ version: m.version, name: m.name })));
    const feedbackColumns = await store.read(q =>
      q.all<{ column_name: string }>(`SELECT column_name FROM duckdb_columns() WHERE table_name = 'feedback' ORDER BY column_index`)
    );
    expect(feedbackColumns.map(c => c.column_name)).toEqual(['id', 'stage_run_id', 'planner_call_id', 'text', 'author', 'origin', 'created_at', 'synced_from']);
  });

  it('upgrades a hand-built v0 file, keeping its data', async () => {
    const file = path.join(dir, 'store.duckdb');
    await rawDuckDB(file, ['CREATE TABLE notes (body VARCHAR)', "INSERT INTO notes VALUES ('kept')"]);
    const store = await open();
    expect(await store.read(q => q.get('SELECT max(version) AS v FROM schema_migrations'))).toEqual({ v: latestVersion() });
    expect(await store.read(q => q.all('SELECT body FROM notes'))).toEqual([{ body: 'kept' }]);
  });

  it('upgrades an older store when a migration is appended', async () => {
    await (await open({ migrations: migrations.slice(0, 1) })).close();
    stores.length = 0;
    const next = latestVersion() + 1;
    const appended: Migration[] = [
      ...migrations,
      { version: next, name: 'extra table', up: ['CREATE TABLE extra (id VARCHAR PRIMARY KEY)', "INSERT INTO extra VALUES ('x')"] }
    ];
    const store = await open({ migrations: appended });
    expect(await store.read(q => q.all('SELECT version, name FROM schema_migrations ORDER BY version'))).toEqual(
      appended.map(m => ({ version: m.version, name: m.name }))
    );
    expect(await store.read(q => q.all('SELECT id FROM extra'))).toEqual([{ id: 'x' }]);
  });

  it('carries the term rows of a store from before one index row per document (v9) over to doc_index', async () => {
    const old = await open({ migrations: migrations.filter(m => m.version <= 9) });
    await old.write(async q => {
      await q.run(`INSERT INTO memories (id, kind, scope, key, content, importance, confidence, status)
                   VALUES ('mem_a', 'decision_history', 'p1', 'a', 'Adam warmup warmup.', 0.5, 0.5, 'active')`);
      await q.run(`INSERT INTO doc_terms VALUES ('memory', 'mem_a', 11, 1, 3), ('memory', 'mem_a', 12, 2, 3), ('skill', 'sk_b', 21, 1, 1)`);
      await q.run(`INSERT INTO term_df VALUES (11, 'memory', 'adam', 1), (12, 'memory', 'warmup', 1), (21, 'skill', '@always', 1)`);
    });
    await old.close();
    stores.length = 0;
    const store = await open();
    expect(await store.read(q => q.all('SELECT doc_kind, doc_id, scope, len, terms, tfs FROM doc_index ORDER BY doc_kind'))).toEqual([
      { doc_kind: 'memory', doc_id: 'mem_a', scope: 'p1', len: 3, terms: ['adam', 'warmup'], tfs: [1, 2] },
      { doc_kind: 'skill', doc_id: 'sk_b', scope: 'global', len: 1, terms: ['@always'], tfs: [1] }
    ]);
    const left = await store.read(q =>
      q.all(`SELECT table_name FROM duckdb_tables() WHERE table_name IN ('doc_terms', 'term_postings', 'term_df', 'doc_stats')`)
    );
    expect(left).toEqual([]);
  });

  it('lets a store opened with a newer migration append to the changed table in the same process', async () => {
    const store = await open();
    // The first store's pooled connection learns the feedback columns (and prepares its statements).
    await store.write(q => q.appendRows('feedback', [feedbackRow('fb_before')]));
    const next = latestVersion() + 1;
    const newer = await open({ migrations: [...migrations, { version: next, name: 'feedback mood', up: ['ALTER TABLE feedback ADD COLUMN mood VARCHAR'] }] });
    await newer.write(q => q.appendRows('feedback', [{ ...feedbackRow('fb_after'), mood: 'pleased' }]));
    expect(await store.read(q => q.all('SELECT id, mood FROM feedback ORDER BY id'))).toEqual([
      { id: 'fb_after', mood: 'pleased' },
      { id: 'fb_before', mood: null }
    ]);
  });

  it('rolls a failing migration back and leaves the version as it was', async () => {
    const broken: Migration[] = [
      ...migrations,
      { version: latestVersion() + 1, name: 'broken', up: ['CREATE TABLE half_done (id VARCHAR)', 'CREATE TABLE nonsense ('] }
    ];
    await expect(open({ migrations: broken })).rejects.toThrow(StoreMigrationError);
    const store = await open();
    expect(await store.read(q => q.get('SELECT max(version) AS v FROM schema_migrations'))).toEqual({ v: latestVersion() });
    expect(await store.read(q => q.all(`SELECT table_name FROM duckdb_tables() WHERE table_name = 'half_done'`))).toEqual([]);
  });

  it('refuses a store whose version is newer than the library', async () => {
    await (await open()).close();
    stores.length = 0;
    const file = path.join(dir, 'store.duckdb');
    const future = latestVersion() + 5;
    await rawDuckDB(file, [`INSERT INTO schema_migrations VALUES (${future}, 'from the future', now()::TIMESTAMP)`]);
    const attempt = open();
    await expect(attempt).rejects.toThrow(StoreVersionError);
    await expect(attempt).rejects.toThrow(
      `store at ${file} has schema version ${future}; this library knows up to ${latestVersion()}: upgrade @nanoresearch/kernel`
    );
  });

  it('refuses a migration list with a gap', async () => {
    const gapped: Migration[] = [...migrations, { version: latestVersion() + 2, name: 'gap', up: [] }];
    await expect(open({ migrations: gapped })).rejects.toThrow(/numbered 1, 2, 3/);
  });
});

describe('values', () => {
  it('round-trips JSON, BIGINT, TIMESTAMP, BOOLEAN and DOUBLE columns', async () => {
    const store = await open();
    await store.write(async q => {
      await q.run(
        `INSERT INTO stage_runs (id, project_id, run_id, stage, status, attempt, input, output, skills_used, usage, started_at, finished_at)
         VALUES ($id, $project, $run, 'ideation', 'done', 2, $input, $output, $skills, $usage, $started, $finished)`,
        {
          id: 'sr_1',
          project: 'p_1',
          $run: 'r_1',
          input: { topic: 'mlp', nested: { list: [1, 2.5, 'x', null, true] } },
          output: JSON.stringify('a plain string output'),
          skills: ['skill-a', 'skill-b'],
          usage: null,
          started: new Date('2024-01-02T03:04:05.678Z'),
          finished: '2024-01-02T04:00:00.000Z'
        }
      );
      await q.run('INSERT INTO artifacts (id, project_id, path, kind, bytes, created_at) VALUES ($1, $2, $3, $4, $5, $6)', [
        'a_small',
        'p_1',
        'x.csv',
        'table',
        1234,
        new Date('2024-01-01T00:00:00Z')
      ]);
      await q.run('INSERT INTO artifacts (id, project_id, path, kind, bytes, created_at) VALUES ($1, $2, $3, $4, $5, $6)', [
        'a_huge',
        'p_1',
        'y.bin',
        'blob',
        9007199254740993n,
        new Date('2024-01-01T00:00:00Z')
      ]);
      await q.run('INSERT INTO llm_calls (id, role, model, cost_usd, cache_hit, created_at) VALUES ($1, $2, $3, $4, $5, $6)', [
        'l_1',
        'planner',
        'm',
        0.0125,
        true,
        new Date('2024-01-01T00:00:00Z')
      ]);
    });
    const run = await store.read(q => q.get('SELECT * FROM stage_runs WHERE id = $1', ['sr_1']));
    expect(run).toMatchObject({
      attempt: 2,
      input: { topic: 'mlp', nested: { list: [1, 2.5, 'x', null, true] } },
      output: 'a plain string output',
      skills_used: ['skill-a', 'skill-b'],
      usage: null,
      started_at: '2024-01-02T03:04:05.678Z',
      finished_at: '2024-01-02T04:00:00.000Z'
    });
    const bytes = await store.read(q => q.all('SELECT id, bytes FROM artifacts ORDER BY id'));
    expect(bytes).toEqual([
      { id: 'a_huge', bytes: '9007199254740993' },
      { id: 'a_small', bytes: 1234 }
    ]);
    expect(await store.read(q => q.get('SELECT cost_usd, cache_hit FROM llm_calls'))).toEqual({ cost_usd: 0.0125, cache_hit: true });
    expect(await store.read(q => q.get("SELECT 1.25::DECIMAL(10,2) AS d, 42::BIGINT AS b, DATE '2024-02-03' AS day"))).toEqual({
      d: 1.25,
      b: 42,
      day: '2024-02-03'
    });
  });

  it('takes strings bound to JSON columns as JSON text and refuses text that is not JSON', async () => {
    const store = await open();
    const insert = 'INSERT INTO llm_cache (key, model, response, created_at) VALUES ($1, $2, $3, $4)';
    await store.write(q => q.run(insert, ['k1', 'm', JSON.stringify({ text: 'hi', tokens: 3 }), new Date()]));
    expect(await store.read(q => q.get('SELECT response FROM llm_cache'))).toEqual({ response: { text: 'hi', tokens: 3 } });
    await expect(store.write(q => q.run(insert, ['k2', 'm', 'not json', new Date()]))).rejects.toThrow(
      /parameter \$3 goes to a JSON column .* pass JSON.stringify\(it\)/
    );
    await expect(store.write(q => q.appendRows('llm_cache', [{ key: 'k3', model: 'm', response: 'nope', created_at: new Date() }]))).rejects.toThrow(
      /column response goes to a JSON column/
    );
  });

  it('names a missing parameter instead of binding NULL', async () => {
    const store = await open();
    await expect(store.read(q => q.all('SELECT $a AS a, $b AS b', { a: 1 }))).rejects.toThrow(/\$b has no value/);
    await expect(store.read(q => q.all('SELECT $1 AS a, $2 AS b', [1]))).rejects.toThrow(/\$2 has no value/);
  });

  it('bulk-appends rows with JSON, timestamps and column defaults', async () => {
    const store = await open();
    const rows = Array.from({ length: 500 }, (_, i) => ({
      id: `m_${String(i).padStart(4, '0')}`,
      kind: 'user_constraint',
      scope: 'global',
      key: `k${i}`,
      content: `memory ${i}`,
      tags: ['t', String(i)],
      conditions: { budget: 'small' },
      importance: i / 1000,
      confidence: 0.5,
      status: 'active',
      created_at: new Date(Date.UTC(2024, 0, 1, 0, 0, i % 60)),
      last_used_at: null
    }));
    expect(await store.write(q => q.appendRows('memories', rows))).toBe(500);
    const first = await store.read(q => q.get('SELECT * FROM memories ORDER BY id LIMIT 1'));
    expect(first).toMatchObject({
      id: 'm_0000',
      tags: ['t', '0'],
      conditions: { budget: 'small' },
      importance: 0,
      usage_count: 0,
      support_count: 0,
      created_at: '2024-01-01T00:00:00.000Z',
      last_used_at: null
    });
    expect(await store.read(q => q.get('SELECT count(*) AS n, sum(importance) AS s FROM memories'))).toEqual({ n: 500, s: 124.75 });
    await expect(store.write(q => q.appendRows('memories', [{ ...rows[0], id: 'm_x', nonsense: 1 }]))).rejects.toThrow(/no column "nonsense"/);
  });
});

describe('transactions', () => {
  it('rolls a write back when its callback throws, and rethrows', async () => {
    const store = await open();
    await store.write(q =>
      q.run('INSERT INTO feedback (id, stage_run_id, text, author, created_at) VALUES ($id, $stage_run_id, $text, $author, $created_at)', feedbackRow('kept'))
    );
    const failure = new Error('stage crashed');
    await expect(
      store.write(async q => {
        await q.run(
          'INSERT INTO feedback (id, stage_run_id, text, author, created_at) VALUES ($id, $stage_run_id, $text, $author, $created_at)',
          feedbackRow('lost')
        );
        await q.appendRows('feedback', [feedbackRow('lost-bulk')]);
        throw failure;
      })
    ).rejects.toBe(failure);
    expect(await store.read(q => q.all('SELECT id FROM feedback'))).toEqual([{ id: 'kept' }]);
  });

  it('keeps read() read-only', async () => {
    const store = await open();
    await expect(store.read(q => q.run(`DELETE FROM feedback`))).rejects.toThrow(/read-only/);
  });

  it('refuses a write nested in a write instead of deadlocking', async () => {
    const store = await open();
    await expect(store.write(() => store.write(async () => 1))).rejects.toThrow(/inside another store.write/);
  });

  it('shares one instance between Stores on the same file in one process', async () => {
    const first = await open();
    const second = await open();
    await Promise.all([
      first.write(q => q.appendRows('feedback', [feedbackRow('from-first')])),
      second.write(q => q.appendRows('feedback', [feedbackRow('from-second')]))
    ]);
    await first.close();
    expect(await second.read(q => q.all('SELECT id FROM feedback ORDER BY id'))).toEqual([{ id: 'from-first' }, { id: 'from-second' }]);
    await expect(first.read(q => q.all('SELECT 1'))).rejects.toThrow(/is closed/);
    expect(first.stats).toEqual(second.stats);
  });

  it('serialises writes within a process', async () => {
    const store = await open();
    await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        store.write(async q => {
          const row = await q.get<{ n: number }>('SELECT count(*) AS n FROM feedback');
          await q.run('INSERT INTO feedback (id, stage_run_id, text, author, created_at) VALUES ($1, $2, $3, $4, now()::TIMESTAMP)', [
            `f${i}`,
            'sr',
            `seen ${row!.n}`,
            'me'
          ]);
        })
      )
    );
    const seen = await store.read(q => q.all<{ text: string }>('SELECT text FROM feedback ORDER BY text'));
    // Each write saw every earlier one: the counts are 0..39, each once.
    expect(new Set(seen.map(s => s.text)).size).toBe(40);
  });
});

describe('durable row inserts (INSERT_ROWS)', () => {
  const call = (id: string) => ({
    id,
    stage_run_id: null,
    role: 'planner',
    model: 'm',
    prompt_tokens: 1,
    completion_tokens: 2,
    latency_ms: 3,
    cost_usd: 0,
    cache_hit: false,
    error: null,
    created_at: new Date().toISOString()
  });

  it('inserts each row once: rows already stored and keys given twice are skipped, across tables and probe statements', async () => {
    const store = await open();
    await store.writeDurable(INSERT_ROWS, { inserts: [{ table: 'llm_calls', rows: [call('llm_a'), call('llm_b')] }] });
    // 20 calls (more than one probe statement holds), two of them stored already and one given twice, and a cache row.
    const calls = Array.from({ length: 20 }, (_, i) => call(i < 2 ? ['llm_a', 'llm_b'][i] : `llm_${i}`));
    const cache = { key: 'k1', model: 'm', response: JSON.stringify({ text: 'ok' }), created_at: new Date().toISOString() };
    await store.writeDurable(INSERT_ROWS, {
      inserts: [
        { table: 'llm_calls', rows: [...calls, call('llm_5')] },
        { table: 'llm_cache', rows: [cache, cache] }
      ]
    });
    const counts = await store.read(q =>
      q.get<{ calls: number; distinct_calls: number; cache: number }>(
        'SELECT (SELECT count(*) FROM llm_calls)::INTEGER AS calls, (SELECT count(DISTINCT id) FROM llm_calls)::INTEGER AS distinct_calls, (SELECT count(*) FROM llm_cache)::INTEGER AS cache'
      )
    );
    expect(counts).toEqual({ calls: 20, distinct_calls: 20, cache: 1 });
    // Replaying the same payload adds nothing.
    await store.writeDurable(INSERT_ROWS, { inserts: [{ table: 'llm_calls', rows: calls }] });
    expect(await store.read(q => q.get<{ n: number }>('SELECT count(*)::INTEGER AS n FROM llm_calls'))).toEqual({ n: 20 });
  });
});

describe('sql() for users', () => {
  const refused: Array<[string, RegExp]> = [
    [`INSERT INTO feedback VALUES ('x', 'sr', NULL, 't', 'a', NULL, now(), NULL)`, /Refused INSERT statement/],
    ['INSERT INTO no_such_table VALUES (1)', /Refused INSERT statement/],
    [`UPDATE feedback SET text = 'changed'`, /Refused UPDATE statement/],
    ['DELETE FROM feedback', /Refused DELETE statement/],
    ['CREATE TABLE evil (x INTEGER)', /Refused CREATE statement/],
    ['DROP TABLE feedback', /Refused DROP statement/],
    [`ATTACH '/tmp/other.duckdb' AS other`, /Refused ATTACH statement/],
    [`COPY feedback TO '/tmp/feedback.csv'`, /Refused COPY statement/],
    ['INSTALL fts', /Refused INSTALL statement/],
    ['LOAD fts', /Refused LOAD statement/],
    ['SET threads = 1', /Refused SET statement/],
    ['PRAGMA enable_profiling', /Refused PRAGMA statement/],
    ['SELECT 1; DELETE FROM feedback', /one query at a time and got 2 statements/],
    [`EXPORT DATABASE '/tmp/nr-export'`, /Refused EXPORT statement/],
    [`COPY (SELECT * FROM feedback) TO '/tmp/feedback.csv'`, /Refused COPY statement/],
    ['EXPLAIN SELECT 1', /Refused EXPLAIN statement/],
    ['CALL pragma_version()', /Refused CALL statement/]
  ];

  it.each(refused)('refuses %s before running it', async (query, message) => {
    const store = await open();
    await store.write(q => q.appendRows('feedback', [feedbackRow('f1')]));
    const attempt = store.sql(query);
    await expect(attempt).rejects.toThrow(StoreReadOnlyError);
    await expect(attempt).rejects.toThrow(message);
    await expect(attempt).rejects.toThrow(/store\.sql\(\) only reads/);
    expect(await store.read(q => q.all('SELECT id, text FROM feedback'))).toEqual([{ id: 'f1', text: 'feedback f1' }]);
    expect(fs.existsSync('/tmp/feedback.csv') && query.startsWith('COPY')).toBe(false);
  });

  const fileReads: Array<[string, string]> = [
    [`SELECT * FROM read_text('/etc/passwd')`, '/etc/passwd'],
    [`SELECT * FROM read_csv('/etc/passwd')`, '/etc/passwd'],
    [`SELECT * FROM read_blob('/etc/hostname')`, '/etc/hostname'],
    [`SELECT * FROM '/etc/passwd.csv'`, '/etc/passwd.csv'],
    [`FROM glob('/etc/*')`, '/etc/']
  ];

  it.each(fileReads)('refuses %s: user SQL cannot read host files', async (query, file) => {
    const store = await open();
    const attempt = store.sql(query);
    await expect(attempt).rejects.toThrow(StoreReadOnlyError);
    await expect(attempt).rejects.toThrow(/store\.sql\(\) reads the store's tables only and cannot read or write files/);
    await expect(attempt).rejects.toThrow(file);
    await expect(attempt).rejects.toMatchObject({ statementKind: 'FILE_ACCESS' });
  });

  it('refuses EXPORT DATABASE before DuckDB prepares it, so no folder is created', async () => {
    const store = await open();
    const target = path.join(dir, 'exported');
    await expect(store.sql(`EXPORT DATABASE '${target}'`)).rejects.toThrow(/Refused EXPORT statement/);
    await expect(store.sql(`export database '${target}' (format parquet)`)).rejects.toThrow(/Refused EXPORT statement/);
    expect(fs.existsSync(target)).toBe(false);
  });

  it('has external access off for the whole store, library code included', async () => {
    const store = await open();
    await expect(store.read(q => q.all(`SELECT * FROM read_text('/etc/passwd')`))).rejects.toThrow(/file system operations are disabled by configuration/);
    await expect(store.write(q => q.run(`COPY feedback TO '${path.join(dir, 'out.csv')}'`))).rejects.toThrow(
      /file system operations are disabled by configuration/
    );
    expect(fs.existsSync(path.join(dir, 'out.csv'))).toBe(false);
    expect((await store.sql('SELECT count(*) AS n FROM feedback')).rows).toEqual([{ n: 0 }]);
  });

  it('runs a select with parameters and returns columns and plain rows', async () => {
    const store = await open();
    await store.write(q => q.appendRows('feedback', [feedbackRow('f1'), feedbackRow('f2')]));
    const result = await store.sql('SELECT id, text, created_at FROM feedback WHERE id <> $1 ORDER BY id', ['f1']);
    expect(result).toEqual({
      columns: ['id', 'text', 'created_at'],
      rows: [{ id: 'f2', text: 'feedback f2', created_at: '2024-05-06T07:08:09.010Z' }]
    });
    expect((await store.sql('DESCRIBE feedback')).rows.length).toBe(8);
    await expect(store.sql('SELECT * FROM missing_table')).rejects.toThrow(/missing_table does not exist/);
  });
});

describe('formatTable', () => {
  it('renders Markdown and HTML with escaping, NULLs and a row limit', () => {
    const result = {
      columns: ['id', 'note'],
      rows: [
        { id: 1, note: 'a | b\nc' },
        { id: 2, note: null },
        { id: 3, note: { tags: ['<x>'] } }
      ]
    };
    const full = formatTable(result);
    expect(full.markdown).toBe(['| id | note |', '| --- | --- |', '| 1 | a \\| b c |', '| 2 | NULL |', '| 3 | {"tags":["<x>"]} |', '', '_3 rows_'].join('\n'));
    expect(full.html).toContain('<th>id</th><th>note</th>');
    expect(full.html).toContain('<td>{&quot;tags&quot;:[&quot;&lt;x&gt;&quot;]}</td>');
    const cut = formatTable(result, 2);
    expect(cut.markdown).not.toContain('| 3 |');
    expect(cut.markdown).toContain('2 of 3 rows shown (1 more not shown)');
    expect(cut.html).toContain('2 of 3 rows shown');
    expect(formatTable({ columns: ['x'], rows: [] }).markdown).toContain('(no rows)');
  });
});

describe('holding the file', () => {
  const probe = (file: string) =>
    spawnSync(
      process.execPath,
      [
        '-e',
        `require('@duckdb/node-api').DuckDBInstance.create(${JSON.stringify(file)})` +
          `.then(i => { i.closeSync(); console.log('opened'); }, e => console.log(e.message))`
      ],
      { encoding: 'utf8', cwd: path.resolve(__dirname, '..') }
    ).stdout.trim();

  it('releases the OS lock after idleReleaseMs so another process can open the file', async () => {
    const store = await open({ idleReleaseMs: 30 });
    await store.read(async q => {
      await q.all('SELECT 1');
      expect(probe(store.path)).toMatch(/Could not set lock on file/);
    });
    await new Promise(resolve => setTimeout(resolve, 120));
    expect(probe(store.path)).toBe('opened');
    // And it comes back on the next call.
    expect(await store.read(q => q.get('SELECT count(*) AS n FROM feedback'))).toEqual({ n: 0 });
    expect(store.stats.acquisitions).toBeGreaterThanOrEqual(2);
  });
});
