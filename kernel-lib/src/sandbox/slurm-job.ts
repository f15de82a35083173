/**
 * The program a Slurm job runs inside its allocation: the same sandbox as a local run
 * (runInSandbox: bubblewrap, no network, a scrubbed environment, workspace-only writes, the
 * same limits), with the program's output streamed to the job's log as it comes, so the stage
 * card can show its tail live, and the result written to the job folder for the kernel to read.
 * It exits with the program's exit code, so Slurm's own state (COMPLETED or FAILED) and sacct's
 * ExitCode say how the program ended.
 *
 * Usage (the job script the executor submits): node slurm-job.js <job folder>/spec.json
 */
import { readFileSync, renameSync, writeFileSync } from 'fs';
import * as path from 'path';
import { runInSandbox, SandboxOptions, SandboxResult } from './index';

/** What the kernel hands the job: the sandbox options and the interpreter it probed for the prompt. */
export interface SlurmJobSpec {
  options: Omit<SandboxOptions, 'onOutput'>;
  /** The experiment interpreter, as the kernel resolved it (python-env.ts): the job runs the same one. */
  experimentPython: string;
}

/** What the job leaves in its folder: the sandbox's result, or why the sandbox could not run. */
export type SlurmJobOutcome = { result: SandboxResult } | { error: string };

export const SPEC_FILE = 'spec.json';
export const RESULT_FILE = 'result.json';
export const LOG_FILE = 'job.log';

/** Written whole or not at all: a kernel polling the folder never reads half a result. */
function writeOutcome(folder: string, outcome: SlurmJobOutcome): void {
  const file = path.join(folder, RESULT_FILE);
  writeFileSync(`${file}.tmp`, JSON.stringify(outcome));
  renameSync(`${file}.tmp`, file);
}

async function main(specFile: string): Promise<number> {
  const folder = path.dirname(specFile);
  const spec = JSON.parse(readFileSync(specFile, 'utf8')) as SlurmJobSpec;
  process.env.NANORESEARCH_EXPERIMENT_PYTHON = spec.experimentPython;
  const log = (line: string) => process.stdout.write(`[nanoresearch] ${line}\n`);
  log(`sandbox on ${process.env.SLURMD_NODENAME ?? 'this node'} (job ${process.env.SLURM_JOB_ID ?? '?'}): ${spec.options.command.join(' ')}`);
  try {
    const result = await runInSandbox({ ...spec.options, onOutput: (_stream, chunk) => process.stdout.write(chunk) });
    writeOutcome(folder, { result });
    const ending = result.timedOut
      ? 'timed out'
      : result.stoppedBy === 'disk-quota'
        ? 'stopped at the disk quota'
        : result.exitCode !== null
          ? `exit code ${result.exitCode}`
          : `signal ${result.signal}`;
    log(`program ended: ${ending} after ${result.wallMs} ms`);
    return result.exitCode === 0 && result.stoppedBy === 'exit' ? 0 : result.exitCode || 1;
  } catch (error) {
    const message = (error as Error).message ?? String(error);
    writeOutcome(folder, { error: message });
    log(`the sandbox could not run: ${message}`);
    return 2;
  }
}

if (require.main === module) {
  const specFile = process.argv[2];
  if (!specFile) {
    process.stderr.write('usage: node slurm-job.js <job folder>/spec.json\n');
    process.exit(2);
  }
  main(path.resolve(specFile)).then(
    code => process.exit(code),
    error => {
      process.stderr.write(`${(error as Error).stack ?? error}\n`);
      process.exit(2);
    }
  );
}
