/**
 * bubblewrap invocations: the probe, the mounts, and the privilege drop that runs inside it.
 *
 * As root, bwrap runs privileged (it needs no user namespace to mount) and `setpriv` inside it
 * turns the code into the run's own uid; a nested unprivileged bwrap then forbids further user
 * namespaces. As another user, bwrap maps the code to uid 65534 in a user namespace.
 */
import { spawnSync } from 'child_process';
import { existsSync, lstatSync, readlinkSync } from 'fs';
import * as path from 'path';
import { allocateSandboxUid } from './process-tree';
import { SYSTEM_DIRS, SYSTEM_PATH, tool } from './programs';

/** The uid bubblewrap shows inside a user namespace when the lab is not root. */
export const NAMESPACE_UID = 65534;

export const isRoot = () => process.getuid?.() === 0;

export interface BwrapProbe {
  usable: boolean;
  reason?: string;
  /** Root only: a nested unprivileged bwrap can forbid further user namespaces. */
  disableUserns?: boolean;
  disableUsernsReason?: string;
}

let bwrapProbe: BwrapProbe | undefined;

function runProbe(argv: string[]): string | undefined {
  const r = spawnSync(argv[0], argv.slice(1), { timeout: 10_000, encoding: 'utf8', env: { PATH: SYSTEM_PATH } });
  return r.status === 0 ? undefined : (r.stderr || r.error?.message || `exit ${r.status}`).trim();
}

/** Whether bwrap exists and can create the namespaces we need here (containers often forbid it). */
export function probeBubblewrap(): BwrapProbe {
  if (bwrapProbe) return bwrapProbe;
  const bwrap = tool('bwrap');
  if (!bwrap) return (bwrapProbe = { usable: false, reason: 'bubblewrap (bwrap) is not installed: apt-get install -y bubblewrap' });
  const base = [bwrap, ...systemMounts(2 ** 20), '--unshare-net', '--unshare-pid', '--die-with-parent'];
  if (!isRoot()) {
    const userns = ['--unshare-user', '--uid', String(NAMESPACE_UID), '--gid', String(NAMESPACE_UID), '--cap-drop', 'ALL'];
    const failed = runProbe([...base, ...userns, '--disable-userns', '--', 'true']);
    if (!failed) return (bwrapProbe = { usable: true, disableUserns: true });
    const plain = runProbe([...base, ...userns, '--', 'true']);
    return (bwrapProbe = plain
      ? { usable: false, reason: `bwrap cannot create namespaces here: ${plain}` }
      : { usable: true, disableUserns: false, disableUsernsReason: `bwrap --disable-userns failed: ${failed}` });
  }
  const setpriv = tool('setpriv');
  if (!setpriv) return (bwrapProbe = { usable: false, reason: 'setpriv is not installed (util-linux): the sandbox cannot drop root' });
  const uid = allocateSandboxUid();
  const failed = runProbe([...base, '--', ...dropRoot(setpriv, uid), 'true']);
  if (failed) return (bwrapProbe = { usable: false, reason: `bwrap cannot create namespaces here: ${failed}` });
  const nested = runProbe([...base, '--', ...dropRoot(setpriv, uid), ...noMoreUserns(bwrap, uid, '/'), 'true']);
  return (bwrapProbe = nested
    ? { usable: true, disableUserns: false, disableUsernsReason: `an unprivileged bwrap --disable-userns cannot run here: ${nested}` }
    : { usable: true, disableUserns: true });
}

/** setpriv argv that turns root into `uid` with no groups, no capabilities and no_new_privs. */
export function dropRoot(setpriv: string, uid: number): string[] {
  return [setpriv, `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', '--no-new-privs', '--'];
}

/**
 * A nested unprivileged bwrap whose only job is `--disable-userns`: without it the code could
 * create a user namespace of its own and get capabilities there (a large kernel attack surface).
 */
export function noMoreUserns(bwrap: string, uid: number, cwd: string): string[] {
  return [
    bwrap,
    '--unshare-user',
    '--disable-userns',
    '--uid',
    String(uid),
    '--gid',
    String(uid),
    '--dev-bind',
    '/',
    '/',
    '--chdir',
    cwd,
    '--die-with-parent',
    '--'
  ];
}

/** Read-only binds of the system folders (merged-/usr symlinks recreated), a minimal /dev, own /proc, private tmpfs. */
export function systemMounts(tmpBytes: number): string[] {
  const args: string[] = [];
  for (const dir of ['/usr', '/bin', '/sbin', '/lib', '/lib32', '/lib64', '/etc']) {
    if (!existsSync(dir)) continue;
    if (lstatSync(dir).isSymbolicLink()) args.push('--symlink', readlinkSync(dir), dir);
    else args.push('--ro-bind', dir, dir);
  }
  // --dev gives null, zero, full, random, urandom, tty, pts, shm: no disks, no host devices.
  args.push('--dev', '/dev', '--proc', '/proc');
  for (const tmp of ['/tmp', '/dev/shm']) args.push('--perms', '01777', '--size', String(tmpBytes), '--tmpfs', tmp);
  return args;
}

/**
 * Binds `dirs` (read-only) and `writable` at their own paths. Their parent folders, which
 * bwrap would create as 0700 root, are created 0755 first so the unprivileged uid can reach them.
 */
export function pathBinds(readOnly: string[], writable: string): string[] {
  const args: string[] = [];
  const made = new Set<string>(['/', '/tmp', '/dev', '/dev/shm', '/proc']);
  const bound: string[] = [];
  const parents = (dir: string) => {
    const chain: string[] = [];
    for (let d = path.dirname(dir); d !== '/'; d = path.dirname(d)) chain.unshift(d);
    for (const d of chain) {
      if (made.has(d) || SYSTEM_DIRS.test(d) || bound.some(b => d === b || d.startsWith(`${b}/`))) continue;
      args.push('--perms', '0755', '--dir', d);
      made.add(d);
    }
  };
  for (const dir of [...new Set(readOnly)].filter(d => !SYSTEM_DIRS.test(d))) {
    parents(dir);
    args.push('--ro-bind', dir, dir);
    bound.push(dir);
  }
  parents(writable);
  args.push('--bind', writable, writable);
  return args;
}
