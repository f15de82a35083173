/**
 * The quickstart notebook that `npm start` opens, executed headless the way a user's "Run All"
 * does: the real tslab kernel, the compiled kernel-lib, the embedded SmolLM2 model, no LLM
 * endpoint and no network. The model is weak, so stages may fail; what must hold is that every
 * stage ends with an honest, schema-valid card (done, or failed with a reason), that nothing
 * after a failed stage claims results, and that the store records what the cards show.
 *
 * Needs: `npm run build -w schema && npm run build -w kernel-lib`, the tslab kernel registered in
 * .venv (scripts/setup does both) and models/SmolLM2-135M-Instruct.Q4_1.gguf. Takes minutes.
 */
import { execFile } from 'child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { STAGE_MIME_TYPE, STAGES, type StageBundle } from '@nanoresearch/schema';
import { LOCAL_MODEL_FILE } from '../src/llm/config';
import { Store } from '../src/store';
import { schemaErrors } from '../src/validate';

const REPO = path.resolve(__dirname, '../..');
const NOTEBOOK = path.join(REPO, 'notebooks', 'quickstart.ipynb');
const JUPYTER = path.join(REPO, '.venv', 'bin', 'jupyter');
const EXECUTION_LIMIT_MS = 12 * 60_000;

interface Output {
  output_type: string;
  data?: Record<string, unknown>;
  ename?: string;
  evalue?: string;
}
interface Cell {
  id: string;
  cell_type: 'code' | 'markdown';
  source: string | string[];
  metadata: { nanoresearch?: { stage: string; status: string; feedback: unknown[] } };
  outputs?: Output[];
}
interface Notebook {
  nbformat: number;
  nbformat_minor: number;
  metadata: { kernelspec?: { name: string; language: string }; language_info?: { name: string } };
  cells: Cell[];
}

const sourceOf = (cell: Cell): string => (Array.isArray(cell.source) ? cell.source.join('') : cell.source);
const readNotebook = (file: string): Notebook => JSON.parse(readFileSync(file, 'utf8')) as Notebook;

/** The environment of a fresh `npm start`: no LLM endpoint, model, key or literature source configured. */
function offlineEnv(home: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, NANORESEARCH_HOME: home };
  for (const name of Object.keys(env)) {
    if (/^(NANORESEARCH_(LLM|MODEL|JSON_MODE|LITERATURE)|OPENAI_)/.test(name)) delete env[name];
  }
  return env;
}

describe('the committed quickstart notebook', () => {
  const notebook = readNotebook(NOTEBOOK);
  const stageCells = notebook.cells.filter(c => c.metadata.nanoresearch);

  test('is an nbformat 4.5 TypeScript (tslab) notebook without outputs', () => {
    expect([notebook.nbformat, notebook.nbformat_minor]).toEqual([4, 5]);
    expect(notebook.metadata.kernelspec).toMatchObject({ name: 'tslab', language: 'typescript' });
    expect(notebook.metadata.language_info?.name).toBe('typescript');
    for (const cell of notebook.cells.filter(c => c.cell_type === 'code')) expect(cell.outputs).toEqual([]);
  });

  test('has a set-up cell, then one stage cell per stage in order, each with valid nanoresearch metadata', () => {
    const setup = notebook.cells.findIndex(c => c.cell_type === 'code' && /Lab\.open\s*\(/.test(sourceOf(c)) && /\.project\s*\(/.test(sourceOf(c)));
    expect(setup).toBeGreaterThanOrEqual(0);
    expect(stageCells.map(c => c.metadata.nanoresearch!.stage)).toEqual([...STAGES]);
    for (const cell of stageCells) {
      expect(notebook.cells.indexOf(cell)).toBeGreaterThan(setup);
      expect(schemaErrors('cell-metadata', cell.metadata.nanoresearch)).toEqual([]);
      expect(cell.metadata.nanoresearch).toEqual({ stage: cell.metadata.nanoresearch!.stage, status: 'new', feedback: [] });
      expect(sourceOf(cell)).toMatch(new RegExp(`const ${cell.metadata.nanoresearch!.stage} = await project\\.\\w+\\(\\);`));
    }
  });
});

describe('the quickstart notebook run headless with the embedded model', () => {
  let home: string;
  let executed: Notebook;
  let wallMs: number;

  beforeAll(async () => {
    for (const [file, fix] of [
      [path.join(REPO, 'kernel-lib', 'dist', 'index.js'), 'npm run build -w schema && npm run build -w kernel-lib'],
      [JUPYTER, 'scripts/setup (creates .venv with JupyterLab)'],
      [path.join(REPO, '.venv', 'share', 'jupyter', 'kernels', 'tslab', 'kernel.json'), 'node_modules/.bin/tslab install --python=.venv/bin/python --sys-prefix'],
      [path.join(REPO, 'models', LOCAL_MODEL_FILE), 'npm start or scripts/setup (fetches the embedded model)']
    ]) {
      if (!existsSync(file)) throw new Error(`the quickstart test needs ${file}: run ${fix}`);
    }
    home = mkdtempSync(path.join(os.tmpdir(), 'nanoresearch-quickstart-'));
    const output = path.join(home, 'executed.ipynb');
    const started = Date.now();
    await new Promise<void>((resolve, reject) => {
      execFile(
        JUPYTER,
        ['nbconvert', '--to', 'notebook', '--execute', '--ExecutePreprocessor.kernel_name=tslab', '--ExecutePreprocessor.timeout=600', '--output', output, NOTEBOOK],
        { cwd: path.dirname(NOTEBOOK), env: offlineEnv(home), timeout: EXECUTION_LIMIT_MS, maxBuffer: 16 * 1024 * 1024 },
        (error, _stdout, stderr) => (error ? reject(new Error(`executing the quickstart failed: ${error.message}\n${stderr.slice(-4000)}`)) : resolve())
      );
    });
    wallMs = Date.now() - started;
    executed = readNotebook(output);
    process.stdout.write(`quickstart notebook executed in ${(wallMs / 1000).toFixed(1)} s\n`);
  }, EXECUTION_LIMIT_MS + 60_000);

  afterAll(() => {
    if (home) rmSync(home, { recursive: true, force: true });
  });

  /** The final card of each stage cell (a card is updated in place; the last one shown is the result). */
  function cards(): Map<string, StageBundle> {
    const byStage = new Map<string, StageBundle>();
    for (const cell of executed.cells.filter(c => c.metadata.nanoresearch)) {
      const shown = (cell.outputs ?? []).filter(o => o.data?.[STAGE_MIME_TYPE]).map(o => o.data![STAGE_MIME_TYPE] as StageBundle);
      if (shown.length) byStage.set(cell.metadata.nanoresearch!.stage, shown[shown.length - 1]);
    }
    return byStage;
  }

  test('runs every cell without an uncaught error', () => {
    const errors = executed.cells.flatMap(c => (c.outputs ?? []).filter(o => o.output_type === 'error').map(o => `${c.id}: ${o.ename}: ${o.evalue}`));
    expect(errors).toEqual([]);
    expect(wallMs).toBeLessThan(EXECUTION_LIMIT_MS);
  });

  test('every stage cell shows a schema-valid stage card that is done, or failed with a reason', () => {
    const byStage = cards();
    expect([...byStage.keys()]).toEqual([...STAGES]);
    for (const [stage, card] of byStage) {
      expect(schemaErrors('stage-bundle', card)).toEqual([]);
      expect(card.stage).toBe(stage);
      expect(['done', 'failed']).toContain(card.status);
      if (card.status === 'failed') expect(card.error?.trim()).toBeTruthy();
    }
  });

  test('no stage after a failed one claims results or measured numbers', () => {
    const byStage = cards();
    let failedBefore: string | null = null;
    for (const stage of STAGES) {
      const card = byStage.get(stage)!;
      if (failedBefore) {
        expect({ stage, status: card.status }).toEqual({ stage, status: 'failed' });
        expect(card.error).toMatch(/needs the output of|stopped|budget/);
        expect(card.outputs.metrics ?? []).toEqual([]);
        expect(card.outputs.overall_score).toBeUndefined();
      }
      if (card.status === 'failed') failedBefore ??= stage;
    }
    const experiment = byStage.get('experiment')!;
    if (experiment.status !== 'done') expect(experiment.outputs.metrics ?? []).toEqual([]);
  });

  test('the store holds each stage run the cards show, and the feedback given in code', async () => {
    const store = await Store.open({ home });
    try {
      const runs = await store.read(q => q.all<{ id: string; stage: string; status: string; error: string | null; project_id: string }>('select id, stage, status, error, project_id from stage_runs'));
      const byStage = cards();
      expect(runs).toHaveLength(STAGES.length);
      for (const [stage, card] of byStage) {
        const row = runs.find(r => r.id === card.stage_run_id);
        expect(row).toMatchObject({ stage, status: card.status, project_id: card.project_id });
      }
      const feedback = await store.read(q => q.all<{ stage_run_id: string; origin: string }>('select stage_run_id, origin from feedback'));
      expect(feedback).toEqual([{ stage_run_id: byStage.get('ideation')!.stage_run_id, origin: 'code' }]);
    } finally {
      await store.close();
    }
  });

  test('the SQL cells show their result as a table', () => {
    const sqlCells = executed.cells.filter(c => c.cell_type === 'code' && /lab\.sql\(/.test(sourceOf(c)));
    expect(sqlCells.length).toBeGreaterThanOrEqual(1);
    for (const cell of sqlCells) expect((cell.outputs ?? []).some(o => o.data?.['text/html'])).toBe(true);
  });
});
