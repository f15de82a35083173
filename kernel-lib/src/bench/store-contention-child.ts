/**
 * Child process of `bench:store`'s contention row. `writer <file> <count> <tag>`: `count`
 * recordFeedback() calls (the durable write path), one transaction each; prints the ms each took and how many went to the outbox.
 * `reader <file> <target>`: reads the feedback count, idling past the store's release now and
 * then, until it sees `target` rows; prints how many reads it made and the slowest.
 */
import { recordFeedback } from '../feedback';
import { Store, StoreWriteQueuedError } from '../store';

/** The stage run the parent creates for the feedback to refer to. */
export const BENCH_STAGE_RUN = 'sr_bench';

async function writer(file: string, count: number, tag: string): Promise<void> {
  const store = await Store.open({ path: file });
  const writeMs: number[] = [];
  let queued = 0;
  for (let i = 0; i < count; i++) {
    const started = performance.now();
    try {
      await recordFeedback(store, { id: `${tag}_${i}`, stageRunId: BENCH_STAGE_RUN, text: `feedback ${i} from ${tag}`, author: tag });
    } catch (error) {
      if (!(error instanceof StoreWriteQueuedError)) throw error;
      queued++;
    }
    writeMs.push(performance.now() - started);
  }
  const { maxWaitMs, lockWaits } = store.stats;
  await store.close();
  process.stdout.write(JSON.stringify({ writeMs, queued, maxWaitMs, lockWaits }) + '\n');
}

async function reader(file: string, target: number): Promise<void> {
  const store = await Store.open({ path: file });
  let reads = 0;
  let seen = 0;
  let slowest = 0;
  while (seen < target) {
    const started = performance.now();
    seen = (await store.read(q => q.get<{ n: number }>('SELECT count(*)::INTEGER AS n FROM feedback')))?.n ?? 0;
    slowest = Math.max(slowest, performance.now() - started);
    reads++;
    await new Promise(resolve => setTimeout(resolve, reads % 5 === 0 ? 120 : 10));
  }
  await store.close();
  process.stdout.write(JSON.stringify({ reads, slowest }) + '\n');
}

const [mode, file, a, b] = process.argv.slice(2);
if (require.main === module)
  (mode === 'writer' ? writer(file, Number(a), b) : reader(file, Number(a))).catch(error => {
    console.error(error);
    process.exit(1);
  });
