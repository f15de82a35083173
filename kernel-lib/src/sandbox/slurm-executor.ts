/**
 * Where an experiment run executes: the local sandbox (the default) or a Slurm cluster.
 *
 * `NANORESEARCH_EXECUTOR=slurm` (or the profile's `resources.executor.kind`) submits each run with
 * `sbatch`. The job runs slurm-job.js inside the allocation, which runs the same sandbox as a local
 * run. The kernel persists the job (table slurm_jobs) before it waits, shows the job id, its state
 * and the tail of its log on the stage card while it waits, cancels it (`scancel`) when the stage's
 * AbortSignal fires, and takes sacct's exit state and elapsed time into the run record. A kernel
 * that died while a job was queued or running leaves its row open: the resumed stage adopts that
 * job (same run, attempt and program) instead of submitting again.
 *
 * The job needs the kernel's paths on the node: the workspace, node (process.execPath), kernel-lib
 * and the experiment interpreter, i.e. a shared file system, as a cluster's home folders are.
 */
import { createHash } from 'crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readSync, rmSync, statSync, writeFileSync } from 'fs';
import * as path from 'path';
import type { Profile } from '@nanoresearch/schema';
import { newId, nowIso } from '../ids';
import type { Store } from '../store';
import { runInSandbox, SandboxOptions, SandboxResult } from './index';
import { experimentInterpreter } from './python-env';
import {
  BlueprintCompute,
  cancelJob,
  FINISHED_STATES,
  jobAccounting,
  JobAccounting,
  jobStatus,
  JobStatus,
  requestArgs,
  slurmCommand,
  SlurmError,
  SlurmJobState,
  slurmRequest,
  SlurmRequest,
  submitJob
} from './slurm';
import { LOG_FILE, RESULT_FILE, SlurmJobOutcome, SlurmJobSpec, SPEC_FILE } from './slurm-job';
import { copyInside, listInside, readBytesInside } from './workspace-fs';

export type ExecutorKind = 'local' | 'slurm';

/** The executor a profile and the environment choose; the variable wins over the profile. */
export function chooseExecutor(profile: Profile, env: NodeJS.ProcessEnv = process.env): { kind: ExecutorKind; partition?: string; account?: string } {
  const configured = profile.resources.executor;
  const named = env.NANORESEARCH_EXECUTOR?.trim();
  if (named && named !== 'local' && named !== 'slurm')
    throw new Error(`NANORESEARCH_EXECUTOR=${named} is not an executor: use 'local' (the default) or 'slurm'`);
  const kind: ExecutorKind = (named as ExecutorKind | undefined) || configured?.kind || 'local';
  return { kind, ...(configured?.partition ? { partition: configured.partition } : {}), ...(configured?.account ? { account: configured.account } : {}) };
}

/** What the executor needs of the stage: the StageContext's fields (stage-contract.ts). */
export interface ExperimentRunContext {
  project: { id: string };
  runId: string;
  stageRunId: string;
  workspace: string;
  profile: Profile;
  store: Store;
  progress: (step: string) => void;
  signal?: AbortSignal;
}

/** What a run record keeps of its Slurm job (sacct's exit state and elapsed time once it ended). */
export interface SlurmRunRecord {
  job_id: string;
  job_name: string;
  state: SlurmJobState;
  /** Slurm's own state name, e.g. COMPLETED, FAILED, TIMEOUT, CANCELLED, OUT_OF_MEMORY. */
  slurm_state: string;
  /** sacct ExitCode "<code>:<signal>". */
  exit_code: string | null;
  /** sacct Elapsed. */
  elapsed: string | null;
  elapsed_seconds: number | null;
  node: string | null;
  request: SlurmRequest;
  /** True when this stage run picked up a job an earlier kernel had submitted. */
  adopted: boolean;
  /** The job's log (the program's output as it came), relative to the workspace. */
  log: string;
}

/** How often a waiting kernel asks the controller about its job. */
const POLL_MS = 500;
/** How long a finished job's result file and accounting record may take to appear (a shared file system, slurmdbd). */
const SETTLE_MS = 15_000;
/** How long a cancelled job may take to leave the running state. */
const CANCEL_WAIT_MS = 30_000;
/** Characters of the log's last line shown on the card. */
const LOG_LINE_CHARS = 120;

const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms));

function abortError(message: string): Error {
  const error = new Error(message);
  error.name = 'AbortError';
  return error;
}

/**
 * Runs the experiment program with the executor chosen for this stage: the local sandbox, or a
 * Slurm job running the same sandbox (its record in `result.slurm`).
 */
export async function runExperimentProgram(
  ctx: ExperimentRunContext,
  options: SandboxOptions,
  job: { attempt: number; compute?: BlueprintCompute }
): Promise<SandboxResult> {
  const executor = chooseExecutor(ctx.profile);
  if (executor.kind === 'local') return runInSandbox(options);
  const request = slurmRequest(options, job.compute, { partition: executor.partition, account: executor.account, cpuOnly: ctx.profile.resources.cpu_only });
  return runOnSlurm(ctx, options, job.attempt, request);
}

/** A row of slurm_jobs. */
interface JobRow {
  id: string;
  stage_run_id: string;
  job_name: string;
  job_id: string | null;
  folder: string;
  cwd: string;
  request: SlurmRequest;
  state: string;
}

/**
 * What a job runs, for adoption: the command, its program file and the data. Results and logs are
 * left out (a run writes them), so a resumed stage that wrote the same program finds the job.
 */
function programHash(cwd: string, command: string[]): string {
  const hash = createHash('sha256').update(JSON.stringify(command));
  const inputs = new Set(command.slice(1));
  for (const entry of listInside(cwd)) {
    if (entry.kind !== 'file' || !(inputs.has(entry.path) || entry.path.startsWith('data/'))) continue;
    hash.update(`\0${entry.path}\0`).update(readBytesInside(cwd, entry.path));
  }
  return hash.digest('hex');
}

/** The last non-empty line of the job's log, shortened for the card. */
function lastLogLine(logFile: string): string {
  let fd: number | undefined;
  try {
    const size = statSync(logFile).size;
    const length = Math.min(size, 4096);
    const buffer = Buffer.alloc(length);
    fd = openSync(logFile, 'r');
    readSync(fd, buffer, 0, length, size - length);
    const line =
      buffer
        .toString('utf8')
        .split('\n')
        .map(l => l.trim())
        .filter(Boolean)
        .pop() ?? '';
    return line.length > LOG_LINE_CHARS ? `${line.slice(0, LOG_LINE_CHARS - 1)}…` : line;
  } catch {
    return ''; // No log yet: the job has not started.
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

function readLogTail(logFile: string, bytes: number): string {
  try {
    const text = readFileSync(logFile, 'utf8');
    return text.length > bytes ? `[... ${text.length - bytes} bytes cut ...]\n${text.slice(-bytes)}` : text;
  } catch {
    return '';
  }
}

/** The job script: the runner under the kernel's own node, inside the allocation. */
function jobScript(folder: string, jobName: string): string {
  const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  // One path works from the build (dist/sandbox) and from the sources (src/sandbox, under ts-jest).
  const runner = path.resolve(__dirname, '..', '..', 'dist', 'sandbox', 'slurm-job.js');
  if (!existsSync(runner)) throw new SlurmError(`the Slurm job runner ${runner} does not exist: build kernel-lib first (npm run build -w kernel-lib)`);
  return [
    `#!/bin/sh`,
    `# NanoResearch experiment run ${jobName}: the sandbox inside the allocation (kernel-lib/src/sandbox/slurm-job.ts).`,
    `exec ${quote(process.execPath)} ${quote(runner)} ${quote(path.join(folder, SPEC_FILE))}`,
    ''
  ].join('\n');
}

/** The job of an earlier kernel for this run, attempt and program, if one is still open; stale ones of this attempt are cancelled. */
async function adoptable(ctx: ExperimentRunContext, attempt: number, programSha: string): Promise<JobRow | undefined> {
  const open = await ctx.store.read(q =>
    q.all<JobRow & { program_sha256: string }>(
      `select * from slurm_jobs where project_id = $1 and run_id = $2 and attempt = $3 and ended_at is null and stage_run_id <> $4 order by submitted_at desc`,
      [ctx.project.id, ctx.runId, attempt, ctx.stageRunId]
    )
  );
  let adopted: JobRow | undefined;
  for (const row of open) {
    if (!adopted && row.program_sha256 === programSha) {
      adopted = row;
      continue;
    }
    // Another program for the same attempt (the model answered differently this time): its result would not be this run's.
    // scancel refuses a job that already ended: then there is nothing to stop.
    if (row.job_id) await cancelJob(row.job_id).catch(() => undefined);
    await ctx.store.write(q => q.run(`update slurm_jobs set state = 'cancelled', ended_at = $2 where id = $1`, [row.id, nowIso()]));
  }
  return adopted;
}

/** The id of the job named `name`, for a row whose kernel died between sbatch and storing the id. */
async function jobIdByName(name: string): Promise<string | undefined> {
  const out = await slurmCommand('squeue', ['--noheader', '--states=all', `--name=${name}`, '--format=%i']);
  return out
    .split('\n')
    .map(l => l.trim())
    .filter(Boolean)[0];
}

async function runOnSlurm(ctx: ExperimentRunContext, options: SandboxOptions, attempt: number, request: SlurmRequest): Promise<SandboxResult> {
  if (ctx.signal?.aborted) throw abortError('the experiment was cancelled before its Slurm job was submitted');
  const programSha = programHash(options.cwd, options.command);
  let row = await adoptable(ctx, attempt, programSha);
  let jobId = row?.job_id ?? undefined;
  if (row && !jobId) jobId = await jobIdByName(row.job_name);
  const adopted = Boolean(row && jobId);

  if (row && jobId) {
    await ctx.store.write(q => q.run('update slurm_jobs set adopted_by = $2, job_id = $3 where id = $1', [row!.id, ctx.stageRunId, jobId!]));
    ctx.progress(`Slurm job ${jobId}: picked up from an earlier kernel (not submitted again)`);
  } else {
    // A row whose kernel died before sbatch answered, and whose job Slurm does not know: never submitted.
    if (row) await ctx.store.write(q => q.run(`update slurm_jobs set state = 'failed', ended_at = $2 where id = $1`, [row!.id, nowIso()]));
    const jobName = `nr-${ctx.stageRunId}-a${attempt}`;
    const folder = path.join(ctx.workspace, '.slurm', ctx.stageRunId, `attempt-${attempt}`);
    rmSync(folder, { recursive: true, force: true });
    mkdirSync(folder, { recursive: true });
    const { onOutput: _localOnly, ...jobOptions } = options;
    const spec: SlurmJobSpec = { options: jobOptions, experimentPython: experimentInterpreter().executable };
    writeFileSync(path.join(folder, SPEC_FILE), JSON.stringify(spec));
    const newRow: JobRow = {
      id: newId('sj'),
      stage_run_id: ctx.stageRunId,
      job_name: jobName,
      job_id: null,
      folder,
      cwd: options.cwd,
      request,
      state: 'submitting'
    };
    // Stored before sbatch: a kernel killed in between leaves a row whose job is found by its name.
    await ctx.store.write(q =>
      q.run(
        `insert into slurm_jobs (id, project_id, run_id, stage_run_id, attempt, program_sha256, job_name, job_id, folder, cwd, request, state, submitted_at)
         values ($id, $project, $run, $stage, $attempt, $sha, $name, null, $folder, $cwd, $request, 'submitting', $at)`,
        {
          id: newRow.id,
          project: ctx.project.id,
          run: ctx.runId,
          stage: ctx.stageRunId,
          attempt,
          sha: programSha,
          name: jobName,
          folder,
          cwd: options.cwd,
          request,
          at: nowIso()
        }
      )
    );
    ctx.progress(`submitting the experiment to Slurm (${requestArgs(request).join(' ')})`);
    try {
      jobId = await submitJob(jobScript(folder, jobName), [
        `--job-name=${jobName}`,
        ...requestArgs(request),
        '--nodes=1',
        '--ntasks=1',
        // The kernel's environment (API keys included) stays here: the runner needs none of it.
        '--export=NONE',
        `--chdir=${folder}`,
        `--output=${path.join(folder, LOG_FILE)}`,
        '--open-mode=append'
      ]);
    } catch (error) {
      await ctx.store.write(q => q.run(`update slurm_jobs set state = 'failed', ended_at = $2 where id = $1`, [newRow.id, nowIso()]));
      throw error;
    }
    await ctx.store.write(q => q.run(`update slurm_jobs set job_id = $2, state = 'pending' where id = $1`, [newRow.id, jobId!]));
    row = { ...newRow, job_id: jobId, state: 'pending' };
  }
  return waitForJob(ctx, row!, jobId!, adopted, options);
}

function describeStatus(jobId: string, status: JobStatus, logFile: string, startedAt: number | undefined): string {
  const where = status.state === 'pending' ? (status.reason ? ` (${status.reason})` : '') : status.node ? ` on ${status.node}` : '';
  const clock = startedAt !== undefined && status.state === 'running' ? ` · ${Math.round((Date.now() - startedAt) / 1000)} s` : '';
  const line = lastLogLine(logFile);
  return `Slurm job ${jobId} ${status.state}${where}${clock}${line ? ` · ${line}` : ''}`;
}

async function waitForJob(ctx: ExperimentRunContext, row: JobRow, jobId: string, adopted: boolean, options: SandboxOptions): Promise<SandboxResult> {
  const logFile = path.join(row.folder, LOG_FILE);
  const logRelative = path.relative(ctx.workspace, logFile);
  let known = row.state;
  let startedAt: number | undefined;
  let status: JobStatus | undefined;
  const saveState = async (state: string) => {
    if (state === known) return;
    known = state;
    await ctx.store.write(q => q.run('update slurm_jobs set state = $2 where id = $1', [row.id, state]));
  };
  for (;;) {
    if (ctx.signal?.aborted) return cancelled(ctx, row, jobId);
    status = await jobStatus(jobId);
    if (!status) throw new SlurmError(`Slurm knows no job ${jobId} (neither the controller nor accounting): it may have been purged; run the stage again`);
    if (status.state === 'running' && startedAt === undefined) startedAt = Date.now();
    await saveState(status.state);
    ctx.progress(describeStatus(jobId, status, logFile, startedAt));
    if (FINISHED_STATES.includes(status.state)) break;
    await new Promise<void>(resolve => {
      const timer = setTimeout(done, POLL_MS);
      function done() {
        clearTimeout(timer);
        ctx.signal?.removeEventListener('abort', done);
        resolve();
      }
      ctx.signal?.addEventListener('abort', done, { once: true });
    });
  }

  const accounting = await settledAccounting(jobId);
  const record: SlurmRunRecord = {
    job_id: jobId,
    job_name: row.job_name,
    state: accounting?.state ?? status.state,
    slurm_state: accounting?.slurmState ?? status.slurmState,
    exit_code: accounting?.exitCode ?? null,
    elapsed: accounting?.elapsed ?? null,
    elapsed_seconds: accounting && Number.isFinite(accounting.elapsedSeconds) ? accounting.elapsedSeconds : null,
    node: accounting?.node ?? status.node ?? null,
    request: row.request,
    adopted,
    log: logRelative
  };
  await ctx.store.write(q =>
    q.run(`update slurm_jobs set state = $2, slurm_state = $3, exit_code = $4, elapsed = $5, elapsed_seconds = $6, node = $7, ended_at = $8 where id = $1`, [
      row.id,
      record.state,
      record.slurm_state,
      record.exit_code,
      record.elapsed,
      record.elapsed_seconds,
      record.node,
      nowIso()
    ])
  );
  ctx.progress(
    `Slurm job ${jobId} ${record.state} (${record.slurm_state}${record.exit_code ? `, exit ${record.exit_code}` : ''}${record.elapsed ? `, ${record.elapsed}` : ''})`
  );

  const outcome = await settledOutcome(row.folder);
  if (outcome && 'error' in outcome) throw new SlurmError(`the sandbox could not run in Slurm job ${jobId}: ${outcome.error}`);
  // An adopted job ran in the folder of the stage run that submitted it: its results come here.
  if (path.resolve(row.cwd) !== path.resolve(options.cwd) && existsSync(path.join(row.cwd, 'results'))) {
    rmSync(path.join(options.cwd, 'results'), { recursive: true, force: true });
    copyInside(row.cwd, 'results', options.cwd, 'results');
  }
  const slurmLines = {
    layers: [
      `slurm job ${jobId}${record.node ? ` on ${record.node}` : ''}${adopted ? ' (picked up after a kernel restart)' : ''}: ${record.slurm_state}${record.exit_code ? ` exit ${record.exit_code}` : ''}${record.elapsed ? ` elapsed ${record.elapsed}` : ''}`
    ],
    limits: [`slurm ${requestArgs(row.request).join(' ')}`]
  };
  if (outcome) {
    const { result } = outcome;
    return {
      ...result,
      isolation: {
        ...result.isolation,
        layers: [...(result.isolation.layers ?? []), ...slurmLines.layers],
        limits: [...result.isolation.limits, ...slurmLines.limits]
      },
      slurm: record
    };
  }
  // Slurm ended the job before the sandbox reported (its time limit, scancel from outside, a node failure).
  const why = `Slurm job ${jobId} ended ${record.slurm_state}${record.exit_code ? ` (exit ${record.exit_code})` : ''} before the sandbox reported a result`;
  return {
    exitCode: null,
    signal: record.slurm_state,
    timedOut: record.state === 'timeout',
    stoppedBy: record.state === 'timeout' ? 'wall-clock' : 'exit',
    memoryLimitHit: record.slurm_state === 'OUT_OF_MEMORY',
    stdout: readLogTail(logFile, options.maxOutputBytes ?? 64 * 1024),
    stderr: `${why}; its log: ${logRelative}\n`,
    wallMs: (record.elapsed_seconds ?? 0) * 1000,
    isolation: { network: 'unrestricted', filesystem: 'unrestricted', ...slurmLines, missing: [`${why}: the isolation it ran under is unknown`] },
    slurm: record
  };
}

/** sacct's record of a finished job; accounting (slurmdbd, or the completion log) may lag its end by a moment. */
async function settledAccounting(jobId: string): Promise<JobAccounting | undefined> {
  const until = Date.now() + SETTLE_MS;
  for (;;) {
    const found = await jobAccounting(jobId);
    if ((found && FINISHED_STATES.includes(found.state)) || Date.now() > until) return found;
    await sleep(POLL_MS);
  }
}

/**
 * The runner's outcome file. A runner that logged its end wrote it first; on a shared file system
 * it may show a moment later. Undefined when the runner never got that far (killed, never started).
 */
async function settledOutcome(folder: string): Promise<SlurmJobOutcome | undefined> {
  const file = path.join(folder, RESULT_FILE);
  const ended = /\[nanoresearch\] (program ended|the sandbox could not run)/.test(readLogTail(path.join(folder, LOG_FILE), 4096));
  const until = Date.now() + SETTLE_MS;
  for (;;) {
    if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8')) as SlurmJobOutcome;
    if (!ended || Date.now() > until) return undefined;
    await sleep(POLL_MS);
  }
}

/** scancel, then wait until Slurm shows the job ended; the stage ends with an AbortError. */
async function cancelled(ctx: ExperimentRunContext, row: JobRow, jobId: string): Promise<never> {
  ctx.progress(`cancelling Slurm job ${jobId} (scancel)`);
  await cancelJob(jobId);
  const until = Date.now() + CANCEL_WAIT_MS;
  let status = await jobStatus(jobId);
  while (status && !FINISHED_STATES.includes(status.state) && Date.now() < until) {
    await sleep(POLL_MS);
    status = await jobStatus(jobId);
  }
  const state = status?.state ?? 'cancelled';
  await ctx.store.write(q =>
    q.run('update slurm_jobs set state = $2, slurm_state = $3, ended_at = $4 where id = $1', [row.id, state, status?.slurmState ?? null, nowIso()])
  );
  ctx.progress(`Slurm job ${jobId} ${state} (scancel)`);
  throw abortError(`the experiment was cancelled: Slurm job ${jobId} ${state === 'cancelled' ? 'was cancelled' : `ended ${state}`} (scancel)`);
}
