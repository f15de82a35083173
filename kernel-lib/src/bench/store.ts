/**
 * Store benchmark: `npm run bench:store` (after `npm run build`). In a temp store it measures
 * single-row write() transactions, bulk appendRows of 100k memories, point queries by id over
 * those 100k memories, the MemoryBank write path (one remember() at a time as a caller awaiting
 * each one does, rememberAll batches, concurrent remember() calls) with the size of its store
 * against the same rows built in bulk, and contention: 8 processes x 200 durable feedback
 * writes while another process reads. Prints the figures as a table.
 */
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Store } from '../store';
import { MemoryBank, type RememberInput } from '../memory';
import { ALWAYS_CANDIDATE_KINDS } from '../retrieval/weights';
import { indexDocuments, memoryDoc } from '../retrieval/terms';
import { textGenerator } from './retrieval';
import { BENCH_STAGE_RUN } from './store-contention-child';

const SINGLE_ROW_SAMPLE = 2_000;
const BULK_ROWS = 100_000;
const POINT_QUERIES = 1_000;

function memory(i: number, prefix: string): Record<string, unknown> {
  return {
    id: `${prefix}_${String(i).padStart(6, '0')}`,
    kind: i % 3 === 0 ? 'failed_direction' : 'user_constraint',
    scope: i % 10 === 0 ? 'global' : `prj_${i % 97}`,
    key: `memory key ${i}`,
    content: `Memory ${i}: prefer small MLP baselines with early stopping when the budget is under ${i % 8} GPU hours.`,
    tags: ['bench', `t${i % 50}`],
    stages: ['planning', 'experiment'],
    conditions: { budget: `${i % 8}h`, data: 'tabular' },
    importance: (i % 100) / 100,
    confidence: 0.5,
    status: 'active',
    source: 'bench',
    created_at: new Date(Date.UTC(2024, 0, 1) + i * 1000),
    updated_at: new Date(Date.UTC(2024, 0, 1) + i * 1000)
  };
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nr-bench-store-'));
  const store = await Store.open({ path: path.join(dir, 'store.duckdb') });
  const rows: Array<[string, string]> = [];
  try {
    let started = performance.now();
    for (let i = 0; i < SINGLE_ROW_SAMPLE; i++) {
      const record = memory(i, 'single');
      await store.write(q =>
        q.run(
          `INSERT INTO memories (id, kind, scope, key, content, tags, stages, conditions, importance, confidence, status, source, created_at, updated_at)
           VALUES ($id, $kind, $scope, $key, $content, $tags, $stages, $conditions, $importance, $confidence, $status, $source, $created_at, $updated_at)`,
          record
        )
      );
    }
    let seconds = (performance.now() - started) / 1000;
    rows.push([`single-row write() transactions (${SINGLE_ROW_SAMPLE} rows)`, `${Math.round(SINGLE_ROW_SAMPLE / seconds)} rows/s`]);

    const bulk = Array.from({ length: BULK_ROWS }, (_, i) => memory(i, 'bulk'));
    started = performance.now();
    await store.write(q => q.appendRows('memories', bulk));
    seconds = (performance.now() - started) / 1000;
    rows.push([`bulk appendRows (${BULK_ROWS} rows, one write())`, `${Math.round(BULK_ROWS / seconds)} rows/s (${seconds.toFixed(2)} s)`]);

    const ids = Array.from({ length: POINT_QUERIES }, (_, i) => `bulk_${String((i * 7919) % BULK_ROWS).padStart(6, '0')}`);
    const perCall: number[] = [];
    for (const id of ids) {
      const t = performance.now();
      const found = await store.read(q => q.get('SELECT * FROM memories WHERE id = $1', [id]));
      perCall.push(performance.now() - t);
      if (!found) throw new Error(`point query found no memory ${id}`);
    }
    const inOneRead: number[] = [];
    await store.read(async q => {
      for (const id of ids) {
        const t = performance.now();
        await q.get('SELECT * FROM memories WHERE id = $1', [id]);
        inOneRead.push(performance.now() - t);
      }
    });
    const total = await store.read(q => q.get<{ n: number }>('SELECT count(*) AS n FROM memories'));
    perCall.sort((a, b) => a - b);
    inOneRead.sort((a, b) => a - b);
    rows.push([
      `point query by id, one read() each (${total?.n} memories)`,
      `p50 ${percentile(perCall, 50).toFixed(2)} ms, p99 ${percentile(perCall, 99).toFixed(2)} ms`
    ]);
    rows.push([
      `point query by id, ${POINT_QUERIES} inside one read()`,
      `p50 ${percentile(inOneRead, 50).toFixed(2)} ms, p99 ${percentile(inOneRead, 99).toFixed(2)} ms`
    ]);
    rows.push(['lock acquisitions in this process', String(store.stats.acquisitions)]);
  } finally {
    await store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  rows.push(...(await memoryWrites()));
  rows.push(...(await contention(8, 200)));
  const width = Math.max(...rows.map(([name]) => name.length));
  console.log(`Store benchmark (DuckDB, ${os.cpus().length} CPUs, Node ${process.version})`);
  console.log(`${'measure'.padEnd(width)} | result`);
  console.log(`${'-'.repeat(width)}-|-${'-'.repeat(40)}`);
  for (const [name, value] of rows) console.log(`${name.padEnd(width)} | ${value}`);
}

/** Inputs of `n` project memories of ~40 words (seeded), over 10 projects. */
function memoryInputs(n: number, seed: number): RememberInput[] {
  const gen = textGenerator(seed);
  return Array.from({ length: n }, (_, i) => ({
    kind: 'project_context' as const,
    projectId: `prj_${i % 10}`,
    content: `${gen.text(40)} ${i}`,
    tags: [`t${i % 50}`],
    stages: ['planning' as const]
  }));
}

async function withStore<T>(fn: (store: Store, file: string) => Promise<T>): Promise<T> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nr-bench-memory-'));
  const file = path.join(dir, 'store.duckdb');
  const store = await Store.open({ path: file });
  try {
    return await fn(store, file);
  } finally {
    await store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const MiB = 2 ** 20;

/** MemoryBank write rates, and the size of a store it built against the same rows written in bulk. */
async function memoryWrites(): Promise<Array<[string, string]>> {
  const out: Array<[string, string]> = [];
  const rate = (n: number, ms: number) => `${Math.round((n / ms) * 1000)} memories/s`;
  await withStore(async store => {
    const bank = new MemoryBank(store);
    const inputs = memoryInputs(300, 1);
    const started = performance.now();
    for (const input of inputs) await bank.remember(input);
    out.push(["MemoryBank, today's path: remember() awaited one by one (300)", rate(inputs.length, performance.now() - started)]);
  });
  await withStore(async store => {
    const bank = new MemoryBank(store);
    const inputs = memoryInputs(1_000, 2);
    const started = performance.now();
    await Promise.all(inputs.map(input => bank.remember(input)));
    out.push(['MemoryBank: 1,000 concurrent remember() calls (batched into shared commits)', rate(inputs.length, performance.now() - started)]);
  });
  for (const n of [1_000, 10_000]) {
    const inputs = memoryInputs(n, 3);
    const real = await withStore(async (store, file) => {
      const bank = new MemoryBank(store);
      const started = performance.now();
      for (let i = 0; i < n; i += 100) await bank.rememberAll(inputs.slice(i, i + 100));
      const ms = performance.now() - started;
      await store.close();
      return { ms, bytes: fs.statSync(file).size, rows: await rowsOf(file) };
    });
    // The same memories, written as the benches used to build their stores.
    const bulk = await withStore(async (store, file) => {
      const memories = await withStore(async other => new MemoryBank(other).rememberAll(inputs));
      await store.write(async q => {
        await q.appendRows('memories', memories as unknown as Record<string, unknown>[]);
        await indexDocuments(
          q,
          'memory',
          memories.map(m => memoryDoc(m, ALWAYS_CANDIDATE_KINDS)),
          { fresh: true }
        );
      });
      await store.close();
      return { bytes: fs.statSync(file).size };
    });
    out.push([`MemoryBank: rememberAll in batches of 100 (${n.toLocaleString('en')})`, rate(n, real.ms)]);
    out.push([
      `  its store against the same rows built in bulk (${n.toLocaleString('en')})`,
      `${(real.bytes / MiB).toFixed(1)} MiB vs ${(bulk.bytes / MiB).toFixed(1)} MiB = ${(real.bytes / bulk.bytes).toFixed(2)}x (target ≤ 1.5x; ${real.rows} memories)`
    ]);
  }
  return out;
}

async function rowsOf(file: string): Promise<number> {
  const store = await Store.open({ path: file });
  try {
    return (await store.read(q => q.get<{ n: number }>('SELECT count(*)::INTEGER AS n FROM memories')))?.n ?? 0;
  } finally {
    await store.close();
  }
}

function runChild(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(__dirname, 'store-contention-child.js'), ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', chunk => (out += chunk));
    child.on('exit', code =>
      code === 0 ? resolve(out.trim().split('\n').pop() as string) : reject(new Error(`contention child ${args.join(' ')} exited ${code}`))
    );
  });
}

/** `writers` processes x `count` recordFeedback() calls, one transaction each, while another process reads. */
async function contention(writers: number, count: number): Promise<Array<[string, string]>> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nr-bench-contention-'));
  const file = path.join(dir, 'store.duckdb');
  try {
    const setup = await Store.open({ path: file });
    await setup.write(q =>
      q.run(`INSERT INTO stage_runs (id, project_id, run_id, stage, status, attempt) VALUES ($1, 'prj_bench', 'run_bench', 'review', 'done', 1)`, [
        BENCH_STAGE_RUN
      ])
    );
    await setup.close();
    const started = performance.now();
    const reader = runChild(['reader', file, String(writers * count)]);
    const reports = (await Promise.all(Array.from({ length: writers }, (_, i) => runChild(['writer', file, String(count), `w${i}`])))).map(
      line => JSON.parse(line) as { writeMs: number[]; queued: number; maxWaitMs: number; lockWaits: number }
    );
    const read = JSON.parse(await reader) as { reads: number; slowest: number };
    const seconds = (performance.now() - started) / 1000;
    const store = await Store.open({ path: file });
    const committed = (await store.read(q => q.get<{ n: number }>('SELECT count(DISTINCT id)::INTEGER AS n FROM feedback')))?.n ?? 0;
    await store.close();
    const writes = reports.flatMap(r => r.writeMs).sort((a, b) => a - b);
    const queued = reports.reduce((n, r) => n + r.queued, 0);
    return [
      [
        `contention: ${writers} processes x ${count} recordFeedback() writes + 1 reader`,
        `${committed}/${writers * count} committed (${queued} via the outbox) in ${seconds.toFixed(1)} s`
      ],
      [
        '  wait per write (lock wait included)',
        `p50 ${percentile(writes, 50).toFixed(1)} ms, p99 ${percentile(writes, 99).toFixed(0)} ms, max ${writes[writes.length - 1].toFixed(0)} ms; ` +
          `longest lock wait ${Math.max(...reports.map(r => r.maxWaitMs))} ms; reader ${read.reads} reads, slowest ${read.slowest.toFixed(0)} ms`
      ]
    ];
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch(error => {
  console.error(error);
  process.exit(1);
});
