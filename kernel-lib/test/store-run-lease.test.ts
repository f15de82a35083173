/**
 * The per-project run lease: one runner per project across processes; a second one waits or is
 * told who holds it; a dead holder's lease is taken over, and only then are its unfinished stage
 * runs marked interrupted. Holders are child processes (store-children.ts).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { RunLeaseHeldError, Store, acquireRunLease } from '../src/store';
import { compileStore, startChild } from './store-children';

let buildDir: string;
let dir: string;
let file: string;
let store: Store;

beforeAll(() => {
  buildDir = compileStore();
});

afterAll(() => fs.rmSync(buildDir, { recursive: true, force: true }));

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nr-run-lease-'));
  file = path.join(dir, 'store.duckdb');
  store = await Store.open({ path: file });
});

afterEach(async () => {
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const holder = (stageRunId: string, releaseMs?: number) =>
  startChild('run-lease-holder.js', [path.join(buildDir, 'store'), file, 'p_1', stageRunId, ...(releaseMs === undefined ? [] : [String(releaseMs)])]);

const statusOf = async (id: string) =>
  store.read(q => q.get<{ status: string; error: string | null }>('SELECT status, error FROM stage_runs WHERE id = $1', [id]));

it('tells a second runner who holds the project, and leaves the holder’s running stage alone', async () => {
  const child = holder('sr_live');
  try {
    await child.waitForLine(line => line === 'held');
    const error = await acquireRunLease(store, 'p_1').catch(e => e);
    expect(error).toBeInstanceOf(RunLeaseHeldError);
    expect(error.holder).toMatchObject({ pid: child.process.pid, host: os.hostname(), runId: 'run_child' });
    expect(error.message).toMatch(new RegExp(`Project p_1 is being run by process ${child.process.pid} on .* \\(run run_child\\)`));
    expect(error.message).toContain(`kill ${child.process.pid}`);
    expect(await statusOf('sr_live')).toEqual({ status: 'running', error: null });
    // Another project is free.
    const other = await acquireRunLease(store, 'p_2');
    expect(other.takenOverFrom).toBeNull();
    await other.release();
  } finally {
    child.process.kill('SIGKILL');
    await child.exited;
  }
});

it('waits for a live holder to release the project', async () => {
  const child = holder('sr_done', 800);
  await child.waitForLine(line => line === 'held');
  const started = Date.now();
  const lease = await acquireRunLease(store, 'p_1', { waitMs: 10_000 });
  expect(Date.now() - started).toBeGreaterThanOrEqual(500);
  expect(child.lines).toContain('released');
  expect(lease.takenOverFrom).toBeNull();
  expect(lease.interrupted).toEqual([]);
  expect(await statusOf('sr_done')).toEqual({ status: 'done', error: null });
  await lease.release();
  expect((await child.exited).code).toBe(0);
});

it('takes over a dead holder’s lease and only then marks its running stage interrupted', async () => {
  const child = holder('sr_orphan');
  await child.waitForLine(line => line === 'held');
  child.process.kill('SIGKILL');
  await child.exited;
  expect(await statusOf('sr_orphan')).toMatchObject({ status: 'running' });

  const lease = await acquireRunLease(store, 'p_1', { runId: 'run_next' });
  expect(lease.takenOverFrom).toMatchObject({ pid: child.process.pid, runId: 'run_child' });
  expect(lease.interrupted).toEqual(['sr_orphan']);
  expect(await statusOf('sr_orphan')).toEqual({
    status: 'failed',
    error: `interrupted: the process running it (pid ${child.process.pid} on ${os.hostname()}) ended`
  });
  expect(await store.read(q => q.get('SELECT holder_pid, run_id FROM run_leases WHERE project_id = $1', ['p_1']))).toEqual({
    holder_pid: process.pid,
    run_id: 'run_next'
  });
  await lease.release();
  expect(await store.read(q => q.get('SELECT count(*) AS n FROM run_leases'))).toEqual({ n: 0 });
});

it('judges a holder on another host by its heartbeat', async () => {
  const row = (heartbeatAgoMs: number) => ({
    project_id: 'p_1',
    holder_id: 'lease_elsewhere',
    holder_pid: 1,
    holder_host: 'another-host',
    run_id: 'run_remote',
    acquired_at: new Date(Date.now() - 600_000),
    heartbeat_at: new Date(Date.now() - heartbeatAgoMs)
  });
  await store.write(q => q.appendRows('run_leases', [row(1_000)]));
  await expect(acquireRunLease(store, 'p_1')).rejects.toThrow(/being run by process 1 on another-host \(run run_remote\)/);
  await store.write(q => q.run('DELETE FROM run_leases'));
  await store.write(q => q.appendRows('run_leases', [row(120_000)]));
  const lease = await acquireRunLease(store, 'p_1');
  expect(lease.takenOverFrom).toMatchObject({ host: 'another-host', pid: 1 });
  await lease.release();
});

it('beats while held, and a holder whose lease was taken over finds out', async () => {
  const lost: string[] = [];
  const lease = await acquireRunLease(store, 'p_1', { heartbeatMs: 30, onLost: l => lost.push(l.projectId) });
  const beatOf = async () => (await store.read(q => q.get<{ at: string }>('SELECT heartbeat_at AS at FROM run_leases')))!.at;
  const first = await beatOf();
  await new Promise(resolve => setTimeout(resolve, 150));
  expect(Date.parse(await beatOf())).toBeGreaterThan(Date.parse(first));
  // Someone who thought this holder dead took the project.
  await store.write(q => q.run(`UPDATE run_leases SET holder_id = 'lease_other'`));
  await new Promise(resolve => setTimeout(resolve, 150));
  expect(lease.lost).toBe(true);
  expect(lost).toEqual(['p_1']);
  // Releasing a lost lease leaves the new holder's row alone.
  await lease.release();
  expect(await store.read(q => q.get('SELECT holder_id FROM run_leases'))).toEqual({ holder_id: 'lease_other' });
});

it('gives the project back in the commit of other work, and keeps it when that work fails', async () => {
  const leaseRows = () => store.read(q => q.all<{ holder_id: string }>('SELECT holder_id FROM run_leases WHERE project_id = $1', ['p_1']));
  const failing = await acquireRunLease(store, 'p_1');
  const work = failing.releaseWith(async q => {
    await q.run("INSERT INTO no_such_table VALUES ('never')");
  });
  await expect(work).rejects.toThrow(/no_such_table/);
  // The write rolled back: the lease is still this holder's until release() gives it back.
  expect(await leaseRows()).toEqual([{ holder_id: failing.holderId }]);
  await failing.release();
  expect(await leaseRows()).toEqual([]);

  const lease = await acquireRunLease(store, 'p_1');
  let writes = 0;
  const write = store.write.bind(store);
  store.write = (fn => ((writes += 1), write(fn))) as Store['write'];
  try {
    const result = await lease.releaseWith(async q => (await q.get<{ n: number }>('SELECT 41 + 1 AS n'))!.n);
    expect(result).toBe(42);
    await lease.release();
    expect(writes).toBe(1);
  } finally {
    store.write = write;
  }
  expect(await leaseRows()).toEqual([]);
  // Free for the next runner at once.
  await (await acquireRunLease(store, 'p_1')).release();
});
