/**
 * The workspace disk quota: total bytes the run adds to its workspace, over every file.
 *
 * Chosen over a size-limited tmpfs as the workspace: a tmpfs would hold the workspace (datasets
 * included) in RAM for the run and need the results copied back out by privileged code after the
 * tree is dead; polling works the same with or without bubblewrap and root, and results land where
 * the stage reads them. The cost is overshoot: a writer can add up to (write rate × poll interval)
 * past the quota before the kill, each file is still capped by RLIMIT_FSIZE, and bubblewrap's
 * private /tmp and /dev/shm are size-limited tmpfs mounts with a hard limit of their own.
 */
import { promises as fs } from 'fs';
import * as path from 'path';

/** Bytes allocated under `dirs` (st_blocks, so sparse files count what they really use); symlinks are not followed. */
export async function diskUsage(dirs: string[]): Promise<number> {
  const seen = new Set<string>();
  let bytes = 0;
  const visit = async (entry: string): Promise<void> => {
    let st;
    try {
      st = await fs.lstat(entry);
    } catch {
      return; // Deleted while we walked.
    }
    const key = `${st.dev}:${st.ino}`;
    if (seen.has(key)) return; // A hard link is one allocation.
    seen.add(key);
    bytes += st.blocks * 512;
    if (!st.isDirectory()) return;
    let names: string[] = [];
    try {
      names = await fs.readdir(entry);
    } catch {
      return;
    }
    for (const name of names) await visit(path.join(entry, name));
  };
  for (const dir of dirs) await visit(dir);
  return bytes;
}

export interface QuotaWatch {
  stop(): void;
}

/**
 * Polls the usage of `dirs` every `intervalMs` and calls `onExceeded` once when it grows by more
 * than `quotaBytes` over what was there at the start.
 */
export async function watchDiskQuota(dirs: string[], quotaBytes: number, intervalMs: number, onExceeded: (usedBytes: number) => void): Promise<QuotaWatch> {
  const baseline = await diskUsage(dirs);
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const poll = async () => {
    const used = (await diskUsage(dirs)) - baseline;
    if (stopped) return;
    if (used > quotaBytes) {
      stopped = true;
      onExceeded(used);
      return;
    }
    // Scheduled after the walk finishes: a slow walk never piles up.
    timer = setTimeout(poll, intervalMs);
  };
  timer = setTimeout(poll, intervalMs);
  return {
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
    }
  };
}
