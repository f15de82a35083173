/**
 * Finding and killing every process of a sandbox run.
 *
 * When the lab runs as root, each run gets a uid of its own, unused by any process: every member
 * of the tree, however it detached (setsid, double fork, a new pid namespace), still has that uid,
 * and `kill(-1, SIGKILL)` sent *as that uid* reaches all of them in one atomic sweep (the kernel
 * walks the task list under its lock, so a fork in flight cannot slip through). Without root the
 * tree is followed through /proc by parent and session, which a process that double-forks out of
 * the session can escape; the cgroup (when there is one) or bubblewrap's pid namespace close that gap.
 */
import { spawnSync } from 'child_process';
import { lchownSync, lstatSync, readdirSync, readFileSync } from 'fs';
import { randomInt } from 'crypto';
import * as path from 'path';

/**
 * The uid range runs are given when the lab is root: inside 1879048192–2147483647, which systemd's
 * UID/GID map (docs/UIDS-GIDS.md) leaves unused, below its "foreign" range at 0x7FFE0000.
 */
const SANDBOX_UID_BASE = 0x7e000000;
const SANDBOX_UID_COUNT = 0x10000;

function numericEntries(dir: string): number[] {
  try {
    return readdirSync(dir)
      .filter(n => /^\d+$/.test(n))
      .map(Number);
  } catch {
    return [];
  }
}

function readText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/**
 * Live processes whose real, effective or saved uid is `uid`. Zombies are left out: they run
 * nothing and hold nothing but a pid until init reaps them, which may take a while.
 */
export function processesOfUid(uid: number): number[] {
  return numericEntries('/proc').filter(pid => {
    const status = readText(`/proc/${pid}/status`);
    const line = /^Uid:\s+(\d+)\s+(\d+)\s+(\d+)/m.exec(status);
    return line !== null && !/^State:\s+Z/m.test(status) && [line[1], line[2], line[3]].map(Number).includes(uid);
  });
}

/** A uid from the sandbox range that no process currently runs as. */
export function allocateSandboxUid(): number {
  for (let attempt = 0; attempt < 32; attempt++) {
    const uid = SANDBOX_UID_BASE + randomInt(SANDBOX_UID_COUNT);
    if (processesOfUid(uid).length === 0) return uid;
  }
  throw new Error('sandbox: no free uid in the sandbox range (every candidate has processes); stop leftover sandbox processes');
}

/** SIGKILLs every process of `uid`, by a helper that runs as that uid (so it can signal nothing else). */
export function killAllOfUid(uid: number): void {
  spawnSync('/bin/sh', ['-c', 'kill -KILL -1'], { uid, gid: uid, stdio: 'ignore', timeout: 5000 });
}

interface ProcStat {
  pid: number;
  ppid: number;
  sid: number;
  zombie: boolean;
}

function procStats(): ProcStat[] {
  const out: ProcStat[] = [];
  for (const pid of numericEntries('/proc')) {
    const stat = readText(`/proc/${pid}/stat`);
    // The command name (field 2) is in parentheses and may contain spaces: parse after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (rest.length > 4) out.push({ pid, ppid: Number(rest[1]), sid: Number(rest[3]), zombie: rest[0] === 'Z' });
  }
  return out;
}

/** `root` and every live process descending from it or living in its session. */
export function processTree(root: number): number[] {
  const stats = procStats();
  const members = new Set<number>(stats.some(s => s.pid === root) ? [root] : []);
  for (const s of stats) if (s.sid === root) members.add(s.pid);
  for (let grew = true; grew;) {
    grew = false;
    for (const s of stats) {
      if (!members.has(s.pid) && members.has(s.ppid)) {
        members.add(s.pid);
        grew = true;
      }
    }
  }
  return [...members].filter(pid => !stats.find(s => s.pid === pid)!.zombie);
}

export function signalPids(pids: number[], signal: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      // Already gone.
    }
  }
}

/**
 * lchowns every entry under `root` (never following a symlink). `onlyFrom` limits it to entries
 * owned by that uid. Files with several hard links are skipped: one could be a link to a file
 * outside the workspace, whose owner must not change.
 */
export function chownTree(root: string, uid: number, gid: number, onlyFrom?: number): void {
  const visit = (entry: string) => {
    let st;
    try {
      st = lstatSync(entry);
    } catch {
      return;
    }
    const linked = !st.isDirectory() && st.nlink > 1;
    if (!linked && (onlyFrom === undefined || st.uid === onlyFrom)) lchownSync(entry, uid, gid);
    if (st.isDirectory()) for (const name of readdirSync(entry)) visit(path.join(entry, name));
  };
  visit(root);
}
