/**
 * Store crash safety: closes checkpoint; an open after an unclean shutdown replays, checkpoints,
 * checks every index against a full scan and rebuilds what disagrees; stage runs are unique per
 * (run_id, stage, attempt); a writer SIGKILLed at random moments, over and over, loses no
 * committed row and leaves no duplicate; and a real project.run() SIGKILLed at random moments
 * always resumes to the end without repeating a stage that was done.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { DuckDBConnection, DuckDBInstance } from '@duckdb/node-api';
import { Store, migrations } from '../src/store';
import { IndexLookup, IndexedKey, checkIndexes, lookupStatements, lookupThroughIndex, probeUnique, rebuildTable } from '../src/store/integrity';
import { recoverStore, walOf } from '../src/store/recovery';
import { compileStore, startChild } from './store-children';
import { routeByModel, startLiteratureFixtureServer, startScriptedLlmServer } from '../src/testing';
import { selectFirstPlanner } from './lab-fixture';
import { researchScript, ROLE_MODELS } from './fixtures/e2e/research-script';

let buildDir: string;
let dir: string;
let file: string;

beforeAll(() => {
  buildDir = compileStore();
});

afterAll(() => fs.rmSync(buildDir, { recursive: true, force: true }));

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nr-store-rec-'));
  file = path.join(dir, 'store.duckdb');
});

afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const stageRun = (id: string, runId: string, attempt: number, status = 'done') => ({
  id,
  project_id: 'p_1',
  run_id: runId,
  stage: 'ideation',
  status,
  attempt,
  started_at: new Date('2024-05-06T07:08:09Z')
});

const memory = (id: string) => ({
  id,
  kind: 'insight',
  scope: 'global',
  key: id,
  content: `memory ${id}`,
  importance: 0.5,
  confidence: 0.5,
  status: 'active'
});

/** Runs `fn` on a connection to the file opened directly through DuckDB (no Store, no recovery). */
async function withRawConnection<T>(fn: (connection: DuckDBConnection, instance: DuckDBInstance) => Promise<T>): Promise<T> {
  const instance = await DuckDBInstance.create(file, { threads: '1' });
  const connection = await instance.connect();
  try {
    return await fn(connection, instance);
  } finally {
    connection.disconnectSync();
    instance.closeSync();
  }
}

async function rows<T>(connection: DuckDBConnection, sql: string): Promise<T[]> {
  return (await (await connection.run(sql)).getRowObjectsJson()) as T[];
}

/** A store with a few stage runs and memories, closed. */
async function seededStore(): Promise<void> {
  const store = await Store.open({ path: file });
  await store.write(async q => {
    await q.appendRows('stage_runs', [stageRun('sr_1', 'run_a', 1), stageRun('sr_2', 'run_a', 2), stageRun('sr_3', 'run_b', 1)]);
    await q.appendRows('memories', ['m_1', 'm_2', 'm_3', 'm_4'].map(memory));
  });
  await store.close();
}

describe('closing', () => {
  it('checkpoints on close and on idle release, so no write-ahead log is left behind', async () => {
    const store = await Store.open({ path: file, idleReleaseMs: 20 });
    await store.write(q => q.appendRows('memories', [memory('m_1')]));
    await new Promise(resolve => setTimeout(resolve, 150));
    expect(fs.existsSync(walOf(file))).toBe(false);
    await store.write(q => q.appendRows('memories', [memory('m_2')]));
    await store.close();
    expect(fs.existsSync(walOf(file))).toBe(false);
    // A clean reopen has nothing to recover.
    const again = await Store.open({ path: file });
    expect(again.recoveries).toEqual([]);
    await again.close();
  });
});

describe('opening after an unclean shutdown', () => {
  it('replays, checkpoints and checks the store before anything reads it, and records it', async () => {
    const child = startChild('store-killed-writer.js', [path.join(buildDir, 'store'), file, '10']);
    await child.waitForLine(line => line === 'in-transaction');
    child.process.kill('SIGKILL');
    await child.exited;
    expect(fs.existsSync(walOf(file))).toBe(true);

    const store = await Store.open({ path: file, lockTimeoutMs: 5000 });
    try {
      expect(fs.existsSync(walOf(file))).toBe(false);
      expect(store.recoveries).toHaveLength(1);
      const [recovery] = store.recoveries;
      expect(recovery).toMatchObject({ file, pid: process.pid, problems: [], rebuilt: [] });
      expect(recovery.walBytes).toBeGreaterThan(0);
      expect(recovery.keysChecked).toBeGreaterThan(15);
      expect(recovery.message).toMatch(/was not closed cleanly .* replayed its write-ahead log .* nothing was lost/);
      expect(await store.read(q => q.get('SELECT count(*) AS n FROM feedback'))).toEqual({ n: 10 });
      expect(await store.read(q => q.all('SELECT pid, problems, message FROM store_recoveries'))).toEqual([
        { pid: process.pid, problems: [], message: recovery.message }
      ]);
    } finally {
      await store.close();
    }
  });

  it('looks keys up through their indexes: an index scan for every non-unique lookup', async () => {
    await seededStore();
    // Integer keys too, including a run of consecutive ones (DuckDB would scan a range for those).
    const store = await Store.open({ path: file });
    await store.write(async q => {
      await q.run('CREATE TABLE int_keys (k BIGINT NOT NULL)');
      await q.run('CREATE INDEX int_keys_k ON int_keys (k)');
      await q.run('INSERT INTO int_keys SELECT range FROM range(1, 2500)');
    });
    await store.close();
    const plans: string[] = [];
    const explained: IndexLookup = async (connection, key, values, type) => {
      for (const statement of lookupStatements(key, values)) {
        const prepared = await connection.prepare(`EXPLAIN ANALYZE ${statement.sql}`);
        statement.values.forEach((value, i) => prepared.bindValue(i + 1, value, type));
        const plan = (await (await prepared.run()).getRows()).map(row => String(row[1])).join('\n');
        prepared.destroySync();
        plans.push(`${key.name}: ${/Type: Index Scan/.test(plan) ? 'index' : 'SEQUENTIAL'}`);
      }
      return lookupThroughIndex(connection, key, values, type);
    };
    const { keys, faults } = await withRawConnection(connection => checkIndexes(connection, explained));
    expect(faults).toEqual([]);
    expect(keys.map(k => k.name)).toEqual(
      expect.arrayContaining(['stage_runs_id_pkey', 'stage_runs_run_id', 'stage_runs_run_stage_attempt', 'memories_kind_scope'])
    );
    expect(new Set(plans.map(p => p.split(':')[0]))).toEqual(new Set(['stage_runs_project_id', 'stage_runs_run_id', 'int_keys_k']));
    expect(plans.filter(p => p.endsWith('SEQUENTIAL'))).toEqual([]);
  });

  it('reports a unique key whose keys do not all conflict with their rows', async () => {
    await seededStore();
    const faults = await withRawConnection(async connection => {
      await connection.run(`CREATE TABLE notes (id VARCHAR, body VARCHAR NOT NULL)`);
      await connection.run(`INSERT INTO notes VALUES ('a', 'x')`);
      // Told that notes.id is unique while no index backs it: re-inserting its keys conflicts with nothing.
      const keys: IndexedKey[] = [{ table: 'notes', name: 'notes_id', columns: ['id'], unique: true }];
      return (await Promise.all(keys.map(key => probeUnique(connection, key)))).filter(Boolean);
    });
    expect(faults).toEqual([expect.stringMatching(/^the keys of unique notes_id \(id\) do not all conflict with their rows: /)]);
  });

  it('rebuilds a table whose index lost entries, keeps every row and the indexes, and says so', async () => {
    await seededStore();
    // An index that lost the last row written to stage_runs, as a faulty WAL replay would leave it.
    const lossy: IndexLookup = async (connection, key, values, type) => {
      const found = await lookupThroughIndex(connection, key, values, type);
      return key.table === 'stage_runs' && key.columns[0] === 'run_id' ? found - 1 : found;
    };
    const emitWarning = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    const recovery = await withRawConnection(async (connection, instance) => {
      const before = await rows(connection, `SELECT index_name FROM duckdb_indexes() WHERE table_name = 'stage_runs' ORDER BY 1`);
      const result = await recoverStore(instance, file, 123, lossy);
      expect(await rows(connection, `SELECT index_name FROM duckdb_indexes() WHERE table_name = 'stage_runs' ORDER BY 1`)).toEqual(before);
      expect(await rows(connection, 'SELECT id FROM stage_runs ORDER BY id')).toEqual([{ id: 'sr_1' }, { id: 'sr_2' }, { id: 'sr_3' }]);
      // The rebuilt table still refuses a second row for an attempt, and a repeated id.
      await expect(
        connection.run(`INSERT INTO stage_runs (id, project_id, run_id, stage, status, attempt) VALUES ('sr_9', 'p', 'run_a', 'ideation', 'done', 1)`)
      ).rejects.toThrow(/constraint/i);
      await expect(
        connection.run(`INSERT INTO stage_runs (id, project_id, run_id, stage, status, attempt) VALUES ('sr_1', 'p', 'run_z', 'ideation', 'done', 1)`)
      ).rejects.toThrow(/constraint/i);
      expect((await checkIndexes(connection)).faults).toEqual([]);
      return result;
    });
    const warnings = emitWarning.mock.calls.map(call => call[0]);
    emitWarning.mockRestore();

    expect(recovery.problems).toEqual(['stage_runs: lookups through stage_runs_run_id (run_id) find 2 of the 3 rows a full scan finds']);
    expect(recovery.rebuilt).toEqual([{ table: 'stage_runs', rowsKept: 3, rowsSetAside: [] }]);
    expect(recovery.message).toContain('Rebuilt from their rows: stage_runs (3 rows kept)');
    expect(warnings).toEqual([recovery.message]);
    const store = await Store.open({ path: file });
    try {
      expect(await store.read(q => q.all('SELECT wal_bytes, problems FROM store_recoveries'))).toEqual([{ wal_bytes: 123, problems: recovery.problems }]);
    } finally {
      await store.close();
    }
  });

  it('keeps the first of rows sharing a unique key and returns the others to be set aside', async () => {
    await withRawConnection(async connection => {
      await connection.run(`CREATE TABLE notes (id VARCHAR, body VARCHAR, n INTEGER DEFAULT 7)`);
      await connection.run(`CREATE INDEX notes_body ON notes (body)`);
      await connection.run(`INSERT INTO notes VALUES ('a', 'first', 1), ('b', 'other', 2), ('a', 'second', 3), (NULL, 'x', 4), (NULL, 'y', 5)`);
      await connection.run('BEGIN TRANSACTION');
      const rebuilt = await rebuildTable(connection, 'notes', [{ table: 'notes', name: 'notes_pk', columns: ['id'], unique: true }]);
      await connection.run('COMMIT');
      expect(rebuilt).toEqual({ table: 'notes', rowsKept: 4, rowsSetAside: [{ id: 'a', body: 'second', n: 3 }] });
      expect(await rows(connection, 'SELECT id, body FROM notes ORDER BY n')).toEqual([
        { id: 'a', body: 'first' },
        { id: 'b', body: 'other' },
        { id: null, body: 'x' },
        { id: null, body: 'y' }
      ]);
      expect(await rows(connection, `SELECT index_name FROM duckdb_indexes() WHERE table_name = 'notes'`)).toEqual([{ index_name: 'notes_body' }]);
      await connection.run(`INSERT INTO notes (id, body) VALUES ('c', 'defaulted')`);
      expect(await rows(connection, `SELECT n FROM notes WHERE id = 'c'`)).toEqual([{ n: 7 }]);
    });
  });
});

describe('stage runs unique per attempt', () => {
  it('renumbers repeated attempts of an older store, then refuses a second row for an attempt', async () => {
    const old = await Store.open({ path: file, migrations: migrations.slice(0, 3) });
    await old.write(q =>
      q.appendRows('stage_runs', [
        stageRun('sr_a1', 'run_1', 1),
        { ...stageRun('sr_a1_copy', 'run_1', 1), started_at: new Date('2024-05-06T08:00:00Z') },
        stageRun('sr_a2', 'run_1', 2),
        { ...stageRun('sr_a2_copy', 'run_1', 2), started_at: new Date('2024-05-06T09:00:00Z') },
        stageRun('sr_b1', 'run_2', 1)
      ])
    );
    await old.close();

    const store = await Store.open({ path: file });
    try {
      expect(await store.read(q => q.all('SELECT id, attempt FROM stage_runs ORDER BY id'))).toEqual([
        { id: 'sr_a1', attempt: 1 },
        { id: 'sr_a1_copy', attempt: 3 },
        { id: 'sr_a2', attempt: 2 },
        { id: 'sr_a2_copy', attempt: 4 },
        { id: 'sr_b1', attempt: 1 }
      ]);
      await expect(store.write(q => q.appendRows('stage_runs', [stageRun('sr_dup', 'run_2', 1)]))).rejects.toThrow(/constraint/i);
      await expect(
        store.write(q =>
          q.run(`INSERT INTO stage_runs (id, project_id, run_id, stage, status, attempt) VALUES ('sr_dup', 'p', 'run_2', 'ideation', 'done', 1)`)
        )
      ).rejects.toThrow(/Duplicate key .*run_2/);
      // Another stage or attempt of the same run is fine, and so is a NULL attempt.
      await store.write(q => q.appendRows('stage_runs', [stageRun('sr_b2', 'run_2', 2), { ...stageRun('sr_n1', 'run_2', 1), attempt: null }]));
      expect(await store.read(q => q.get('SELECT count(*) AS n FROM stage_runs'))).toEqual({ n: 7 });
    } finally {
      await store.close();
    }
  });
});

describe('a writer killed at random moments', () => {
  // CI-sized; NANORESEARCH_TEST_KILLS=50 runs the full count (about 2.5x as long).
  const KILLS = Number(process.env.NANORESEARCH_TEST_KILLS ?? 20);

  it(
    `loses no committed row and writes no duplicate over ${KILLS} SIGKILLs, each followed by a reader`,
    async () => {
      await (await Store.open({ path: file })).close();
      const committedRuns = new Set<string>();
      const committedMemories = new Set<string>();
      const done = new Set<string>();
      const refusals: string[] = [];
      const readers: Array<{ stageRuns: number; memories: number; recoveries: Array<{ problems: string[]; ms: number }> }> = [];
      for (let kill = 0; kill < KILLS; kill++) {
        const writer = startChild('store-crash-writer.js', [path.join(buildDir, 'store'), file, `k${kill}`]);
        await writer.waitForLine(line => line.startsWith('committed '));
        await new Promise(resolve => setTimeout(resolve, Math.random() * 400));
        writer.process.kill('SIGKILL');
        const outcome = await writer.exited;
        if (outcome.signal !== 'SIGKILL') throw new Error(`writer ${kill} ended by itself (${JSON.stringify(outcome)}): ${writer.stderr}`);
        for (const line of writer.lines) {
          const [what, id, memoryId, extra] = line.split(' ');
          if (what === 'committed') {
            committedRuns.add(id);
            committedMemories.add(memoryId);
            for (let i = 0; i < Number(extra); i++) committedMemories.add(`${memoryId}_${i}`);
          } else if (what === 'done') done.add(id);
          else if (what !== 'open') refusals.push(`${what} ${id}`);
        }
        const reader = startChild('store-reader.js', [path.join(buildDir, 'store'), file]);
        const outcomeReader = await reader.exited;
        if (outcomeReader.code !== 0) throw new Error(`reader after kill ${kill} failed: ${reader.stderr}`);
        const report = JSON.parse(reader.lines[reader.lines.length - 1]);
        readers.push(report);
        // What the reader saw already holds every row committed so far (later rows may exist too).
        expect(report.stageRuns).toBeGreaterThanOrEqual(committedRuns.size);
        expect(report.memories).toBeGreaterThanOrEqual(committedMemories.size);
      }
      const recoveries = readers.flatMap(r => r.recoveries);
      console.log(
        `${KILLS} kills: ${committedRuns.size} stage runs and ${committedMemories.size} memories committed; ` +
          `${recoveries.length} opens found an unclean shutdown (slowest check ${Math.max(0, ...recoveries.map(r => r.ms))} ms), ` +
          `problems found: ${JSON.stringify(recoveries.flatMap(r => r.problems))}`
      );
      expect(recoveries.length).toBeGreaterThan(0);
      expect(refusals.every(line => line.startsWith('refused-duplicate '))).toBe(true);

      await withRawConnection(async connection => {
        expect(fs.existsSync(walOf(file))).toBe(false);
        expect((await checkIndexes(connection)).faults).toEqual([]);
        const runs = await rows<{ id: string; status: string }>(connection, 'SELECT id, status FROM stage_runs');
        const ids = runs.map(r => r.id);
        expect(new Set(ids).size).toBe(ids.length);
        for (const id of committedRuns) expect(ids).toContain(id);
        for (const run of runs) if (done.has(run.id)) expect(run.status).toBe('done');
        // No second row for any attempt: every duplicate 'done' row was refused.
        expect(ids.filter(id => id.endsWith('_again'))).toEqual([]);
        expect(await rows(connection, 'SELECT run_id, stage, attempt FROM stage_runs GROUP BY ALL HAVING count(*) > 1')).toEqual([]);
        const memoryIds = new Set((await rows<{ id: string }>(connection, 'SELECT id FROM memories')).map(r => r.id));
        expect([...committedMemories].filter(id => !memoryIds.has(id))).toEqual([]);
        expect(await rows(connection, 'SELECT id FROM memories GROUP BY id HAVING count(*) > 1')).toEqual([]);
      });
    },
    120_000 + KILLS * 6_000
  );
});

describe('project.run() killed at random moments', () => {
  // CI-sized; NANORESEARCH_TEST_KILLS=50 runs the full count (each kill costs about one run).
  const KILLS = Number(process.env.NANORESEARCH_TEST_KILLS ?? 5);
  const TOPIC = 'Nearest-centroid classification of a small flower CSV against a majority baseline';
  /** The children run the Lab of kernel-lib's build: `npm run build` first (CI's setup does). */
  const dist = path.resolve(__dirname, '../dist');
  const STAGES = ['ideation', 'planning', 'experiment', 'analysis', 'writing', 'review'];

  it(
    `resumes to the end after each of ${KILLS} SIGKILLs and a reader, repeating no stage that was done, with the store intact`,
    async () => {
      const lit = await startLiteratureFixtureServer();
      const llm = await startScriptedLlmServer(routeByModel(researchScript({}, selectFirstPlanner)));
      const savedEnv = { ...process.env };
      Object.assign(process.env, lit.env, { NANORESEARCH_LITERATURE_SOURCES: 'openalex,crossref' });
      const llmConfig = JSON.stringify({
        provider: 'openai',
        baseURL: llm.url,
        apiKey: 'test-key',
        models: ROLE_MODELS,
        prices: Object.fromEntries(Object.values(ROLE_MODELS).map(model => [model, { inputPerMTok: 0, outputPerMTok: 0 }])),
        maxRetries: 0
      });
      /** Runs project.run() in a child to its end; `ms` from the run's start (the Lab open excluded). */
      const run = async (mode: 'restart' | 'resume') => {
        const child = startChild('project-run-child.js', [dist, dir, TOPIC, llmConfig, mode]);
        await child.waitForLine(line => line === 'running');
        const started = Date.now();
        const { code } = await child.exited;
        if (code !== 0) throw new Error(`project.run() child (${mode}) exited ${code}: ${child.stderr}`);
        return { stages: JSON.parse(child.lines[child.lines.length - 1]) as Array<[string, string, string, string | null]>, ms: Date.now() - started };
      };
      const killedAt: string[] = [];
      const statuses = (stages: Array<[string, string, string, string | null]>) =>
        stages.map(([stage, status, , error]) => (status === 'done' ? [stage, status] : [stage, status, error]));
      const recoveries: Array<{ problems: string[]; ms: number }> = [];
      try {
        // Uninterrupted runs: every stage completes. The second answers from the LLM cache, as the
        // killed runs below do, so it tells how long they last.
        expect(statuses((await run('restart')).stages)).toEqual(STAGES.map(stage => [stage, 'done']));
        const warm = await run('restart');
        expect(statuses(warm.stages)).toEqual(STAGES.map(stage => [stage, 'done']));

        let endedFirst = 0;
        for (let kill = 0; kill < KILLS;) {
          const child = startChild('project-run-child.js', [dist, dir, TOPIC, llmConfig, 'restart']);
          await child.waitForLine(line => line === 'running');
          const started = Date.now();
          await new Promise(resolve => setTimeout(resolve, Math.random() * warm.ms * (endedFirst > 2 ? 0.5 : 0.9)));
          child.process.kill('SIGKILL');
          const killedAfter = Date.now() - started;
          const outcome = await child.exited;
          if (outcome.signal !== 'SIGKILL') {
            // The run was quicker than the moment drawn: no kill to count; draw again.
            if (outcome.code !== 0 || ++endedFirst > KILLS) throw new Error(`run ${kill} ended before its kill (${JSON.stringify(outcome)}): ${child.stderr}`);
            continue;
          }
          kill++;

          const reader = startChild('project-run-reader.js', [dist, file]);
          if ((await reader.exited).code !== 0) throw new Error(`reader after kill ${kill} failed: ${reader.stderr}`);
          const seen = JSON.parse(reader.lines[reader.lines.length - 1]) as { done: Record<string, string>; recoveries: typeof recoveries };
          recoveries.push(...seen.recoveries);
          killedAt.push(`${killedAfter} ms (${Object.keys(seen.done).length} done)`);

          const resumed = (await run('resume')).stages;
          expect(statuses(resumed)).toEqual(STAGES.map(stage => [stage, 'done']));
          // A stage the killed run had finished is taken as it is, not run again.
          for (const [stage, , id] of resumed) if (seen.done[stage]) expect([stage, id]).toEqual([stage, seen.done[stage]]);

          await withRawConnection(async connection => {
            expect(fs.existsSync(walOf(file))).toBe(false);
            expect((await checkIndexes(connection)).faults).toEqual([]);
            expect(await rows(connection, `SELECT run_id, stage FROM stage_runs WHERE status = 'done' GROUP BY ALL HAVING count(*) > 1`)).toEqual([]);
            for (const table of ['runs', 'stage_runs', 'planner_calls', 'llm_calls', 'memories', 'skills', 'artifacts']) {
              expect([table, await rows(connection, `SELECT id FROM ${table} GROUP BY id HAVING count(*) > 1`)]).toEqual([table, []]);
            }
          });
        }
      } finally {
        process.env = savedEnv;
        await llm.close();
        await lit.close();
      }
      console.log(
        `${KILLS} kills of project.run() at ${killedAt.join(', ')} into the run; ${recoveries.length} opens found an unclean shutdown ` +
          `(slowest check ${Math.max(0, ...recoveries.map(r => r.ms))} ms), problems found: ${JSON.stringify(recoveries.flatMap(r => r.problems))}`
      );
      expect(recoveries.flatMap(r => r.problems)).toEqual([]);
    },
    180_000 + KILLS * 60_000
  );
});
