/**
 * The two commits of one stage attempt: its start under its plan (the run when new, the stage
 * run, the planner call and the budget read in one durable write) and its end (state, usage,
 * artifacts, use counts and run status in one write, the stage log beside it).
 */
import type { PlannerCall, Profile, StageRun } from '@nanoresearch/schema';
import { errorMessage } from '../error-message';
import { markMemoriesUsed } from '../records/memories';
import { inputOf, insertArtifacts, insertRun, insertStageRun, plannerCallInsert, saveStageRun, settleRun, usageOfStageRun, type RunRecord } from '../records';
import { writeInside } from '../sandbox/workspace-fs';
import { bumpSkillCounter } from '../records/skills';
import type { StageResult, StageRunInput } from '../stage-contract';
import { INSERT_ROWS, StoreWriteQueuedError, type RowInserts, type RunLease, type Store } from '../store';
import { collectArtifacts } from './artifacts';
import { runBudget, type RunBudget } from './budget';

/**
 * Stores the stage run as running under its planner call (numbering the attempt; first the run
 * it belongs to when that is new), with the accounting rows of the planner's LLM calls (`ledger`),
 * then reads the budget left to the stage (the planner's own llm_calls rows are in by then, so
 * their tokens count): one durable write. The call's x and y are training data and its accounting
 * is paid for, so both are kept in the store's outbox if the store cannot take them (the stage
 * run's part is lost with a failed write, and the stage fails).
 */
export async function commitPlan(
  store: Store,
  stageRun: StageRun,
  start: { call: PlannerCall; profile: Profile; newRun?: RunRecord; ledger?: RowInserts['inserts'] }
): Promise<RunBudget> {
  let budget: RunBudget | undefined;
  const ledger = start.ledger ?? [];
  try {
    // The ledger rows go first: the budget read below counts the planner's own calls.
    await store.writeDurable(INSERT_ROWS, { inserts: [...ledger, plannerCallInsert(start.call)] }, async q => {
      if (start.newRun) await insertRun(q, start.newRun);
      await insertStageRun(q, stageRun, { newRun: start.newRun !== undefined });
      budget = await runBudget(q, stageRun.run_id, start.profile);
    });
  } catch (error) {
    // The plan did not commit, and not into the outbox either: the paid calls are still recorded
    // on their own (a failure of that too leaves the stage's own error to explain).
    if (!(error instanceof StoreWriteQueuedError) && ledger.length) await store.writeDurable(INSERT_ROWS, { inserts: ledger }).catch(() => undefined);
    throw error;
  }
  return budget!;
}

/** What a stage attempt's end records besides its row. */
export interface StageEnd {
  result?: StageResult;
  /** The project's workspace ('' when it has none: no log, no artifacts). */
  workspace: string;
  /** Ids of the skills and memories the stage was given: their use is counted. */
  skillIds: string[];
  memoryIds: string[];
  /** Wall time of the whole attempt so far. */
  wallMs: number;
  /**
   * Set when the attempt ended before its plan was committed (a missing prerequisite, a failed
   * retrieval or planner step): the stage run is inserted here, with the run when that is new.
   */
  unstored?: { newRun?: RunRecord };
  /** The run lease to give back in the same commit (runStage's own, taken for this one stage). */
  lease?: RunLease;
}

/**
 * Records the stage's end in one write: the stage log in the workspace, the files it produced
 * (in `artifacts`, and listed in its input for the card), its usage from its llm_calls rows,
 * its row, the use counts of what it was given, and the run's status.
 */
export async function commitEnd(store: Store, stageRun: StageRun, end: StageEnd): Promise<void> {
  const input = inputOf(stageRun) as StageRunInput;
  const log = end.workspace ? writeStageLog(end.workspace, stageRun, input) : undefined;
  const produced = end.result?.artifacts ?? [];
  input.artifacts = end.workspace ? collectArtifacts(stageRun.output, end.workspace, [...produced.map(a => a.path), ...(log ? [log] : [])]) : [];
  const write = end.lease ? end.lease.releaseWith.bind(end.lease) : store.write.bind(store);
  await write(async q => {
    if (end.unstored?.newRun) await insertRun(q, end.unstored.newRun);
    if (end.unstored) await insertStageRun(q, stageRun, { newRun: end.unstored.newRun !== undefined });
    await insertArtifacts(q, { projectId: stageRun.project_id, stageRunId: stageRun.id }, produced);
    stageRun.usage = await usageOfStageRun(q, stageRun.id, end.wallMs);
    stageRun.input = { ...input };
    await saveStageRun(q, stageRun);
    await markMemoriesUsed(q, end.memoryIds);
    await bumpSkillCounter(q, 'usage_count', end.skillIds);
    await settleRun(q, stageRun);
  });
}

/**
 * The stage's log, `logs/<stage>-<attempt>.log` in the workspace: its account of what happened,
 * what Update did, and the error. Returns the path, or undefined when it could not be written
 * (said in update_notes: the stage's result stands).
 */
function writeStageLog(workspace: string, run: StageRun, input: StageRunInput): string | undefined {
  const file = `logs/${run.stage}-${run.attempt}.log`;
  const head = [`${run.stage} attempt ${run.attempt} (stage run ${run.id}): ${run.status}`, `started ${run.started_at}, finished ${run.finished_at}`];
  if (run.error) head.push(`error: ${run.error}`);
  const update = input.update_notes.length ? `\n\nUpdate:\n${input.update_notes.map(n => `- ${n}`).join('\n')}` : '';
  const text = `${head.join('\n')}\n\n${input.trajectory || '(the stage left no account)'}${update}`;
  try {
    writeInside(workspace, file, `${text}\n`);
    return file;
  } catch (error) {
    input.update_notes.push(`stage log not written: ${errorMessage(error)}`);
    return undefined;
  }
}
