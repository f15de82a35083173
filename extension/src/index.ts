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
import { StageCardRenderer } from './card';
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
import { StageCellWatcher, insertStageCell, nextStage } from './stageCells';
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
    if (registry) {
      void registry
        .load(SETTINGS_PLUGIN_ID)
        .then(loaded => {
          const read = (): void => {
            settings.author = (loaded.get('author').composite as string) ?? '';
            settings.defaultTopic = (loaded.get('defaultTopic').composite as string) ?? '';
          };
          read();
          loaded.changed.connect(read);
        })
        .catch(reason => console.error(`NanoResearch: settings could not be loaded: ${reason}`));
    }
    const clients = new WeakMap<NotebookPanel, BridgeClient>();
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
      author: () => settings.author || app.serviceManager.user?.identity?.name || 'researcher',
      defaultTopic: () => settings.defaultTopic
    };
    console.log('JupyterLab extension @nanoresearch/jupyterlab is activated!');
    return bridge;
  }
};

const feedbackPlugin: JupyterFrontEndPlugin<IFeedbackService> = {
  id: '@nanoresearch/jupyterlab:feedback',
  description: 'Feedback on stage cells: cell metadata first, then the store; offline feedback is synced when a kernel starts.',
  autoStart: true,
  provides: IFeedbackService,
  requires: [INotebookTracker, INanoBridge],
  activate: (_app: JupyterFrontEnd, tracker: INotebookTracker, bridge: INanoBridge): IFeedbackService =>
    new FeedbackService(tracker, bridge)
};

const stageCellsPlugin: JupyterFrontEndPlugin<void> = {
  id: '@nanoresearch/jupyterlab:stage-cells',
  description: 'Commands that insert stage cells, stage badges, and metadata updates from stage bundles.',
  autoStart: true,
  requires: [INotebookTracker, INanoBridge],
  optional: [ICommandPalette],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker, bridge: INanoBridge, palette: ICommandPalette | null) => {
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
        insertStageCell(panel, stage, topic, bridge.author());
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
  activate: (_app: JupyterFrontEnd, rendermime: IRenderMimeRegistry, feedback: IFeedbackService | null) => {
    rendermime.addFactory(
      {
        safe: true,
        mimeTypes: [STAGE_MIME_TYPE],
        defaultRank: 0,
        createRenderer: options => new StageCardRenderer(options.mimeType, feedback)
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
      execute: () => {
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
        if (!path && browser) {
          const selected = Array.from(browser.selectedItems()).find(item => item.path.endsWith('.ipynb'));
          path = selected?.path;
        }
        if (!path) {
          const answer = await InputDialog.getText({ title: 'Notebook to import (path from the server root)', placeholder: 'shared/colleague.ipynb' });
          if (!answer.button.accept || !answer.value) {
            return;
          }
          path = answer.value.trim();
        }
        try {
          const counts = await bridge
            .clientFor(panel)
            .call<IImportCounts>('notebook.import', { path: kernelRelativePath(panel.context.path, path) });
          Notification.success(describeImport(path, counts), { autoClose: 6000 });
          return counts;
        } catch (reason) {
          Notification.error(`Import of ${path} failed: ${reason instanceof Error ? reason.message : String(reason)}`);
          return undefined;
        }
      }
    });
    palette?.addItem({ command: CommandIDs.importNotebook, category: PALETTE_CATEGORY });
    app.contextMenu.addItem({ command: CommandIDs.importNotebook, selector: '.jp-DirListing-item[data-file-type="notebook"]', rank: 60 });
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
