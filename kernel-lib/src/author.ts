import { execFileSync } from 'child_process';
import * as os from 'os';

/** Where an author name came from, in the order they are tried. */
export type AuthorSource = 'setting' | 'NANORESEARCH_AUTHOR' | 'git' | 'os' | 'fallback';

export interface ResolvedAuthor {
  author: string;
  source: AuthorSource;
}

/**
 * The JupyterLab `author` setting, as the extension last told this kernel process (bridge
 * `author.resolve`). It lives in the kernel so that feedback given in code signs with the same
 * name as feedback given in the sidebar.
 */
let settingAuthor = '';
/** `git config user.name`, read once per process (a subprocess per feedback would be wasteful). */
let gitName: string | null | undefined;

/** Records the extension's `author` setting for this process; empty clears it. */
export function setAuthorSetting(name: string): void {
  settingAuthor = name.trim();
}

/**
 * The one author of feedback and shared notebooks, the same in the UI and in code: the
 * JupyterLab setting `author`, then $NANORESEARCH_AUTHOR, then git's `user.name`, then the OS
 * user. `git` is injectable for tests; by default it runs `git config --get user.name`.
 */
export function resolveAuthor(options: { env?: NodeJS.ProcessEnv; setting?: string; git?: () => string | null } = {}): ResolvedAuthor {
  const setting = (options.setting ?? settingAuthor).trim();
  if (setting) return { author: setting, source: 'setting' };
  const env = options.env ?? process.env;
  const fromEnv = env.NANORESEARCH_AUTHOR?.trim();
  if (fromEnv) return { author: fromEnv, source: 'NANORESEARCH_AUTHOR' };
  const git = (options.git ?? gitUserName)()?.trim();
  if (git) return { author: git, source: 'git' };
  try {
    const user = os.userInfo().username;
    if (user) return { author: user, source: 'os' };
  } catch {
    // No passwd entry for this uid (some containers): fall through.
  }
  return { author: 'researcher', source: 'fallback' };
}

/** git's `user.name` for the kernel's folder, or null when git is missing or has none. */
function gitUserName(): string | null {
  if (gitName !== undefined) return gitName;
  try {
    gitName =
      execFileSync('git', ['config', '--get', 'user.name'], {
        encoding: 'utf8',
        timeout: 2000,
        stdio: ['ignore', 'pipe', 'ignore'],
        // Never prompt, never run a pager: this is a lookup, not a session.
        env: { ...process.env, GIT_TERMINAL_PROMPT: '0', GIT_PAGER: 'cat' }
      }).trim() || null;
  } catch {
    gitName = null;
  }
  return gitName;
}
