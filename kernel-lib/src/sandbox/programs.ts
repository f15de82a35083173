/** Finding the programs the sandbox runs, and whether an unprivileged uid can reach them. */
import { existsSync, realpathSync, statSync } from 'fs';
import * as path from 'path';
import { experimentInterpreter } from './python-env';

export const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export function findOnPath(program: string, searchPath: string): string | undefined {
  if (program.includes('/')) return existsSync(program) ? path.resolve(program) : undefined;
  for (const dir of searchPath.split(':')) {
    if (!dir) continue;
    const candidate = path.join(dir, program);
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
}

/** A system tool (bwrap, setpriv, prlimit): on PATH or in the standard folders. */
export function tool(name: string): string | undefined {
  return findOnPath(name, `${process.env.PATH ?? ''}:${SYSTEM_PATH}`);
}

/** System folders every sandbox sees read-only (bound by bubblewrap, or simply there). */
export const SYSTEM_DIRS = /^\/(usr|bin|sbin|lib|lib32|lib64|etc)(\/|$)/;

export interface Program {
  path: string;
  /** Folders it needs read-only inside bubblewrap (an interpreter's installation). */
  folders: string[];
}

/** The program as an absolute path; python is the experiment interpreter. */
export function resolveProgram(program: string): Program {
  if (/^python3?$/.test(program)) {
    const python = experimentInterpreter();
    return { path: python.executable, folders: [python.prefix, python.basePrefix] };
  }
  const found = findOnPath(program, process.env.PATH ?? SYSTEM_PATH);
  if (!found) throw new Error(`sandbox: program '${program}' not found on PATH`);
  const real = realpathSync(found);
  // .../versions/3.11.7/bin/python3.11 → bind .../versions/3.11.7 (its libraries live there).
  return { path: found, folders: SYSTEM_DIRS.test(real) ? [] : [path.dirname(path.dirname(real))] };
}

/** The first folder on the way to `file` (or its symlink target) that `uid` may not search, if any. */
export function blockedFor(uid: number, file: string): string | undefined {
  for (const target of new Set([path.resolve(file), existsSync(file) ? realpathSync(file) : file])) {
    for (let d = path.dirname(target); ; d = path.dirname(d)) {
      const st = statSync(d, { throwIfNoEntry: false });
      if (st && !(st.mode & 0o001) && st.uid !== uid) return d;
      if (d === '/') break;
    }
  }
  return undefined;
}
