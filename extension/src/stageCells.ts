/**
 * Stage cells: the insert commands, the badge on each stage cell, and the metadata updates
 * when a stage bundle arrives in a cell's output (status and ids at once; the stage run and
 * planner call fetched through the bridge once the stage has finished, so a shared notebook
 * carries its trajectory).
 */
import { Notification } from '@jupyterlab/apputils';
import type { Cell, ICellModel, ICodeCellModel } from '@jupyterlab/cells';
import { NotebookActions, type NotebookPanel } from '@jupyterlab/notebook';
import { Signal } from '@lumino/signaling';
import type { PlannerCall, StageRun } from '@nanoresearch/schema';
import { CELL_METADATA_KEY, STAGES, STAGE_LABELS, STAGE_MIME_TYPE, StageName } from './constants';
import {
  applyBundle,
  findBundle,
  getStageMetadata,
  newStageMetadata,
  setStageMetadata,
  withTrajectory
} from './metadata';
import { renderStartingCard, statusLabel, tickClocks } from './card';
import { isSetupSource, setupCode, stageCode, type ISetupDefaults } from './templates';
import type { INanoBridge } from './tokens';

/** What `stage.get` answers. */
export interface IStageGetResult {
  stage_run: StageRun | null;
  planner_call: PlannerCall | null;
}

/** The stage that follows the notebook's last stage cell (ideation in a notebook without one). */
export function nextStage(stages: StageName[]): StageName {
  const last = stages[stages.length - 1];
  if (!last) {
    return 'ideation';
  }
  const next = STAGES.indexOf(last) + 1;
  return STAGES[Math.min(next, STAGES.length - 1)];
}

/**
 * Inserts a stage cell below the active cell, and the set-up cell at the top if the notebook
 * has none. Returns the index of the new stage cell.
 */
export function insertStageCell(
  panel: NotebookPanel,
  stage: StageName,
  topic: string,
  author?: string,
  defaults: ISetupDefaults = {}
): number {
  const notebook = panel.content;
  const model = panel.model;
  if (!model) {
    throw new Error('The notebook is not loaded yet.');
  }
  const cells = Array.from(model.cells);
  if (!cells.some(cell => isSetupSource(cell.sharedModel.getSource()))) {
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

/**
 * Puts a notebook on the kernel stage cells run in (TypeScript, tslab): a new notebook starts on
 * whatever kernel the launcher or the default picked (often JavaScript or Python), or none.
 * `available` lists the kernelspec names the server has; without `kernelName` among them nothing
 * changes ('missing', for the caller to say how to register it).
 */
export async function ensureStageKernel(panel: NotebookPanel, kernelName: string, available: readonly string[]): Promise<KernelChoice> {
  const session = panel.sessionContext;
  await session.initialize();
  // A kernel that is still starting is waited for, so that a notebook just created on tslab is
  // never switched (a restart in the middle of its first cell). `ready` alone would wait forever
  // on "No Kernel", which has no session.
  if (session.session) {
    await session.ready;
  }
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
    private readonly bridge: INanoBridge
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
      const result = await this.bridge
        .clientFor(this.panel)
        .call<IStageGetResult>('stage.get', { stage_run_id: stageRunId });
      const latest = getStageMetadata(cell);
      if (latest && latest.stage_run_id === stageRunId) {
        setStageMetadata(cell, withTrajectory(latest, result.stage_run, result.planner_call));
      }
    } catch (reason) {
      Notification.warning(
        `Could not embed the stage run ${stageRunId} in the notebook: ${reason instanceof Error ? reason.message : String(reason)}`,
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
