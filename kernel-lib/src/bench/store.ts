/**
 * Store benchmark: `npm run bench:store` (after `npm run build`). In a temp store it measures
 * single-row write() transactions, bulk appendRows of 100k memories, and point queries by id
 * over those 100k memories, and prints the figures as a table.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Store } from '../store';

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
    rows.push([`point query by id, one read() each (${total?.n} memories)`, `p50 ${percentile(perCall, 50).toFixed(2)} ms, p99 ${percentile(perCall, 99).toFixed(2)} ms`]);
    rows.push([`point query by id, ${POINT_QUERIES} inside one read()`, `p50 ${percentile(inOneRead, 50).toFixed(2)} ms, p99 ${percentile(inOneRead, 99).toFixed(2)} ms`]);
    rows.push(['lock acquisitions in this process', String(store.stats.acquisitions)]);
  } finally {
    await store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const width = Math.max(...rows.map(([name]) => name.length));
  console.log(`Store benchmark (DuckDB, ${os.cpus().length} CPUs, Node ${process.version})`);
  console.log(`${'measure'.padEnd(width)} | result`);
  console.log(`${'-'.repeat(width)}-|-${'-'.repeat(40)}`);
  for (const [name, value] of rows) console.log(`${name.padEnd(width)} | ${value}`);
}

main().catch(error => {
  console.error(error);
  process.exit(1);
});
