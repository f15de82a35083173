/**
 * Child process of `bench:retrieval`: the first retrieval in a fresh process (a kernel just
 * started), on an existing store. Prints one JSON line: ms from opening the store to the first
 * retrieval's answer, and the process's RSS after it. Args: <store home> <'snapshot' | 'rebuild'>;
 * `rebuild` deletes the index snapshot first, as every cold start was before snapshots.
 */
import * as path from 'path';
import { Store } from '../store';
import { retrieve } from '../retrieval/retrieve';
import { forgetTermIndex } from '../retrieval/term-index';

async function main(): Promise<void> {
  const [home, mode] = process.argv.slice(2);
  if (mode === 'rebuild') forgetTermIndex(path.resolve(home, 'store.duckdb'), { withSnapshot: false });
  const started = performance.now();
  const store = await Store.open({ home });
  await retrieve(store, { stage: 'planning', query: 'small baseline tabular model budget seed', tags: ['tag3'], projectId: 'proj_3' });
  const ms = performance.now() - started;
  const rssMiB = process.memoryUsage().rss / 2 ** 20;
  await store.close();
  process.stdout.write(JSON.stringify({ ms, rssMiB }) + '\n');
}

main().catch(error => {
  console.error(error);
  process.exit(1);
});
