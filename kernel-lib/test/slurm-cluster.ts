/**
 * A real one-node Slurm cluster for the Slurm executor's tests: munged with a key made for the
 * test, slurmctld and slurmd, all configured in a temp folder (slurm.conf: SlurmctldHost=localhost,
 * one node with this machine's CPUs and memory, proctrack/linuxproc, task/none, no cgroup,
 * select/cons_tres, job completion records in a text file for sacct) on free ports, and stopped
 * afterwards. The packages come from scripts/setup (Debian's slurm-wlm and munge, as root).
 */
import { ChildProcess, execFileSync, spawn } from 'child_process';
import { randomBytes } from 'crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'fs';
import { createServer } from 'net';
import { cpus, hostname, tmpdir, totalmem } from 'os';
import * as path from 'path';

const DAEMONS = ['munged', 'slurmctld', 'slurmd'];
const CLIENTS = ['sbatch', 'scontrol', 'scancel', 'sacct', 'squeue'];
const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

function onPath(tool: string): boolean {
  return SYSTEM_PATH.split(':').some(dir => existsSync(path.join(dir, tool)));
}

/**
 * Why the cluster cannot run here, or undefined when it can. Only a machine where the packages
 * cannot be installed (not root) skips; as root, missing packages are an error to fix (run scripts/setup).
 */
export function slurmUnavailable(): string | undefined {
  const missing = [...DAEMONS, ...CLIENTS].filter(t => !onPath(t));
  if (missing.length === 0)
    return process.getuid?.() === 0 ? undefined : 'the test cluster runs slurmd as root (jobs of any user), and this process is not root';
  if (process.getuid?.() === 0) {
    throw new Error(`Slurm is not installed (missing ${missing.join(', ')}): run scripts/setup, which installs slurm-wlm and munge as root`);
  }
  return `Slurm and munge are not installed (missing ${missing.join(', ')}) and this process is not root, so scripts/setup could not install them`;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export interface SlurmCluster {
  dir: string;
  /** SLURM_CONF for the client tools (the executor and the test's own checks). */
  conf: string;
  nodeName: string;
  /** Runs a client tool against the cluster. */
  run(tool: string, args: string[]): string;
  stop(): Promise<void>;
}

async function waitFor(what: string, check: () => boolean, logs: string[], timeoutMs = 20_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > until) {
      const tails = logs.filter(existsSync).map(f => `--- ${f}\n${readFileSync(f, 'utf8').split('\n').slice(-15).join('\n')}`);
      throw new Error(`the test cluster did not come up: ${what}\n${tails.join('\n')}`);
    }
    await new Promise(resolve => setTimeout(resolve, 100));
  }
}

/** Starts munged, slurmctld and slurmd; resolves once the node is idle. */
export async function startSlurmCluster(): Promise<SlurmCluster> {
  const dir = mkdtempSync(path.join(tmpdir(), 'nr-slurm-'));
  // munged refuses a socket folder that others cannot search, and a key folder others can read.
  chmodSync(dir, 0o755);
  const run = path.join(dir, 'run');
  const key = path.join(dir, 'munge-key');
  mkdirSync(run, { mode: 0o755 });
  mkdirSync(key, { mode: 0o700 });
  for (const d of ['state', 'spool']) mkdirSync(path.join(dir, d));
  writeFileSync(path.join(key, 'munge.key'), randomBytes(1024), { mode: 0o400 });
  const socket = path.join(run, 'munge.socket');
  const nodeName = hostname().split('.')[0];
  const [ctlPort, nodePort] = [await freePort(), await freePort()];
  const memoryMb = Math.floor(totalmem() / 2 ** 20) - 1024;
  const conf = path.join(dir, 'slurm.conf');
  writeFileSync(
    conf,
    [
      'ClusterName=nrtest',
      'SlurmctldHost=localhost',
      'SlurmUser=root',
      'SlurmdUser=root',
      `SlurmctldPort=${ctlPort}`,
      `SlurmdPort=${nodePort}`,
      'AuthType=auth/munge',
      'CredType=cred/munge',
      `AuthInfo=socket=${socket}`,
      `StateSaveLocation=${path.join(dir, 'state')}`,
      `SlurmdSpoolDir=${path.join(dir, 'spool')}`,
      `SlurmctldPidFile=${path.join(run, 'slurmctld.pid')}`,
      `SlurmdPidFile=${path.join(run, 'slurmd.pid')}`,
      `SlurmctldLogFile=${path.join(dir, 'slurmctld.log')}`,
      `SlurmdLogFile=${path.join(dir, 'slurmd.log')}`,
      'ProctrackType=proctrack/linuxproc',
      'TaskPlugin=task/none',
      'SelectType=select/cons_tres',
      'SelectTypeParameters=CR_Core_Memory',
      // No slurmdbd: sacct reads the job completion records (sacct --completion).
      'AccountingStorageType=accounting_storage/none',
      'JobAcctGatherType=jobacct_gather/none',
      'JobCompType=jobcomp/filetxt',
      `JobCompLoc=${path.join(dir, 'jobcomp.txt')}`,
      'MpiDefault=none',
      'ReturnToService=2',
      'SchedulerType=sched/backfill',
      `NodeName=${nodeName} NodeAddr=127.0.0.1 CPUs=${cpus().length} RealMemory=${memoryMb} State=UNKNOWN`,
      `PartitionName=nrtest Nodes=${nodeName} Default=YES MaxTime=INFINITE State=UP`,
      ''
    ].join('\n')
  );
  const env = { PATH: SYSTEM_PATH, SLURM_CONF: conf, LANG: 'C.UTF-8' };
  const children: ChildProcess[] = [];
  const daemon = (tool: string, args: string[]) => {
    const child = spawn(tool, args, { env, stdio: 'ignore' });
    children.push(child);
    return child;
  };
  const logs = [path.join(dir, 'munged.log'), path.join(dir, 'slurmctld.log'), path.join(dir, 'slurmd.log')];
  const client = (tool: string, args: string[]) => execFileSync(tool, args, { env, encoding: 'utf8', timeout: 30_000 });
  const stop = async () => {
    // Each daemon this helper started, by its own handle; then the temp folder.
    for (const child of [...children].reverse()) {
      if (child.exitCode !== null || child.signalCode !== null) continue;
      const exited = new Promise(resolve => child.once('exit', resolve));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    daemon('munged', [
      '--foreground',
      `--key-file=${path.join(key, 'munge.key')}`,
      `--socket=${socket}`,
      `--pid-file=${path.join(run, 'munged.pid')}`,
      `--log-file=${logs[0]}`,
      `--seed-file=${path.join(key, 'munged.seed')}`
    ]);
    await waitFor('munged socket', () => existsSync(socket), logs);
    daemon('slurmctld', ['-D', '-i']);
    await waitFor(
      'slurmctld answers',
      () => {
        try {
          client('scontrol', ['ping']);
          return true;
        } catch {
          return false;
        }
      },
      logs
    );
    daemon('slurmd', ['-D', '-N', nodeName]);
    await waitFor(
      `node ${nodeName} idle`,
      () => {
        try {
          return /idle/.test(client('sinfo', ['--noheader', '--format=%T']));
        } catch {
          return false;
        }
      },
      logs
    );
  } catch (error) {
    await stop();
    throw error;
  }
  return { dir, conf, nodeName, run: client, stop };
}
