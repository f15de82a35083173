/**
 * Runs generated experiment code as a child process with limits and without secrets.
 *
 * Layers, strongest first:
 *  - bubblewrap (`bwrap`) when present and able to create namespaces: no network
 *    (`--unshare-net`), read-only system folders, the workspace as the only writable
 *    bind, private /tmp, its own pid namespace, killed with its parent;
 *  - resource limits via `prlimit` (CPU seconds, address space, file size), or a
 *    `sh -c ulimit` wrapper where prlimit is missing;
 *  - an environment built from scratch (never `process.env`), so API keys and tokens
 *    of the parent are not visible;
 *  - a wall-clock time-out that kills the whole process group.
 * Whatever layer is missing on this machine is named in `isolation.missing`: the
 * fallback is never silent.
 */
import { spawn, spawnSync } from 'child_process';
import { existsSync, lstatSync, readlinkSync, realpathSync } from 'fs';
import * as path from 'path';

export interface SandboxOptions {
  /** The experiment folder: the working directory, HOME and the only writable place. */
  cwd: string;
  /** argv, e.g. ['python3', 'main.py']; the program is resolved on the parent's PATH. */
  command: string[];
  /** Wall-clock limit; the process group is killed with SIGKILL when it passes. */
  timeoutMs: number;
  /** CPU-time limit (RLIMIT_CPU); defaults to the wall-clock limit in seconds. */
  cpuSeconds?: number;
  /** Address-space limit (RLIMIT_AS) in MiB; default 2048. */
  memoryMb?: number;
  /** Largest file the child may write (RLIMIT_FSIZE) in MiB; default 256. */
  fileSizeMb?: number;
  /** Extra variables for the child. Names that look like secrets are refused (see `isolation.missing`). */
  env?: Record<string, string>;
  /** Bytes of stdout / stderr kept (the tail, where tracebacks are); default 64 KiB each. */
  maxOutputBytes?: number;
  /** 'auto' uses bubblewrap when it works here; 'limits-only' skips it (and says so). */
  isolation?: 'auto' | 'limits-only';
}

export interface IsolationReport {
  network: 'none' | 'unrestricted';
  filesystem: 'workspace-only' | 'unrestricted';
  /** The limits applied, e.g. 'cpu=60s', 'as=2048MiB', 'fsize=256MiB', 'wall=60000ms', 'env=scrubbed'. */
  limits: string[];
  /** Each protection that could not be applied on this machine, with why. */
  missing: string[];
}

export interface SandboxResult {
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  stdout: string;
  stderr: string;
  wallMs: number;
  isolation: IsolationReport;
}

/** Variable names never passed to generated code, even when asked for explicitly. */
const SECRET_NAME = /(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH|COOKIE|SESSION)/i;

interface BwrapProbe {
  usable: boolean;
  reason?: string;
}

let bwrapProbe: BwrapProbe | undefined;

/** Whether bwrap exists and can create the namespaces we need here (containers often forbid it). */
export function probeBubblewrap(): BwrapProbe {
  if (bwrapProbe) return bwrapProbe;
  const bwrap = findOnPath('bwrap', process.env.PATH ?? '');
  if (!bwrap) {
    bwrapProbe = { usable: false, reason: 'bubblewrap (bwrap) is not installed: apt-get install -y bubblewrap' };
    return bwrapProbe;
  }
  const probe = spawnSync(bwrap, [...systemBinds(), '--unshare-net', '--unshare-pid', '--die-with-parent', '--', 'true'], {
    timeout: 10_000,
    encoding: 'utf8'
  });
  bwrapProbe =
    probe.status === 0
      ? { usable: true }
      : { usable: false, reason: `bwrap cannot create namespaces here: ${(probe.stderr || probe.error?.message || '').trim()}` };
  return bwrapProbe;
}

let resolvedPython: string | undefined;

/**
 * The real interpreter behind `python3` on PATH. Version-manager shims (pyenv) are shell
 * scripts that need the parent's HOME and variables, which the child does not get.
 */
function realPython(name: string): string {
  if (resolvedPython) return resolvedPython;
  const found = spawnSync(name, ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8', timeout: 20_000 });
  const exe = found.stdout?.trim();
  if (found.status !== 0 || !exe) {
    throw new Error(`cannot run '${name}' to run the experiment: ${(found.stderr || found.error?.message || 'not found').trim()}; install Python 3 and put python3 on PATH`);
  }
  resolvedPython = realpathSync(exe);
  return resolvedPython;
}

function findOnPath(program: string, searchPath: string): string | undefined {
  if (program.includes('/')) return existsSync(program) ? path.resolve(program) : undefined;
  for (const dir of searchPath.split(':')) {
    if (!dir) continue;
    const candidate = path.join(dir, program);
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
}

/** The program as an absolute path; python is resolved to the real interpreter. */
function resolveProgram(program: string): string {
  if (/^python3?$/.test(program)) return realPython(program);
  const found = findOnPath(program, process.env.PATH ?? '');
  if (!found) throw new Error(`sandbox: program '${program}' not found on PATH`);
  return found;
}

/** Read-only binds of the system folders (merged-/usr symlinks recreated as symlinks). */
function systemBinds(): string[] {
  const args: string[] = [];
  for (const dir of ['/usr', '/bin', '/sbin', '/lib', '/lib32', '/lib64', '/etc']) {
    if (!existsSync(dir)) continue;
    if (lstatSync(dir).isSymbolicLink()) args.push('--symlink', readlinkSync(dir), dir);
    else args.push('--ro-bind', dir, dir);
  }
  args.push('--dev', '/dev', '--proc', '/proc', '--tmpfs', '/tmp');
  return args;
}

/** Read-only binds for an interpreter installed outside the system folders (pyenv, conda). */
function programBinds(program: string): string[] {
  if (/^\/(usr|bin|sbin|lib|lib64)\//.test(program)) return [];
  // .../versions/3.11.7/bin/python3.11 → bind .../versions/3.11.7 (its stdlib lives there).
  const prefix = path.dirname(path.dirname(program));
  return ['--ro-bind', prefix, prefix];
}

/** Keeps the last `max` bytes of a stream, marking that the head was cut. */
class TailBuffer {
  private chunks: Buffer[] = [];
  private size = 0;
  private dropped = 0;
  constructor(private readonly max: number) {}
  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    while (this.size > this.max && this.chunks.length > 1) {
      const first = this.chunks.shift()!;
      this.size -= first.length;
      this.dropped += first.length;
    }
  }
  text(): string {
    let all = Buffer.concat(this.chunks);
    let dropped = this.dropped;
    if (all.length > this.max) {
      dropped += all.length - this.max;
      all = all.subarray(all.length - this.max);
    }
    return (dropped ? `[... ${dropped} bytes cut ...]\n` : '') + all.toString('utf8');
  }
}

/** Runs `command` in `cwd` under the strongest isolation this machine allows. */
export async function runInSandbox(options: SandboxOptions): Promise<SandboxResult> {
  const cwd = realpathSync(options.cwd);
  const memoryMb = options.memoryMb ?? 2048;
  const fileSizeMb = options.fileSizeMb ?? 256;
  const cpuSeconds = Math.max(1, Math.ceil(options.cpuSeconds ?? options.timeoutMs / 1000));
  const maxOutput = options.maxOutputBytes ?? 64 * 1024;
  const missing: string[] = [];
  const limits: string[] = [`wall=${options.timeoutMs}ms`];

  const program = resolveProgram(options.command[0]);
  const env: Record<string, string> = {
    PATH: [path.dirname(program), '/usr/local/bin', '/usr/bin', '/bin'].join(':'),
    HOME: cwd,
    TMPDIR: '/tmp',
    LANG: 'C.UTF-8',
    LC_ALL: 'C.UTF-8',
    PYTHONUNBUFFERED: '1',
    PYTHONDONTWRITEBYTECODE: '1',
    PYTHONNOUSERSITE: '1'
  };
  for (const [name, value] of Object.entries(options.env ?? {})) {
    if (SECRET_NAME.test(name)) missing.push(`env ${name} refused: generated code never receives secrets`);
    else env[name] = value;
  }
  limits.push('env=scrubbed');

  let argv = [program, ...options.command.slice(1)];

  const prlimit = findOnPath('prlimit', process.env.PATH ?? '/usr/bin:/bin');
  if (prlimit) {
    argv = [prlimit, `--cpu=${cpuSeconds}`, `--as=${memoryMb * 1024 * 1024}`, `--fsize=${fileSizeMb * 1024 * 1024}`, '--', ...argv];
  } else {
    // bash, not sh: bash's `ulimit -f` counts 1024-byte blocks, dash's counts 512-byte blocks.
    const shell = findOnPath('bash', process.env.PATH ?? '/usr/bin:/bin');
    if (!shell) throw new Error('sandbox: neither prlimit nor bash is available to set resource limits; install util-linux');
    argv = [shell, '-c', `ulimit -t ${cpuSeconds} -v ${memoryMb * 1024} -f ${fileSizeMb * 1024} && exec "$@"`, 'sandbox', ...argv];
  }
  limits.push(`cpu=${cpuSeconds}s`, `as=${memoryMb}MiB`, `fsize=${fileSizeMb}MiB`);

  let network: IsolationReport['network'] = 'unrestricted';
  let filesystem: IsolationReport['filesystem'] = 'unrestricted';
  const probe = options.isolation === 'limits-only' ? { usable: false, reason: 'bubblewrap skipped (isolation: limits-only)' } : probeBubblewrap();
  if (probe.usable) {
    const bwrap = findOnPath('bwrap', process.env.PATH ?? '')!;
    const binds = [...systemBinds(), ...programBinds(program), '--bind', cwd, cwd];
    argv = [bwrap, ...binds, '--chdir', cwd, '--unshare-net', '--unshare-pid', '--unshare-ipc', '--unshare-uts', '--die-with-parent', '--', ...argv];
    network = 'none';
    filesystem = 'workspace-only';
  } else {
    missing.push(`network isolation: ${probe.reason}`, `filesystem isolation: ${probe.reason}`);
  }

  const started = Date.now();
  const child = spawn(argv[0], argv.slice(1), { cwd, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  const stdout = new TailBuffer(maxOutput);
  const stderr = new TailBuffer(maxOutput);
  child.stdout.on('data', (c: Buffer) => stdout.push(c));
  child.stderr.on('data', (c: Buffer) => stderr.push(c));

  let timedOut = false;
  const killGroup = () => {
    try {
      if (child.pid) process.kill(-child.pid, 'SIGKILL');
    } catch {
      // The group is already gone.
    }
  };
  const timer = setTimeout(() => {
    timedOut = true;
    killGroup();
  }, options.timeoutMs);
  const { exitCode, signal } = await new Promise<{ exitCode: number | null; signal: string | null }>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, sig) => resolve({ exitCode: code, signal: sig }));
  }).finally(() => clearTimeout(timer));
  // Leftover grandchildren outside bwrap's pid namespace must not outlive the run.
  killGroup();

  return {
    exitCode,
    signal,
    timedOut,
    stdout: stdout.text(),
    stderr: stderr.text(),
    wallMs: Date.now() - started,
    isolation: { network, filesystem, limits, missing }
  };
}

/** One-line descriptions of an isolation report, for stage cards and logs. */
export function describeIsolation(isolation: IsolationReport): string[] {
  return [
    `network: ${isolation.network}`,
    `filesystem: ${isolation.filesystem}`,
    `limits: ${isolation.limits.join(', ')}`,
    ...isolation.missing.map(m => `missing: ${m}`)
  ];
}
