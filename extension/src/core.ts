/**
 * The core plugin: the kernel bridge of each notebook (a NanoBridge per notebook panel) and the
 * user's NanoResearch settings (the author of feedback, the default topic), as INanoBridge.
 */
import type { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { INotebookTracker, type NotebookPanel } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { BridgeClient, NanoBridge } from './bridge';
import { SETTINGS_PLUGIN_ID } from './constants';
import { INanoBridge } from './tokens';

const AUTHOR_STORAGE_KEY = 'nanoresearch:kernel-author';

function readStoredAuthor(): string {
  try {
    return window.localStorage.getItem(AUTHOR_STORAGE_KEY) ?? '';
  } catch {
    return ''; // storage disabled (private mode, a sandboxed frame)
  }
}

function storeAuthor(author: string): void {
  try {
    window.localStorage.setItem(AUTHOR_STORAGE_KEY, author);
  } catch {
    // Not kept across reloads then; the next kernel answers again.
  }
}

export const corePlugin: JupyterFrontEndPlugin<INanoBridge> = {
  id: SETTINGS_PLUGIN_ID,
  description: 'Kernel bridge to @nanoresearch/kernel and NanoResearch settings.',
  autoStart: true,
  provides: INanoBridge,
  requires: [INotebookTracker],
  optional: [ISettingRegistry],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker, registry: ISettingRegistry | null): INanoBridge => {
    const settings = { author: '', defaultTopic: '' };
    // The settings are read before any kernel is asked for the author, so it gets the setting.
    const settingsLoaded = registry
      ? registry
          .load(SETTINGS_PLUGIN_ID)
          .then(loaded => {
            const read = (): void => {
              const before = settings.author;
              settings.author = ((loaded.get('author').composite as string) ?? '').trim();
              settings.defaultTopic = (loaded.get('defaultTopic').composite as string) ?? '';
              if (settings.author !== before) {
                // Every kernel learns the new name, so feedback given in code follows it.
                tracker.forEach(panel => void bridge.resolveAuthor(panel));
              }
            };
            read();
            loaded.changed.connect(read);
          })
          .catch(reason => console.error(`NanoResearch: settings could not be loaded: ${reason}`))
      : Promise.resolve();
    const clients = new WeakMap<NotebookPanel, NanoBridge>();
    // What the last kernel resolved (NANORESEARCH_AUTHOR, git, the OS user), kept across reloads
    // so feedback given before a kernel runs is signed the same way.
    let kernelAuthor = readStoredAuthor();
    const bridge: INanoBridge = {
      clientFor(panel: NotebookPanel): NanoBridge {
        let client = clients.get(panel);
        if (!client) {
          client = new NanoBridge(new BridgeClient(() => panel.sessionContext.session?.kernel ?? null));
          clients.set(panel, client);
        }
        return client;
      },
      currentPanel: () => tracker.currentWidget,
      author: () => settings.author || kernelAuthor || 'researcher',
      async resolveAuthor(panel: NotebookPanel): Promise<string> {
        await settingsLoaded;
        try {
          const resolved = await bridge.clientFor(panel).authorResolve({ setting: settings.author });
          kernelAuthor = resolved.author;
          storeAuthor(kernelAuthor);
        } catch (reason) {
          // No kernel yet, or not the TypeScript kernel: keep the name known so far.
          console.warn(`NanoResearch: the kernel could not resolve the author: ${reason instanceof Error ? reason.message : String(reason)}`);
        }
        return bridge.author();
      },
      defaultTopic: () => settings.defaultTopic
    };
    console.log('JupyterLab extension @nanoresearch/jupyterlab is activated!');
    return bridge;
  }
};
