/**
 * Quickstart benchmark: `npm run bench:quickstart`. Executes notebooks/quickstart.ipynb headless
 * the way "Run All" does (nbconvert on the tslab kernel, the embedded models, offline, a fresh
 * store), then prints each stage's status and wall time, the LLM time and tokens per model, and
 * the total, from the store the run wrote. Needs scripts/setup; takes about a quarter of an hour.
 */
import { execFileSync } from 'child_process';
import { mkdtempSync } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { findRepoRoot } from '../llm';
import { Store } from '../store';

interface StageRow {
  stage: string;
  status: string;
  started_at: string;
  finished_at: string | null;
}

interface ModelRow {
  model: string;
  calls: number;
  prompt_tokens: number;
  completion_tokens: number;
  seconds: number;
}

/** nbconvert's arguments for "Run All" of `notebook` on the tslab kernel, the executed copy written to `output`. */
export function runAllArgs(output: string, notebook: string): string[] {
  return [
    'nbconvert',
    '--to',
    'notebook',
    '--execute',
    '--ExecutePreprocessor.kernel_name=tslab',
    '--ExecutePreprocessor.timeout=900',
    '--output',
    output,
    notebook
  ];
}

/** Executes the quickstart in a fresh home; returns the home and the wall time in seconds. */
function runQuickstart(): { home: string; totalS: number } {
  const repo = findRepoRoot(__dirname);
  if (!repo) throw new Error('run from the repository (models/ not found): npm run bench:quickstart');
  const home = mkdtempSync(path.join(os.tmpdir(), 'nr-bench-quickstart-'));
  // The projects' workspaces go under the run's home, not beside the repository's notebook.
  const env: NodeJS.ProcessEnv = { ...process.env, NANORESEARCH_HOME: home, NANORESEARCH_WORKSPACES: path.join(home, 'workspaces') };
  for (const name of Object.keys(env)) if (/^(NANORESEARCH_(LLM|MODEL|JSON_MODE|LITERATURE)|OPENAI_)/.test(name)) delete env[name];
  const started = Date.now();
  execFileSync(path.join(repo, '.venv', 'bin', 'jupyter'), runAllArgs(path.join(home, 'executed.ipynb'), 'quickstart.ipynb'), {
    cwd: path.join(repo, 'notebooks'),
    env,
    stdio: 'inherit'
  });
  return { home, totalS: (Date.now() - started) / 1000 };
}

/** The figures of a quickstart run, from the store it wrote: per-stage status and wall time, LLM time per model, training. */
export async function quickstartReport(home: string, totalS: number = NaN): Promise<string> {
  const store = await Store.open({ home });
  const { stages, models, trainS } = await store.read(async q => ({
    stages: await q.all<StageRow>(
      'select stage, status, cast(started_at as varchar) started_at, cast(finished_at as varchar) finished_at from stage_runs order by started_at'
    ),
    models: await q.all<ModelRow>(
      `select model, count(*)::int as calls, sum(prompt_tokens)::int as prompt_tokens, sum(completion_tokens)::int as completion_tokens,
              round(sum(latency_ms) / 1000.0, 1)::double as seconds from llm_calls where not cache_hit group by model order by seconds desc`
    ),
    trainS:
      (
        await q.get<{ s: number | null }>(
          'select max(epoch(cast(created_at as timestamp))) - (select max(epoch(cast(finished_at as timestamp))) from stage_runs) as s from adapters'
        )
      )?.s ?? null
  }));
  await store.close();
  const lines = ['stage        status   wall s'];
  for (const s of stages) {
    const seconds = s.finished_at ? (Date.parse(s.finished_at) - Date.parse(s.started_at)) / 1000 : NaN;
    lines.push(`${s.stage.padEnd(12)} ${s.status.padEnd(8)} ${seconds.toFixed(0).padStart(6)}`);
  }
  lines.push('', 'model                                  calls  prompt tok  output tok  LLM s');
  for (const m of models) {
    lines.push(
      `${m.model.padEnd(38)} ${String(m.calls).padStart(5)} ${String(m.prompt_tokens).padStart(11)} ${String(m.completion_tokens).padStart(11)} ${m.seconds.toFixed(0).padStart(6)}`
    );
  }
  if (trainS !== null) lines.push('', `feedback + lab.train() after the last stage: ${trainS.toFixed(0)} s`);
  const done = stages.filter(s => s.status === 'done').length;
  lines.push('', `stages done: ${done} of ${stages.length}${done === 6 ? ' (all six)' : ''}`);
  if (Number.isFinite(totalS)) lines.push(`quickstart total (Run All, kernel start included): ${totalS.toFixed(0)} s on ${os.cpus().length} cores`);
  lines.push(`store in ${home}`);
  return lines.join('\n');
}

/** `--report <home>` prints the figures of a run already made (its store) without running again. */
async function main(): Promise<void> {
  const reportAt = process.argv.indexOf('--report');
  const { home, totalS } = reportAt >= 0 ? { home: path.resolve(process.argv[reportAt + 1]), totalS: NaN } : runQuickstart();
  console.log(`\n${await quickstartReport(home, totalS)}`);
}

if (require.main === module) {
  main().catch(error => {
    console.error(error instanceof Error ? error.message : error);
    process.exit(1);
  });
}
