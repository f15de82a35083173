/**
 * The quickstart notebook that `npm start` opens, executed headless the way a user's "Run All"
 * does: the real tslab kernel, the compiled kernel-lib, the embedded models, no LLM endpoint and
 * no network. What must hold: every stage ends `done` with a schema-valid card, the experiment's
 * metrics come from a sandboxed run whose files are in the workspace, every number of the paper is
 * grounded, the feedback becomes a memory, training registers an adapter, and the store records
 * what the cards show. `npm run bench:quickstart` prints the same run's per-stage times. *
 * Needs: scripts/setup (the builds, the tslab kernel in .venv, the models, .venv-experiment).
 * Takes about a quarter of an hour on 2 cores.
 */
import { execFile } from 'child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { STAGE_MIME_TYPE, STAGES, type StageBundle } from '@nanoresearch/schema';
import { llmConfigFromEnv, ggufPathFor } from '../src/llm';
import { quickstartReport, runAllArgs } from '../src/bench/quickstart';
import { checkGrounding } from '../src/grounding';
import { Store } from '../src/store';
import { schemaErrors } from '../src/validate';

const REPO = path.resolve(__dirname, '../..');
const NOTEBOOK = path.join(REPO, 'notebooks', 'quickstart.ipynb');
const JUPYTER = path.join(REPO, '.venv', 'bin', 'jupyter');
/** The bound for the whole notebook on a 2-core machine. */
const EXECUTION_LIMIT_MS = 20 * 60_000;

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
  // The projects' workspaces go under the test's home, not beside the repository's notebook.
  const env: NodeJS.ProcessEnv = { ...process.env, NANORESEARCH_HOME: home, NANORESEARCH_WORKSPACES: path.join(home, 'workspaces') };
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

describe('the quickstart notebook run headless with the embedded models', () => {
  let home: string;
  let executed: Notebook;
  let wallMs: number;

  beforeAll(async () => {
    const config = llmConfigFromEnv({});
    for (const [file, fix] of [
      [path.join(REPO, 'kernel-lib', 'dist', 'index.js'), 'npm run build -w schema && npm run build -w kernel-lib'],
      [JUPYTER, 'scripts/setup (creates .venv with JupyterLab)'],
      [
        path.join(REPO, '.venv', 'share', 'jupyter', 'kernels', 'tslab', 'kernel.json'),
        'node_modules/.bin/tslab install --python=.venv/bin/python --sys-prefix'
      ],
      [path.join(REPO, '.venv-experiment', 'bin', 'python'), 'scripts/setup (creates the experiment environment)'],
      ...Object.values(config.models).map(model => [ggufPathFor(model, config.modelsDir!), 'npm start or scripts/setup (fetches the embedded models)'])
    ]) {
      if (!existsSync(file)) throw new Error(`the quickstart test needs ${file}: run ${fix}`);
    }
    home = mkdtempSync(path.join(os.tmpdir(), 'nanoresearch-quickstart-'));
    const output = path.join(home, 'executed.ipynb');
    const started = Date.now();
    await new Promise<void>((resolve, reject) => {
      execFile(
        JUPYTER,
        runAllArgs(output, NOTEBOOK),
        { cwd: path.dirname(NOTEBOOK), env: offlineEnv(home), timeout: EXECUTION_LIMIT_MS, maxBuffer: 16 * 1024 * 1024 },
        (error, _stdout, stderr) => (error ? reject(new Error(`executing the quickstart failed: ${error.message}\n${stderr.slice(-4000)}`)) : resolve())
      );
    });
    wallMs = Date.now() - started;
    executed = readNotebook(output);
    process.stdout.write(`quickstart notebook executed in ${(wallMs / 1000).toFixed(1)} s\n`);
  }, EXECUTION_LIMIT_MS + 60_000);

  afterAll(async () => {
    // The same figures `npm run bench:quickstart` prints, so a CI log shows where the time went.
    if (executed) process.stdout.write(`${await quickstartReport(home, wallMs / 1000)}\n`);
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

  async function withStore<T>(fn: (store: Store) => Promise<T>): Promise<T> {
    const store = await Store.open({ home });
    try {
      return await fn(store);
    } finally {
      await store.close();
    }
  }

  test('runs every cell without an uncaught error, within the time bound', () => {
    const errors = executed.cells.flatMap(c => (c.outputs ?? []).filter(o => o.output_type === 'error').map(o => `${c.id}: ${o.ename}: ${o.evalue}`));
    expect(errors).toEqual([]);
    expect(wallMs).toBeLessThan(EXECUTION_LIMIT_MS);
  });

  test('every stage cell shows a schema-valid stage card, and every stage is done', () => {
    const byStage = cards();
    expect([...byStage.keys()]).toEqual([...STAGES]);
    for (const [stage, card] of byStage) {
      expect(schemaErrors('stage-bundle', card)).toEqual([]);
      expect(card.stage).toBe(stage);
      expect({ stage, status: card.status, error: card.error ?? null }).toEqual({ stage, status: 'done', error: null });
    }
  });

  test("the experiment's metrics come from a sandboxed run whose files are in the workspace", async () => {
    const run = await withStore(store =>
      store.read(q =>
        q.get<{
          output: {
            metrics: Record<string, Record<string, number>>;
            metrics_path: string;
            isolation: { network: string; filesystem: string };
            attempts: { exitCode: number | null }[];
          };
        }>("select output from stage_runs where stage = 'experiment' and status = 'done'")
      )
    );
    expect(run).toBeDefined();
    const out = run!.output;
    expect(Object.keys(out.metrics).length).toBeGreaterThan(0);
    expect(out.isolation).toMatchObject({ network: 'none', filesystem: 'workspace-only' });
    expect(out.attempts[out.attempts.length - 1].exitCode).toBe(0);
    const project = await withStore(store => store.read(q => q.get<{ workspace: string }>('select workspace from projects')));
    const written = JSON.parse(readFileSync(path.join(project!.workspace, out.metrics_path), 'utf8'));
    expect(written).toEqual(out.metrics);
    const card = cards().get('experiment')!;
    expect((card.outputs.metrics as unknown[]).length).toBeGreaterThan(0);
  });

  test('the paper has every number grounded in the measured artifacts, and its files', async () => {
    const writing = await withStore(store =>
      store.read(q =>
        q.get<{
          status: string;
          output: {
            sections: { name: string; text: string }[];
            ungrounded: unknown[];
            grounding_artifacts: Parameters<typeof checkGrounding>[1];
            paper_path: string;
            tex_path: string;
            bib_path: string;
          } | null;
        }>("select status, output from stage_runs where stage = 'writing'")
      )
    );
    expect(writing?.status).toBe('done');
    const out = writing!.output!;
    // None recorded, and none found when the sections are checked again here.
    expect(out.ungrounded).toEqual([]);
    for (const section of out.sections)
      expect({ section: section.name, ungrounded: checkGrounding(section.text, out.grounding_artifacts).ungrounded }).toEqual({
        section: section.name,
        ungrounded: []
      });
    const project = await withStore(store => store.read(q => q.get<{ workspace: string }>('select workspace from projects')));
    for (const file of [out.paper_path, out.tex_path, out.bib_path]) expect(existsSync(path.join(project!.workspace, file))).toBe(true);
  });

  test('the feedback given in code is stored and becomes a memory; training registers an adapter', async () => {
    const { feedback, memories, adapters } = await withStore(store =>
      store.read(async q => ({
        feedback: await q.all<{ stage_run_id: string; origin: string }>('select stage_run_id, origin from feedback'),
        memories: await q.all<{ kind: string }>("select kind from memories where source = 'feedback'"),
        adapters: await q.all<{ version: string; active: boolean }>('select version, active from adapters')
      }))
    );
    expect(feedback).toEqual([{ stage_run_id: cards().get('ideation')!.stage_run_id, origin: 'code' }]);
    expect(memories.length).toBeGreaterThan(0);
    // The feedback is on ideation, whose plan the planner made under its per-call schema: it trains.
    expect(adapters).toEqual([{ version: 'v1', active: true }]);
  });

  test('the SQL cells show their result as a table', () => {
    const sqlCells = executed.cells.filter(c => c.cell_type === 'code' && /lab\.sql\(/.test(sourceOf(c)));
    expect(sqlCells.length).toBeGreaterThanOrEqual(1);
    for (const cell of sqlCells) expect((cell.outputs ?? []).some(o => o.data?.['text/html'])).toBe(true);
  });
});
