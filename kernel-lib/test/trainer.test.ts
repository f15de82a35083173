/**
 * The trainer client against the real Python trainer (the repository's .venv) on a tiny random
 * Llama built locally: progress lines → live display, adapter registration and activation,
 * continuation, rollback, and a failed round that leaves the active adapter alone.
 */
import { existsSync, promises as fs } from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { DisplayMessage } from '../src/display';
import { Store } from '../src/store';
import { activeAdapter, listAdapters, train, trainerCommand, TrainingError, useAdapter, type TrainProgress } from '../src/trainer';
import { writeTinyModel } from './tiny-model';

jest.setTimeout(240_000);

const REPO = path.resolve(__dirname, '..', '..');

const ROWS = [
  { id: 'r1', x: 'topic t1', y: 'alpha a1 a2', feedback: 'likes alpha', stage: 'planning' },
  { id: 'r2', x: 'topic t2', y: 'beta b1', feedback: 'likes alpha', stage: 'planning' },
  { id: 'r3', x: 'topic t3', y: 'beta b2', feedback: '', stage: 'planning' }
];

let home: string;
let tinyModel: string;
let store: Store;
const exportRows = (rows: object[]) => async (_store: Store, file: string) => {
  await fs.writeFile(file, rows.map(r => JSON.stringify(r)).join('\n') + '\n');
  return rows.length;
};

beforeAll(async () => {
  home = await fs.mkdtemp(path.join(os.tmpdir(), 'nr-trainer-'));
  tinyModel = path.join(home, 'tiny-llama');
  writeTinyModel(tinyModel);
  store = await Store.open({ home });
});

afterAll(async () => {
  await store?.close();
  await fs.rm(home, { recursive: true, force: true });
});

test('finds the trainer in the repository venv, or NANORESEARCH_PYTHON', () => {
  expect(trainerCommand({})).toEqual([path.join(REPO, '.venv', 'bin', 'nanoresearch-trainer')]);
  expect(trainerCommand({ NANORESEARCH_PYTHON: '/opt/py' })).toEqual(['/opt/py', '-m', 'nanoresearch_trainer.cli']);
  expect(() => trainerCommand({}, '/')).toThrow(/NANORESEARCH_PYTHON/);
});

test('a round trains, shows progress in place, registers and activates the adapter; the next continues it', async () => {
  const progress: TrainProgress[] = [];
  const messages: Array<{ message: DisplayMessage; update: boolean }> = [];
  const first = await train(
    { store, home },
    {
      steps: 3,
      base: tinyModel,
      trainerArgs: ['--rank', '4', '--alpha', '8', '--threads', '1'],
      onProgress: p => progress.push(p),
      display: (message, update) => messages.push({ message, update }),
      exportExamples: exportRows(ROWS)
    }
  );
  expect(progress.map(p => p.step)).toEqual([1, 2, 3]);
  expect(progress.every(p => p.steps === 3 && Number.isFinite(p.loss) && p.tokensPerS > 0)).toBe(true);
  expect(first.version).toBe('v1');
  expect(first.manifest).toMatchObject({ version: 'v1', steps: 3, rank: 4, examples: 3, examples_used: 2, parent_version: null });
  expect(new Set(messages.map(m => m.message.transient.display_id)).size).toBe(1);
  expect(messages[0].update).toBe(false);
  expect(messages.slice(1).every(m => m.update)).toBe(true);
  expect(String(messages[2].message.data['text/markdown'])).toMatch(/step 2\/3/);
  // The progress bar ends as the round's result card: version, the facts, the loss curve.
  const card = messages.at(-1)!.message.data;
  expect(String(card['text/markdown'])).toMatch(/^\*\*Planner adapter v1 trained\*\* — the planner now uses it/);
  expect(String(card['text/markdown'])).toContain('| 3 | 2 of 3 |');
  expect(String(card['text/html'])).toContain('<img alt="loss per step" src="data:image/svg+xml;base64,');

  const active = await activeAdapter(store);
  expect(active).toMatchObject({
    version: 'v1',
    ggufPath: path.join(home, 'adapters', 'v1', 'adapter.gguf'),
    peftDir: path.join(home, 'adapters', 'v1', 'peft')
  });
  expect(existsSync(active!.ggufPath)).toBe(true);
  expect((await fs.readdir(path.join(home, 'adapters'))).filter(f => f.endsWith('.jsonl'))).toEqual([]);

  const second = await train({ store, home }, { steps: 1, base: tinyModel, trainerArgs: ['--threads', '1'], display: null, exportExamples: exportRows(ROWS) });
  expect(second.version).toBe('v2');
  expect(second.manifest.parent_version).toBe('v1');
  expect(second.manifest.rank).toBe(4); // continued from v1's adapter, not a fresh rank-16 one
  expect((await listAdapters(store)).map(a => [a.version, a.active])).toEqual([
    ['v1', false],
    ['v2', true]
  ]);

  await useAdapter(store, 'v1');
  expect((await activeAdapter(store))?.version).toBe('v1');
  await useAdapter(store, null);
  expect(await activeAdapter(store)).toBeNull();
  await expect(useAdapter(store, 'v9')).rejects.toThrow(/no adapter 'v9'; known versions: v1, v2/);
  await useAdapter(store, 'v2');
});

test('a failed round reports the trainer error and leaves the active adapter and the table unchanged', async () => {
  const before = await listAdapters(store);
  const messages: DisplayMessage[] = [];
  const bad = [{ ...ROWS[0] }, { id: 'bad', x: 'x', y: '', feedback: 'f' }];
  await expect(train({ store, home }, { base: tinyModel, display: m => messages.push(m), exportExamples: exportRows(bad) })).rejects.toThrow(
    /sdpo-examples-\d+\.jsonl:2: row does not match sdpo-example\.schema\.json at y.*active adapter is unchanged/s
  );
  await expect(train({ store, home }, { base: path.join(home, 'missing-model'), display: null, exportExamples: exportRows(ROWS) })).rejects.toBeInstanceOf(
    TrainingError
  );
  expect(await listAdapters(store)).toEqual(before);
  expect((await activeAdapter(store))?.version).toBe('v2');
  expect(String(messages.at(-1)!.data['text/markdown'])).toMatch(/failed/);
});

test('a cancelled round kills the trainer and registers nothing', async () => {
  const before = await listAdapters(store);
  const controller = new AbortController();
  const run = train(
    { store, home },
    {
      steps: 100_000,
      base: tinyModel,
      display: null,
      exportExamples: exportRows(ROWS),
      onProgress: () => controller.abort(),
      signal: controller.signal
    }
  );
  await expect(run).rejects.toThrow(/cancelled; the active adapter is unchanged/);
  expect(await listAdapters(store)).toEqual(before);
});

test('no examples: a clear error before the trainer starts, naming the cause', async () => {
  await expect(train({ store, home }, { display: null, exportExamples: exportRows([]) })).rejects.toThrow(/nothing to train on: there is no feedback yet/);
});
