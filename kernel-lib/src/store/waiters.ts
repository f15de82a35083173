/**
 * The queue of processes waiting for a store file, served in arrival order. DuckDB's file lock
 * has no queue: whoever retries at the right moment gets the file, so a busy process could
 * re-take it again and again while others starve. Here each waiting process holds a ticket, a
 * file `<seq>-<pid>` in `<store>.duckdb.waiters/`; seq is taken by exclusive create (O_EXCL), so
 * no two processes share a number and a later arrival gets a larger one. Only the process with
 * the lowest live ticket (the head) tries to open the store; the others wait for their turn.
 *
 * The holder writes its pid into `holder` in the same folder while it has the file open, so the
 * head tries DuckDB's open (about 10 ms of CPU even when it fails) only once the holder let go.
 * A ticket or holder mark of a dead process is removed by whoever sees it; a ticket its owner
 * has not refreshed for STALE_TICKET_MS (an owner that hangs, or a pid reused by another
 * process) is removed too, and its owner, if it comes back, queues again at the end.
 */
import * as fs from 'fs';
import * as path from 'path';

/** A ticket not refreshed for this long is dropped from the queue. */
export const STALE_TICKET_MS = 10_000;

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: the process exists but belongs to someone else.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

interface Ticket {
  seq: number;
  pid: number;
  name: string;
}

function parseTicket(name: string): Ticket | null {
  const match = /^(\d+)-(\d+)$/.exec(name);
  return match ? { seq: Number(match[1]), pid: Number(match[2]), name } : null;
}

export class TicketQueue {
  readonly dir: string;
  private readonly holderFile: string;
  private own: Ticket | null = null;

  constructor(storeFile: string) {
    this.dir = `${storeFile}.waiters`;
    this.holderFile = path.join(this.dir, 'holder');
  }

  /** True while this process holds a ticket. */
  get queued(): boolean {
    return this.own !== null;
  }

  /** Takes a ticket at the end of the queue (no-op when this process already has one). */
  take(): void {
    if (this.own) return;
    fs.mkdirSync(this.dir, { recursive: true });
    let seq = Math.max(0, ...this.tickets().map(t => t.seq)) + 1;
    for (;;) {
      const name = `${String(seq).padStart(12, '0')}-${process.pid}`;
      try {
        fs.writeFileSync(path.join(this.dir, name), '', { flag: 'wx' });
        this.own = { seq, pid: process.pid, name };
        return;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
        seq++;
      }
    }
  }

  /** Leaves the queue (this process got the file, or gave up). */
  leave(): void {
    if (!this.own) return;
    fs.rmSync(path.join(this.dir, this.own.name), { force: true });
    this.own = null;
  }

  /**
   * Live tickets of other processes ahead of this one (all of them when this process has no
   * ticket), lowest first. Refreshes this process's ticket, and takes a new one at the end if
   * it was dropped as stale.
   */
  ahead(): Ticket[] {
    if (this.own) {
      const mine = path.join(this.dir, this.own.name);
      const now = new Date();
      try {
        fs.utimesSync(mine, now, now);
      } catch {
        this.own = null;
        this.take();
      }
    }
    const own = this.own;
    return this.live().filter(t => t.pid !== process.pid && (!own || t.seq < own.seq));
  }

  /** How many other processes are waiting for the file. */
  othersWaiting(): number {
    return this.live().filter(t => t.pid !== process.pid).length;
  }

  /** Marks this process as the holder of the file. */
  markHolder(): void {
    try {
      fs.mkdirSync(this.dir, { recursive: true });
      fs.writeFileSync(this.holderFile, String(process.pid));
    } catch {
      // The mark only saves waiters a futile open; the store works without it.
    }
  }

  /** Removes this process's holder mark (after the file was closed). */
  clearHolder(): void {
    if (this.holder() === process.pid) fs.rmSync(this.holderFile, { force: true });
  }

  /** The pid marked as holding the file, when that process is alive. */
  holder(): number | null {
    let pid: number;
    try {
      pid = Number(fs.readFileSync(this.holderFile, 'utf8'));
    } catch {
      return null;
    }
    if (!Number.isInteger(pid) || pid <= 0) return null;
    if (pid === process.pid || isAlive(pid)) return pid;
    fs.rmSync(this.holderFile, { force: true });
    return null;
  }

  private tickets(): Ticket[] {
    let names: string[];
    try {
      names = fs.readdirSync(this.dir);
    } catch {
      return [];
    }
    return names.map(parseTicket).filter((t): t is Ticket => t !== null);
  }

  /** Tickets of live processes, lowest first; dead and stale ones are removed. */
  private live(): Ticket[] {
    const now = Date.now();
    const kept: Ticket[] = [];
    for (const ticket of this.tickets()) {
      const file = path.join(this.dir, ticket.name);
      if (ticket.pid === process.pid) {
        if (this.own?.name === ticket.name) kept.push(ticket);
        else fs.rmSync(file, { force: true });
        continue;
      }
      let stale = !isAlive(ticket.pid);
      if (!stale) {
        try {
          stale = now - fs.statSync(file).mtimeMs > STALE_TICKET_MS;
        } catch {
          continue;
        }
      }
      if (stale) fs.rmSync(file, { force: true });
      else kept.push(ticket);
    }
    return kept.sort((a, b) => a.seq - b.seq);
  }
}
