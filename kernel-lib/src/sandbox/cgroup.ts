/**
 * A cgroup per sandbox run, where this process may create one: a task cap (pids) and a memory
 * cap over the whole process tree, and a kill that reaches every member, daemonised or not.
 *
 * Both layouts are handled: cgroup v2 (one unified hierarchy; a child of our own cgroup only gets
 * a controller the parent delegates in cgroup.subtree_control) and v1 (one hierarchy per
 * controller, e.g. /sys/fs/cgroup/pids). The child is created under this process's own cgroup,
 * so its limits nest inside whatever limits the lab already runs under.
 */
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'fs';
import * as path from 'path';

type Controller = 'pids' | 'memory';

interface ControllerDir {
  controller: Controller;
  version: 1 | 2;
  dir: string;
}

export interface RunCgroup {
  /** The cgroup.procs files the child writes its pid to before it execs anything. */
  procsFiles: string[];
  /** 'pids=N', 'memory=NMiB (tree)'. */
  applied: string[];
  /** Why a controller could not be used. */
  missing: string[];
  /** SIGKILLs every member until none is left (bounded). */
  killAll(): void;
  /** Members still alive. */
  members(): number[];
  /** Kills reported by the kernel's OOM killer in this cgroup. */
  oomKills(): number;
  /** Removes the cgroup folders once the members are gone (waits up to a second for them to exit). */
  remove(): Promise<void>;
}

interface Mount {
  type: 'cgroup' | 'cgroup2';
  dir: string;
  options: string[];
}

function mounts(): Mount[] {
  try {
    return readFileSync('/proc/self/mounts', 'utf8')
      .split('\n')
      .map(line => line.split(' '))
      .filter(f => f[2] === 'cgroup' || f[2] === 'cgroup2')
      .map(f => ({ type: f[2] as Mount['type'], dir: f[1], options: f[3].split(',') }));
  } catch {
    return [];
  }
}

/** This process's cgroup path per v1 controller ('0' holds the v2 path). */
function ownCgroups(): Map<string, string> {
  const own = new Map<string, string>();
  try {
    for (const line of readFileSync('/proc/self/cgroup', 'utf8').split('\n')) {
      const m = /^(\d+):([^:]*):(.*)$/.exec(line);
      if (!m) continue;
      if (m[1] === '0' && m[2] === '') own.set('0', m[3]);
      else for (const c of m[2].split(',')) own.set(c, m[3]);
    }
  } catch {
    // No /proc/self/cgroup: no cgroups.
  }
  return own;
}

function readText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** Where `controller` can be limited for a child of this process's cgroup, or why not. */
function controllerParent(controller: Controller, all: Mount[], own: Map<string, string>): { version: 1 | 2; parent: string } | string {
  const v1 = all.find(m => m.type === 'cgroup' && m.options.includes(controller));
  if (v1) {
    const at = own.get(controller);
    return at === undefined ? `no ${controller} cgroup listed in /proc/self/cgroup` : { version: 1, parent: path.join(v1.dir, at) };
  }
  for (const v2 of all.filter(m => m.type === 'cgroup2')) {
    if (!readText(path.join(v2.dir, 'cgroup.controllers')).split(/\s+/).includes(controller)) continue;
    const at = own.get('0');
    if (at === undefined) return 'no cgroup v2 path in /proc/self/cgroup';
    const parent = path.join(v2.dir, at);
    if (!readText(path.join(parent, 'cgroup.subtree_control')).split(/\s+/).includes(controller)) {
      // The no-internal-process rule forbids enabling it here while this process lives in that cgroup.
      return `the ${controller} controller is not delegated to ${parent} (cgroup.subtree_control); run the lab in a delegated cgroup, e.g. systemd-run --user --scope -p Delegate=yes`;
    }
    return { version: 2, parent };
  }
  return `no cgroup hierarchy offers the ${controller} controller here`;
}

function pidsIn(dir: string): number[] {
  return readText(path.join(dir, 'cgroup.procs')).split('\n').filter(Boolean).map(Number);
}

/**
 * Creates the run's cgroup(s) with `maxTasks` (threads count, as RLIMIT_NPROC does) and
 * `memoryBytes` for the whole tree. Whatever cannot be created is named in `missing`.
 */
export function createRunCgroup(name: string, maxTasks: number, memoryBytes: number): RunCgroup {
  const all = mounts();
  const own = ownCgroups();
  const dirs: ControllerDir[] = [];
  const applied: string[] = [];
  const missing: string[] = [];
  for (const controller of ['pids', 'memory'] as const) {
    const where = controllerParent(controller, all, own);
    if (typeof where === 'string') {
      missing.push(`${controller} cgroup: ${where}`);
      continue;
    }
    // One folder per hierarchy: under v2 both controllers share it.
    const existing = dirs.find(d => d.version === 2 && where.version === 2);
    const dir = existing?.dir ?? path.join(where.parent, name);
    try {
      if (!existing) mkdirSync(dir);
      if (controller === 'pids') {
        writeFileSync(path.join(dir, 'pids.max'), String(maxTasks));
        applied.push(`pids=${maxTasks} (cgroup v${where.version}, whole tree)`);
      } else if (where.version === 2) {
        writeFileSync(path.join(dir, 'memory.max'), String(memoryBytes));
        if (existsSync(path.join(dir, 'memory.swap.max'))) writeFileSync(path.join(dir, 'memory.swap.max'), '0');
        applied.push(`memory=${Math.round(memoryBytes / 2 ** 20)}MiB (cgroup v2, whole tree)`);
      } else {
        writeFileSync(path.join(dir, 'memory.limit_in_bytes'), String(memoryBytes));
        // memsw = memory + swap: the same value forbids swapping past the limit (absent without swap accounting).
        if (existsSync(path.join(dir, 'memory.memsw.limit_in_bytes'))) writeFileSync(path.join(dir, 'memory.memsw.limit_in_bytes'), String(memoryBytes));
        applied.push(`memory=${Math.round(memoryBytes / 2 ** 20)}MiB (cgroup v1, whole tree)`);
      }
      dirs.push({ controller, version: where.version, dir });
    } catch (error) {
      missing.push(`${controller} cgroup: cannot create or configure ${dir}: ${(error as Error).message}`);
      if (!existing) tryRmdir(dir);
    }
  }
  const uniqueDirs = [...new Set(dirs.map(d => d.dir))];

  const members = () => [...new Set(uniqueDirs.flatMap(pidsIn))];
  return {
    procsFiles: uniqueDirs.map(d => path.join(d, 'cgroup.procs')),
    applied,
    missing,
    members,
    killAll() {
      for (const d of dirs) {
        // cgroup.kill (v2, Linux 5.14+) kills every member at once, forks in flight included.
        if (d.version === 2 && existsSync(path.join(d.dir, 'cgroup.kill'))) {
          try {
            writeFileSync(path.join(d.dir, 'cgroup.kill'), '1');
          } catch {
            // Falls back to the loop below.
          }
        }
      }
      // The task cap bounds how many new members a loop of kills can meet.
      for (let round = 0; round < 50; round++) {
        const alive = members();
        if (alive.length === 0) return;
        for (const pid of alive) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // Already gone.
          }
        }
      }
    },
    oomKills() {
      let kills = 0;
      for (const d of dirs.filter(x => x.controller === 'memory')) {
        const events = readText(path.join(d.dir, d.version === 2 ? 'memory.events' : 'memory.oom_control'));
        kills += Number(/oom_kill (\d+)/.exec(events)?.[1] ?? 0);
      }
      return kills;
    },
    async remove() {
      for (const dir of uniqueDirs) {
        // A killed member leaves the cgroup only once the kernel has reaped it: rmdir is EBUSY until then.
        for (let attempt = 0; !tryRmdir(dir) && attempt < 20; attempt++) await new Promise(res => setTimeout(res, 50));
      }
    }
  };
}

function tryRmdir(dir: string): boolean {
  try {
    rmdirSync(dir);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ENOENT';
  }
}
