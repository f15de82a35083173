/**
 * Marker files that say "this process is waiting for the store file". DuckDB's file lock
 * has no queue, so a process that keeps working would re-take the file every time it lets
 * go. A holder that released recently checks these markers and, if another live process is
 * waiting, pauses until one of them got its turn (or a short window passed).
 */
import * as fs from 'fs';
import * as path from 'path';

/** How long a process that just released the file gives waiting processes to take it. */
export const YIELD_WINDOW_MS = 250;
const YIELD_POLL_MS = 5;

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: the process exists but belongs to someone else.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export class WaiterMarkers {
  private readonly dir: string;
  private readonly own: string;
  private registered = false;

  constructor(storeFile: string) {
    this.dir = `${storeFile}.waiters`;
    this.own = path.join(this.dir, String(process.pid));
  }

  /** Announces that this process is waiting for the file. */
  register(): void {
    if (this.registered) return;
    fs.mkdirSync(this.dir, { recursive: true });
    fs.writeFileSync(this.own, '');
    this.registered = true;
  }

  /** Withdraws this process's marker (it got the file or gave up). */
  unregister(): void {
    if (!this.registered) return;
    fs.rmSync(this.own, { force: true });
    this.registered = false;
  }

  /** PIDs of other live processes waiting now; markers of dead processes are removed. */
  others(): number[] {
    let names: string[];
    try {
      names = fs.readdirSync(this.dir);
    } catch {
      return [];
    }
    const pids: number[] = [];
    for (const name of names) {
      const pid = Number(name);
      if (!Number.isInteger(pid) || pid === process.pid) continue;
      if (isAlive(pid)) pids.push(pid);
      else fs.rmSync(path.join(this.dir, name), { force: true });
    }
    return pids;
  }

  /**
   * If other processes are waiting, waits until one of them withdrew its marker (it took the
   * file) or YIELD_WINDOW_MS passed. Returns the milliseconds spent waiting.
   */
  async yieldToOthers(): Promise<number> {
    const waiting = this.others();
    if (waiting.length === 0) return 0;
    const started = Date.now();
    while (Date.now() - started < YIELD_WINDOW_MS) {
      await new Promise(resolve => setTimeout(resolve, YIELD_POLL_MS));
      const still = new Set(this.others());
      if (waiting.some(pid => !still.has(pid))) break;
    }
    return Date.now() - started;
  }
}
