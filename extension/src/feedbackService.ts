/**
 * The feedback service: one FeedbackSync per open notebook, flushed when feedback is added and
 * when the notebook's kernel becomes ready, so feedback given offline reaches the store later;
 * and one LearningTracker per notebook, which follows each item's background learning.
 */
import type { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Notification } from '@jupyterlab/apputils';
import type { ICellModel } from '@jupyterlab/cells';
import { INotebookTracker, type NotebookPanel } from '@jupyterlab/notebook';
import { ITranslator, nullTranslator, type TranslationBundle } from '@jupyterlab/translation';
import { Signal } from '@lumino/signaling';
import type { LearningState } from '@nanoresearch/schema';
import { FeedbackSync } from './feedback';
import { KernelReadyTrigger } from './kernelReady';
import { LearningTracker } from './learning';
import { getStageMetadata, setStageMetadata, withSynced } from './metadata';
import { CELL_METADATA_KEY, CommandIDs, TRANSLATION_DOMAIN } from './constants';
import { IFeedbackService, INanoBridge, type FeedbackEntry, type IFlushResult, type IStageCellInfo } from './tokens';

export class FeedbackService implements IFeedbackService {
  constructor(
    private readonly tracker: INotebookTracker,
    private readonly bridge: INanoBridge,
    /** Opens the lab panel on a memory or skill (a command of the app). */
    private readonly open: (kind: 'memories' | 'skills', query: string) => void = () => undefined,
    private readonly trans: TranslationBundle = nullTranslator.load(TRANSLATION_DOMAIN)
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
        this.trans.__('No open notebook has a stage cell for stage run %1. Run the stage cell again so its metadata records the run.', stageRunId)
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
    void flushed.then(result => {
      this.report(result, true);
      // Stored: follow what is learned from it.
      void this.trackerFor(panel).refresh();
    });
    return entry;
  }

  openLearned(kind: 'memories' | 'skills', query: string): void {
    this.open(kind, query);
  }

  learningOf(feedbackId: string): LearningState | undefined {
    for (const tracker of this.trackers.values()) {
      const state = tracker.stateOf(feedbackId);
      if (state) {
        return state;
      }
    }
    return undefined;
  }

  async retryLearning(feedbackId: string): Promise<void> {
    const panel = this.panelHolding(feedbackId);
    if (!panel) {
      Notification.error(this.trans.__('No open notebook holds feedback %1: open the notebook it was given in to retry.', feedbackId), { autoClose: false });
      return;
    }
    try {
      await this.trackerFor(panel).retry(feedbackId);
    } catch (reason) {
      Notification.error(this.trans.__('Retry of learning failed: %1', reason instanceof Error ? reason.message : String(reason)), { autoClose: false });
    }
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
    void this.trackerFor(panel).refresh();
    return result;
  }

  /** The notebook whose stage cells hold this feedback id. */
  private panelHolding(feedbackId: string): NotebookPanel | null {
    let found: NotebookPanel | null = null;
    this.tracker.forEach(panel => {
      if (!found && this.stageCells(panel).some(c => c.metadata.feedback.some(f => f.id === feedbackId))) {
        found = panel;
      }
    });
    return found;
  }

  private trackerFor(panel: NotebookPanel): LearningTracker {
    let tracker = this.trackers.get(panel);
    if (!tracker) {
      const client = (): ReturnType<INanoBridge['clientFor']> => this.bridge.clientFor(panel);
      tracker = new LearningTracker({
        // Entries of cells that ran: synced ones for their learning, unsynced ones in case the store already has them.
        ids: () => this.stageCells(panel).flatMap(c => (c.metadata.stage_run_id ? c.metadata.feedback.map(f => f.id) : [])),
        query: ids => client().feedbackLearning({ ids }),
        retry: id => client().feedbackRetry({ id }),
        onStored: ids => this.markStored(panel, ids),
        onChange: () => this.changed.emit(panel)
      });
      this.trackers.set(panel, tracker);
    }
    return tracker;
  }

  /** The store holds these ids: an entry it holds is never shown as unsynced. */
  private markStored(panel: NotebookPanel, ids: string[]): void {
    const stored = new Set(ids);
    for (const info of this.stageCells(panel)) {
      if (info.metadata.feedback.some(f => !f.synced && stored.has(f.id))) {
        setStageMetadata(info.model, withSynced(info.metadata, ids));
      }
    }
  }

  private syncFor(panel: NotebookPanel): FeedbackSync {
    let sync = this.syncs.get(panel);
    if (!sync) {
      sync = new FeedbackSync({
        cells: () => (panel.model ? Array.from(panel.model.cells) : []),
        send: request => this.bridge.clientFor(panel).feedbackAdd(request),
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
      ? this.trans.__('Feedback saved in the notebook. It is sent to the store when the kernel runs.')
      : this.trans.__('Feedback saved in the notebook but not sent to the store: %1', reason);
    Notification.emit(message, offline ? 'info' : 'error', { autoClose: offline ? 4000 : false });
  }

  private watch(panel: NotebookPanel): void {
    const trigger = new KernelReadyTrigger();
    const flushIfReady = (): void => {
      // The author first: the kernel learns the setting before any feedback is signed in code.
      void this.bridge.resolveAuthor(panel).then(async () => {
        const sync = this.syncFor(panel);
        if (sync.hasPending()) {
          this.report(await sync.flush(), false);
        }
        await this.trackerFor(panel).refresh();
      });
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
            // Feedback that arrived with a stage bundle (given in code) is followed too.
            void this.trackerFor(panel).refresh();
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
    panel.disposed.connect(() => {
      this.syncs.delete(panel);
      this.trackers.get(panel)?.dispose();
      this.trackers.delete(panel);
    });
  }

  private readonly syncs = new Map<NotebookPanel, FeedbackSync>();
  private readonly trackers = new Map<NotebookPanel, LearningTracker>();
}

export const feedbackPlugin: JupyterFrontEndPlugin<IFeedbackService> = {
  id: '@nanoresearch/jupyterlab:feedback',
  description: 'Feedback on stage cells: cell metadata first, then the store; offline feedback is synced when a kernel starts.',
  autoStart: true,
  provides: IFeedbackService,
  requires: [INotebookTracker, INanoBridge],
  optional: [ITranslator],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker, bridge: INanoBridge, translator: ITranslator | null): IFeedbackService =>
    new FeedbackService(
      tracker,
      bridge,
      // A learned feedback item links to its memory or skill in the lab panel.
      (kind, query) => void app.commands.execute(CommandIDs.openLabPanel, { tab: kind, query }),
      (translator ?? nullTranslator).load(TRANSLATION_DOMAIN)
    )
};
