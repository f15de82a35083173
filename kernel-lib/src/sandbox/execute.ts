/**
 * Spawning the wrapped program and ending it: output tails, the wall-clock limit, the disk
 * quota, and a kill of the whole tree before the call returns.
 */
import { spawn } from 'child_process';
import { watchDiskQuota } from './disk-quota';

/** How long a killed run may take to exit before the call returns anyway. */
const KILL_GRACE_MS = 2000;
/** Disk-quota poll interval: the overshoot is at most what the code writes in this time. */
export const QUOTA_POLL_MS = 50;

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

const sleep = (ms: number) => new Promise(res => setTimeout(res, ms));

export interface Execution {
  exitCode: number | null;
  signal: string | null;
  stoppedBy: 'exit' | 'wall-clock' | 'disk-quota';
  stdout: string;
  stderr: string;
  wallMs: number;
  survivors: number[];
}

export interface ExecuteOptions {
  argv: string[];
  cwd: string;
  env: Record<string, string>;
  timeoutMs: number;
  maxOutputBytes: number;
  /** Folders whose growth counts against `quotaBytes`. */
  quotaDirs: string[];
  quotaBytes: number;
  /** Kills every process of the run it can find, given the direct child's pid. */
  killTree: (pid: number) => void;
  /** The run's processes still alive. */
  alive: (pid: number) => number[];
  /** Hears each chunk of output as it comes (a Slurm job streams it to its log); the tails are kept either way. */
  onOutput?: (stream: 'stdout' | 'stderr', chunk: Buffer) => void;
}

/**
 * Spawns argv and returns when the program exits or a limit stops it, never later than the
 * time-out plus KILL_GRACE_MS: the end of the run is the exit of the direct child, not the close
 * of its pipes, which a detached grandchild could hold open forever.
 */
export async function execute({
  argv,
  cwd,
  env,
  timeoutMs,
  maxOutputBytes,
  quotaDirs,
  quotaBytes,
  killTree,
  alive,
  onOutput
}: ExecuteOptions): Promise<Execution> {
  let stoppedBy: Execution['stoppedBy'] = 'exit';
  // Read by stop() before the spawn assigns it: the disk-quota watch can fire first.
  // eslint-disable-next-line prefer-const -- a const would be in its temporal dead zone when stop() runs early
  let pid: number | undefined;
  const stop = (why: Execution['stoppedBy']) => {
    if (stoppedBy !== 'exit' || pid === undefined) return;
    stoppedBy = why;
    killTree(pid);
  };
  // The baseline is taken before the program starts, so nothing it writes counts as already there.
  const quota = await watchDiskQuota(quotaDirs, quotaBytes, QUOTA_POLL_MS, () => stop('disk-quota'));
  const started = Date.now();
  const child = spawn(argv[0], argv.slice(1), { cwd, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  pid = child.pid;
  const stdout = new TailBuffer(maxOutputBytes);
  const stderr = new TailBuffer(maxOutputBytes);
  child.stdout.on('data', (c: Buffer) => {
    stdout.push(c);
    onOutput?.('stdout', c);
  });
  child.stderr.on('data', (c: Buffer) => {
    stderr.push(c);
    onOutput?.('stderr', c);
  });
  const closed = new Promise<void>(resolve => child.once('close', () => resolve()));
  const timer = setTimeout(() => stop('wall-clock'), timeoutMs);
  let deadline: NodeJS.Timeout | undefined;
  try {
    const outcome = await new Promise<{ exitCode: number | null; signal: string | null }>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (code, signal) => resolve({ exitCode: code, signal }));
      // A direct child stuck past its SIGKILL (uninterruptible I/O) must not hold the call.
      deadline = setTimeout(() => resolve({ exitCode: null, signal: null }), timeoutMs + KILL_GRACE_MS);
    });
    let survivors: number[] = [];
    if (pid !== undefined) {
      // Whatever the program left running (background jobs, daemons) ends with it.
      killTree(pid);
      survivors = alive(pid);
      for (let round = 0; survivors.length && round < 20; round++) {
        await sleep(50);
        killTree(pid);
        survivors = alive(pid);
      }
    }
    // The tree is dead, so the pipes close at once, unless a survivor holds them: then they are cut.
    await Promise.race([closed, sleep(200)]);
    child.stdout.destroy();
    child.stderr.destroy();
    return { ...outcome, stoppedBy, stdout: stdout.text(), stderr: stderr.text(), wallMs: Date.now() - started, survivors };
  } finally {
    clearTimeout(timer);
    if (deadline) clearTimeout(deadline);
    quota.stop();
  }
}
