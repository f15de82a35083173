/**
 * Reads and writes under a workspace that generated code has written to.
 *
 * The code may have left symbolic links (to /etc/passwd, to a file or folder outside the
 * workspace) or hard links, and the stages run with the lab's privileges, root included: a
 * plain `readFileSync('results/metrics.json')` would follow such a link out of the workspace,
 * into the prompt or over a file elsewhere. Every function here resolves the path component
 * by component with lstat, refuses any symlink on the way, opens the last one with O_NOFOLLOW
 * and checks that what it opened is the file it inspected. Safe once the run's processes are
 * gone (runInSandbox returns only then), when nothing can swap a component between check and use.
 */
import { closeSync, constants, fstatSync, ftruncateSync, lstatSync, mkdirSync, openSync, readdirSync, readSync, realpathSync, Stats, writeSync } from 'fs';
import * as path from 'path';

/** A workspace path that was refused, with the path and why. */
export class WorkspacePathError extends Error {
  constructor(
    readonly path: string,
    readonly root: string,
    reason: string
  ) {
    super(`workspace path refused: ${path} ${reason} (workspace ${root})`);
    this.name = 'WorkspacePathError';
  }
}

export interface WorkspaceEntry {
  /** Relative to the listed root, '/'-separated. */
  path: string;
  kind: 'file' | 'directory' | 'symlink' | 'other';
  bytes: number;
}

// Windows has no O_NOFOLLOW; the lstat of every component still refuses links there.
const NOFOLLOW = constants.O_NOFOLLOW ?? 0;
const SYMLINK_FIX = 'is a symbolic link; workspace files are never read or written through links, so the code must write a real file';

/** The real root and the checked components of `relative` under it. */
function split(root: string, relative: string): { base: string; parts: string[] } {
  const base = realpathSync(root);
  if (relative.includes('\0')) throw new WorkspacePathError(JSON.stringify(relative), base, 'contains a NUL byte');
  if (path.isAbsolute(relative)) throw new WorkspacePathError(relative, base, 'is absolute; give a path relative to the workspace');
  const normal = path.normalize(relative);
  if (normal === '..' || normal.startsWith(`..${path.sep}`)) throw new WorkspacePathError(relative, base, 'leads outside the workspace');
  return { base, parts: normal === '.' ? [] : normal.split(path.sep).filter(Boolean) };
}

function lstatOrUndefined(file: string): Stats | undefined {
  try {
    return lstatSync(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/**
 * Walks `parts` under `base`, refusing a symlink or a non-folder on the way; with `create`,
 * missing folders are made (each one checked again after mkdir). Returns the full path.
 */
function walkFolders(base: string, parts: string[], create: boolean): string {
  let at = base;
  for (const part of parts) {
    at = path.join(at, part);
    let st = lstatOrUndefined(at);
    if (!st && create) {
      mkdirSync(at);
      st = lstatSync(at);
    }
    if (!st) throw new WorkspacePathError(at, base, 'does not exist');
    if (st.isSymbolicLink()) throw new WorkspacePathError(at, base, SYMLINK_FIX);
    if (!st.isDirectory()) throw new WorkspacePathError(at, base, 'is not a folder');
  }
  return at;
}

/** The absolute path of `relative` inside `root`, every existing component checked (the last may be missing). */
export function resolveInside(root: string, relative: string): string {
  const { base, parts } = split(root, relative);
  if (parts.length === 0) return base;
  const file = path.join(walkFolders(base, parts.slice(0, -1), false), parts[parts.length - 1]);
  if (lstatOrUndefined(file)?.isSymbolicLink()) throw new WorkspacePathError(file, base, SYMLINK_FIX);
  return file;
}

/** Opens a regular file without following a link, and checks it is the one lstat saw and has one name only. */
function openChecked(file: string, base: string, flags: number): number {
  const seen = lstatOrUndefined(file);
  if (seen?.isSymbolicLink()) throw new WorkspacePathError(file, base, SYMLINK_FIX);
  // A FIFO or device would block the open (or read a device): refused before opening.
  if (seen && !seen.isFile()) throw new WorkspacePathError(file, base, 'is not a regular file');
  let fd: number;
  try {
    // O_NONBLOCK: should a FIFO replace the file after the lstat, the open still returns at once.
    fd = openSync(file, flags | NOFOLLOW | constants.O_NONBLOCK, 0o644);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') throw new WorkspacePathError(file, base, SYMLINK_FIX);
    if (code === 'ENOENT') throw new WorkspacePathError(file, base, 'does not exist');
    throw error;
  }
  const st = fstatSync(fd);
  const problem = !st.isFile()
    ? 'is not a regular file'
    : seen && (seen.ino !== st.ino || seen.dev !== st.dev)
      ? 'changed while it was opened'
      : st.nlink > 1
        ? 'has other hard links, which may be a file outside the workspace; copy it to a file of its own'
        : undefined;
  if (problem) {
    closeSync(fd);
    throw new WorkspacePathError(file, base, problem);
  }
  return fd;
}

/** The bytes of a regular file inside `root`; `maxBytes` refuses a larger one (a results file is small). */
export function readBytesInside(root: string, relative: string, options: { maxBytes?: number } = {}): Buffer {
  const { base, parts } = split(root, relative);
  if (parts.length === 0) throw new WorkspacePathError(base, base, 'is the workspace itself, not a file');
  const file = path.join(walkFolders(base, parts.slice(0, -1), false), parts[parts.length - 1]);
  const fd = openChecked(file, base, constants.O_RDONLY);
  try {
    const size = fstatSync(fd).size;
    if (options.maxBytes !== undefined && size > options.maxBytes)
      throw new WorkspacePathError(file, base, `is ${size} bytes, over the ${options.maxBytes}-byte limit for this read`);
    const out = Buffer.alloc(size);
    let got = 0;
    while (got < size) {
      const n = readSync(fd, out, got, size - got, got);
      if (n === 0) break;
      got += n;
    }
    return out.subarray(0, got);
  } finally {
    closeSync(fd);
  }
}

/** The UTF-8 text of a regular file inside `root`. */
export function readInside(root: string, relative: string, options: { maxBytes?: number } = {}): string {
  return readBytesInside(root, relative, options).toString('utf8');
}

/** Writes (creates or replaces the content of) a regular file inside `root`, making missing folders. */
export function writeInside(root: string, relative: string, content: string | Uint8Array): void {
  const { base, parts } = split(root, relative);
  if (parts.length === 0) throw new WorkspacePathError(base, base, 'is the workspace itself, not a file');
  const file = path.join(walkFolders(base, parts.slice(0, -1), true), parts[parts.length - 1]);
  // No O_TRUNC: the file is truncated only after it has been checked.
  const fd = openChecked(file, base, constants.O_WRONLY | constants.O_CREAT);
  try {
    ftruncateSync(fd, 0);
    const bytes = typeof content === 'string' ? Buffer.from(content, 'utf8') : content;
    let done = 0;
    while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done, done);
  } finally {
    closeSync(fd);
  }
}

/** Every entry under `under` (default the whole workspace), depth first; symlinks are listed, never followed. */
export function listInside(root: string, under = '.'): WorkspaceEntry[] {
  const { base, parts } = split(root, under);
  const start = walkFolders(base, parts, false);
  const out: WorkspaceEntry[] = [];
  const visit = (dir: string) => {
    for (const name of readdirSync(dir).sort()) {
      const full = path.join(dir, name);
      const st = lstatSync(full);
      const kind: WorkspaceEntry['kind'] = st.isSymbolicLink() ? 'symlink' : st.isDirectory() ? 'directory' : st.isFile() ? 'file' : 'other';
      out.push({ path: path.relative(start, full).split(path.sep).join('/'), kind, bytes: kind === 'file' ? st.size : 0 });
      if (kind === 'directory') visit(full);
    }
  };
  visit(start);
  return out;
}

/**
 * Copies a file or a folder tree from inside `fromRoot` to inside `toRoot`. A symlink, device or
 * other special file anywhere in the source refuses the whole copy before anything is written.
 */
export function copyInside(fromRoot: string, fromRelative: string, toRoot: string, toRelative: string): void {
  const source = resolveInside(fromRoot, fromRelative);
  const st = lstatOrUndefined(source);
  if (!st) throw new WorkspacePathError(source, realpathSync(fromRoot), 'does not exist');
  if (!st.isDirectory()) {
    writeInside(toRoot, toRelative, readBytesInside(fromRoot, fromRelative));
    return;
  }
  const entries = listInside(fromRoot, fromRelative);
  const refused = entries.find(e => e.kind === 'symlink' || e.kind === 'other');
  if (refused) {
    throw new WorkspacePathError(
      path.join(source, refused.path),
      realpathSync(fromRoot),
      refused.kind === 'symlink' ? SYMLINK_FIX : 'is not a regular file or folder'
    );
  }
  makeFolders(toRoot, toRelative);
  for (const e of entries) {
    if (e.kind === 'directory') makeFolders(toRoot, path.join(toRelative, e.path));
    else writeInside(toRoot, path.join(toRelative, e.path), readBytesInside(fromRoot, path.join(fromRelative, e.path)));
  }
}

function makeFolders(root: string, relative: string): void {
  const { base, parts } = split(root, relative);
  walkFolders(base, parts, true);
}
