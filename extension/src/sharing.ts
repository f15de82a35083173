/**
 * Importing a colleague's notebook: its stage runs, planner calls and feedback go into the
 * store through the bridge (kernel-lib's importNotebook). Paths in JupyterLab are relative to
 * the server root; the kernel runs in the notebook's folder, so the path is made relative to it.
 */
import type { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, InputDialog, Notification } from '@jupyterlab/apputils';
import { PathExt } from '@jupyterlab/coreutils';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { ITranslator, nullTranslator } from '@jupyterlab/translation';
import type { ImportCounts } from '@nanoresearch/schema';
import { CommandIDs, PALETTE_CATEGORY, TRANSLATION_DOMAIN } from './constants';
import { INanoBridge } from './tokens';

/** The path of `target` as the kernel of the notebook at `notebookPath` sees it. */
export function kernelRelativePath(notebookPath: string, target: string): string {
  const relative = PathExt.relative(PathExt.dirname(notebookPath), target);
  return relative === '' ? PathExt.basename(target) : relative;
}

/** The import command: from the palette, the menu, or a notebook's context menu in the file browser. */
export const sharingPlugin: JupyterFrontEndPlugin<void> = {
  id: '@nanoresearch/jupyterlab:sharing',
  description: "Import a colleague's notebook (stage runs, planner calls, feedback) into the store.",
  autoStart: true,
  requires: [INanoBridge],
  optional: [IDefaultFileBrowser, ICommandPalette, ITranslator],
  activate: (
    app: JupyterFrontEnd,
    bridge: INanoBridge,
    browser: IDefaultFileBrowser | null,
    palette: ICommandPalette | null,
    translator: ITranslator | null
  ) => {
    const trans = (translator ?? nullTranslator).load(TRANSLATION_DOMAIN);
    app.commands.addCommand(CommandIDs.importNotebook, {
      label: trans.__('Import Shared Notebook into the Store'),
      caption: trans.__("Bring a colleague's stage runs and feedback into your store"),
      execute: async (args): Promise<ImportCounts | undefined> => {
        const panel = bridge.currentPanel();
        if (!panel) {
          Notification.error(trans.__('Open a notebook that runs the TypeScript (tslab) kernel first: the import runs in its kernel.'));
          return undefined;
        }
        let path = args.path as string | undefined;
        const selected = browser ? Array.from(browser.selectedItems()).find(item => item.path.endsWith('.ipynb'))?.path : undefined;
        if (!path && args.fromFileBrowser === true) {
          // From the file browser's context menu: the notebook right-clicked.
          path = selected;
        }
        if (!path) {
          // From the palette or the menu: always ask, offering the file browser's selection.
          const answer = await InputDialog.getText({
            title: trans.__('Notebook to import (path from the server root)'),
            placeholder: 'shared/colleague.ipynb',
            text: selected ?? ''
          });
          if (!answer.button.accept || !answer.value?.trim()) {
            return undefined;
          }
          path = answer.value.trim();
        }
        try {
          const counts = await bridge.clientFor(panel).notebookImport({ path: kernelRelativePath(panel.context.path, path) });
          // The kernel's own sentence: what was added, or exactly why nothing was.
          Notification.success(counts.summary, { autoClose: 8000 });
          return counts;
        } catch (reason) {
          Notification.error(trans.__('Import of %1 failed: %2', path, reason instanceof Error ? reason.message : String(reason)));
          return undefined;
        }
      }
    });
    palette?.addItem({ command: CommandIDs.importNotebook, category: PALETTE_CATEGORY });
    app.contextMenu.addItem({
      command: CommandIDs.importNotebook,
      args: { fromFileBrowser: true },
      selector: '.jp-DirListing-item[data-file-type="notebook"]',
      rank: 60
    });
  }
};
