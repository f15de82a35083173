/**
 * Importing a colleague's notebook: its stage runs, planner calls and feedback go into the
 * store through the bridge (kernel-lib's importNotebook). Paths in JupyterLab are relative to
 * the server root; the kernel runs in the notebook's folder, so the path is made relative to it.
 */
import { PathExt } from '@jupyterlab/coreutils';

/** What `notebook.import` answers. */
export interface IImportCounts {
  stageRuns: number;
  plannerCalls: number;
  feedback: number;
  skipped: number;
  warnings?: string[];
  /** The kernel's own sentence, saying exactly why when nothing was added (newer kernels). */
  summary?: string;
}

/** The path of `target` as the kernel of the notebook at `notebookPath` sees it. */
export function kernelRelativePath(notebookPath: string, target: string): string {
  const relative = PathExt.relative(PathExt.dirname(notebookPath), target);
  return relative === '' ? PathExt.basename(target) : relative;
}

/** One line for the notification after an import. */
export function describeImport(path: string, counts: IImportCounts): string {
  if (counts.summary) {
    return counts.summary;
  }
  const parts = [
    `${counts.stageRuns} stage run${counts.stageRuns === 1 ? '' : 's'}`,
    `${counts.plannerCalls} planner call${counts.plannerCalls === 1 ? '' : 's'}`,
    `${counts.feedback} feedback`
  ];
  const skipped = counts.skipped > 0 ? `; ${counts.skipped} cell${counts.skipped === 1 ? '' : 's'} skipped` : '';
  return `Imported ${parts.join(', ')} from ${path}${skipped}.`;
}
