/**
 * Reading and writing the `nanoresearch` cell metadata (schema/cell-metadata.schema.json).
 *
 * Every write replaces the whole value under the one key, so the notebook's shared model
 * records one change per update and collaborators never see half an update.
 */
import type { CellMetadata, PlannerCall, StageBundle, StageRun } from '@nanoresearch/schema';
import { CELL_METADATA_KEY, STAGE_NAMES, StageName } from './constants';
import type { FeedbackEntry } from './tokens';

/** The part of a cell model these helpers need (ICellModel has it). */
export interface IMetadataHost {
  getMetadata(key: string): unknown;
  setMetadata(key: string, value: unknown): void;
}

/** The cell's stage metadata, or undefined when the cell is not a stage cell. */
export function getStageMetadata(cell: IMetadataHost): CellMetadata | undefined {
  const value = cell.getMetadata(CELL_METADATA_KEY);
  if (!isStageMetadata(value)) {
    return undefined;
  }
  return value;
}

/** True when a value has the required shape of stage cell metadata. */
export function isStageMetadata(value: unknown): value is CellMetadata {
  if (!value || typeof value !== 'object') {
    return false;
  }
  const v = value as Partial<CellMetadata>;
  return typeof v.stage === 'string' && (STAGE_NAMES as readonly string[]).includes(v.stage) && typeof v.status === 'string' && Array.isArray(v.feedback);
}

/** Metadata of a freshly inserted stage cell. */
export function newStageMetadata(stage: StageName, author?: string): CellMetadata {
  const metadata: CellMetadata = {
    stage,
    status: 'new',
    project_id: null,
    stage_run_id: null,
    feedback: []
  };
  if (author) {
    metadata.author = author;
  }
  return metadata;
}

/** Replaces the cell's stage metadata with `next` (a deep copy, so callers keep no alias). */
export function setStageMetadata(cell: IMetadataHost, next: CellMetadata): void {
  cell.setMetadata(CELL_METADATA_KEY, JSON.parse(JSON.stringify(next)));
}

/**
 * Applies a stage bundle that arrived in the cell's output: status, ids, and any feedback the
 * store already holds (given in code, or synced earlier) that the cell does not know yet, or
 * still shows as unsynced.
 * Returns the new metadata, or undefined when nothing changed.
 */
export function applyBundle(current: CellMetadata, bundle: StageBundle): CellMetadata | undefined {
  const next: CellMetadata = {
    ...current,
    stage: bundle.stage,
    status: bundle.status,
    project_id: bundle.project_id,
    stage_run_id: bundle.stage_run_id,
    feedback: [...current.feedback]
  };
  if (current.stage_run_id && current.stage_run_id !== bundle.stage_run_id) {
    // A re-run is a new trajectory: the embedded records of the old run no longer apply.
    next.trajectory = null;
    next.planner_call = null;
  }
  const known = new Set(next.feedback.map(f => f.id));
  const inStore = new Set((bundle.feedback ?? []).map(f => f.id));
  // The bundle lists what the store holds: an entry it lists is synced, whatever the cell said.
  next.feedback = next.feedback.map(f => (!f.synced && inStore.has(f.id) ? { ...f, synced: true } : f));
  for (const f of bundle.feedback ?? []) {
    if (!known.has(f.id)) {
      next.feedback.push({ ...f, synced: true });
    }
  }
  return JSON.stringify(next) === JSON.stringify(current) ? undefined : next;
}

/** Embeds the stage run and planner call so a shared notebook carries its trajectory. */
export function withTrajectory(current: CellMetadata, trajectory: StageRun | null, plannerCall: PlannerCall | null): CellMetadata {
  return { ...current, trajectory, planner_call: plannerCall };
}

/** Adds a feedback entry unless one with its id is already there (adding is idempotent by id). */
export function withFeedback(current: CellMetadata, entry: FeedbackEntry): CellMetadata {
  if (current.feedback.some(f => f.id === entry.id)) {
    return current;
  }
  return { ...current, feedback: [...current.feedback, entry] };
}

/** Marks the given feedback ids as held by the store. */
export function withSynced(current: CellMetadata, ids: Iterable<string>): CellMetadata {
  const done = new Set(ids);
  return {
    ...current,
    feedback: current.feedback.map(f => (done.has(f.id) ? { ...f, synced: true } : f))
  };
}

/** Feedback entries the store does not hold yet. */
export function unsyncedFeedback(metadata: CellMetadata): FeedbackEntry[] {
  return metadata.feedback.filter(f => !f.synced);
}

/** The first stage bundle among a cell's outputs (a display_data or execute_result). */
export function findBundle(outputs: ReadonlyArray<{ data?: unknown }>, mime: string): StageBundle | undefined {
  for (const output of outputs) {
    const data = output.data as Record<string, unknown> | undefined;
    const value = data?.[mime];
    if (value && typeof value === 'object') {
      return value as StageBundle;
    }
    if (typeof value === 'string') {
      try {
        return JSON.parse(value) as StageBundle;
      } catch {
        // A string that is not JSON is not a bundle; keep looking.
      }
    }
  }
  return undefined;
}
