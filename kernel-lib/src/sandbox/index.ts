/**
 * Runs generated experiment code as a child process with limits, without privilege and without secrets.
 *
 * Layers, strongest first (kernel-lib/README.md, "Sandbox: isolation" and "Sandbox: limits", say which machines lack which):
 *  - no privilege: as root, the code runs as a uid of its own (unique to the run, no capabilities,
 *    no_new_privs, `setpriv`), so RLIMIT_NPROC counts exactly its tree and a kill sent as that uid
 *    reaches every member; as another user, bubblewrap maps it to uid 65534 in a user namespace;
 *  - bubblewrap (`bwrap`) when it can create namespaces here: no network, system folders
 *    read-only, the workspace the only writable bind, private size-limited /tmp and /dev/shm,
 *    a minimal /dev, /proc of its own pid namespace, no further user namespaces;
 *  - limits: CPU seconds, address space, file size, processes (prlimit); a cgroup for the whole
 *    tree's tasks and memory where one can be created; a polled workspace disk quota;
 *  - an environment built from scratch (never `process.env`): API keys of the parent are not visible;
 *  - a wall-clock time-out after which every process of the tree is killed and the call returns,
 *    even if a detached grandchild still holds the output pipe.
 * Whatever layer is missing on this machine is named in `isolation.missing`: the fallback is never silent.
 */
import { randomBytes } from 'crypto';
import { chmodSync, mkdtempSync, realpathSync, rmSync, statSync } from 'fs';
import { tmpdir } from 'os';
import * as path from 'path';
import { BwrapProbe, dropRoot, isRoot, NAMESPACE_UID, noMoreUserns, pathBinds, probeBubblewrap, systemMounts } from './bwrap';
import { createRunCgroup, RunCgroup } from './cgroup';
import { execute, QUOTA_POLL_MS } from './execute';
import { allocateSandboxUid, chownTree, killAllOfUid, signalPids, processesOfUid, processTree } from './process-tree';
import { blockedFor, Program, resolveProgram, tool } from './programs';
import { pythonRuntimeEnv } from './python-env';

export { probeBubblewrap } from './bwrap';

export interface SandboxOptions {
  /** The experiment folder: the working directory, HOME and the only writable place. */
  cwd: string;
  /** argv, e.g. ['python3', 'main.py']; `python`/`python3` is the experiment interpreter (python-env.ts), others are resolved on PATH. */
  command: string[];
  /** Wall-clock limit; every process of the run is killed when it passes and the call returns. */
  timeoutMs: number;
  /** CPU-time limit per process (RLIMIT_CPU); defaults to the wall-clock limit in seconds. */
  cpuSeconds?: number;
  /** Memory in MiB: address space per process (RLIMIT_AS) and, with a cgroup, the whole tree; default 2048. */
  memoryMb?: number;
  /** Largest file the child may write (RLIMIT_FSIZE) in MiB; default 256. */
  fileSizeMb?: number;
  /** Bytes the run may add to its workspace, all files together, in MiB (polled); also the size of the private /tmp; default 1024. */
  diskQuotaMb?: number;
  /** Processes and threads the run may have at once (RLIMIT_NPROC of its uid, or a pids cgroup); default 256. */
  maxProcesses?: number;
  /** Extra variables for the child. Names that look like secrets are refused (see `isolation.missing`). */
  env?: Record<string, string>;
  /** Bytes of stdout / stderr kept (the tail, where tracebacks are); default 64 KiB each. */
  maxOutputBytes?: number;
  /** 'auto' uses bubblewrap when it works here; 'limits-only' skips it (and says so). */
  isolation?: 'auto' | 'limits-only';
  /** Hears the program's output as it comes (the Slurm job's live log); the result keeps the tails either way. */
  onOutput?: (stream: 'stdout' | 'stderr', chunk: Buffer) => void;
}

export interface IsolationReport {
  network: 'none' | 'unrestricted';
  filesystem: 'workspace-only' | 'unrestricted';
  /** Each protection applied, e.g. 'uid=2113929300 (unprivileged, this run only)', 'capabilities=none', 'pid-namespace'. */
  layers?: string[];
  /** The limits applied, e.g. 'cpu=60s', 'as=2048MiB', 'fsize=256MiB', 'nproc=256', 'disk=1024MiB', 'wall=60000ms', 'env=scrubbed'. */
  limits: string[];
  /** Each protection that could not be applied on this machine, with why. */
  missing: string[];
}

export interface SandboxResult {
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  /** What ended the run: the program itself, the wall-clock limit, or the disk quota. */
  stoppedBy: 'exit' | 'wall-clock' | 'disk-quota';
  /** Whether the kernel's OOM killer killed a process of the run (known only with a memory cgroup). */
  memoryLimitHit: boolean;
  stdout: string;
  stderr: string;
  wallMs: number;
  isolation: IsolationReport;
  /** The Slurm job the run was, when the Slurm executor ran it (slurm-executor.ts). */
  slurm?: import('./slurm-executor').SlurmRunRecord;
}

/** Variable names never passed to generated code, even when asked for explicitly. */
const SECRET_NAME = /(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH|COOKIE|SESSION)/i;

/** The wrapper that puts itself into the run's cgroups before it execs anything: no fork escapes the count. */
function joinCgroups(procsFiles: string[]): string[] {
  if (procsFiles.length === 0) return [];
  const script = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); done; exec "$@"';
  return ['/bin/sh', '-c', script, 'nr-sandbox-cgroup', String(procsFiles.length), ...procsFiles];
}

/** Without a mount namespace the code meets the real file system as the run's uid: what it needs must be reachable. */
function assertReachable(uid: number, program: Program, cwd: string, reason: string | undefined): void {
  const why = `sandbox (without bubblewrap: ${reason}; lab running as root): the unprivileged sandbox uid cannot reach`;
  for (const needed of [program.path, ...program.folders]) {
    const blocked = blockedFor(uid, needed);
    if (blocked) {
      throw new Error(
        `${why} ${needed}, because ${blocked} is not searchable by other users. ` +
          `Run with isolation 'auto' where bubblewrap works, or set NANORESEARCH_EXPERIMENT_PYTHON to an interpreter every user can read (e.g. /usr/bin/python3 or a venv under /opt).`
      );
    }
  }
  const blocked = blockedFor(uid, cwd);
  if (blocked) {
    throw new Error(
      `${why} its workspace ${cwd}, because ${blocked} is not searchable by other users: keep workspaces where every user can reach them (e.g. chmod o+x ${blocked}), or run with isolation 'auto' where bubblewrap works.`
    );
  }
}

/** The environment, from scratch: nothing of the parent's, secrets refused by name. */
function childEnv(program: Program, cwd: string, tmp: string, extra: Record<string, string>, missing: string[]): Record<string, string> {
  const env: Record<string, string> = {
    PATH: [path.dirname(program.path), '/usr/local/bin', '/usr/bin', '/bin'].join(':'),
    HOME: cwd,
    TMPDIR: tmp,
    USER: 'sandbox',
    LOGNAME: 'sandbox',
    LANG: 'C.UTF-8',
    LC_ALL: 'C.UTF-8',
    PYTHONUNBUFFERED: '1',
    PYTHONDONTWRITEBYTECODE: '1',
    PYTHONNOUSERSITE: '1',
    ...pythonRuntimeEnv(tmp)
  };
  for (const [name, value] of Object.entries(extra)) {
    if (SECRET_NAME.test(name)) missing.push(`env ${name} refused: generated code never receives secrets`);
    else env[name] = value;
  }
  return env;
}

interface Report {
  layers: string[];
  limits: string[];
  missing: string[];
}

/** Wraps argv so the code holds no privilege: the run's own uid (root), a user namespace (bwrap), or at least no_new_privs. */
function dropPrivilege(argv: string[], uid: number | undefined, bwrap: string | undefined, probe: BwrapProbe, cwd: string, report: Report): string[] {
  const setpriv = tool('setpriv');
  let wrapped = argv;
  if (uid !== undefined) {
    if (!setpriv)
      throw new Error('sandbox: the lab runs as root and setpriv (util-linux) is missing, so generated code cannot be run unprivileged; install util-linux');
    if (bwrap && probe.disableUserns) wrapped = [...noMoreUserns(bwrap, uid, cwd), ...wrapped];
    wrapped = [...dropRoot(setpriv, uid), ...wrapped];
    report.layers.push(`uid=${uid} gid=${uid} (unprivileged, this run only)`, 'capabilities=none', 'no_new_privs');
  } else if (bwrap) {
    report.layers.push(`uid=${NAMESPACE_UID} gid=${NAMESPACE_UID} in a user namespace`, 'capabilities=none', 'no_new_privs');
  } else {
    if (setpriv) {
      wrapped = [setpriv, '--no-new-privs', '--', ...wrapped];
      report.layers.push('no_new_privs');
    } else report.missing.push('no_new_privs: setpriv (util-linux) is not installed, so a setuid program could raise privilege');
    report.layers.push(`uid=${process.getuid?.()} (the lab's own user, unprivileged)`);
    report.missing.push(`own uid: ${probe.reason}; the code runs as the lab's user and can read what the lab user can`);
  }
  if (bwrap) {
    if (probe.disableUserns) report.layers.push('user-namespaces=disabled');
    else report.missing.push(`user-namespace creation: ${probe.disableUsernsReason}`);
  }
  return wrapped;
}

/** Kills every process of the run that can be found; the ways that reach further run first. */
function treeKiller(uid: number | undefined, cgroup: RunCgroup): (pid: number) => void {
  return pid => {
    if (uid !== undefined) killAllOfUid(uid);
    cgroup.killAll();
    // The tree is read before anything dies (a killed parent's children are reparented out of the
    // walk), and stopped first, so none can fork between the walk and the kill.
    const tree = processTree(pid);
    signalPids(tree, 'SIGSTOP');
    signalPids([...new Set([...tree, ...processTree(pid)])], 'SIGKILL');
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // The group is gone.
    }
  };
}

/** Runs `command` in `cwd` under the strongest isolation this machine allows. */
export async function runInSandbox(options: SandboxOptions): Promise<SandboxResult> {
  const cwd = realpathSync(options.cwd);
  const memoryMb = options.memoryMb ?? 2048;
  const fileSizeMb = options.fileSizeMb ?? 256;
  const diskQuotaMb = options.diskQuotaMb ?? 1024;
  const maxProcesses = options.maxProcesses ?? 256;
  const cpuSeconds = Math.max(1, Math.ceil(options.cpuSeconds ?? options.timeoutMs / 1000));
  const report: Report = { layers: [], limits: [`wall=${options.timeoutMs}ms`], missing: [] };

  const program = resolveProgram(options.command[0]);
  const probe: BwrapProbe = options.isolation === 'limits-only' ? { usable: false, reason: 'bubblewrap skipped (isolation: limits-only)' } : probeBubblewrap();
  const bwrap = probe.usable ? tool('bwrap') : undefined;
  const prlimit = tool('prlimit');
  if (!prlimit) throw new Error('sandbox: prlimit (util-linux) is missing, so no resource limit can be set; install util-linux');
  const uid = isRoot() ? allocateSandboxUid() : undefined;
  if (uid !== undefined && !bwrap) assertReachable(uid, program, cwd, probe.reason);

  // A private temporary folder: a tmpfs inside bubblewrap, a fresh folder otherwise.
  const hostTmp = bwrap ? undefined : mkdtempSync(path.join(tmpdir(), 'nr-sandbox-tmp-'));
  const env = childEnv(program, cwd, hostTmp ?? '/tmp', options.env ?? {}, report.missing);
  report.limits.push('env=scrubbed');

  // Innermost first: program ← [nested bwrap] ← [setpriv] ← prlimit ← [bwrap] ← [cgroup join].
  let argv = dropPrivilege([program.path, ...options.command.slice(1)], uid, bwrap, probe, cwd, report);
  // RLIMIT_NPROC counts the tasks of the real uid (in its user namespace): exact for a uid of the
  // run's own, but for the lab's own uid it would count the lab user's other processes too.
  const nproc = uid !== undefined || bwrap !== undefined;
  argv = [
    prlimit,
    `--cpu=${cpuSeconds}`,
    `--as=${memoryMb * 2 ** 20}`,
    `--fsize=${fileSizeMb * 2 ** 20}`,
    ...(nproc ? [`--nproc=${maxProcesses}`] : []),
    '--',
    ...argv
  ];
  report.limits.push(`cpu=${cpuSeconds}s`, `as=${memoryMb}MiB`, `fsize=${fileSizeMb}MiB`, ...(nproc ? [`nproc=${maxProcesses}`] : []));

  if (bwrap) {
    const userns =
      uid !== undefined
        ? []
        : [
            '--unshare-user',
            '--uid',
            String(NAMESPACE_UID),
            '--gid',
            String(NAMESPACE_UID),
            '--cap-drop',
            'ALL',
            ...(probe.disableUserns ? ['--disable-userns'] : [])
          ];
    const namespaces = ['--unshare-net', '--unshare-pid', '--unshare-ipc', '--unshare-uts', '--unshare-cgroup-try', '--die-with-parent'];
    argv = [bwrap, ...systemMounts(diskQuotaMb * 2 ** 20), ...pathBinds(program.folders, cwd), '--chdir', cwd, ...userns, ...namespaces, '--', ...argv];
    report.layers.push(
      'network-namespace (no network)',
      'mount-namespace (system folders read-only, the workspace the only writable bind)',
      'pid-namespace (own /proc)',
      'ipc+uts namespaces',
      'dev=minimal (null zero full random urandom tty pts shm)',
      `private /tmp and /dev/shm (tmpfs, ${diskQuotaMb}MiB each)`
    );
  } else {
    report.missing.push(`network isolation: ${probe.reason}`, `filesystem isolation: ${probe.reason}`, `pid namespace: ${probe.reason}`);
  }

  // bubblewrap's own processes (outer, pid 1, nested) are in the cgroup too.
  const cgroup = createRunCgroup(`nanoresearch-sandbox-${process.pid}-${randomBytes(4).toString('hex')}`, maxProcesses + (bwrap ? 4 : 0), memoryMb * 2 ** 20);
  report.limits.push(...cgroup.applied, `disk=${diskQuotaMb}MiB (workspace, polled every ${QUOTA_POLL_MS}ms)`);
  if (!nproc && !cgroup.applied.some(a => a.startsWith('pids'))) {
    report.missing.push("process cap: neither a uid of its own nor a pids cgroup is available, so a fork storm is bounded only by the lab user's limits");
  }
  report.missing.push(...cgroup.missing.map(m => (m.startsWith('memory') ? `${m} (memory is capped per process only)` : m)));
  argv = [...joinCgroups(cgroup.procsFiles), ...argv];

  const killReach =
    uid !== undefined ? 'kill=every process of the run uid' : cgroup.procsFiles.length ? 'kill=cgroup' : bwrap ? 'kill=pid namespace' : undefined;
  if (killReach) report.layers.push(killReach);
  else
    report.missing.push(
      'complete kill: without a uid of its own, a cgroup or a pid namespace, a process that leaves the session and its parent can outlive the run'
    );

  const workspaceOwner = statSync(cwd);
  try {
    if (uid !== undefined) {
      try {
        chownTree(cwd, uid, uid);
        if (hostTmp) chownTree(hostTmp, uid, uid);
      } catch (error) {
        throw new Error(
          `sandbox: cannot hand the workspace ${cwd} to the run's unprivileged uid (${(error as Error).message}); keep workspaces on a local file system that supports chown`
        );
      }
    }
    if (hostTmp) chmodSync(hostTmp, 0o700);
    const run = await execute({
      argv,
      cwd,
      env,
      timeoutMs: options.timeoutMs,
      maxOutputBytes: options.maxOutputBytes ?? 64 * 1024,
      quotaDirs: [cwd, ...(hostTmp ? [hostTmp] : [])],
      quotaBytes: diskQuotaMb * 2 ** 20,
      killTree: treeKiller(uid, cgroup),
      alive: pid => [...new Set([...(uid !== undefined ? processesOfUid(uid) : processTree(pid)), ...cgroup.members()])],
      onOutput: options.onOutput
    });
    if (run.survivors.length)
      report.missing.push(`complete kill: ${run.survivors.length} process(es) of the run outlived it (pids ${run.survivors.join(', ')})`);
    return {
      exitCode: run.exitCode,
      signal: run.signal,
      timedOut: run.stoppedBy === 'wall-clock',
      stoppedBy: run.stoppedBy,
      memoryLimitHit: cgroup.oomKills() > 0,
      stdout: run.stdout,
      stderr: run.stderr,
      wallMs: run.wallMs,
      isolation: { network: bwrap ? 'none' : 'unrestricted', filesystem: bwrap ? 'workspace-only' : 'unrestricted', ...report }
    };
  } finally {
    await cgroup.remove();
    // Leave the workspace owned as it was found; only what the run's uid owns is handed back.
    if (uid !== undefined) chownTree(cwd, workspaceOwner.uid, workspaceOwner.gid, uid);
    if (hostTmp) rmSync(hostTmp, { recursive: true, force: true });
  }
}

/** One-line descriptions of an isolation report, for stage cards and logs. */
export function describeIsolation(isolation: IsolationReport): string[] {
  return [
    `network: ${isolation.network}`,
    `filesystem: ${isolation.filesystem}`,
    ...(isolation.layers?.length ? [`layers: ${isolation.layers.join(', ')}`] : []),
    `limits: ${isolation.limits.join(', ')}`,
    ...isolation.missing.map(m => `missing: ${m}`)
  ];
}
