/**
 * The Slurm command-line tools the experiment executor drives: `sbatch` to submit, `scontrol`
 * (then `sacct` once the controller has forgotten the job) for its state, `scancel` to cancel,
 * `sacct` for the exit state and elapsed time. The tools find the cluster the usual way
 * (`SLURM_CONF`, /etc/slurm/slurm.conf or DNS SRV records); nothing here is specific to one cluster.
 */
import { execFile } from 'child_process';
import type { SandboxOptions } from './index';

/** The executor's view of a job's state: what the stage card shows. */
export type SlurmJobState = 'pending' | 'running' | 'completed' | 'failed' | 'timeout' | 'cancelled';

export const FINISHED_STATES: readonly SlurmJobState[] = ['completed', 'failed', 'timeout', 'cancelled'];

/** What a job asks the scheduler for: mapped from the blueprint's compute and the sandbox limits. */
export interface SlurmRequest {
  /** --time, whole minutes: the sandbox's wall-clock limit plus JOB_START_MINUTES. */
  timeMinutes: number;
  /** --mem, MiB: the sandbox's memory limit plus what the job's own runner needs. */
  memoryMb: number;
  /** --cpus-per-task. */
  cpus: number;
  /** --gres=gpu:N (none when 0). */
  gpus: number;
  partition?: string;
  account?: string;
}

/** Minutes the job gets beyond the sandbox's wall-clock limit: the runner's start and its write-back of the result. */
export const JOB_START_MINUTES = 1;
/** MiB the job's runner (node, outside the sandbox) needs beside the sandboxed program. */
export const RUNNER_MEMORY_MB = 256;

/** The blueprint's compute section (experiment-blueprint.schema.json). */
export interface BlueprintCompute {
  device?: string;
  estimated_minutes: number;
  seeds?: number;
}

/**
 * GPUs and CPUs a compute `device` names: "cpu" → 0 GPUs, "gpu"/"cuda" → 1, "2 gpus", "gpu:2",
 * "4xA100" → that count; "8 cpus"/"cpu:8" → that many CPUs (default 1, as the local sandbox gives).
 */
export function devicesOf(device: string | undefined): { gpus: number; cpus: number } {
  const text = (device ?? '').toLowerCase();
  const count = (re: RegExp) => {
    const m = re.exec(text);
    return m ? Number(m[1] ?? m[2]) : undefined;
  };
  const gpuWords = 'gpus?|cuda|a100|h100|h200|v100|l4|l40s?|t4|rtx\\w*';
  const gpus =
    count(new RegExp(`(\\d+)\\s*[x×]?\\s*(?:${gpuWords})\\b|\\b(?:${gpuWords})\\s*[:=]\\s*(\\d+)`)) ?? (new RegExp(`\\b(?:${gpuWords})\\b`).test(text) ? 1 : 0);
  const cpus = count(/(\d+)\s*(?:cpus?|cores?)\b|\b(?:cpus?|cores?)\s*[:=]\s*(\d+)/) ?? 1;
  return { gpus, cpus: Math.max(1, cpus) };
}

/**
 * The scheduler request for one run: the blueprint's compute gives CPUs and GPUs (none where the
 * profile is CPU-only), the sandbox limits give --time and --mem, so Slurm never ends the job
 * before the sandbox's own limits do.
 */
export function slurmRequest(
  options: Pick<SandboxOptions, 'timeoutMs' | 'memoryMb'>,
  compute: BlueprintCompute | undefined,
  cluster: { partition?: string; account?: string; cpuOnly?: boolean }
): SlurmRequest {
  const devices = devicesOf(compute?.device);
  return {
    timeMinutes: Math.ceil(options.timeoutMs / 60_000) + JOB_START_MINUTES,
    memoryMb: (options.memoryMb ?? 2048) + RUNNER_MEMORY_MB,
    cpus: devices.cpus,
    gpus: cluster.cpuOnly ? 0 : devices.gpus,
    ...(cluster.partition ? { partition: cluster.partition } : {}),
    ...(cluster.account ? { account: cluster.account } : {})
  };
}

/** The sbatch options of a request. */
export function requestArgs(request: SlurmRequest): string[] {
  return [
    `--time=${request.timeMinutes}`,
    `--mem=${request.memoryMb}M`,
    `--cpus-per-task=${request.cpus}`,
    ...(request.gpus > 0 ? [`--gres=gpu:${request.gpus}`] : []),
    ...(request.partition ? [`--partition=${request.partition}`] : []),
    ...(request.account ? [`--account=${request.account}`] : [])
  ];
}

export class SlurmError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SlurmError';
  }
}

/** How long one Slurm command may take before it counts as failed (the controller may be busy). */
const COMMAND_TIMEOUT_MS = 30_000;

/** Runs a Slurm tool (it finds the cluster through this process's SLURM_CONF); stdin is written when given. Rejects with the tool's own message and a hint. */
export function slurmCommand(tool: string, args: string[], stdin?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(tool, args, { env: process.env, timeout: COMMAND_TIMEOUT_MS, encoding: 'utf8', maxBuffer: 4 * 2 ** 20 }, (error, stdout, stderr) => {
      if (!error) return resolve(stdout);
      const missing = (error as NodeJS.ErrnoException).code === 'ENOENT';
      reject(
        new SlurmError(
          missing
            ? `${tool} is not installed or not on PATH: the Slurm executor needs the Slurm client tools (Debian: apt-get install slurm-client), or set NANORESEARCH_EXECUTOR=local`
            : `${tool} ${args.join(' ')} failed: ${(stderr || error.message).trim()}`
        )
      );
    });
    if (stdin !== undefined) child.stdin?.end(stdin);
  });
}

/** Submits `script` (read by sbatch from stdin); returns the job id. */
export async function submitJob(script: string, args: string[]): Promise<string> {
  const out = (await slurmCommand('sbatch', ['--parsable', ...args], script)).trim();
  // --parsable prints "<id>" or "<id>;<cluster>".
  const id = /^(\d+)(?:;\S+)?$/m.exec(out)?.[1];
  if (!id) throw new SlurmError(`sbatch answered no job id: ${JSON.stringify(out)}`);
  return id;
}

export async function cancelJob(jobId: string): Promise<void> {
  await slurmCommand('scancel', [jobId]);
}

/** A Slurm state name (JobState=, sacct State) as the executor's state; undefined for a name it does not know. */
export function stateOf(slurmState: string): SlurmJobState | undefined {
  const name = slurmState.split(/\s/)[0].toUpperCase();
  if (['PENDING', 'CONFIGURING', 'REQUEUED', 'REQUEUE_FED', 'REQUEUE_HOLD', 'RESV_DEL_HOLD', 'SUSPENDED'].includes(name)) return 'pending';
  if (['RUNNING', 'COMPLETING', 'STAGE_OUT', 'SIGNALING', 'RESIZING'].includes(name)) return 'running';
  if (name === 'COMPLETED') return 'completed';
  if (name === 'TIMEOUT' || name === 'DEADLINE') return 'timeout';
  if (name === 'CANCELLED') return 'cancelled';
  if (['FAILED', 'NODE_FAIL', 'OUT_OF_MEMORY', 'BOOT_FAIL', 'PREEMPTED', 'REVOKED', 'SPECIAL_EXIT'].includes(name)) return 'failed';
  return undefined;
}

export interface JobStatus {
  state: SlurmJobState;
  /** Slurm's own name, e.g. PENDING, RUNNING, OUT_OF_MEMORY. */
  slurmState: string;
  /** Why it waits (Priority, Resources, ...), while pending. */
  reason?: string;
  node?: string;
}

/** `scontrol show job -o` as key=value pairs. */
function controlFields(line: string): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const m of line.matchAll(/(\S+?)=(\S*)/g)) if (!(m[1] in fields)) fields[m[1]] = m[2];
  return fields;
}

/**
 * The job's state from the controller; from accounting once the controller has forgotten it
 * (MinJobAge after its end). Undefined when neither knows the job.
 */
export async function jobStatus(jobId: string): Promise<JobStatus | undefined> {
  let line: string | undefined;
  try {
    line = (await slurmCommand('scontrol', ['show', 'job', '-o', jobId])).trim();
  } catch (error) {
    if (!/Invalid job id/i.test((error as Error).message)) throw error;
  }
  if (line) {
    const fields = controlFields(line);
    const state = stateOf(fields.JobState ?? '');
    if (state) {
      return {
        state,
        slurmState: fields.JobState,
        ...(fields.Reason && fields.Reason !== 'None' ? { reason: fields.Reason } : {}),
        ...(fields.NodeList && fields.NodeList !== '(null)' ? { node: fields.NodeList } : {})
      };
    }
  }
  const accounted = await jobAccounting(jobId);
  return accounted && { state: accounted.state, slurmState: accounted.slurmState, ...(accounted.node ? { node: accounted.node } : {}) };
}

/** What accounting (`sacct`) recorded of a job: the run record takes it. */
export interface JobAccounting {
  state: SlurmJobState;
  slurmState: string;
  /** "<exit code>:<signal>", as sacct prints it. */
  exitCode: string;
  /** [DD-]HH:MM:SS, as sacct prints it. */
  elapsed: string;
  elapsedSeconds: number;
  node?: string;
}

/** [DD-][HH:]MM:SS in seconds. */
export function elapsedSeconds(elapsed: string): number {
  const m = /^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)$/.exec(elapsed.trim());
  if (!m) return NaN;
  return Number(m[1] ?? 0) * 86400 + Number(m[2] ?? 0) * 3600 + Number(m[3]) * 60 + Number(m[4]);
}

const SACCT_FIELDS = 'JobID,State,ExitCode,Elapsed,NodeList';

/**
 * The job's allocation line in accounting. A cluster without slurmdbd keeps no accounting, only
 * job completion records (JobCompType, e.g. jobcomp/filetxt), which `sacct --completion` reads.
 * Undefined while accounting has no record of it.
 */
export async function jobAccounting(jobId: string): Promise<JobAccounting | undefined> {
  const args = ['-j', jobId, '-X', '-n', '-P', '-o', SACCT_FIELDS];
  let out: string;
  try {
    out = await slurmCommand('sacct', args);
  } catch (error) {
    if (!/accounting storage is disabled/i.test((error as Error).message)) throw error;
    out = await slurmCommand('sacct', ['--completion', ...args]);
  }
  for (const line of out.split('\n')) {
    const [id, slurmState, exitCode, elapsed, node] = line.trim().split('|');
    if (id !== jobId) continue;
    const state = stateOf(slurmState ?? '');
    if (!state) continue;
    return {
      state,
      slurmState: slurmState.split(' ')[0],
      exitCode,
      elapsed,
      elapsedSeconds: elapsedSeconds(elapsed),
      ...(node && node !== 'None assigned' ? { node } : {})
    };
  }
  return undefined;
}
