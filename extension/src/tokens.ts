/**
 * Lumino tokens of the services other plugins (ours or another extension's) may use, and the
 * interfaces they are made of. A leaf: it imports no module of this extension.
 */
import type { ICellModel } from '@jupyterlab/cells';
import type { NotebookPanel } from '@jupyterlab/notebook';
import { Token } from '@lumino/coreutils';
import type { ISignal } from '@lumino/signaling';
import type { BridgeMethodName, BridgeParams, BridgeResult, CellMetadata, LearningState } from '@nanoresearch/schema';

/** A bridge method's name as a function name: 'skills.list' → 'skillsList'. */
export type BridgeFunctionName<M extends string> = M extends `${infer Head}.${infer Tail}` ? `${Head}${Capitalize<Tail>}` : M;

/**
 * One function per method of schema/bridge-methods.schema.json (NanoBridge implements it); a
 * method without params takes none.
 */
export type INanoBridgeMethods = {
  [M in BridgeMethodName as BridgeFunctionName<M>]: (
    ...params: keyof BridgeParams<M> extends never ? [params?: BridgeParams<M>] : [params: BridgeParams<M>]
  ) => Promise<BridgeResult<M>>;
};

/** One feedback entry of a stage cell's metadata. */
export type FeedbackEntry = CellMetadata['feedback'][number];

/** The result of one flush of a notebook's unsynced feedback. */
export interface IFlushResult {
  sent: number;
  failed: number;
  /** Entries that cannot be sent yet because their cell has no stage run (not run yet). */
  waiting: number;
  errors: string[];
}

/** The kernel bridge of each notebook, and the user's NanoResearch settings. */
export interface INanoBridge {
  /** The bridge of a notebook's kernel (one per notebook, requests serialised). */
  clientFor(panel: NotebookPanel): INanoBridgeMethods;
  /** The notebook in focus (or last in focus), if any. */
  currentPanel(): NotebookPanel | null;
  /**
   * Who gives feedback: the `author` setting, else what the kernel resolved (NANORESEARCH_AUTHOR,
   * git's user.name, the OS user; see resolveAuthor), remembered from the last kernel that answered.
   */
  author(): string;
  /**
   * Tells the notebook's kernel the `author` setting (so feedback given in code signs the same)
   * and learns the author it resolves; resolves with it, or with author() when there is no kernel.
   */
  resolveAuthor(panel: NotebookPanel): Promise<string>;
  /** Topic of the set-up cell when a command is not given one. */
  defaultTopic(): string;
}

export const INanoBridge = new Token<INanoBridge>(
  '@nanoresearch/jupyterlab:INanoBridge',
  'Bridge clients to the NanoResearch kernel library of each notebook.'
);

/** A stage cell and its metadata, as the sidebar lists them. */
export interface IStageCellInfo {
  model: ICellModel;
  index: number;
  metadata: CellMetadata;
}

/** Feedback on stage cells: written to cell metadata first, then synced to the store. */
export interface IFeedbackService {
  /** Adds feedback to the cell whose stage run is `stageRunId`, in any open notebook. */
  add(stageRunId: string, text: string): FeedbackEntry;
  /** Adds feedback to a given stage cell of a notebook. */
  addToCell(panel: NotebookPanel, cell: ICellModel, text: string): FeedbackEntry;
  /** The feedback the cell of a stage run holds (in any open notebook), or null when no cell has it. */
  feedbackFor(stageRunId: string): FeedbackEntry[] | null;
  /** The stage cells of a notebook, in order. */
  stageCells(panel: NotebookPanel): IStageCellInfo[];
  /** Sends the notebook's unsynced feedback now. */
  syncNow(panel: NotebookPanel): Promise<IFlushResult>;
  /** The learning state of a feedback item, when the kernel has reported one. */
  learningOf(feedbackId: string): LearningState | undefined;
  /** Queues a failed learning job again, in the kernel of the notebook that holds the feedback. */
  retryLearning(feedbackId: string): Promise<void>;
  /** Shows a memory or skill a feedback item produced (the lab panel, searched for it). */
  openLearned(kind: 'memories' | 'skills', query: string): void;
  /** Emitted when a notebook's stage cells or their feedback change. */
  readonly changed: ISignal<IFeedbackService, NotebookPanel>;
}

export const IFeedbackService = new Token<IFeedbackService>(
  '@nanoresearch/jupyterlab:IFeedbackService',
  'Feedback on NanoResearch stage cells, kept in cell metadata and synced to the store.'
);
