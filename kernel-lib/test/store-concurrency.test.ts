/**
 * Store across processes: 8 child `node` processes writing to one file while another reads,
 * hand-over in arrival order, the outbox that keeps durable writes the store could not take,
 * a writer killed with SIGKILL mid-transaction, and a holder that outlasts lockTimeoutMs. Children run the
 * store compiled from src/ in beforeAll (store-children.ts).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { INSERT_ROWS, Store, StoreLockedError, StoreWriteQueuedError, outboxDirOf } from '../src/store';
import { compileStore, startChild } from './store-children';
import { LearningQueue, recordFeedback, type FeedbackLearners } from '../src/feedback';

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

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

it('commits all of 8 processes x 200 durable feedback writes while a reader reads and idles', async () => {
  const file = path.join(dir, 'store.duckdb');
  // Create and migrate the file first so the children race on writes, not on creation.
  await (await Store.open({ path: file })).close();
  const tags = Array.from({ length: 8 }, (_, i) => `w${i}`);
  const reader = startChild('store-busy-reader.js', [path.join(buildDir, 'store'), file, '1600', '240000']);
  const children = tags.map(tag => startChild('store-durable-writer.js', [path.join(buildDir, 'store'), file, '200', tag]));
  const outcomes = await Promise.all(children.map(child => child.exited));
  outcomes.forEach((outcome, i) => {
    if (outcome.code !== 0) throw new Error(`writer ${i} failed (${JSON.stringify(outcome)}): ${children[i].stderr}`);
  });
  const readerOutcome = await reader.exited;
  if (readerOutcome.code !== 0) throw new Error(`reader failed: ${reader.stderr}`);
  const reports = children.map(child => JSON.parse(child.lines[child.lines.length - 1]));
  const readerReport = JSON.parse(reader.lines[reader.lines.length - 1]);
  const writes = reports.flatMap(r => r.writeMs as number[]).sort((a, b) => a - b);
  console.log(
    `8 writers x 200 durable writes + 1 reader: write p50 ${percentile(writes, 50)} ms, p99 ${percentile(writes, 99)} ms, ` +
      `max ${writes[writes.length - 1]} ms; reader ${readerReport.reads} reads, slowest ${readerReport.maxReadMs} ms\n` +
      reports.map(r => `  ${r.tag}: acquisitions=${r.acquisitions} lockWaits=${r.lockWaits} maxWaitMs=${r.maxWaitMs} queued=${r.queued}`).join('\n')
  );
  // Every write committed at once: none had to go to the outbox.
  expect(reports.map(r => r.queued)).toEqual(tags.map(() => 0));
  // The processes really took turns.
  expect(reports.filter(r => r.lockWaits > 0).length).toBeGreaterThanOrEqual(6);
  expect(readerReport.seen).toBe(1600);

  const store = await Store.open({ path: file });
  try {
    const counts = await store.read(q => q.all('SELECT author, count(*)::INTEGER AS n FROM feedback GROUP BY author ORDER BY author'));
    expect(counts).toEqual(tags.map(author => ({ author, n: 200 })));
    expect(await store.read(q => q.get('SELECT count(DISTINCT id)::INTEGER AS n FROM feedback'))).toEqual({ n: 1600 });
  } finally {
    await store.close();
  }
}, 240_000);

it('hands the file over in arrival order', async () => {
  const file = path.join(dir, 'store.duckdb');
  await (await Store.open({ path: file })).close();
  const holder = startChild('store-holder.js', [file]);
  await holder.waitForLine(line => line === 'held');
  const waiters: ReturnType<typeof startChild>[] = [];
  for (const tag of ['first', 'second', 'third']) {
    waiters.push(startChild('store-durable-writer.js', [path.join(buildDir, 'store'), file, '1', tag]));
    // Each is queued (it printed nothing yet and holds a ticket) before the next one starts.
    const tickets = () => fs.readdirSync(`${file}.waiters`).filter(name => /^\d+-\d+$/.test(name)).length;
    const deadline = Date.now() + 20_000;
    while (!fs.existsSync(`${file}.waiters`) || tickets() < waiters.length) {
      if (Date.now() > deadline) throw new Error(`waiter ${tag} never queued`);
      await new Promise(resolve => setTimeout(resolve, 20));
    }
  }
  holder.process.kill('SIGKILL');
  await holder.exited;
  await Promise.all(waiters.map(w => w.exited));
  const store = await Store.open({ path: file });
  try {
    const order = await store.read(q => q.all<{ author: string }>('SELECT author FROM feedback ORDER BY created_at'));
    expect(order.map(r => r.author)).toEqual(['first', 'second', 'third']);
  } finally {
    await store.close();
  }
}, 60_000);

describe('the outbox', () => {
  const feedbackRow = (id: string) => ({ id, stage_run_id: 'sr_1', text: `text of ${id}`, author: 'me', origin: 'code', created_at: new Date() });

  it('keeps a durable write the store could not take, and the next open writes it once', async () => {
    const file = path.join(dir, 'store.duckdb');
    await (await Store.open({ path: file })).close();
    const store = await Store.open({ path: file, lockTimeoutMs: 300 });
    // Let the idle store release the file so the holder can take it.
    await new Promise(resolve => setTimeout(resolve, 300));
    const holder = startChild('store-holder.js', [file]);
    await holder.waitForLine(line => line === 'held');
    let error: unknown;
    try {
      error = await store.writeDurable(INSERT_ROWS, { inserts: [{ table: 'feedback', rows: [feedbackRow('fb_kept')] }] }).catch(e => e);
    } finally {
      holder.process.kill('SIGKILL');
      await holder.exited;
    }
    expect(error).toBeInstanceOf(StoreWriteQueuedError);
    const queued = error as StoreWriteQueuedError;
    expect(queued.message).toMatch(/could not be committed .* Nothing is lost: it is kept in .*\.duckdb\.outbox\/\d+-\d+\.jsonl/);
    expect(queued.cause).toBeInstanceOf(StoreLockedError);
    const lines = fs
      .readFileSync(queued.outboxFile, 'utf8')
      .trim()
      .split('\n')
      .map(line => JSON.parse(line));
    expect(lines).toEqual([expect.objectContaining({ id: queued.entryId, kind: 'store.insert-rows' })]);
    expect(store.outbox.pending).toBe(1);
    await store.close();

    const again = await Store.open({ path: file });
    try {
      expect(await again.read(q => q.all('SELECT id, text FROM feedback'))).toEqual([{ id: 'fb_kept', text: 'text of fb_kept' }]);
      expect(fs.existsSync(queued.outboxFile)).toBe(false);
      expect((await again.replayOutbox()).applied).toBe(0);
    } finally {
      await again.close();
    }
  }, 60_000);

  it('keeps feedback the store could not take, and the next open stores it with its learning job', async () => {
    const file = path.join(dir, 'store.duckdb');
    const setup = await Store.open({ path: file });
    await setup.write(q =>
      q.run(`INSERT INTO stage_runs (id, project_id, run_id, stage, status, attempt) VALUES ('sr_1', 'p_1', 'run_1', 'review', 'done', 1)`)
    );
    await setup.close();
    const store = await Store.open({ path: file, lockTimeoutMs: 300 });
    await new Promise(resolve => setTimeout(resolve, 300));
    const holder = startChild('store-holder.js', [file]);
    await holder.waitForLine(line => line === 'held');
    // The queue never runs here: only its job row matters.
    const queue = new LearningQueue(store, {} as FeedbackLearners, { run: false });
    let error: unknown;
    try {
      error = await recordFeedback(store, { id: 'fb_locked', stageRunId: 'sr_1', text: 'Use a stronger baseline.', author: 'me' }, { queue }).catch(e => e);
    } finally {
      holder.process.kill('SIGKILL');
      await holder.exited;
    }
    expect(error).toBeInstanceOf(StoreWriteQueuedError);
    expect((error as StoreWriteQueuedError).kind).toBe('feedback.record');
    await store.close();

    const again = await Store.open({ path: file });
    try {
      expect(await again.read(q => q.all('SELECT id, text, author FROM feedback'))).toEqual([
        { id: 'fb_locked', text: 'Use a stronger baseline.', author: 'me' }
      ]);
      expect(await again.read(q => q.all('SELECT feedback_id, status FROM learning_jobs'))).toEqual([{ feedback_id: 'fb_locked', status: 'queued' }]);
    } finally {
      await again.close();
    }
  }, 60_000);

  it('applies an entry once even when its file stays (its owner lives), and keeps refused entries with why', async () => {
    const file = path.join(dir, 'store.duckdb');
    await (await Store.open({ path: file })).close();
    // An outbox file of another live process (a holder child that never touches the store).
    const owner = startChild('store-holder.js', [path.join(dir, 'other.duckdb')]);
    await owner.waitForLine(line => line === 'held');
    try {
      fs.mkdirSync(outboxDirOf(file), { recursive: true });
      const entry = (id: string, rows: unknown[]) =>
        JSON.stringify({
          id,
          kind: 'store.insert-rows',
          payload: { inserts: [{ table: 'feedback', rows }] },
          queued_at: new Date().toISOString(),
          error: 'locked'
        });
      const outboxFile = path.join(outboxDirOf(file), `${owner.process.pid}-1.jsonl`);
      fs.writeFileSync(outboxFile, `${entry('obx_good', [feedbackRow('fb_a')])}\n${entry('obx_bad', [{ id: 'fb_b', text: 'no author' }])}\n{"torn":`);
      for (let open = 0; open < 2; open++) {
        const store = await Store.open({ path: file });
        try {
          expect(await store.read(q => q.all('SELECT id FROM feedback'))).toEqual([{ id: 'fb_a' }]);
          expect(await store.read(q => q.all('SELECT id, error IS NOT NULL AS refused, payload FROM outbox_entries ORDER BY id'))).toEqual([
            { id: 'obx_bad', refused: true, payload: { inserts: [{ table: 'feedback', rows: [{ id: 'fb_b', text: 'no author' }] }] } },
            { id: 'obx_good', refused: false, payload: null }
          ]);
        } finally {
          await store.close();
        }
        expect(fs.existsSync(outboxFile)).toBe(true);
      }
    } finally {
      owner.process.kill('SIGKILL');
      await owner.exited;
    }
    // Its owner gone, the next open deletes the file and forgets the applied entry's marker.
    const store = await Store.open({ path: file });
    try {
      expect(fs.readdirSync(outboxDirOf(file))).toEqual([]);
      expect(await store.read(q => q.all('SELECT id FROM outbox_entries'))).toEqual([{ id: 'obx_bad' }]);
    } finally {
      await store.close();
    }
  }, 60_000);

  it('throws a data error as it is and keeps nothing', async () => {
    const file = path.join(dir, 'store.duckdb');
    const store = await Store.open({ path: file });
    try {
      await expect(store.writeDurable(INSERT_ROWS, { inserts: [{ table: 'feedback', rows: [{ id: 'fb_x' }] }] })).rejects.toThrow(/NOT NULL/);
      expect(fs.existsSync(outboxDirOf(file))).toBe(false);
    } finally {
      await store.close();
    }
  });
});

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
