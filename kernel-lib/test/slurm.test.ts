/**
 * The Slurm executor against a real one-node cluster (slurm-cluster.ts: munged, slurmctld and
 * slurmd started here, stopped afterwards): an experiment stage end to end through sbatch with
 * the mapped limits, a cancel from the stage's AbortSignal (scancel), and a kernel killed while
 * its job runs whose resumed run adopts the job instead of submitting again. Skipped, saying why,
 * only where Slurm cannot be installed (not root).
 */
import { ChildProcess, spawn } from 'child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'fs';
import { tmpdir } from 'os';
import * as path from 'path';
import type { Profile, Project } from '@nanoresearch/schema';
import { newId } from '../src/ids';
import { createLlm } from '../src/llm';
import type { StageContext } from '../src/stage-contract';
import { experiment, type ExperimentOutput } from '../src/stages';
import { probeBubblewrap } from '../src/sandbox';
import { chooseExecutor } from '../src/sandbox/slurm-executor';
import { devicesOf, elapsedSeconds, requestArgs, slurmRequest } from '../src/sandbox/slurm';
import { Store } from '../src/store';
import { routeByModel, startLiteratureFixtureServer, startScriptedLlmServer, type LlmScript } from '../src/testing';
import { EXPERIMENT_PROGRAM, fenced, placeDataset, researchScript, ROLE_MODELS } from './fixtures/e2e/research-script';
import { SlurmCluster, slurmUnavailable, startSlurmCluster } from './slurm-cluster';

const PROFILE: Profile = {
  id: 'prof_slurm',
  name: 'slurm',
  research: {},
  resources: { cpu_only: true, max_experiment_minutes: 2, memory_gb: 1, executor: { kind: 'slurm', partition: 'nrtest' } },
  writing: {},
  publication: {},
  interaction: {}
};

/** The blueprint the stage runs (the scripted planner's), as the previous stages would leave it. */
const BLUEPRINT = JSON.parse((researchScript().planning as () => string)());

/** A program that prints its environment's names, waits until the test writes `go` into its folder, then measures. */
function gatedProgram(waitSeconds: number): string {
  return [
    'import os, time',
    'print("env names:", ",".join(sorted(os.environ)), flush=True)',
    'print("waiting for go", flush=True)',
    `deadline = time.time() + ${waitSeconds}`,
    'while not os.path.exists("go") and time.time() < deadline:',
    '    time.sleep(0.1)',
    'print("going", flush=True)',
    EXPERIMENT_PROGRAM
  ].join('\n');
}

describe('the executor choice and the request mapping', () => {
  test('NANORESEARCH_EXECUTOR wins over the profile; local is the default; a wrong name is refused', () => {
    const local = { ...PROFILE, resources: { cpu_only: true } };
    expect(chooseExecutor(local, {})).toEqual({ kind: 'local' });
    expect(chooseExecutor(local, { NANORESEARCH_EXECUTOR: 'slurm' })).toEqual({ kind: 'slurm' });
    expect(chooseExecutor(PROFILE, {})).toEqual({ kind: 'slurm', partition: 'nrtest' });
    expect(chooseExecutor(PROFILE, { NANORESEARCH_EXECUTOR: 'local' })).toEqual({ kind: 'local', partition: 'nrtest' });
    expect(() => chooseExecutor(PROFILE, { NANORESEARCH_EXECUTOR: 'kubernetes' })).toThrow(/not an executor: use 'local' \(the default\) or 'slurm'/);
  });

  test('compute maps to --time, --mem, --cpus-per-task and --gres=gpu:N, partition and account from the profile', () => {
    expect(devicesOf('cpu')).toEqual({ gpus: 0, cpus: 1 });
    expect(devicesOf('GPU')).toEqual({ gpus: 1, cpus: 1 });
    expect(devicesOf('2 GPUs, 8 CPUs')).toEqual({ gpus: 2, cpus: 8 });
    expect(devicesOf('4xA100')).toEqual({ gpus: 4, cpus: 1 });
    expect(devicesOf('cuda, cpu:4')).toEqual({ gpus: 1, cpus: 4 });
    const request = slurmRequest(
      { timeoutMs: 10 * 60_000, memoryMb: 4096 },
      { device: '2 gpus, 4 cpus', estimated_minutes: 5 },
      { partition: 'gpu', account: 'lab42' }
    );
    expect(requestArgs(request)).toEqual(['--time=11', '--mem=4352M', '--cpus-per-task=4', '--gres=gpu:2', '--partition=gpu', '--account=lab42']);
    // A CPU-only profile never asks for a GPU, whatever the plan says.
    expect(slurmRequest({ timeoutMs: 60_000 }, { device: 'gpu', estimated_minutes: 1 }, { cpuOnly: true }).gpus).toBe(0);
    expect(elapsedSeconds('1-02:03:04')).toBe(93784);
    expect(elapsedSeconds('00:07')).toBe(7);
  });
});

const unavailable = slurmUnavailable();
if (unavailable) console.log(`Slurm executor tests skipped: ${unavailable}`);
const describeCluster = unavailable ? describe.skip : describe;

describeCluster('the Slurm executor on a real one-node cluster', () => {
  let cluster: SlurmCluster;
  let store: Store;
  const savedEnv = { ...process.env };

  beforeAll(async () => {
    const started = Date.now();
    cluster = await startSlurmCluster();
    console.log(`test cluster up in ${Date.now() - started} ms (node ${cluster.nodeName}, ${cluster.dir})`);
    process.env.SLURM_CONF = cluster.conf;
    store = await Store.open({ path: path.join(mkdtempSync(path.join(tmpdir(), 'nr-slurm-store-')), 'store.duckdb') });
  }, 60_000);
  afterAll(async () => {
    process.env = savedEnv;
    await store?.close();
    await cluster?.stop();
  });

  const jobFields = (jobId: string) =>
    Object.fromEntries([...cluster.run('scontrol', ['show', 'job', '-o', jobId]).matchAll(/(\S+?)=(\S*)/g)].map(m => [m[1], m[2]]));
  const accounted = (jobId: string) => cluster.run('sacct', ['--completion', '-j', jobId, '-X', '-n', '-P', '-o', 'JobID,State,ExitCode,Elapsed']).trim();

  async function stageContext(coding: LlmScript, signal?: AbortSignal) {
    const script = researchScript();
    script.coding = coding;
    const server = await startScriptedLlmServer(routeByModel(script));
    const llm = createLlm({ provider: 'openai', baseURL: server.url, apiKey: 'test-key', models: ROLE_MODELS, maxRetries: 0 });
    const workspace = mkdtempSync(path.join(tmpdir(), 'nr-slurm-ws-'));
    placeDataset(workspace);
    const project = { id: newId('prj'), title: 'Centroids', topic: 'nearest centroids', profile_id: PROFILE.id, status: 'active', workspace } as Project;
    const steps: string[] = [];
    const listeners: Array<(step: string) => void> = [];
    const ctx: StageContext = {
      stage: 'experiment',
      stageRunId: newId('sr'),
      runId: newId('run'),
      project,
      profile: PROFILE,
      llm,
      store,
      plan: { selected_skill_ids: [], selected_memory_ids: [], prompt_plan: '', update_memory: [], update_skill: [] },
      skills: [],
      memories: [],
      guidance: '',
      previous: { planning: BLUEPRINT },
      workspace,
      progress: step => {
        steps.push(step);
        listeners.forEach(l => l(step));
      },
      signal
    };
    return { ctx, steps, onStep: (l: (step: string) => void) => listeners.push(l), close: () => server.close() };
  }

  test('an experiment stage runs end to end as a Slurm job: mapped limits, its states and log on the card, metrics and sacct in the run record', async () => {
    // A secret in the kernel's environment must reach neither the job nor the program.
    process.env.NR_TEST_SECRET_TOKEN = 'do-not-leak';
    const { ctx, steps, onStep, close } = await stageContext(() => fenced(gatedProgram(60)));
    // The program waits for `go` until the card has shown it running with its log.
    onStep(step => {
      const running = /^Slurm job (\d+) running .*waiting for go/.exec(step);
      if (running) writeFileSync(path.join(ctx.workspace, 'experiments', ctx.stageRunId, 'go'), '');
    });
    const started = Date.now();
    try {
      const result = await experiment(ctx);
      const out = result.output as ExperimentOutput;
      expect([result.status, result.error]).toEqual(['done', undefined]);
      expect(out.metrics.centroid.accuracy).toBe(0.8571);
      expect(out.metrics.majority.accuracy).toBe(0.3214);

      const slurm = out.attempts[0].slurm!;
      expect(slurm).toMatchObject({ state: 'completed', slurm_state: 'COMPLETED', exit_code: '0:0', node: cluster.nodeName, adopted: false });
      expect(slurm.elapsed).toMatch(/^\d\d:\d\d:\d\d$/);
      expect(slurm.request).toEqual({ timeMinutes: 3, memoryMb: 1280, cpus: 1, gpus: 0, partition: 'nrtest' });
      // The scheduler got the mapped limits.
      const job = jobFields(slurm.job_id);
      expect({
        TimeLimit: job.TimeLimit,
        MinMemoryNode: job.MinMemoryNode,
        'CPUs/Task': job['CPUs/Task'],
        Partition: job.Partition,
        JobState: job.JobState
      }).toEqual({
        TimeLimit: '00:03:00',
        MinMemoryNode: '1280M',
        'CPUs/Task': '1',
        Partition: 'nrtest',
        JobState: 'COMPLETED'
      });
      expect(accounted(slurm.job_id)).toBe(`${slurm.job_id}|COMPLETED|0:0|${slurm.elapsed}`);

      // The card showed the job id, its states and the tail of its log as it ran.
      expect(steps.some(s => new RegExp(`^Slurm job ${slurm.job_id} (pending|running)`).test(s))).toBe(true);
      expect(steps.some(s => new RegExp(`^Slurm job ${slurm.job_id} running on ${cluster.nodeName} .*· waiting for go$`).test(s))).toBe(true);
      expect(steps).toContain(`Slurm job ${slurm.job_id} completed (COMPLETED, exit 0:0, ${slurm.elapsed})`);

      // The same sandbox ran inside the allocation: the isolation a local run gets here, the Slurm limits beside it.
      expect(out.isolation.network).toBe(probeBubblewrap().usable ? 'none' : 'unrestricted');
      expect(out.isolation.limits).toEqual(
        expect.arrayContaining(['wall=120000ms', 'env=scrubbed', 'slurm --time=3 --mem=1280M --cpus-per-task=1 --partition=nrtest'])
      );
      expect(out.isolation.layers).toEqual(
        expect.arrayContaining([`slurm job ${slurm.job_id} on ${cluster.nodeName}: COMPLETED exit 0:0 elapsed ${slurm.elapsed}`])
      );
      const log = readFileSync(path.join(ctx.workspace, slurm.log), 'utf8');
      const envNames = /env names: (.*)/.exec(log)![1].split(',');
      expect(envNames.filter(n => /SECRET|TOKEN|SLURM/.test(n))).toEqual([]);
      expect(readFileSync(path.join(ctx.workspace, out.experiment_dir, 'logs', 'attempt-1.log'), 'utf8')).toMatch(/waiting for go[\s\S]*going/);

      const rows = await store.read(q =>
        q.all<Record<string, unknown>>('select job_id, state, slurm_state, exit_code, elapsed_seconds, ended_at from slurm_jobs where stage_run_id = $1', [
          ctx.stageRunId
        ])
      );
      expect(rows).toEqual([
        expect.objectContaining({
          job_id: slurm.job_id,
          state: 'completed',
          slurm_state: 'COMPLETED',
          exit_code: '0:0',
          elapsed_seconds: slurm.elapsed_seconds
        })
      ]);
      expect(rows[0].ended_at).not.toBeNull();
      console.log(`Slurm job ${slurm.job_id}: stage done in ${Date.now() - started} ms (job elapsed ${slurm.elapsed})`);
    } finally {
      delete process.env.NR_TEST_SECRET_TOKEN;
      await close();
    }
  }, 60_000);

  test('interrupting the stage (its AbortSignal) cancels the running job with scancel', async () => {
    const controller = new AbortController();
    const { ctx, steps, onStep, close } = await stageContext(() => fenced(gatedProgram(120)), controller.signal);
    let jobId = '';
    onStep(step => {
      const running = /^Slurm job (\d+) running .*waiting for go/.exec(step);
      if (running && !jobId) {
        jobId = running[1];
        controller.abort();
      }
    });
    const started = Date.now();
    try {
      await expect(experiment(ctx)).rejects.toMatchObject({
        name: 'AbortError',
        message: expect.stringMatching(/^the experiment was cancelled: Slurm job \d+ was cancelled \(scancel\)$/)
      });
      expect(jobId).not.toBe('');
      expect(jobFields(jobId).JobState).toBe('CANCELLED');
      expect(accounted(jobId)).toMatch(new RegExp(`^${jobId}\\|CANCELLED`));
      expect(steps).toEqual(expect.arrayContaining([`cancelling Slurm job ${jobId} (scancel)`, `Slurm job ${jobId} cancelled (scancel)`]));
      const row = await store.read(q => q.get<{ state: string; slurm_state: string }>('select state, slurm_state from slurm_jobs where job_id = $1', [jobId]));
      expect(row).toEqual({ state: 'cancelled', slurm_state: 'CANCELLED' });
      console.log(`Slurm job ${jobId} cancelled ${Date.now() - started} ms after the stage started`);
    } finally {
      await close();
    }
  }, 60_000);

  test('a kernel killed while its job runs: the resumed project.run() adopts the job instead of submitting again', async () => {
    const dist = path.resolve(__dirname, '../dist');
    if (!existsSync(path.join(dist, 'sandbox', 'slurm-executor.js')))
      throw new Error('the kernel children run kernel-lib/dist: run npm run build -w kernel-lib first');
    const lit = await startLiteratureFixtureServer();
    const script = researchScript();
    script.coding = () => fenced(gatedProgram(120));
    const llm = await startScriptedLlmServer(routeByModel(script));
    const home = mkdtempSync(path.join(tmpdir(), 'nr-slurm-home-'));
    const llmConfig = JSON.stringify({
      provider: 'openai',
      baseURL: llm.url,
      apiKey: 'test-key',
      models: ROLE_MODELS,
      prices: Object.fromEntries(Object.values(ROLE_MODELS).map(model => [model, { inputPerMTok: 0, outputPerMTok: 0 }])),
      maxRetries: 0
    });
    const topic = 'Nearest-centroid classification of a small flower CSV against a majority baseline';
    const env = { ...process.env, ...lit.env, NANORESEARCH_LITERATURE_SOURCES: 'openalex,crossref', NANORESEARCH_EXECUTOR: 'slurm', SLURM_CONF: cluster.conf };
    const kernels: ChildProcess[] = [];
    /** A kernel running project.run(); its progress steps and final stages come as JSON lines. */
    const kernel = (mode: 'restart' | 'resume', to: string) => {
      const child = spawn(process.execPath, [path.join(__dirname, 'slurm-run-child.js'), dist, home, topic, llmConfig, mode, to], {
        env,
        stdio: ['ignore', 'pipe', 'pipe']
      });
      kernels.push(child);
      const lines: Array<{ progress?: string; stages?: Array<[string, string, string, string | null, ExperimentOutput]> }> = [];
      let buffered = '';
      let stderr = '';
      const waiters: Array<() => void> = [];
      child.stdout!.on('data', chunk => {
        buffered += chunk;
        const parts = buffered.split('\n');
        buffered = parts.pop()!;
        lines.push(...parts.map(p => JSON.parse(p)));
        waiters.forEach(w => w());
      });
      child.stderr!.on('data', chunk => (stderr += chunk));
      const exited = new Promise<number | null>(resolve => child.on('exit', code => resolve(code)));
      const progress = (re: RegExp) =>
        new Promise<RegExpExecArray>((resolve, reject) => {
          const check = () => {
            for (const line of lines) {
              const m = line.progress !== undefined ? re.exec(line.progress) : null;
              if (m) return resolve(m);
            }
          };
          waiters.push(check);
          check();
          exited.then(code => setImmediate(() => reject(new Error(`kernel (${mode}) exited ${code} before a step matched ${re}: ${stderr}`))));
        });
      const stages = async () => {
        const code = await exited;
        if (code !== 0) throw new Error(`kernel (${mode}) exited ${code}: ${stderr}`);
        return lines.find(l => l.stages)!.stages!;
      };
      return { child, progress, stages, exited };
    };
    const ourJobs = () =>
      cluster
        .run('squeue', ['--noheader', '--states=all', '--format=%i|%j|%T'])
        .split('\n')
        .map(l => l.trim().split('|'))
        .filter(([, name]) => name?.startsWith('nr-'));
    try {
      const planned = await kernel('restart', 'planning').stages();
      expect(planned.map(s => [s[0], s[1], s[3]])).toEqual([
        ['ideation', 'done', null],
        ['planning', 'done', null]
      ]);
      const before = new Set(ourJobs().map(([id]) => id));

      // The first kernel submits the job and dies (SIGKILL) while the program runs.
      const first = kernel('resume', 'experiment');
      const [, jobId] = await first.progress(/^Slurm job (\d+) running .*waiting for go/);
      first.child.kill('SIGKILL');
      await first.exited;
      expect(jobFields(jobId).JobState).toBe('RUNNING');

      // The resumed run finds the job in the store, still running, and waits for it.
      const second = kernel('resume', 'experiment');
      await second.progress(new RegExp(`^Slurm job ${jobId}: picked up from an earlier kernel \\(not submitted again\\)$`));
      await second.progress(new RegExp(`^Slurm job ${jobId} running`));
      const spec = JSON.parse(readFileSync(path.join(jobFields(jobId).WorkDir, 'spec.json'), 'utf8')) as { options: { cwd: string } };
      writeFileSync(path.join(spec.options.cwd, 'go'), '');
      const stages = await second.stages();
      const [stage, status, , error, output] = stages[stages.length - 1];
      expect([stage, status, error]).toEqual(['experiment', 'done', null]);
      expect(output.attempts.map(a => [a.slurm?.job_id, a.slurm?.adopted, a.slurm?.state])).toEqual([[jobId, true, 'completed']]);
      expect(output.metrics.centroid.accuracy).toBe(0.8571);
      // One job in all: nothing was submitted again.
      expect(ourJobs().filter(([id]) => !before.has(id))).toEqual([[jobId, expect.stringMatching(/^nr-sr_\w+-a1$/), 'COMPLETED']]);
    } finally {
      kernels.forEach(k => k.exitCode === null && k.signalCode === null && k.kill('SIGKILL'));
      await llm.close();
      await lit.close();
    }
  }, 150_000);
});
