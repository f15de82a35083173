/**
 * Store across processes: several child `node` processes writing to one file, a writer killed
 * with SIGKILL mid-transaction, and a holder that outlasts lockTimeoutMs. Children run the
 * store compiled from src/ in beforeAll (store-children.ts).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Store, StoreLockedError } from '../src/store';
import { compileStore, startChild } from './store-children';

let buildDir: string;
let dir: string;

beforeAll(() => {
  buildDir = compileStore();
});

afterAll(() => fs.rmSync(buildDir, { recursive: true, force: true }));

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nr-store-mp-'));
});

afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

it('lets 4 processes write 200 rows each to one store, one write() per row', async () => {
  const file = path.join(dir, 'store.duckdb');
  // Create and migrate the file first so the children race on writes, not on creation.
  await (await Store.open({ path: file })).close();
  const children = ['w0', 'w1', 'w2', 'w3'].map(tag => startChild('store-writer.js', [path.join(buildDir, 'store'), file, '200', tag]));
  const outcomes = await Promise.all(children.map(child => child.exited));
  outcomes.forEach((outcome, i) => {
    if (outcome.code !== 0) throw new Error(`writer ${i} failed (${JSON.stringify(outcome)}): ${children[i].stderr}`);
  });
  const reports = children.map(child => JSON.parse(child.lines[child.lines.length - 1]));
  const worstWaitMs = Math.max(...reports.map(r => r.maxWaitMs));
  const slowestWriteMs = Math.max(...reports.map(r => r.slowestWriteMs));
  console.log(
    `4 writers x 200 rows: worst single lock wait ${worstWaitMs} ms, slowest write() ${slowestWriteMs} ms\n` +
      reports.map(r => `  ${r.tag}: acquisitions=${r.acquisitions} lockWaits=${r.lockWaits} maxWaitMs=${r.maxWaitMs} totalWaitMs=${r.totalWaitMs}`).join('\n')
  );
  // The processes really took turns: every writer had to wait for another at least once.
  expect(reports.filter(r => r.lockWaits > 0).length).toBeGreaterThanOrEqual(3);
  expect(worstWaitMs).toBeLessThan(30_000);

  const store = await Store.open({ path: file });
  try {
    const counts = await store.read(q => q.all('SELECT author, count(*) AS n FROM feedback GROUP BY author ORDER BY author'));
    expect(counts).toEqual(['w0', 'w1', 'w2', 'w3'].map(author => ({ author, n: 200 })));
    expect(await store.read(q => q.get('SELECT count(DISTINCT id) AS n FROM feedback'))).toEqual({ n: 800 });
  } finally {
    await store.close();
  }
}, 120_000);

it('keeps exactly the committed rows when a writer is killed mid-transaction', async () => {
  const file = path.join(dir, 'store.duckdb');
  const child = startChild('store-killed-writer.js', [path.join(buildDir, 'store'), file, '25']);
  await child.waitForLine(line => line === 'in-transaction');
  child.process.kill('SIGKILL');
  expect((await child.exited).signal).toBe('SIGKILL');
  const committed = child.lines.filter(line => line.startsWith('committed ')).map(line => line.slice('committed '.length));
  expect(committed.length).toBe(25);

  const store = await Store.open({ path: file, lockTimeoutMs: 5000 });
  try {
    const rows = await store.read(q => q.all<{ id: string; text: string }>('SELECT id, text FROM feedback ORDER BY id'));
    expect(rows.map(r => r.id).sort()).toEqual([...committed].sort());
    expect(rows.every(r => r.text.startsWith('committed '))).toBe(true);
  } finally {
    await store.close();
  }
}, 60_000);

it('fails with StoreLockedError naming the file and the holder after lockTimeoutMs', async () => {
  const file = path.join(dir, 'store.duckdb');
  await (await Store.open({ path: file })).close();
  const holder = startChild('store-holder.js', [file]);
  try {
    await holder.waitForLine(line => line === 'held');
    const started = Date.now();
    const error = await Store.open({ path: file, lockTimeoutMs: 400 }).then(
      () => undefined,
      (e: unknown) => e
    );
    expect(error).toBeInstanceOf(StoreLockedError);
    const locked = error as StoreLockedError;
    expect(locked.file).toBe(file);
    expect(locked.holderPid).toBe(holder.process.pid);
    expect(locked.waitedMs).toBeGreaterThanOrEqual(400);
    expect(Date.now() - started).toBeLessThan(3000);
    expect(locked.message).toContain(`The store ${file} is locked by process ${holder.process.pid}`);
    expect(locked.message).toMatch(/raise lockTimeoutMs/);
  } finally {
    holder.process.kill('SIGKILL');
    await holder.exited;
  }
  // Once the holder is gone the store opens again.
  const store = await Store.open({ path: file, lockTimeoutMs: 5000 });
  expect(await store.read(q => q.get('SELECT count(*) AS n FROM feedback'))).toEqual({ n: 0 });
  await store.close();
}, 60_000);
