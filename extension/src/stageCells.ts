/**
 * Stage cells: the insert commands, the badge on each stage cell, and the metadata updates
 * when a stage bundle arrives in a cell's output (status and ids at once; the stage run and
 * planner call fetched through the bridge once the stage has finished, so a shared notebook
 * carries its trajectory).
 */
import type { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, InputDialog, Notification, type ISessionContext } from '@jupyterlab/apputils';
import type { Cell, ICellModel, ICodeCellModel } from '@jupyterlab/cells';
import { INotebookTracker, NotebookActions, type NotebookPanel } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { ITranslator, nullTranslator, type TranslationBundle } from '@jupyterlab/translation';
import { Signal } from '@lumino/signaling';
import {
  CELL_METADATA_KEY,
  CommandIDs,
  PALETTE_CATEGORY,
  SETTINGS_PLUGIN_ID,
  STAGE_LABELS,
  STAGE_MIME_TYPE,
  STAGE_NAMES,
  TRANSLATION_DOMAIN,
  StageName
} from './constants';
import { applyBundle, findBundle, getStageMetadata, newStageMetadata, setStageMetadata, withTrajectory } from './metadata';
import { renderStartingCard, statusLabel, tickClocks } from './card';
import { hasSetup, setupCode, stageCode, type ISetupDefaults } from './templates';
import { INanoBridge } from './tokens';

/** The stage that follows the notebook's last stage cell (ideation in a notebook without one). */
export function nextStage(stages: StageName[]): StageName {
  const last = stages[stages.length - 1];
  if (!last) {
    return 'ideation';
  }
  const next = STAGE_NAMES.indexOf(last) + 1;
  return STAGE_NAMES[Math.min(next, STAGE_NAMES.length - 1)];
}

/**
 * Inserts a stage cell below the active cell, and the set-up cell at the top if the notebook
 * has none (`hasSetup`: no cell opens the lab, or none opens a project). Returns the index of
 * the new stage cell.
 */
export function insertStageCell(panel: NotebookPanel, stage: StageName, topic: string, author?: string, defaults: ISetupDefaults = {}): number {
  const notebook = panel.content;
  const model = panel.model;
  if (!model) {
    throw new Error('The notebook is not loaded yet.');
  }
  const cells = Array.from(model.cells);
  if (!hasSetup(cells.map(cell => cell.sharedModel.getSource()))) {
    const first = cells[0];
    if (first && first.type === 'code' && first.sharedModel.getSource().trim() === '') {
      first.sharedModel.setSource(setupCode(topic, defaults));
    } else {
      model.sharedModel.insertCell(0, { cell_type: 'code', source: setupCode(topic, defaults), metadata: {} });
    }
    if (notebook.activeCellIndex < 0) {
      notebook.activeCellIndex = 0;
    }
  }
  const index = Math.max(notebook.activeCellIndex, 0) + 1;
  model.sharedModel.insertCell(index, {
    cell_type: 'code',
    source: stageCode(stage),
    metadata: { [CELL_METADATA_KEY]: JSON.parse(JSON.stringify(newStageMetadata(stage, author))) }
  });
  notebook.activeCellIndex = index;
  notebook.mode = 'command';
  return index;
}

/** What `ensureStageKernel` did. */
export type KernelChoice = 'kept' | 'switched' | 'missing';

/** How long a kernel that is still starting is waited for before the notebook is switched anyway. */
const PENDING_KERNEL_WAIT_MS = 120_000;

/**
 * Resolves once a session context is no longer starting its kernel: a new notebook's kernel is
 * requested before the server has a session for it, and changing the kernel in that window
 * preempts the pending one (two kernels start, and the first is shut down under its first cell).
 */
async function kernelSettled(session: ISessionContext, waitMs: number): Promise<void> {
  // A named kernel is pending; "No Kernel" (chosen, or never started) reads 'initializing' too.
  const pending = (): boolean => !session.session && session.kernelDisplayStatus === 'initializing' && !session.hasNoKernel;
  if (pending()) {
    await new Promise<void>(resolve => {
      const check = (): void => {
        if (!pending()) {
          finish();
        }
      };
      const finish = (): void => {
        clearTimeout(timer);
        session.sessionChanged.disconnect(check);
        session.statusChanged.disconnect(check);
        resolve();
      };
      const timer = setTimeout(finish, waitMs);
      session.sessionChanged.connect(check);
      session.statusChanged.connect(check);
    });
  }
  // `ready` alone would wait forever on "No Kernel", which has no session.
  if (session.session) {
    await session.ready;
  }
}

/**
 * Puts a notebook on the kernel stage cells run in (TypeScript, tslab): a new notebook starts on
 * whatever kernel the launcher or the default picked (often JavaScript or Python), or none.
 * `available` lists the kernelspec names the server has; without `kernelName` among them nothing
 * changes ('missing', for the caller to say how to register it).
 */
export async function ensureStageKernel(
  panel: Pick<NotebookPanel, 'sessionContext'>,
  kernelName: string,
  available: readonly string[],
  pendingWaitMs = PENDING_KERNEL_WAIT_MS
): Promise<KernelChoice> {
  const session = panel.sessionContext;
  await session.initialize();
  // A kernel that is still starting is waited for, so that a notebook just created on tslab is
  // never switched (a second kernel in the middle of its first cell).
  await kernelSettled(session, pendingWaitMs);
  const current = session.session?.kernel?.name;
  if (current === kernelName) {
    return 'kept';
  }
  if (!available.includes(kernelName)) {
    return 'missing';
  }
  await session.changeKernel({ name: kernelName });
  return 'switched';
}

/**
 * Keeps one notebook's stage cells in step with their outputs, and their badges in step with
 * their metadata.
 */
export class StageCellWatcher {
  constructor(
    private readonly panel: NotebookPanel,
    private readonly bridge: INanoBridge,
    private readonly trans: TranslationBundle = nullTranslator.load(TRANSLATION_DOMAIN)
  ) {
    void panel.context.ready.then(() => this.start());
  }

  private start(): void {
    const model = this.panel.model;
    if (!model) {
      return;
    }
    Array.from(model.cells).forEach(cell => this.watchCell(cell));
    // A stage cell shows a card from the moment it is run, before the kernel's first one arrives.
    NotebookActions.executionScheduled.connect((_, { notebook, cell }) => {
      if (notebook === this.panel.content) {
        this.showStarting(cell);
      }
    }, this);
    NotebookActions.executed.connect((_, { notebook, cell }) => {
      if (notebook === this.panel.content) {
        this.clearStarting(cell.model);
      }
    }, this);
    // The notebook's actions are global signals: this watcher stops listening when its notebook closes.
    this.panel.disposed.connect(() => Signal.disconnectReceiver(this));
    model.cells.changed.connect((_, change) => {
      if (change.type === 'add' || change.type === 'set') {
        change.newValues.forEach(cell => this.watchCell(cell));
      }
      // Cell widgets are created after the model change: badge them on the next frame.
      requestAnimationFrame(() => this.refreshBadges());
    });
    this.refreshBadges();
  }

  private watchCell(cell: ICellModel): void {
    if (this.watched.has(cell)) {
      return;
    }
    this.watched.add(cell);
    cell.metadataChanged.connect((_, change) => {
      if (change.key === CELL_METADATA_KEY) {
        this.refreshBadges();
      }
    });
    if (cell.type !== 'code') {
      return;
    }
    const outputs = (cell as ICodeCellModel).outputs;
    const onOutputs = (): void => this.onOutputs(cell as ICodeCellModel);
    outputs.changed.connect(onOutputs);
    outputs.stateChanged.connect(onOutputs);
  }

  /** The "starting" card of a stage cell just run, with its clock moving, and the badge saying so. */
  private showStarting(cell: Cell): void {
    const metadata = getStageMetadata(cell.model);
    if (!metadata || cell.model.type !== 'code') {
      return;
    }
    this.clearStarting(cell.model);
    const card = renderStartingCard(metadata.stage, Date.now());
    const host = cell.node.querySelector(':scope > .jp-Cell-outputWrapper') ?? cell.node;
    host.appendChild(card);
    const timer = window.setInterval(() => tickClocks(card), 1000);
    this.starting.set(cell.model, () => {
      window.clearInterval(timer);
      card.remove();
    });
    this.phases.set(cell.model, 'starting');
    this.refreshBadges();
  }

  private clearStarting(cell: ICellModel): void {
    const clear = this.starting.get(cell);
    if (clear) {
      this.starting.delete(cell);
      clear();
      if (this.phases.get(cell) === 'starting') {
        this.phases.delete(cell);
        this.refreshBadges();
      }
    }
  }

  /** A stage bundle in the outputs updates the metadata (a cell that runs a stage becomes a stage cell). */
  private onOutputs(cell: ICodeCellModel): void {
    const bundle = findBundle(cell.outputs.toJSON() as Array<{ data?: unknown }>, STAGE_MIME_TYPE);
    if (!bundle) {
      return;
    }
    // The kernel's card is there: the "starting" one goes.
    this.clearStarting(cell);
    const current = getStageMetadata(cell) ?? newStageMetadata(bundle.stage, this.bridge.author());
    const next = applyBundle(current, bundle);
    if (next) {
      setStageMetadata(cell, next);
    }
    const latest = next ?? current;
    const finished = bundle.status === 'done' || bundle.status === 'failed';
    // The badge follows a running stage's phase (retrieving, planning, ...); the metadata keeps 'running'.
    const phase = finished ? undefined : statusLabel(bundle);
    if (phase !== this.phases.get(cell)) {
      if (phase) {
        this.phases.set(cell, phase);
      } else {
        this.phases.delete(cell);
      }
      this.refreshBadges();
    }
    const embedded = latest.trajectory;
    if (finished && (!embedded || embedded.id !== bundle.stage_run_id || embedded.status !== bundle.status)) {
      void this.fetchTrajectory(cell, bundle.stage_run_id);
    }
  }

  private async fetchTrajectory(cell: ICodeCellModel, stageRunId: string): Promise<void> {
    if (this.fetching.has(stageRunId)) {
      return;
    }
    this.fetching.add(stageRunId);
    try {
      const result = await this.bridge.clientFor(this.panel).stageGet({ stage_run_id: stageRunId });
      const latest = getStageMetadata(cell);
      if (latest && latest.stage_run_id === stageRunId) {
        setStageMetadata(cell, withTrajectory(latest, result.stage_run, result.planner_call));
      }
    } catch (reason) {
      Notification.warning(
        this.trans.__('Could not embed the stage run %1 in the notebook: %2', stageRunId, reason instanceof Error ? reason.message : String(reason)),
        { autoClose: 8000 }
      );
    } finally {
      this.fetching.delete(stageRunId);
    }
  }

  /**
   * The badge: data attributes on the cell node (for CSS and tests) and a small label at the
   * bottom right of the cell's input.
   */
  refreshBadges(): void {
    for (const widget of this.panel.content.widgets) {
      this.refreshBadge(widget);
    }
  }

  private refreshBadge(widget: Cell): void {
    const metadata = getStageMetadata(widget.model);
    const node = widget.node;
    const wrapper = node.querySelector<HTMLElement>(':scope > .jp-Cell-inputWrapper');
    let badge = wrapper?.querySelector<HTMLElement>(':scope > .jp-nr-badge') ?? null;
    if (metadata) {
      node.dataset.nanoresearchStage = metadata.stage;
      node.dataset.nanoresearchStatus = metadata.status;
      node.classList.add('jp-nr-stage-cell');
      if (!wrapper) {
        // A cell of a windowed notebook is rendered later: badge it once it is.
        void widget.ready.then(() => this.refreshBadge(widget));
        return;
      }
      if (!badge) {
        badge = document.createElement('span');
        badge.className = 'jp-nr-badge';
        wrapper.appendChild(badge);
      }
      const phase = this.phases.get(widget.model) === 'starting' || metadata.status === 'running' ? this.phases.get(widget.model) : undefined;
      badge.textContent = `${STAGE_LABELS[metadata.stage]} · ${phase ?? metadata.status}`;
      badge.dataset.status = metadata.status;
    } else if (node.dataset.nanoresearchStage) {
      delete node.dataset.nanoresearchStage;
      delete node.dataset.nanoresearchStatus;
      node.classList.remove('jp-nr-stage-cell');
      badge?.remove();
    }
  }

  private readonly watched = new WeakSet<ICellModel>();
  /** The phase of each cell whose stage is running in this session ('starting' before the kernel's first card). */
  private readonly phases = new WeakMap<ICellModel, string>();
  /** Removes the "starting" card of a cell run but not yet answered. */
  private readonly starting = new WeakMap<ICellModel, () => void>();
  private readonly fetching = new Set<string>();
}

/** The sources of a notebook's cells, in order. */
function notebookSources(panel: NotebookPanel): string[] {
  return panel.model ? Array.from(panel.model.cells).map(cell => cell.sharedModel.getSource()) : [];
}

/** The set-up defaults and kernel of stage cells, kept in step with the settings. */
interface IStageSettings extends ISetupDefaults {
  kernelName: string;
}

function stageSettings(registry: ISettingRegistry | null): IStageSettings {
  // The quickstart's defaults for the set-up cell of a new notebook, and the kernel it runs in.
  const settings: IStageSettings = { literatureSources: 'none', embeddedCallTimeoutMs: 600_000, kernelName: 'tslab' };
  if (registry) {
    void registry
      .load(SETTINGS_PLUGIN_ID)
      .then(loaded => {
        const read = (): void => {
          settings.literatureSources = (loaded.get('literatureSources').composite as string) ?? '';
          settings.embeddedCallTimeoutMs = (loaded.get('embeddedCallTimeoutMs').composite as number) ?? 0;
          settings.kernelName = ((loaded.get('kernelName').composite as string) ?? '').trim() || 'tslab';
        };
        read();
        loaded.changed.connect(read);
      })
      .catch(reason => console.error(`NanoResearch: settings could not be loaded: ${reason}`));
  }
  return settings;
}

/** A notebook getting its first stage cell runs them in the TypeScript kernel: switch it, or say how. */
function putOnStageKernel(app: JupyterFrontEnd, panel: NotebookPanel, kernelName: string, trans: TranslationBundle): void {
  const specs = Object.keys(app.serviceManager.kernelspecs.specs?.kernelspecs ?? {});
  void ensureStageKernel(panel, kernelName, specs).then(
    choice => {
      if (choice === 'switched') {
        Notification.info(trans.__('Stage cells run in the TypeScript kernel: this notebook now uses %1.', kernelName), { autoClose: 5000 });
      } else if (choice === 'missing') {
        Notification.warning(
          trans.__(
            "The kernel '%1' that runs stage cells is not installed: run `npm run setup` in the NanoResearch repository (it registers tslab), then pick it in Kernel › Change Kernel.",
            kernelName
          ),
          { autoClose: false }
        );
      }
    },
    reason => Notification.error(trans.__('Could not switch this notebook to %1: %2', kernelName, reason instanceof Error ? reason.message : String(reason)))
  );
}

/** Stage cells: the insert command (menu, toolbar "+ Stage", shortcuts, palette), badges and metadata updates. */
export const stageCellsPlugin: JupyterFrontEndPlugin<void> = {
  id: '@nanoresearch/jupyterlab:stage-cells',
  description: 'Commands that insert stage cells, stage badges, and metadata updates from stage bundles.',
  autoStart: true,
  requires: [INotebookTracker, INanoBridge],
  optional: [ICommandPalette, ISettingRegistry, ITranslator],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    bridge: INanoBridge,
    palette: ICommandPalette | null,
    registry: ISettingRegistry | null,
    translator: ITranslator | null
  ) => {
    const trans = (translator ?? nullTranslator).load(TRANSLATION_DOMAIN);
    const settings = stageSettings(registry);
    tracker.forEach(panel => new StageCellWatcher(panel, bridge, trans));
    tracker.widgetAdded.connect((_, panel) => new StageCellWatcher(panel, bridge, trans));

    app.commands.addCommand(CommandIDs.insertStage, {
      label: args => (args.stage ? trans.__('Insert %1 Stage Cell', trans.__(STAGE_LABELS[args.stage as StageName])) : trans.__('Insert Next Stage Cell')),
      caption: trans.__('Insert a NanoResearch stage cell below the active cell (and the set-up cell if missing)'),
      isEnabled: () => tracker.currentWidget !== null,
      execute: async args => {
        const panel = tracker.currentWidget;
        if (!panel) {
          return;
        }
        await panel.context.ready;
        const requested = args.stage as string | undefined;
        if (requested !== undefined && !(STAGE_NAMES as readonly string[]).includes(requested)) {
          throw new Error(trans.__("Unknown stage '%1'. Stages: %2.", requested, STAGE_NAMES.join(', ')));
        }
        const existing = panel.model
          ? Array.from(panel.model.cells)
              .map(cell => getStageMetadata(cell)?.stage)
              .filter((s): s is StageName => s !== undefined)
          : [];
        const stage = (requested as StageName | undefined) ?? nextStage(existing);
        let topic = (args.topic as string | undefined) ?? bridge.defaultTopic();
        // The same test insertStageCell makes: a topic is needed exactly when a set-up cell is inserted.
        const setUp = hasSetup(notebookSources(panel));
        if (!setUp && !topic) {
          const answer = await InputDialog.getText({
            title: trans.__('Research topic of this notebook'),
            placeholder: trans.__('e.g. Small MLPs on tabular data')
          });
          if (!answer.button.accept || !answer.value?.trim()) {
            return;
          }
          topic = answer.value.trim();
        }
        insertStageCell(panel, stage, topic, bridge.author(), settings);
        if (!setUp) {
          putOnStageKernel(app, panel, settings.kernelName, trans);
        }
      }
    });
    if (palette) {
      for (const stage of STAGE_NAMES) {
        palette.addItem({ command: CommandIDs.insertStage, args: { stage }, category: PALETTE_CATEGORY });
      }
      palette.addItem({ command: CommandIDs.insertStage, args: {}, category: PALETTE_CATEGORY });
    }
  }
};
