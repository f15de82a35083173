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
 * the trajectory (a skill candidate). Every file under results/ and the code are returned as
 * artifacts with their sha256 and size (the orchestrator records them in the artifacts table).
 */
import type { ExperimentBlueprint, IdeationOutput } from '@nanoresearch/schema';
import { existsSync, mkdirSync, rmSync } from 'fs';
import * as path from 'path';
import type { ArtifactRecord, LearnedMemory, StageContext, StageResult } from '../stage-contract';
import { describeIsolation, SandboxResult } from '../sandbox';
import { runExperimentProgram, type SlurmRunRecord } from '../sandbox/slurm-executor';
import { quoteUntrusted, UNTRUSTED_SYSTEM_RULE } from '../llm/untrusted';
import { experimentPython } from '../sandbox/python-env';
import { copyInside, listInside, readBytesInside, readInside, writeInside, WorkspacePathError } from '../sandbox/workspace-fs';
import {
  askJson,
  askText,
  dataFactsOf,
  describeDataFiles,
  errorMessage,
  fencedCode,
  isFatal,
  markdownTable,
  previousOutput,
  sha256,
  type DataFacts
} from './common';

export const MAX_EXPERIMENT_ATTEMPTS = 3;

export type Metrics = Record<string, Record<string, number>>;

export type { ArtifactRecord };

export interface ExperimentAttempt {
  attempt: number;
  exitCode: number | null;
  timedOut: boolean;
  wallMs: number;
  /** Empty when the attempt met the artifact contract. */
  error: string;
  notes?: string;
  /** The Slurm job of the attempt (sacct's state, exit code and elapsed time), when the Slurm executor ran it. */
  slurm?: SlurmRunRecord;
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

/** The scikit-learn modules a scaffolded program imports; an estimator is named as `<module>.<Class>(...)`. */
const SKLEARN_MODULES = ['dummy', 'neighbors', 'linear_model', 'tree', 'ensemble', 'svm', 'naive_bayes', 'discriminant_analysis', 'neural_network'];

/** The scikit-learn call measuring each metric of the plan that has one (accuracy when none does). */
function sklearnMetrics(blueprint: ExperimentBlueprint): [string, string][] {
  const macro = (fn: string) => `skm.${fn}(y_test, pred, average="macro", zero_division=0)`;
  const known: [RegExp, string][] = [
    [/balanced/i, 'skm.balanced_accuracy_score(y_test, pred)'],
    [/acc/i, 'skm.accuracy_score(y_test, pred)'],
    [/f1/i, macro('f1_score')],
    [/precision/i, macro('precision_score')],
    [/recall/i, macro('recall_score')]
  ];
  const measured = blueprint.metrics.flatMap(m => {
    const call = known.find(([re]) => re.test(m.name))?.[1];
    return call ? [[m.name, call] as [string, string]] : [];
  });
  return measured.length ? measured : [['accuracy', 'skm.accuracy_score(y_test, pred)']];
}

/**
 * A complete program of the contract's shape for a CSV classification plan: every run of the plan
 * fitted on a seeded stratified split and measured with the plan's metrics. `estimator` gives each
 * run's estimator expression (a placeholder in the example, the model's answer in a scaffold).
 */
function sklearnProgram(
  blueprint: ExperimentBlueprint,
  file: string,
  label: string,
  estimator: (run: ExperimentBlueprint['experiment_matrix'][number]) => string
): string {
  const metrics = sklearnMetrics(blueprint);
  return [
    'import json, os',
    'import pandas as pd',
    `from sklearn import ${SKLEARN_MODULES.join(', ')}`,
    'from sklearn import metrics as skm',
    'from sklearn.model_selection import train_test_split',
    'os.makedirs("results", exist_ok=True)',
    `df = pd.read_csv("data/${file}")`,
    `y = df["${label}"].values`,
    `X = df.drop(columns=["${label}"]).select_dtypes("number").values`,
    '# one (seed, estimator) per run of the plan, keyed by its run_id:',
    'runs = {',
    ...blueprint.experiment_matrix.map(r => `    "${r.run_id}": (${r.seed ?? 0}, ${estimator(r)}),`),
    '}',
    'metrics = {}',
    'for run_id, (seed, model) in runs.items():',
    '    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=seed, stratify=y)',
    '    pred = model.fit(X_train, y_train).predict(X_test)',
    `    metrics[run_id] = {${metrics.map(([name, call]) => `"${name}": float(${call})`).join(', ')}}`,
    'json.dump(metrics, open("results/metrics.json", "w"), indent=2)',
    'config = {"seeds": sorted({seed for seed, _ in runs.values()}), "test_size": 0.3, "n_train": len(y_train), "n_test": len(y_test)}',
    `json.dump({"dataset": "data/${file}", "config": config, "runs": list(metrics)}, open("results/manifest.json", "w"), indent=2)`
  ].join('\n');
}

/** A majority-class baseline needs no model to write it. */
const isMajorityBaseline = (method: string) => /majority|most.frequent|dummy/i.test(method);
const MAJORITY_ESTIMATOR = 'dummy.DummyClassifier(strategy="most_frequent")';

/** The CSV and label column a scaffolded program can use, when scikit-learn and pandas are importable. */
function scaffoldTarget(packages: Record<string, string>, data: Record<string, DataFacts>): { file: string; label: string } | undefined {
  if (!('sklearn' in packages && 'pandas' in packages)) return undefined;
  const found = Object.entries(data).find(([, facts]) => facts.label_column && facts.numeric_columns > 0);
  return found ? { file: found[0], label: found[1].label_column! } : undefined;
}

/**
 * A complete program of the contract's shape, adapted to the data and runs of the plan by the
 * model: a small model copies a working shape far better than it follows a description.
 */
function exampleProgram(target: { file: string; label: string } | undefined, blueprint: ExperimentBlueprint): string {
  const body = target
    ? sklearnProgram(blueprint, target.file, target.label, r => (isMajorityBaseline(r.method) ? MAJORITY_ESTIMATOR : `<estimator for ${r.method}>`))
    : [
        'import json, os, random',
        'os.makedirs("results", exist_ok=True)',
        'random.seed(0)',
        'metrics = {}  # metrics["<run_id>"] = {"<metric>": value}, one entry per run of the plan',
        '# ... load data/<file>, split with the seed, fit and measure each run ...',
        'json.dump(metrics, open("results/metrics.json", "w"), indent=2)',
        'json.dump({"dataset": "data/<file>", "config": {"seed": 0}, "runs": list(metrics)}, open("results/manifest.json", "w"), indent=2)'
      ].join('\n');
  return ["Example of the shape (replace every <...> with real code, add the plan's metrics):", '```python', body, '```'].join('\n');
}

/** Longest estimator expression a scaffold takes (one constructor call with a few arguments). */
const ESTIMATOR_MAX_CHARS = 120;

/**
 * The last attempt of a small model that could not write a working program: it names only the
 * estimator of each run (a bounded piece it gets right), and the program around them is the
 * built-in sklearn-tabular-experiment pattern. The expressions are still untrusted code: the
 * program runs in the sandbox like any other.
 */
async function scaffoldedProgram(
  ctx: StageContext,
  blueprint: ExperimentBlueprint,
  target: { file: string; label: string },
  planText: string
): Promise<string> {
  const asked = blueprint.experiment_matrix.filter(r => !isMajorityBaseline(r.method));
  const answer = asked.length
    ? await askJson<Record<string, string>>(
        ctx,
        'coding',
        'experiment-estimators',
        `You choose scikit-learn estimators for an experiment plan. For each run, answer one Python expression that constructs the estimator carrying out its method, written as <module>.<Class>(<arguments>) with a module from: ${SKLEARN_MODULES.join(', ')} (for example neighbors.KNeighborsClassifier(n_neighbors=5), linear_model.LogisticRegression(max_iter=1000)). The program around the expressions loads the data, splits it, fits each estimator and measures it.`,
        planText,
        {
          type: 'object',
          additionalProperties: false,
          required: asked.map(r => r.run_id),
          properties: Object.fromEntries(asked.map(r => [r.run_id, { type: 'string', minLength: 3, maxLength: ESTIMATOR_MAX_CHARS }]))
        },
        256
      )
    : {};
  // One line each: the expression is placed inside a dict literal.
  return (
    sklearnProgram(blueprint, target.file, target.label, r =>
      isMajorityBaseline(r.method) ? MAJORITY_ESTIMATOR : answer[r.run_id].replace(/\s+/g, ' ').trim()
    ) + '\n'
  );
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

/** An attempt's log file: what ran, how it ended, then its stdout and stderr in full. */
function runLog(attempt: number, entry: string, result: SandboxResult): string {
  const ending = result.timedOut ? 'timed out' : result.exitCode !== null ? `exit code ${result.exitCode}` : `signal ${result.signal}`;
  return (
    [`# attempt ${attempt}: python3 ${entry} — ${ending} after ${result.wallMs} ms`, '## stdout', result.stdout, '## stderr', result.stderr].join('\n') + '\n'
  );
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
    describeDataFiles(dir)
      ? `Data files (relative to the working directory):\n${describeDataFiles(dir)}`
      : 'No data files: generate synthetic data with a fixed seed.'
  ].join('\n\n');

  const scaffold = scaffoldTarget(python.packages, dataFactsOf(dir));
  const coderSystem = `You write a small, self-contained, runnable Python program that carries out the experiment plan exactly and measures every run. ${UNTRUSTED_SYSTEM_RULE}\n\n${CONTRACT}\n\n${exampleProgram(scaffold, blueprint)}`;

  for (let attempt = 1; attempt <= MAX_EXPERIMENT_ATTEMPTS; attempt++) {
    const previousFailure = attempts[attempts.length - 1];
    // The last chance after failed programs: the model names the estimators, the built-in pattern is the program.
    const scaffolded = attempt === MAX_EXPERIMENT_ATTEMPTS && attempt > 1 && scaffold !== undefined;
    ctx.progress(
      attempt === 1
        ? 'writing the experiment code'
        : scaffolded
          ? `choosing estimators for the built-in program (attempt ${attempt})`
          : `fixing the code (attempt ${attempt})`,
      (attempt - 1) * 2,
      MAX_EXPERIMENT_ATTEMPTS * 2
    );
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
    let code: string;
    try {
      code = scaffolded
        ? await scaffoldedProgram(ctx, blueprint, scaffold, planText)
        : fencedCode(await askText(ctx, 'coding', attempt === 1 ? 'experiment-code' : 'experiment-fix', coderSystem, user, CODE_MAX_TOKENS));
    } catch (error) {
      // A spent budget or a cancel ends the stage; a model that failed to answer spends one attempt.
      if (isFatal(error)) throw error;
      attempts.push({ attempt, exitCode: null, timedOut: false, wallMs: 0, error: `the coding model gave no usable answer: ${errorMessage(error)}` });
      log.push(`Attempt ${attempt}: no usable answer from the coding model (${errorMessage(error)}).`);
      continue;
    }
    if (project && code.trim() === project.files[0].content.trim()) {
      // Running the same script again would fail the same way: the attempt is spent, honestly recorded.
      attempts.push({
        attempt,
        exitCode: null,
        timedOut: false,
        wallMs: 0,
        error: `the fix returned the same program unchanged (still failing: ${previousFailure.error})`
      });
      log.push(`Attempt ${attempt}: the model returned the failing program unchanged; not run again.`);
      continue;
    }
    const notes = scaffolded
      ? `the model chose the estimators; the program is the built-in scikit-learn pattern (after: ${previousFailure.error})`
      : `fixed after: ${previousFailure?.error}`;
    project = { files: [{ path: ENTRYPOINT, content: code }], entrypoint: ENTRYPOINT, ...(attempt > 1 ? { notes } : {}) };
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
    last = await runExperimentProgram(
      ctx,
      { cwd: dir, command: ['python3', entry], timeoutMs: minutes * 60_000, memoryMb, fileSizeMb: 256 },
      { attempt, compute: blueprint.compute }
    );
    // The run's own output, whole, for the researcher (the model sees only the tails): linked from the card.
    try {
      writeInside(dir, `logs/attempt-${attempt}.log`, runLog(attempt, entry, last));
    } catch (error) {
      // Generated code may have left a link where the log goes: never written through.
      if (!(error instanceof WorkspacePathError)) throw error;
      log.push(`Attempt ${attempt}: its log was not written (${error.message}).`);
    }
    artifacts = last.timedOut
      ? { error: `timed out after ${minutes} minutes` }
      : last.exitCode !== 0
        ? { error: `exited with ${last.exitCode ?? last.signal}: ${last.stderr.trim().split('\n').slice(-1)[0] ?? ''}` }
        : withPlannedRuns(readArtifacts(dir), blueprint);
    attempts.push({
      attempt,
      exitCode: last.exitCode,
      timedOut: last.timedOut,
      wallMs: last.wallMs,
      error: artifacts.error,
      ...(project.notes ? { notes: project.notes } : {}),
      ...(last.slurm ? { slurm: last.slurm } : {})
    });
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
            : rel.startsWith('logs/')
              ? 'log'
              : rel.startsWith('data/')
                ? 'data'
                : 'code';
    recorded.push({ path: path.join(relDir, rel), kind, sha256: sha256(bytes), bytes: bytes.length });
  }
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
    metricRows.length
      ? markdownTable(
          ['run', 'metric', 'value'],
          metricRows.map(r => [r.run, r.metric, r.value])
        )
      : '',
    `Isolation: ${describeIsolation(isolation).join('; ')}`
  ]
    .filter(Boolean)
    .join('\n\n');
  const trajectory = log.join('\n');
  if (artifacts.error) {
    const error = `the experiment failed after ${attempts.length} attempts: ${artifacts.error}`;
    return { status: 'failed', output, summary: error, error, bundleOutputs, trajectory, markdown, memories, artifacts: recorded };
  }
  if (attempts.length > 1)
    memories.push({
      kind: 'data_strategy',
      content: `For ${blueprint.method.name}: ${attempts[attempts.length - 1].notes ?? 'a fix after a failed run'} made the experiment run`,
      tags: ['experiment', 'fix'],
      conditions,
      importance: 0.5
    });
  return {
    status: 'done',
    output,
    summary: `Measured ${metricRows.length} values over ${Object.keys(output.metrics).length} runs in ${attempts.length} attempt${attempts.length === 1 ? '' : 's'}${isolation.missing.length ? ` (isolation missing: ${isolation.missing.length} item(s))` : ''}`,
    bundleOutputs,
    trajectory,
    markdown,
    memories,
    artifacts: recorded
  };
}
