/**
 * The trainer client: one SDPO round = export the user's SDPO examples, run the Python trainer
 * (`nanoresearch-trainer sdpo`) as a subprocess, follow its JSON progress lines, then register the
 * adapter it wrote and make it the planner's active adapter. With a LoRA-serving planner endpoint
 * (NANORESEARCH_PLANNER_BASE_URL) the adapter is published to it first and becomes active only once
 * the server took it. Before the planner uses a new adapter, it is asked for the plans of recent
 * planner inputs: one whose plans say nothing where the planner's before did is registered
 * inactive (AdapterRejectedError). A failed or interrupted round changes nothing in the store, and
 * a round the server refused is registered inactive: either way the active adapter stays what it was.
 */
import { createHash } from 'crypto';
import { spawn } from 'child_process';
import { existsSync, promises as fs } from 'fs';
import * as path from 'path';
import type { AdapterManifest } from '@nanoresearch/schema';
import { LiveDisplay, trainingCard, type DisplayWriter } from '../display';
import { callsAwaitingResample, exportSdpo, trainingCoverage } from '../feedback';
import { LoraServer, LoraServerError, type Llm, type LlmAdapter, type PlannerServerConfig } from '../llm';
import { checkPlanner, resamplePlannerCall, type PlanCheck } from '../planner';
import { clipText } from '../records/memories';
import type { Store } from '../store';

/** One row of the adapters table. */
export interface AdapterRecord {
  version: string;
  manifest: AdapterManifest;
  /** The trainer's output folder (manifest.files paths are relative to it). */
  path: string;
  active: boolean;
  created_at: string;
}

/** The adapter the planner runs with: both files the trainer wrote, and its name on a LoRA server. */
export interface ActiveAdapter extends LlmAdapter {
  version: string;
}

/** One `{"event":"step"}` line of the trainer. */
export interface TrainProgress {
  step: number;
  steps: number;
  loss: number;
  meanAdvantage: number;
  tokensPerS: number;
}

export interface TrainOptions {
  /** Optimiser steps of this round (trainer default 6, one batch-1 row each). */
  steps?: number;
  /** A .gguf file or a Hugging Face model folder (trainer default: the embedded SmolLM2). */
  base?: string;
  /** Called for every step line. */
  onProgress?: (progress: TrainProgress) => void;
  /** Further trainer flags, e.g. ['--lr', '1e-4', '--loss', 'token']. */
  trainerArgs?: string[];
  /** Start from the base model instead of continuing the active adapter. */
  fresh?: boolean;
  /** Cancels the run (the subprocess is killed; nothing is registered). */
  signal?: AbortSignal;
  /** Where the progress bar goes: undefined = the tslab kernel when there is one, null = nowhere. */
  display?: DisplayWriter | null;
  /**
   * Ask the new adapter for the plans of the latest planner inputs before the planner uses it, and
   * keep the planner as it was if most say nothing where the stored plans did (default true; needs
   * the Lab's LLM). Costs one planner call per input checked.
   */
  checkPlans?: boolean;
  /** Writes the SDPO examples file; default: feedback/exportSdpo. */
  exportExamples?: (store: Store, file: string) => Promise<number>;
}

/** What train() needs of a Lab. */
export interface TrainTarget {
  store: Store;
  /** Adapters are written under `<home>/adapters/<version>`. */
  home: string;
  /**
   * The planner's LLM: with it, feedback on stages that ran on the fallback plan trains too (the
   * current planner is asked for its own answer to each such x first); without it, such feedback waits.
   * Its config's plannerServer, when set, is the LoRA server the new adapter is published to.
   */
  llm?: Llm;
}

export class TrainingError extends Error {
  constructor(
    message: string,
    readonly stderrTail: string
  ) {
    super(message);
    this.name = 'TrainingError';
  }
}

/**
 * A round whose adapter was trained and saved (registered inactive) but not given to the planner:
 * most of its plans for recent planner inputs say nothing where the planner's before did.
 */
export class AdapterRejectedError extends TrainingError {
  constructor(
    message: string,
    readonly version: string,
    readonly checks: PlanCheck[]
  ) {
    super(message, '');
    this.name = 'AdapterRejectedError';
  }
}

/** How many of the latest planner inputs a new adapter is asked for its plans before it is made active. */
export const CHECKED_PLANNER_INPUTS = 3;

/** Every registered adapter, oldest first. */
export async function listAdapters(store: Store): Promise<AdapterRecord[]> {
  return store.read(q => q.all<AdapterRecord>('select * from adapters order by created_at, version'));
}

/** The planner's adapter: the active row's files and served name, or null for the base model. */
export async function activeAdapter(store: Store): Promise<ActiveAdapter | null> {
  const row = await store.read(q => q.get<AdapterRecord>('select * from adapters where active'));
  return row ? adapterOf(row) : null;
}

/**
 * A registered adapter as the planner uses it. Its served name is unique across the users of one
 * LoRA server and across retraining: it hashes the adapter's folder (under the user's lab home) and
 * its creation time, so a v1 trained again after a reset is not taken for the old v1 still loaded.
 */
export function adapterOf(record: Pick<AdapterRecord, 'version' | 'manifest' | 'path'>): ActiveAdapter {
  const folder = path.resolve(record.path);
  const hash = createHash('sha256').update(`${folder}\n${record.manifest.created_at}`).digest('hex').slice(0, 12);
  return {
    version: record.version,
    name: `nanoresearch-${record.version}-${hash}`,
    ggufPath: path.resolve(folder, record.manifest.files.gguf),
    peftDir: path.resolve(folder, record.manifest.files.peft_dir)
  };
}

/**
 * Makes `version` the active adapter (rollback included); null = the base model. With a
 * LoRA-serving planner endpoint the adapter is published to it first: one the server does not
 * take stays inactive, and the LoraServerError says why.
 */
export async function useAdapter(store: Store, version: string | null, plannerServer?: PlannerServerConfig): Promise<AdapterRecord | null> {
  if (version === null) {
    await store.write(q => q.run('update adapters set active = false where active'));
    return null;
  }
  const row = await store.read(q => q.get<AdapterRecord>('select * from adapters where version = $1', [version]));
  if (!row) {
    const known = (await listAdapters(store)).map(r => r.version);
    throw new Error(`no adapter '${version}'; known versions: ${known.join(', ') || 'none (run lab.train() first)'}`);
  }
  if (plannerServer) await new LoraServer(plannerServer).publish(adapterOf(row));
  await store.write(q => q.run('update adapters set active = (version = $1)', [version]));
  return { ...row, active: true };
}

/**
 * The trainer command: `$NANORESEARCH_PYTHON -m nanoresearch_trainer.cli` when that variable is
 * set, else `<repo>/.venv/bin/nanoresearch-trainer` found above this module.
 */
export function trainerCommand(env: NodeJS.ProcessEnv = process.env, from: string = __dirname): string[] {
  if (env.NANORESEARCH_PYTHON) return [env.NANORESEARCH_PYTHON, '-m', 'nanoresearch_trainer.cli'];
  for (let dir = path.resolve(from); ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, '.venv', 'bin', 'nanoresearch-trainer');
    if (existsSync(candidate)) return [candidate];
    if (path.dirname(dir) === dir) break;
  }
  throw new Error(
    'cannot find .venv/bin/nanoresearch-trainer above the kernel library: run `npm run setup` in the repository, ' +
      'or set NANORESEARCH_PYTHON to a Python that has nanoresearch-trainer installed'
  );
}

/**
 * One SDPO round over the whole feedback history. Continues the active adapter (unless `fresh`),
 * registers the new adapter and makes it active; returns its record. With a planner LoRA server the
 * adapter is published first: refused or unreachable, it is registered inactive and a
 * TrainingError names the server, its answer and the fix.
 */
export async function train(target: TrainTarget, options: TrainOptions = {}): Promise<AdapterRecord> {
  const { store } = target;
  const dir = path.resolve(target.home, 'adapters');
  await fs.mkdir(dir, { recursive: true });
  const examplesFile = path.join(dir, `sdpo-examples-${Date.now()}.jsonl`);
  const resampleFailures = target.llm ? await resampleFallbackCalls(store, target.llm) : {};
  const count = await (options.exportExamples ?? exportSdpo)(store, examplesFile);
  if (count === 0) {
    await fs.rm(examplesFile, { force: true });
    throw new TrainingError(`nothing to train on: ${await whyNothingTrains(store, resampleFailures)}`, '');
  }
  const current = await activeAdapter(store);
  const previous = options.fresh ? null : current;
  const version = await nextVersion(store);
  const out = path.join(dir, version);
  const args = ['sdpo', '--data', examplesFile, '--out', out, '--version', version];
  if (options.steps !== undefined) args.push('--steps', String(options.steps));
  if (options.base) args.push('--base', path.resolve(options.base));
  if (previous) {
    const record = (await listAdapters(store)).find(a => a.version === previous.version)!;
    args.push('--adapter-in', record.path, '--parent-version', record.version);
  }
  args.push(...(options.trainerArgs ?? []));

  const bar = new ProgressBar(version, count, options.display);
  try {
    const manifest = await runTrainer(
      args,
      progress => {
        bar.step(progress);
        options.onProgress?.(progress);
      },
      options.signal
    );
    const record: AdapterRecord = { version, manifest, path: out, active: true, created_at: manifest.created_at };
    const plannerServer = target.llm?.config.plannerServer;
    const server = plannerServer ? new LoraServer(plannerServer, target.llm?.config.timeoutMs) : null;
    const refused = server ? await publishRefusal(server, record) : null;
    const rejection = !refused && target.llm && options.checkPlans !== false ? await checkNewAdapter(store, target.llm, record, bar) : null;
    if (rejection && server) await unpublishQuietly(server, adapterOf(record));
    record.active = !refused && !rejection;
    await store.write(async q => {
      if (record.active) await q.run('update adapters set active = false where active');
      await q.run('insert into adapters (version, manifest, path, active, created_at) values ($version, $manifest, $path, $active, $created_at)', {
        version,
        manifest,
        path: out,
        active: record.active,
        created_at: manifest.created_at
      });
    });
    const keeps = current ? `adapter ${current.version}` : 'the base model';
    if (refused) {
      throw new TrainingError(
        `adapter ${version} was trained and saved in ${out}, but the planner's LoRA server did not take it: ${refused.reason}; the planner keeps ` +
          `${keeps}. Fix: ${refused.fix} ` +
          `(this adapter: base model ${manifest.base_model}, rank ${manifest.rank}); then lab.useAdapter('${version}') publishes it`,
        ''
      );
    }
    if (rejection) {
      throw new AdapterRejectedError(
        `adapter ${version} was trained and saved in ${out}, but the planner keeps ${keeps}: ${rejection.summary}. Train again with a lower ` +
          `learning rate or fewer steps (e.g. lab.train({ trainerArgs: ['--lr', '1e-4'] })), or use it anyway with lab.useAdapter('${version}')`,
        version,
        rejection.checks
      );
    }
    if (server && current) await unpublishQuietly(server, current);
    bar.done(manifest);
    return record;
  } catch (error) {
    bar.failed(error instanceof Error ? error.message : String(error));
    throw error;
  } finally {
    await fs.rm(examplesFile, { force: true });
  }
}

/** Publishes the new adapter to the planner's LoRA server: null once the server serves it, else its refusal. */
async function publishRefusal(server: LoraServer, record: AdapterRecord): Promise<LoraServerError | null> {
  try {
    await server.publish(adapterOf(record));
    return null;
  } catch (error) {
    if (error instanceof LoraServerError) return error;
    throw error;
  }
}

/**
 * Frees an adapter's slot on the server: the previous one once the planner names the new one, or
 * a new one the check rejected. Best effort on purpose: nothing points at that name any more, and
 * an adapter left loaded only keeps its place in the server's cache (lab.useAdapter publishes it again).
 */
async function unpublishQuietly(server: LoraServer, adapter: ActiveAdapter): Promise<void> {
  try {
    await server.unpublish(adapter.name);
  } catch (error) {
    if (!(error instanceof LoraServerError)) throw error;
  }
}

/**
 * The new adapter's plans for the latest planner inputs (planner/checkPlanner): null when it may
 * become active, else why not. It is kept from the planner when most of its answers say nothing
 * where the stored answer to the same x did; a plan that was empty before does not count against it.
 */
async function checkNewAdapter(store: Store, llm: Llm, record: AdapterRecord, bar: ProgressBar): Promise<{ summary: string; checks: PlanCheck[] } | null> {
  bar.checking(CHECKED_PLANNER_INPUTS);
  const { checks } = await checkPlanner(store, llm, adapterOf(record), CHECKED_PLANNER_INPUTS);
  const emptier = checks.filter(c => c.empty && !c.emptyBefore);
  if (emptier.length * 2 <= checks.length) return null;
  const example = emptier[0];
  return {
    summary:
      `on ${emptier.length} of the ${checks.length} latest planner inputs its plan says nothing where the plan before did ` +
      `(e.g. prompt_plan ${JSON.stringify(clipText(example.promptPlan, 80))}: ${example.empty})`,
    checks
  };
}

/**
 * Feedback on stages that ran on the fallback plan: asks the current planner for its own answer
 * to each such stage's x (planner/resamplePlannerCall), so the feedback has a y to train on.
 * Returns the calls that could not be re-asked, counted by why.
 */
async function resampleFallbackCalls(store: Store, llm: Llm): Promise<Record<string, number>> {
  const failures: Record<string, number> = {};
  for (const id of await callsAwaitingResample(store)) {
    const result = await resamplePlannerCall(store, llm, id, () => activeAdapter(store));
    if ('reason' in result) failures[result.reason] = (failures[result.reason] ?? 0) + 1;
  }
  return failures;
}

/** lab.train()'s refusal: the feedback items counted by state, each state with its cause. */
async function whyNothingTrains(store: Store, resampleFailures: Record<string, number>): Promise<string> {
  const coverage = await trainingCoverage(store);
  if (!coverage.feedback) return 'there is no feedback yet: give feedback on a stage (stage.feedback("...") or the card\'s feedback box), then train';
  const parts = Object.entries(coverage.reasons).map(([reason, n]) => `${n} on ${reason}`);
  const failed = Object.entries(resampleFailures);
  if (failed.length) parts.push(...failed.map(([reason, n]) => `${n} planner call(s) on a fallback plan that could not be re-asked: ${reason}`));
  else if (coverage.awaitingResample)
    parts.push(`${coverage.awaitingResample} on a fallback plan, not re-asked (train from the Lab, which can ask the planner)`);
  return `none of the ${coverage.feedback} feedback item(s) can train the planner: ${parts.join('; ')}`;
}

async function nextVersion(store: Store): Promise<string> {
  const versions = (await listAdapters(store)).map(a => a.version);
  let n = versions.length + 1;
  while (versions.includes(`v${n}`)) n += 1;
  return `v${n}`;
}

/** Runs the trainer, forwards step lines, resolves with the manifest of its done line. */
function runTrainer(args: string[], onStep: (p: TrainProgress) => void, signal?: AbortSignal): Promise<AdapterManifest> {
  const [command, ...prefix] = trainerCommand();
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new TrainingError('training was cancelled before it started', ''));
    const child = spawn(command, [...prefix, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdoutBuffer = '';
    let stderrTail = '';
    let manifest: AdapterManifest | null = null;
    let errorMessage: string | null = null;
    const onAbort = () => child.kill('SIGTERM');
    signal?.addEventListener('abort', onAbort, { once: true });

    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdoutBuffer += chunk;
      let newline: number;
      while ((newline = stdoutBuffer.indexOf('\n')) >= 0) {
        const line = stdoutBuffer.slice(0, newline).trim();
        stdoutBuffer = stdoutBuffer.slice(newline + 1);
        if (!line) continue;
        let event: Record<string, unknown>;
        try {
          event = JSON.parse(line) as Record<string, unknown>;
        } catch {
          stderrTail = (stderrTail + line + '\n').slice(-4000); // not ours: keep it for the error message
          continue;
        }
        if (event.event === 'step') {
          onStep({
            step: Number(event.step),
            steps: Number(event.steps),
            loss: Number(event.loss),
            meanAdvantage: Number(event.mean_advantage),
            tokensPerS: Number(event.tokens_per_s)
          });
        } else if (event.event === 'done') {
          manifest = event.manifest as AdapterManifest;
        } else if (event.event === 'error') {
          errorMessage = String(event.message);
        }
      }
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderrTail = (stderrTail + chunk).slice(-4000);
    });
    child.on('error', error => {
      signal?.removeEventListener('abort', onAbort);
      reject(new TrainingError(`could not start the trainer (${command}): ${error.message}`, stderrTail));
    });
    child.on('close', (code, killedBy) => {
      signal?.removeEventListener('abort', onAbort);
      if (code === 0 && manifest) return resolve(manifest);
      const why = signal?.aborted
        ? 'training was cancelled'
        : (errorMessage ?? (killedBy ? `the trainer was killed (${killedBy})` : `the trainer exited with code ${code}`));
      const detail = errorMessage ? '' : lastLines(stderrTail, 5);
      reject(new TrainingError(`${why}; the active adapter is unchanged${detail ? `\n${detail}` : ''}`, stderrTail));
    });
  });
}

function lastLines(text: string, n: number): string {
  return text.trim().split('\n').slice(-n).join('\n');
}

/** A progress bar in the cell, updated in place (Markdown + plain text), replaced by the round's result card. */
class ProgressBar {
  private readonly display: LiveDisplay;
  /** The loss of each step so far: the result card's curve. */
  private readonly losses: number[] = [];
  private readonly startedAt = Date.now();

  constructor(
    private readonly version: string,
    private readonly examples: number,
    writer?: DisplayWriter | null
  ) {
    this.display = new LiveDisplay({ writer });
    this.show(`SDPO round ${version}: starting the trainer on ${examples} examples…`);
  }

  step(p: TrainProgress): void {
    if (Number.isFinite(p.loss)) this.losses.push(p.loss);
    const width = 30;
    const filled = Math.round((width * p.step) / Math.max(1, p.steps));
    const bar = '█'.repeat(filled) + '░'.repeat(width - filled);
    this.show(
      `SDPO round ${this.version}: \`${bar}\` step ${p.step}/${p.steps} · loss ${p.loss.toFixed(4)} · ` +
        `mean advantage ${p.meanAdvantage.toFixed(4)} · ${Math.round(p.tokensPerS)} tokens/s`
    );
  }

  checking(inputs: number): void {
    this.show(`SDPO round ${this.version}: trained; asking the new adapter for its plans on the ${inputs} latest planner inputs…`);
  }

  done(m: AdapterManifest): void {
    const card = trainingCard({
      version: this.version,
      steps: m.steps,
      examples: this.examples,
      examplesUsed: m.examples_used ?? m.examples,
      finalLoss: m.final_loss,
      meanAdvantage: m.mean_advantage,
      losses: this.losses,
      wallMs: Date.now() - this.startedAt,
      parentVersion: m.parent_version ?? null
    });
    this.display.show({ 'text/html': card.html, 'text/markdown': card.markdown, 'text/plain': card.markdown.replace(/[*`|]/g, '') });
  }

  failed(message: string): void {
    this.show(`SDPO round ${this.version} failed: ${message}`);
  }

  private show(markdown: string): void {
    this.display.show({ 'text/markdown': markdown, 'text/plain': markdown.replace(/`/g, '') });
  }
}
