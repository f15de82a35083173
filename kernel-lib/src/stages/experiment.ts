/**
 * Experiment: the 'coding' role writes a self-contained Python project, which runs in the
 * sandbox; a bounded debug loop sends the traceback and files back for a fix.
 *
 * Artifact contract (what the generated code must write, relative to its folder):
 *  - results/metrics.json: {"<run_id>": {"<metric>": <finite number>, ...}, ...}: one entry
 *    per run of the blueprint's experiment matrix, metric names as in the blueprint;
 *  - results/manifest.json: a JSON object describing what ran: {"dataset", "config": {...},
 *    "runs": [...], ...}. Its numbers (seeds, split sizes, hyper-parameters) are the config
 *    values the paper may quote.
 * A run that exits non-zero, times out, or leaves either file missing or malformed failed.
 * Failures become failed_direction memories with their conditions; a fix that worked is in
 * the trajectory (a skill candidate). Every file under results/ and the code are recorded
 * in the artifacts table with their sha256 and size.
 */
import type { ExperimentBlueprint, IdeationOutput } from '@nanoresearch/schema';
import { existsSync, mkdirSync, rmSync } from 'fs';
import * as path from 'path';
import { newId, nowIso } from '../ids';
import type { LearnedMemory, StageContext, StageResult } from '../orchestrator/types';
import { describeIsolation, runInSandbox, SandboxResult } from '../sandbox';
import { quoteUntrusted, UNTRUSTED_SYSTEM_RULE } from '../llm/untrusted';
import { experimentPython } from '../sandbox/python-env';
import { copyInside, listInside, readBytesInside, readInside, writeInside, WorkspacePathError } from '../sandbox/workspace-fs';
import { askText, dataFactsOf, describeDataFiles, errorMessage, fencedCode, markdownTable, previousOutput, sha256, type DataFacts } from './common';

export const MAX_EXPERIMENT_ATTEMPTS = 3;

export type Metrics = Record<string, Record<string, number>>;

export interface ArtifactRecord {
  path: string;
  kind: 'metrics' | 'manifest' | 'result' | 'code' | 'data';
  sha256: string;
  bytes: number;
}

export interface ExperimentAttempt {
  attempt: number;
  exitCode: number | null;
  timedOut: boolean;
  wallMs: number;
  /** Empty when the attempt met the artifact contract. */
  error: string;
  notes?: string;
}

export interface ExperimentOutput {
  /** Folder of the generated project, relative to the workspace. */
  experiment_dir: string;
  entrypoint: string;
  attempts: ExperimentAttempt[];
  metrics: Metrics;
  manifest: Record<string, unknown>;
  /** Relative to the workspace. */
  metrics_path: string;
  manifest_path: string;
  artifacts: ArtifactRecord[];
  isolation: SandboxResult['isolation'];
  stdout_tail: string;
  /** Row, column and class counts of the data files, counted in code (the paper may quote them). */
  data_facts: Record<string, DataFacts>;
}

/** The generated program: one Python file, written by the 'coding' role as a fenced block. */
interface GeneratedProject {
  files: { path: string; content: string }[];
  entrypoint: string;
  notes?: string;
}

const ENTRYPOINT = 'main.py';

/** A complete script for the small Iris-sized experiments the embedded model is asked for is well under this. */
const CODE_MAX_TOKENS = 1200;

/** Of a failed run, the model sees this much: the traceback's tail is where the cause is. */
const TRACEBACK_CHARS = 1800;
const STDOUT_CHARS = 600;

/** What the program must write. */
const CONTRACT = [
  'The program must write two files:',
  '- results/metrics.json: {"<run_id>": {"<metric>": <number>}} with one entry per run of the plan (run ids and metric names exactly as in the plan, finite numbers);',
  '- results/manifest.json: {"dataset": ..., "config": {...}, "runs": [...]} recording seeds, split sizes and hyper-parameters.',
  'Fix random seeds. There is no network. Read data only from data/. Use only functions and methods that exist in the listed packages; no placeholders.',
  'Answer with the whole program in one ```python block and nothing else.'
].join('\n');

/**
 * A complete program of the contract's shape, adapted to the data and runs of the plan by the
 * model: a small model copies a working shape far better than it follows a description.
 */
function exampleProgram(sklearn: boolean, blueprint: ExperimentBlueprint, data: Record<string, DataFacts>): string {
  // The plan's own run ids and data file, so that what the model copies is already right.
  const [file, facts] = Object.entries(data)[0] ?? ['<file>.csv', undefined];
  const label = facts?.label_column ?? '<label column>';
  const runs = blueprint.experiment_matrix
    .map(r => `"${r.run_id}": ${/majority|most.frequent|dummy/i.test(r.method) ? 'DummyClassifier(strategy="most_frequent")' : `<estimator for ${r.method}>`}`)
    .join(', ');
  const body = sklearn
    ? [
        'import json, os',
        'import pandas as pd',
        'from sklearn.model_selection import train_test_split',
        'from sklearn.dummy import DummyClassifier',
        'from sklearn.metrics import accuracy_score',
        'os.makedirs("results", exist_ok=True)',
        `df = pd.read_csv("data/${file}")`,
        `y = df["${label}"].values`,
        `X = df.drop(columns=["${label}"]).select_dtypes("number").values`,
        'X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)',
        '# one estimator per run of the plan, keyed by its run_id:',
        `runs = {${runs}}`,
        'metrics = {}',
        'for run_id, model in runs.items():',
        '    pred = model.fit(X_train, y_train).predict(X_test)',
        '    metrics[run_id] = {"accuracy": float(accuracy_score(y_test, pred))}',
        'json.dump(metrics, open("results/metrics.json", "w"), indent=2)',
        'config = {"seed": 0, "test_size": 0.3, "n_train": len(y_train), "n_test": len(y_test)}',
        `json.dump({"dataset": "data/${file}", "config": config, "runs": list(metrics)}, open("results/manifest.json", "w"), indent=2)`
      ]
    : [
        'import json, os, random',
        'os.makedirs("results", exist_ok=True)',
        'random.seed(0)',
        'metrics = {}  # metrics["<run_id>"] = {"<metric>": value}, one entry per run of the plan',
        '# ... load data/<file>, split with the seed, fit and measure each run ...',
        'json.dump(metrics, open("results/metrics.json", "w"), indent=2)',
        'json.dump({"dataset": "data/<file>", "config": {"seed": 0}, "runs": list(metrics)}, open("results/manifest.json", "w"), indent=2)'
      ];
  return ['Example of the shape (replace every <...> with real code, add the plan\'s metrics):', '```python', ...body, '```'].join('\n');
}

/** Checks the artifact contract; returns the parsed files or the reason the run failed. */
export function readArtifacts(dir: string): { metrics?: Metrics; manifest?: Record<string, unknown>; error: string } {
  // Read without following links: generated code may leave results/*.json pointing at a host file.
  const read = (file: string): { json?: unknown; error?: string } => {
    if (!existsSync(path.join(dir, file)) && !isLink(dir, file)) return { error: `${file} was not written` };
    try {
      return { json: JSON.parse(readInside(dir, file, { maxBytes: ARTIFACT_MAX_BYTES })) };
    } catch (e) {
      return { error: e instanceof WorkspacePathError ? e.message : `${file} is not valid JSON: ${errorMessage(e)}` };
    }
  };
  const metricsRead = read('results/metrics.json');
  if (metricsRead.error) return { error: metricsRead.error };
  const manifestRead = read('results/manifest.json');
  if (manifestRead.error) return { error: manifestRead.error };
  const metrics = metricsRead.json;
  const manifest = manifestRead.json;
  if (!metrics || typeof metrics !== 'object' || Array.isArray(metrics) || !Object.keys(metrics).length) {
    return { error: 'results/metrics.json must be a non-empty object {"<run>": {"<metric>": number}}' };
  }
  for (const [run, values] of Object.entries(metrics as Record<string, unknown>)) {
    if (!values || typeof values !== 'object' || Array.isArray(values) || !Object.keys(values).length) {
      return { error: `results/metrics.json: run "${run}" must map metric names to numbers` };
    }
    for (const [metric, v] of Object.entries(values as Record<string, unknown>)) {
      if (typeof v !== 'number' || !Number.isFinite(v)) return { error: `results/metrics.json: ${run}.${metric} is ${JSON.stringify(v)}, not a finite number` };
    }
  }
  if (!manifest || typeof manifest !== 'object' || Array.isArray(manifest)) return { error: 'results/manifest.json must be a JSON object' };
  return { metrics: metrics as Metrics, manifest: manifest as Record<string, unknown>, error: '' };
}

/** A relative path that stays inside the experiment folder, or an error. */
function safeRelative(p: string): string {
  const normal = path.posix.normalize(p.replace(/\\/g, '/'));
  if (path.posix.isAbsolute(normal) || normal.startsWith('..')) throw new Error(`generated file path '${p}' leaves the experiment folder`);
  return normal;
}

/** The artifacts, or an error naming the runs of the plan that metrics.json does not measure. */
function withPlannedRuns(artifacts: ReturnType<typeof readArtifacts>, blueprint: ExperimentBlueprint): ReturnType<typeof readArtifacts> {
  if (artifacts.error || !artifacts.metrics) return artifacts;
  const missing = blueprint.experiment_matrix.map(r => r.run_id).filter(id => !(id in artifacts.metrics!));
  if (!missing.length) return artifacts;
  return {
    error: `results/metrics.json has no entry for run(s) ${missing.join(', ')} of the plan (it has ${Object.keys(artifacts.metrics).join(', ')}): measure every run of the plan under its run_id`
  };
}

/** A results file larger than this is not an artifact the stage reads (a run that dumps gigabytes is refused). */
const ARTIFACT_MAX_BYTES = 16 * 1024 * 1024;

function isLink(dir: string, file: string): boolean {
  return listInside(dir).some(e => e.path === file && e.kind === 'symlink');
}

function writeProject(dir: string, project: GeneratedProject): void {
  for (const f of project.files) writeInside(dir, safeRelative(f.path), f.content);
}

/** The failure mode of an attempt in a few words, for memory conditions. */
function failureMode(result: SandboxResult, error: string): string {
  if (result.timedOut) return 'timeout';
  const exception = /(\w+(?:Error|Exception)):/.exec(result.stderr.split('\n').filter(Boolean).slice(-3).join('\n'));
  if (result.exitCode !== 0 && exception) return `exception ${exception[1]}`;
  if (result.exitCode !== 0) return `exit code ${result.exitCode ?? result.signal}`;
  return error;
}

/** The blueprint as the coder needs it: what to run and measure, in a few lines (the JSON costs three times the tokens). */
function renderPlan(blueprint: ExperimentBlueprint): string {
  return [
    `Method: ${blueprint.method.name}: ${blueprint.method.description}`,
    `Baselines: ${blueprint.baselines.map(b => `${b.name}${b.description ? ` (${b.description})` : ''}`).join('; ')}`,
    `Datasets: ${blueprint.datasets.map(d => `${d.name}${d.source ? ` from ${d.source}` : ''}${d.split ? `, split ${d.split}` : ''}`).join('; ')}`,
    `Metrics: ${blueprint.metrics.map(m => `${m.name} (${m.goal})`).join(', ')}`,
    `Runs (run_id: method on dataset, seed):\n${blueprint.experiment_matrix.map(r => `- ${r.run_id}: ${r.method} on ${r.dataset}${r.seed !== undefined ? `, seed ${r.seed}` : ''}`).join('\n')}`
  ].join('\n');
}

export async function experiment(ctx: StageContext): Promise<StageResult> {
  const blueprint = previousOutput<ExperimentBlueprint>(ctx, 'planning');
  const ideation = ctx.previous.ideation as IdeationOutput | undefined;
  const relDir = path.join('experiments', ctx.stageRunId);
  const dir = path.join(ctx.workspace, relDir);
  mkdirSync(dir, { recursive: true });
  // Datasets the researcher put in the project's data/ folder are copied in: the sandbox sees only this folder.
  if (existsSync(path.join(ctx.workspace, 'data'))) copyInside(ctx.workspace, 'data', dir, 'data');

  const minutes = Math.min(ctx.profile.resources.max_experiment_minutes ?? 10, 60);
  const memoryMb = Math.round(Math.min(ctx.profile.resources.memory_gb ?? 2, 16) * 1024);
  const conditions = {
    dataset: blueprint.datasets.map(d => d.name).join(', ') || 'unspecified',
    method: blueprint.method.name,
    budget: `${minutes} min wall, ${memoryMb} MiB, CPU`
  };
  const attempts: ExperimentAttempt[] = [];
  const memories: LearnedMemory[] = [];
  const log: string[] = [];
  let project: GeneratedProject | undefined;
  let last: SandboxResult | undefined;
  let artifacts: ReturnType<typeof readArtifacts> = { error: 'not run' };

  const python = experimentPython();
  const importable = Object.entries(python.packages).map(([name, version]) => `${name} ${version}`);
  const hypothesis = ideation?.hypotheses.find(h => h.id === blueprint.hypothesis_id)?.statement;
  const planText = [
    hypothesis ? `Hypothesis: ${hypothesis}` : `Objective: ${blueprint.objective}`,
    renderPlan(blueprint),
    `Limits: ${minutes} minutes wall clock, ${memoryMb} MiB memory, no network, one CPU.`,
    `Python 3; importable besides the standard library: ${importable.join(', ') || 'nothing (standard library only)'}.`,
    describeDataFiles(dir) ? `Data files (relative to the working directory):\n${describeDataFiles(dir)}` : 'No data files: generate synthetic data with a fixed seed.'
  ].join('\n\n');

  for (let attempt = 1; attempt <= MAX_EXPERIMENT_ATTEMPTS; attempt++) {
    ctx.progress(attempt === 1 ? 'writing the experiment code' : `fixing the code (attempt ${attempt})`, (attempt - 1) * 2, MAX_EXPERIMENT_ATTEMPTS * 2);
    const previousFailure = attempts[attempts.length - 1];
    const user =
      attempt === 1 || !project || !last
        ? planText
        : [
            planText,
            `The previous program failed: ${previousFailure.error}`,
            quoteUntrusted('traceback', last.stderr.slice(-TRACEBACK_CHARS)),
            last.stdout.trim() ? quoteUntrusted('stdout', last.stdout.slice(-STDOUT_CHARS)) : '',
            quoteUntrusted('previous program', project.files[0].content),
            'Find the cause in the traceback and return the complete fixed program. It must differ from the previous one. Where custom code fails, use the standard estimator or function the example shows.'
          ]
            .filter(Boolean)
            .join('\n\n');
    const code = fencedCode(
      await askText(
        ctx,
        'coding',
        attempt === 1 ? 'experiment-code' : 'experiment-fix',
        `You write a small, self-contained, runnable Python program that carries out the experiment plan exactly and measures every run. ${UNTRUSTED_SYSTEM_RULE}\n\n${CONTRACT}\n\n${exampleProgram('sklearn' in python.packages && 'pandas' in python.packages, blueprint, dataFactsOf(dir))}`,
        user,
        CODE_MAX_TOKENS
      )
    );
    if (project && code.trim() === project.files[0].content.trim()) {
      // Running the same script again would fail the same way: the attempt is spent, honestly recorded.
      attempts.push({ attempt, exitCode: null, timedOut: false, wallMs: 0, error: `the fix returned the same program unchanged (still failing: ${previousFailure.error})` });
      log.push(`Attempt ${attempt}: the model returned the failing program unchanged; not run again.`);
      continue;
    }
    project = { files: [{ path: ENTRYPOINT, content: code }], entrypoint: ENTRYPOINT, ...(attempt > 1 ? { notes: `fixed after: ${previousFailure.error}` } : {}) };
    let entry: string;
    try {
      writeProject(dir, project);
      entry = safeRelative(project.entrypoint);
    } catch (error) {
      attempts.push({ attempt, exitCode: null, timedOut: false, wallMs: 0, error: errorMessage(error), notes: project.notes });
      continue;
    }

    ctx.progress(`running the experiment (attempt ${attempt})`, (attempt - 1) * 2 + 1, MAX_EXPERIMENT_ATTEMPTS * 2);
    // A failed attempt's partial results must not pass for this attempt's.
    rmSync(path.join(dir, 'results'), { recursive: true, force: true });
    last = await runInSandbox({ cwd: dir, command: ['python3', entry], timeoutMs: minutes * 60_000, memoryMb, fileSizeMb: 256 });
    artifacts =
      last.timedOut
        ? { error: `timed out after ${minutes} minutes` }
        : last.exitCode !== 0
          ? { error: `exited with ${last.exitCode ?? last.signal}: ${last.stderr.trim().split('\n').slice(-1)[0] ?? ''}` }
          : withPlannedRuns(readArtifacts(dir), blueprint);
    attempts.push({ attempt, exitCode: last.exitCode, timedOut: last.timedOut, wallMs: last.wallMs, error: artifacts.error, ...(project.notes ? { notes: project.notes } : {}) });
    if (!artifacts.error) {
      log.push(`Attempt ${attempt} succeeded in ${last.wallMs} ms.`);
      if (attempt > 1) log.push(`Fix that worked after "${attempts[attempt - 2].error}": ${project.notes ?? '(no notes given)'}`);
      break;
    }
    const mode = failureMode(last, artifacts.error);
    log.push(`Attempt ${attempt} failed (${mode}): ${artifacts.error}`);
    memories.push({
      kind: 'failed_direction',
      content: `Experiment attempt for ${blueprint.method.name} failed: ${artifacts.error}`,
      key: `${blueprint.method.name} ${mode}`,
      tags: ['experiment', 'failure'],
      conditions: { ...conditions, failure_mode: mode },
      importance: 0.6
    });
  }

  const isolation = last?.isolation ?? { network: 'unrestricted' as const, filesystem: 'unrestricted' as const, limits: [], missing: ['the code never ran'] };
  const recorded: ArtifactRecord[] = [];
  const entries = listInside(dir);
  const links = entries.filter(e => e.kind === 'symlink' || e.kind === 'other').map(e => e.path);
  if (links.length) log.push(`Not recorded (links or special files the code left, never followed): ${links.join(', ')}`);
  for (const rel of entries.filter(e => e.kind === 'file').map(e => e.path)) {
    const bytes = readBytesInside(dir, rel);
    const kind: ArtifactRecord['kind'] =
      rel === 'results/metrics.json'
        ? 'metrics'
        : rel === 'results/manifest.json'
          ? 'manifest'
          : rel.startsWith('results/')
            ? 'result'
            : rel.startsWith('data/')
              ? 'data'
              : 'code';
    recorded.push({ path: path.join(relDir, rel), kind, sha256: sha256(bytes), bytes: bytes.length });
  }
  await ctx.store.write(async q => {
    for (const a of recorded) {
      await q.run(
        'insert into artifacts (id, project_id, stage_run_id, path, kind, sha256, bytes, created_at) values ($id, $project, $stage, $path, $kind, $sha, $bytes, $at)',
        { id: newId('art'), project: ctx.project.id, stage: ctx.stageRunId, path: a.path, kind: a.kind, sha: a.sha256, bytes: a.bytes, at: nowIso() }
      );
    }
  });

  const output: ExperimentOutput = {
    experiment_dir: relDir,
    entrypoint: project?.entrypoint ?? '',
    attempts,
    metrics: artifacts.metrics ?? {},
    manifest: artifacts.manifest ?? {},
    metrics_path: path.join(relDir, 'results', 'metrics.json'),
    manifest_path: path.join(relDir, 'results', 'manifest.json'),
    artifacts: recorded,
    isolation,
    stdout_tail: last?.stdout.slice(-2000) ?? '',
    data_facts: dataFactsOf(dir)
  };
  const metricRows = Object.entries(output.metrics).flatMap(([run, values]) => Object.entries(values).map(([metric, value]) => ({ run, metric, value })));
  const bundleOutputs = { metrics: metricRows, isolation: describeIsolation(isolation) };
  const markdown = [
    `### Experiment (${attempts.length} attempt${attempts.length === 1 ? '' : 's'})`,
    metricRows.length ? markdownTable(['run', 'metric', 'value'], metricRows.map(r => [r.run, r.metric, r.value])) : '',
    `Isolation: ${describeIsolation(isolation).join('; ')}`
  ]
    .filter(Boolean)
    .join('\n\n');
  const trajectory = log.join('\n');
  if (artifacts.error) {
    const error = `the experiment failed after ${attempts.length} attempts: ${artifacts.error}`;
    return { status: 'failed', output, summary: error, error, bundleOutputs, trajectory, markdown, memories };
  }
  if (attempts.length > 1) memories.push({ kind: 'data_strategy', content: `For ${blueprint.method.name}: ${attempts[attempts.length - 1].notes ?? 'a fix after a failed run'} made the experiment run`, tags: ['experiment', 'fix'], conditions, importance: 0.5 });
  return {
    status: 'done',
    output,
    summary: `Measured ${metricRows.length} values over ${Object.keys(output.metrics).length} runs in ${attempts.length} attempt${attempts.length === 1 ? '' : 's'}${isolation.missing.length ? ` (isolation missing: ${isolation.missing.length} item(s))` : ''}`,
    bundleOutputs,
    trajectory,
    markdown,
    memories
  };
}
