import { promises as fs } from 'fs';
import * as path from 'path';
import { CELL_METADATA_KEY, type CellMetadata, type ImportCounts } from '@nanoresearch/schema';
import { recordFeedback } from '../feedback';
import { hasStageRun, plannerCallById, plannerCallToRow, stageRunToRow } from '../records';
import type { Store } from '../store';
import { schemaErrors } from '../validate';

/** What an import brought in. Counts are of records new to the store: importing twice gives zeros. */
/** What importing a notebook added: the bridge's schema type, the one contract with the extension. */
export type { ImportCounts };

/** The part of a Lab an import needs. */
export interface ImportTarget {
  store: Store;
}

/** A notebook that cannot be imported at all (nothing was written). */
export class NotebookImportError extends Error {
  constructor(
    readonly notebookPath: string,
    reason: string
  ) {
    super(`cannot import ${notebookPath}: ${reason}; nothing was imported`);
    this.name = 'NotebookImportError';
  }
}

interface NotebookCell {
  metadata?: Record<string, unknown>;
}

/**
 * Imports a colleague's notebook: for every stage cell, its trajectory (the stage run and the
 * planner call embedded in the cell metadata) and its feedback, with the notebook and author
 * recorded as their origin.
 *
 * Records keep the ids they have in the notebook. Those ids are unique (random at creation) and
 * stable, so importing the same notebook twice, or one's own notebook, adds nothing, and the
 * feedback → stage run → planner call links stay intact. Cells whose metadata does not follow
 * schema/cell-metadata.schema.json are skipped with a warning; a file that is not an nbformat 4
 * notebook is refused before anything is written.
 */
export async function importNotebook(lab: ImportTarget, notebookPath: string): Promise<ImportCounts> {
  const resolved = path.resolve(notebookPath);
  const cells = await readNotebookCells(resolved, notebookPath);
  const counts: ImportCounts = {
    stageRuns: 0,
    plannerCalls: 0,
    feedback: 0,
    skipped: 0,
    warnings: [],
    alreadyStored: { stageRuns: 0, plannerCalls: 0, feedback: 0 },
    summary: ''
  };
  const stageCells: Array<{ index: number; metadata: CellMetadata }> = [];
  cells.forEach((cell, index) => {
    const value = cell.metadata?.[CELL_METADATA_KEY];
    if (value === undefined) return;
    const errors = schemaErrors('cell-metadata', value);
    if (errors.length > 0) {
      counts.skipped += 1;
      counts.warnings.push(`cell ${index + 1}: invalid ${CELL_METADATA_KEY} metadata (${errors.slice(0, 3).join('; ')})`);
      return;
    }
    stageCells.push({ index, metadata: value as CellMetadata });
  });

  const source = notebookPath;
  const originOf = (author: string | undefined): string => `import:${source}${author ? ` (${author})` : ''}`;

  // Trajectories first, in one transaction, so feedback below finds its stage runs.
  await lab.store.write(async q => {
    // Counted afresh on each attempt: a transaction retried after a lock wait must not add up twice.
    counts.stageRuns = counts.plannerCalls = counts.alreadyStored.stageRuns = counts.alreadyStored.plannerCalls = 0;
    for (const { metadata } of stageCells) {
      const run = metadata.trajectory;
      if (run) {
        if (!(await hasStageRun(q, run.id))) {
          await q.appendRows('stage_runs', [stageRunToRow(run, originOf(metadata.author))]);
          counts.stageRuns += 1;
        } else {
          counts.alreadyStored.stageRuns += 1;
        }
      }
      const call = metadata.planner_call;
      if (call) {
        if (!(await plannerCallById(q, call.id))) {
          await q.appendRows('planner_calls', [plannerCallToRow(call)]);
          counts.plannerCalls += 1;
        } else {
          counts.alreadyStored.plannerCalls += 1;
        }
      }
    }
  });

  for (const { index, metadata } of stageCells) {
    if (metadata.feedback.length === 0) continue;
    const stageRunId = metadata.stage_run_id ?? metadata.trajectory?.id ?? null;
    const known = stageRunId ? await lab.store.read(q => hasStageRun(q, stageRunId)) : false;
    if (!stageRunId || !known) {
      counts.skipped += 1;
      counts.warnings.push(
        `cell ${index + 1}: ${metadata.feedback.length} feedback entries skipped: their stage run ` +
          `${stageRunId ?? '(none)'} is neither embedded in the notebook nor in this store`
      );
      continue;
    }
    for (const entry of metadata.feedback) {
      const result = await recordFeedback(lab.store, {
        id: entry.id,
        stageRunId,
        text: entry.text,
        author: entry.author,
        origin: originOf(entry.author),
        createdAt: entry.created_at
      });
      if (result.created) counts.feedback += 1;
      else counts.alreadyStored.feedback += 1;
    }
  }
  counts.summary = importSummary(notebookPath, counts, stageCells.length);
  return counts;
}

/** "3 stage runs", "1 feedback entry". */
function plural(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}

/**
 * One sentence for the researcher: what was added, and when nothing was, exactly why (no stage
 * cells, everything already in the store, or every cell skipped and for what reason).
 */
export function importSummary(notebookPath: string, counts: Omit<ImportCounts, 'summary'>, stageCellCount: number): string {
  const added = [
    counts.stageRuns ? plural(counts.stageRuns, 'stage run', 'stage runs') : '',
    counts.plannerCalls ? plural(counts.plannerCalls, 'planner call', 'planner calls') : '',
    counts.feedback ? plural(counts.feedback, 'feedback entry', 'feedback entries') : ''
  ].filter(Boolean);
  const known = counts.alreadyStored;
  const knownParts = [
    known.stageRuns ? plural(known.stageRuns, 'stage run', 'stage runs') : '',
    known.plannerCalls ? plural(known.plannerCalls, 'planner call', 'planner calls') : '',
    known.feedback ? plural(known.feedback, 'feedback entry', 'feedback entries') : ''
  ].filter(Boolean);
  const skipped = counts.skipped ? ` ${plural(counts.skipped, 'cell was', 'cells were')} skipped: ${counts.warnings.join('; ')}.` : '';
  if (added.length) {
    const also = knownParts.length ? ` (${knownParts.join(', ')} already in your store)` : '';
    return `Imported ${added.join(', ')} from ${notebookPath}${also}.${skipped}`;
  }
  if (stageCellCount === 0 && counts.skipped === 0) {
    return `Nothing imported from ${notebookPath}: it has no NanoResearch stage cells (cells with '${CELL_METADATA_KEY}' metadata).`;
  }
  if (knownParts.length) {
    const total = known.stageRuns + known.plannerCalls + known.feedback;
    const what = knownParts.length > 1 ? `all of it (${knownParts.join(', ')}) was` : total === 1 ? `its ${knownParts[0]} was` : `all ${knownParts[0]} were`;
    return `Nothing new from ${notebookPath}: ${what} already in your store.${skipped}`;
  }
  if (counts.skipped) return `Nothing imported from ${notebookPath}:${skipped}`;
  return `Nothing imported from ${notebookPath}: its stage cells carry no trajectory or feedback yet (run them and save the notebook first).`;
}

/** The cells of an nbformat 4 notebook, or a NotebookImportError saying why the file is not one. */
async function readNotebookCells(resolved: string, shownPath: string): Promise<NotebookCell[]> {
  let text: string;
  try {
    text = await fs.readFile(resolved, 'utf8');
  } catch (error) {
    throw new NotebookImportError(shownPath, `the file cannot be read (${(error as Error).message})`);
  }
  let notebook: unknown;
  try {
    notebook = JSON.parse(text);
  } catch (error) {
    throw new NotebookImportError(shownPath, `it is not valid JSON (${(error as Error).message})`);
  }
  const nb = notebook as { nbformat?: unknown; cells?: unknown };
  if (!nb || typeof nb !== 'object' || nb.nbformat !== 4 || !Array.isArray(nb.cells)) {
    throw new NotebookImportError(
      shownPath,
      `it is not an nbformat 4 notebook (nbformat: ${JSON.stringify(nb?.nbformat ?? null)}, cells: ${Array.isArray(nb?.cells) ? 'list' : 'missing'})`
    );
  }
  return nb.cells as NotebookCell[];
}
