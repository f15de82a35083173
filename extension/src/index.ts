/**
 * NanoResearch Notebook for JupyterLab: one plugin per concern.
 *
 * - plugin           the kernel bridge of each notebook + settings (provides INanoBridge)
 * - feedback         feedback kept in cell metadata and synced to the store (provides IFeedbackService)
 * - stage-cells      insert-stage commands, badges, metadata from stage bundles
 * - stage-card       the MIME renderer of stage bundles
 * - feedback-sidebar the right-hand feedback panel
 * - lab-panel        skills, memories, adapters, read-only SQL
 * - sharing          import a colleague's notebook into the store
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, InputDialog, MainAreaWidget, Notification } from '@jupyterlab/apputils';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { BridgeClient } from './bridge';
import { documentOpener, StageCardRenderer } from './card';
import {
  CommandIDs,
  SETTINGS_PLUGIN_ID,
  STAGES,
  STAGE_LABELS,
  STAGE_MIME_TYPE,
  StageName
} from './constants';
import { FeedbackService } from './feedbackService';
import { LabPanel } from './labPanel';
import { getStageMetadata } from './metadata';
import { describeImport, IImportCounts, kernelRelativePath } from './sharing';
import { FeedbackSidebar } from './sidebar';
import { StageCellWatcher, ensureStageKernel, insertStageCell, nextStage } from './stageCells';
import { IFeedbackService, INanoBridge } from './tokens';

export * from './tokens';
export { BridgeClient, BridgeError } from './bridge';

const PALETTE_CATEGORY = 'NanoResearch';

/** The bridge of each notebook and the user's settings. */
const corePlugin: JupyterFrontEndPlugin<INanoBridge> = {
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
    const clients = new WeakMap<NotebookPanel, BridgeClient>();
    // What the last kernel resolved (NANORESEARCH_AUTHOR, git, the OS user), kept across reloads
    // so feedback given before a kernel runs is signed the same way.
    let kernelAuthor = readStoredAuthor();
    const bridge: INanoBridge = {
      clientFor(panel: NotebookPanel): BridgeClient {
        let client = clients.get(panel);
        if (!client) {
          client = new BridgeClient(() => panel.sessionContext.session?.kernel ?? null);
          clients.set(panel, client);
        }
        return client;
      },
      currentPanel: () => tracker.currentWidget,
      author: () => settings.author || kernelAuthor || 'researcher',
      async resolveAuthor(panel: NotebookPanel): Promise<string> {
        await settingsLoaded;
        try {
          const resolved = await bridge.clientFor(panel).call<{ author: string }>('author.resolve', { setting: settings.author });
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

/** Opens the lab panel on a memory or skill (a link from a learned feedback item). */
function openLearned(app: JupyterFrontEnd, kind: 'memories' | 'skills', query: string): void {
  void app.commands.execute(CommandIDs.openLabPanel, { tab: kind, query });
}

const feedbackPlugin: JupyterFrontEndPlugin<IFeedbackService> = {
  id: '@nanoresearch/jupyterlab:feedback',
  description: 'Feedback on stage cells: cell metadata first, then the store; offline feedback is synced when a kernel starts.',
  autoStart: true,
  provides: IFeedbackService,
  requires: [INotebookTracker, INanoBridge],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker, bridge: INanoBridge): IFeedbackService =>
    new FeedbackService(tracker, bridge, (kind, query) => openLearned(app, kind, query))
};

const stageCellsPlugin: JupyterFrontEndPlugin<void> = {
  id: '@nanoresearch/jupyterlab:stage-cells',
  description: 'Commands that insert stage cells, stage badges, and metadata updates from stage bundles.',
  autoStart: true,
  requires: [INotebookTracker, INanoBridge],
  optional: [ICommandPalette, ISettingRegistry],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    bridge: INanoBridge,
    palette: ICommandPalette | null,
    registry: ISettingRegistry | null
  ) => {
    // The quickstart's defaults for the set-up cell of a new notebook, and the kernel it runs in.
    const setup = { literatureSources: 'none', embeddedCallTimeoutMs: 600_000, kernelName: 'tslab' };
    if (registry) {
      void registry
        .load(SETTINGS_PLUGIN_ID)
        .then(loaded => {
          const read = (): void => {
            setup.literatureSources = (loaded.get('literatureSources').composite as string) ?? '';
            setup.embeddedCallTimeoutMs = (loaded.get('embeddedCallTimeoutMs').composite as number) ?? 0;
            setup.kernelName = ((loaded.get('kernelName').composite as string) ?? '').trim() || 'tslab';
          };
          read();
          loaded.changed.connect(read);
        })
        .catch(reason => console.error(`NanoResearch: settings could not be loaded: ${reason}`));
    }
    tracker.forEach(panel => new StageCellWatcher(panel, bridge));
    tracker.widgetAdded.connect((_, panel) => new StageCellWatcher(panel, bridge));

    app.commands.addCommand(CommandIDs.insertStage, {
      label: args => (args.stage ? `Insert ${STAGE_LABELS[args.stage as StageName]} Stage Cell` : 'Insert Next Stage Cell'),
      caption: 'Insert a NanoResearch stage cell below the active cell (and the set-up cell if missing)',
      isEnabled: () => tracker.currentWidget !== null,
      execute: async args => {
        const panel = tracker.currentWidget;
        if (!panel) {
          return;
        }
        await panel.context.ready;
        const requested = args.stage as string | undefined;
        if (requested !== undefined && !(STAGES as readonly string[]).includes(requested)) {
          throw new Error(`Unknown stage '${requested}'. Stages: ${STAGES.join(', ')}.`);
        }
        const existing = panel.model
          ? Array.from(panel.model.cells)
              .map(cell => getStageMetadata(cell)?.stage)
              .filter((s): s is StageName => s !== undefined)
          : [];
        const stage = (requested as StageName | undefined) ?? nextStage(existing);
        let topic = (args.topic as string | undefined) ?? bridge.defaultTopic();
        const hasSetup = panel.model
          ? Array.from(panel.model.cells).some(cell => /Lab\.open\s*\(/.test(cell.sharedModel.getSource()))
          : false;
        if (!hasSetup && !topic) {
          const answer = await InputDialog.getText({ title: 'Research topic of this notebook', placeholder: 'e.g. Small MLPs on tabular data' });
          if (!answer.button.accept || !answer.value?.trim()) {
            return;
          }
          topic = answer.value.trim();
        }
        insertStageCell(panel, stage, topic, bridge.author(), setup);
        if (!hasSetup) {
          // A notebook getting its first stage cell runs them in the TypeScript kernel.
          const specs = Object.keys(app.serviceManager.kernelspecs.specs?.kernelspecs ?? {});
          void ensureStageKernel(panel, setup.kernelName, specs).then(
            choice => {
              if (choice === 'switched') {
                Notification.info(`Stage cells run in the TypeScript kernel: this notebook now uses ${setup.kernelName}.`, { autoClose: 5000 });
              } else if (choice === 'missing') {
                Notification.warning(
                  `The kernel '${setup.kernelName}' that runs stage cells is not installed: run \`npm run setup\` in the NanoResearch repository (it registers tslab), then pick it in Kernel › Change Kernel.`,
                  { autoClose: false }
                );
              }
            },
            reason => Notification.error(`Could not switch this notebook to ${setup.kernelName}: ${reason instanceof Error ? reason.message : String(reason)}`)
          );
        }
      }
    });
    if (palette) {
      for (const stage of STAGES) {
        palette.addItem({ command: CommandIDs.insertStage, args: { stage }, category: PALETTE_CATEGORY });
      }
      palette.addItem({ command: CommandIDs.insertStage, args: {}, category: PALETTE_CATEGORY });
    }
  }
};

const stageCardPlugin: JupyterFrontEndPlugin<void> = {
  id: '@nanoresearch/jupyterlab:stage-card',
  description: 'Renders application/vnd.nanoresearch.stage+json as a stage card with inline feedback.',
  autoStart: true,
  requires: [IRenderMimeRegistry],
  optional: [IFeedbackService],
  activate: (app: JupyterFrontEnd, rendermime: IRenderMimeRegistry, feedback: IFeedbackService | null) => {
    rendermime.addFactory(
      {
        safe: true,
        mimeTypes: [STAGE_MIME_TYPE],
        defaultRank: 0,
        createRenderer: options =>
          new StageCardRenderer(options.mimeType, feedback, documentOpener(app.commands, options.resolver))
      },
      0
    );
  }
};

const sidebarPlugin: JupyterFrontEndPlugin<void> = {
  id: '@nanoresearch/jupyterlab:feedback-sidebar',
  description: 'Right-hand panel with every stage cell of the notebook and its feedback thread.',
  autoStart: true,
  requires: [IFeedbackService, INotebookTracker],
  optional: [ILayoutRestorer, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    feedback: IFeedbackService,
    tracker: INotebookTracker,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null
  ) => {
    const sidebar = new FeedbackSidebar(feedback, tracker);
    app.shell.add(sidebar, 'right', { rank: 700 });
    if (restorer) {
      restorer.add(sidebar, sidebar.id);
    }
    app.commands.addCommand(CommandIDs.openFeedback, {
      label: 'Show Stage Feedback',
      caption: 'Open the NanoResearch feedback sidebar',
      execute: () => app.shell.activateById(sidebar.id)
    });
    palette?.addItem({ command: CommandIDs.openFeedback, category: PALETTE_CATEGORY });
  }
};

const labPanelPlugin: JupyterFrontEndPlugin<void> = {
  id: '@nanoresearch/jupyterlab:lab-panel',
  description: 'Main-area panel: skills, memories, planner adapters and read-only SQL.',
  autoStart: true,
  requires: [INanoBridge],
  optional: [ICommandPalette],
  activate: (app: JupyterFrontEnd, bridge: INanoBridge, palette: ICommandPalette | null) => {
    let widget: MainAreaWidget<LabPanel> | null = null;
    app.commands.addCommand(CommandIDs.openLabPanel, {
      label: 'Open NanoResearch Lab',
      caption: 'Browse and edit skills and memories, see planner adapters, query the store',
      execute: async args => {
        if (!widget || widget.isDisposed) {
          const created = new MainAreaWidget<LabPanel>({ content: new LabPanel(bridge) });
          created.id = 'nanoresearch-lab-panel';
          created.title.label = 'NanoResearch Lab';
          created.title.closable = true;
          widget = created;
        }
        if (!widget.isAttached) {
          app.shell.add(widget, 'main');
        }
        app.shell.activateById(widget.id);
        // From a learned feedback item: its tab, searched for the memory or skill.
        const tab = args.tab as 'memories' | 'skills' | undefined;
        if (tab === 'memories' || tab === 'skills') {
          await widget.content.showTab(tab);
          const search = widget.content.node.querySelector<HTMLInputElement>('.jp-nr-search');
          if (search && typeof args.query === 'string') {
            search.value = args.query;
            search.dispatchEvent(new Event('input'));
          }
        }
      }
    });
    palette?.addItem({ command: CommandIDs.openLabPanel, category: PALETTE_CATEGORY });
  }
};

const sharingPlugin: JupyterFrontEndPlugin<void> = {
  id: '@nanoresearch/jupyterlab:sharing',
  description: "Import a colleague's notebook (stage runs, planner calls, feedback) into the store.",
  autoStart: true,
  requires: [INanoBridge],
  optional: [IDefaultFileBrowser, ICommandPalette],
  activate: (app: JupyterFrontEnd, bridge: INanoBridge, browser: IDefaultFileBrowser | null, palette: ICommandPalette | null) => {
    app.commands.addCommand(CommandIDs.importNotebook, {
      label: 'Import Shared Notebook into the Store',
      caption: "Bring a colleague's stage runs and feedback into your store",
      execute: async args => {
        const panel = bridge.currentPanel();
        if (!panel) {
          Notification.error('Open a notebook that runs the TypeScript (tslab) kernel first: the import runs in its kernel.');
          return;
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
            title: 'Notebook to import (path from the server root)',
            placeholder: 'shared/colleague.ipynb',
            text: selected ?? ''
          });
          if (!answer.button.accept || !answer.value?.trim()) {
            return;
          }
          path = answer.value.trim();
        }
        try {
          const counts = await bridge
            .clientFor(panel)
            .call<IImportCounts>('notebook.import', { path: kernelRelativePath(panel.context.path, path) });
          Notification.success(describeImport(path, counts), { autoClose: 8000 });
          return counts;
        } catch (reason) {
          Notification.error(`Import of ${path} failed: ${reason instanceof Error ? reason.message : String(reason)}`);
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

export default [
  corePlugin,
  feedbackPlugin,
  stageCellsPlugin,
  stageCardPlugin,
  sidebarPlugin,
  labPanelPlugin,
  sharingPlugin
];
