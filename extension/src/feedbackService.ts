/**
 * The feedback service: one FeedbackSync per open notebook, flushed when feedback is added and
 * when the notebook's kernel becomes ready, so feedback given offline reaches the store later.
 */
import { Notification } from '@jupyterlab/apputils';
import type { ICellModel } from '@jupyterlab/cells';
import type { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { Signal } from '@lumino/signaling';
import { FeedbackSync, IFlushResult } from './feedback';
import { KernelReadyTrigger } from './kernelReady';
import { FeedbackEntry, getStageMetadata } from './metadata';
import { CELL_METADATA_KEY } from './constants';
import type { IFeedbackService, INanoBridge, IStageCellInfo } from './tokens';

export class FeedbackService implements IFeedbackService {
  constructor(
    private readonly tracker: INotebookTracker,
    private readonly bridge: INanoBridge
  ) {
    tracker.forEach(panel => this.watch(panel));
    tracker.widgetAdded.connect((_, panel) => this.watch(panel));
  }

  readonly changed: Signal<IFeedbackService, NotebookPanel> = new Signal<IFeedbackService, NotebookPanel>(this);

  add(stageRunId: string, text: string): FeedbackEntry {
    let found: { panel: NotebookPanel; model: ICellModel } | null = null;
    this.tracker.forEach(panel => {
      if (found) {
        return;
      }
      const info = this.stageCells(panel).find(c => c.metadata.stage_run_id === stageRunId);
      if (info) {
        found = { panel, model: info.model };
      }
    });
    if (!found) {
      throw new Error(
        `No open notebook has a stage cell for stage run ${stageRunId}. Run the stage cell again so its metadata records the run.`
      );
    }
    const { panel, model } = found;
    return this.addToCell(panel, model, text);
  }

  feedbackFor(stageRunId: string): FeedbackEntry[] | null {
    let found: FeedbackEntry[] | null = null;
    this.tracker.forEach(panel => {
      const info = found ? undefined : this.stageCells(panel).find(c => c.metadata.stage_run_id === stageRunId);
      if (info) {
        found = info.metadata.feedback;
      }
    });
    return found;
  }

  addToCell(panel: NotebookPanel, cell: ICellModel, text: string): FeedbackEntry {
    const { entry, flushed } = this.syncFor(panel).add(cell, text, this.bridge.author());
    void flushed.then(result => this.report(result, true));
    return entry;
  }

  stageCells(panel: NotebookPanel): IStageCellInfo[] {
    const model = panel.model;
    if (!model) {
      return [];
    }
    const infos: IStageCellInfo[] = [];
    Array.from(model.cells).forEach((cell, index) => {
      const metadata = getStageMetadata(cell);
      if (metadata) {
        infos.push({ model: cell, index, metadata });
      }
    });
    return infos;
  }

  async syncNow(panel: NotebookPanel): Promise<IFlushResult> {
    const result = await this.syncFor(panel).flush();
    this.report(result, true);
    return result;
  }

  private syncFor(panel: NotebookPanel): FeedbackSync {
    let sync = this.syncs.get(panel);
    if (!sync) {
      sync = new FeedbackSync({
        cells: () => (panel.model ? Array.from(panel.model.cells) : []),
        send: request => this.bridge.clientFor(panel).call('feedback.add', request),
        origin: () => `notebook:${panel.context.path}`
      });
      this.syncs.set(panel, sync);
    }
    return sync;
  }

  /** Tells the user what happened to feedback they just gave (silent for background flushes). */
  private report(result: IFlushResult, userAction: boolean): void {
    if (result.failed === 0) {
      return;
    }
    const reason = result.errors[0] ?? '';
    if (!userAction) {
      console.warn(`NanoResearch: feedback stays unsynced in the notebook: ${reason}`);
      return;
    }
    const offline = reason.length > 0 && /No kernel|cannot take requests/.test(reason);
    const message = offline
      ? 'Feedback saved in the notebook. It is sent to the store when the kernel runs.'
      : `Feedback saved in the notebook but not sent to the store: ${reason}`;
    Notification.emit(message, offline ? 'info' : 'error', { autoClose: offline ? 4000 : false });
  }

  private watch(panel: NotebookPanel): void {
    const trigger = new KernelReadyTrigger();
    const flushIfReady = (): void => {
      const sync = this.syncFor(panel);
      if (sync.hasPending()) {
        void sync.flush().then(result => this.report(result, false));
      }
    };
    const session = panel.sessionContext;
    session.kernelChanged.connect(() => trigger.kernelChanged());
    session.statusChanged.connect((_, status) => {
      if (trigger.status(status)) {
        flushIfReady();
      }
    });
    void panel.context.ready.then(() => {
      const model = panel.model;
      if (!model) {
        return;
      }
      const watchCell = (cell: ICellModel): void => {
        cell.metadataChanged.connect((_, change) => {
          if (change.key === CELL_METADATA_KEY) {
            this.changed.emit(panel);
          }
        });
      };
      Array.from(model.cells).forEach(watchCell);
      model.cells.changed.connect((_, change) => {
        if (change.type === 'add' || change.type === 'set') {
          change.newValues.forEach(watchCell);
        }
        this.changed.emit(panel);
      });
      this.changed.emit(panel);
      // A kernel that was ready before this notebook was watched gets its pending feedback now.
      if (session.session?.kernel?.status === 'idle') {
        trigger.status('idle');
        flushIfReady();
      }
    });
    panel.disposed.connect(() => this.syncs.delete(panel));
  }

  private readonly syncs = new Map<NotebookPanel, FeedbackSync>();
}
