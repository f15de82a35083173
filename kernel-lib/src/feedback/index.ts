import { promises as fs } from 'fs';
import * as path from 'path';
import type { Feedback, PlannerCall, SdpoExample } from '@nanoresearch/schema';
import { newId, nowIso, stableId } from '../ids';
import { plannerCallById, stageRunById } from '../records';
import type { Store } from '../store';
import { defineDurableWrite } from '../store/outbox';
import { assertValid } from '../validate';
import { enqueueLearning, type LearningQueue, type LearningState } from './learning';

export { LearningQueue, enqueueLearning } from './learning';
export type { FeedbackLearners, LearningState, LearningStatus, LearningQueueOptions } from './learning';

/** Feedback as a caller gives it. `id` makes a resend (e.g. from the sidebar) a no-op. */
export interface FeedbackInput {
  stageRunId: string;
  text: string;
  author: string;
  /** 'local', 'sidebar', 'code' or the notebook it was imported from. */
  origin?: string;
  id?: string;
  createdAt?: string;
}

export interface FeedbackResult {
  feedback: Feedback;
  /** False when a feedback with this id was already stored (nothing was written or queued again). */
  created: boolean;
  /** The SDPO row this feedback makes, or null when the stage's plan was not the policy's own answer. */
  sdpoExample: SdpoExample | null;
  /** Null when the feedback trains the planner; else exactly why it will not (see untrainableReason). */
  notTrainedBecause: string | null;
  /**
   * How the feedback trains when it has no row yet: the stage ran on the fallback plan, so
   * `lab.train()` first asks the current planner for its own answer to the stage's x (see
   * planner/resamplePlannerCall) and trains on that; null otherwise.
   */
  trainingNote: string | null;
  /**
   * Learning from the feedback (memories, skills), which runs in the background after this
   * returns; null when none was asked for (imported feedback). `lab.learningStates([id])`
   * gives the state later, `lab.learningIdle()` waits for it.
   */
  learning: LearningState | null;
}

/** A feedback row joined to its stage run and planner call, as the SDPO export reads it. */
interface FeedbackJoin {
  feedback_id: string;
  feedback_text: string;
  feedback_created_at: string;
  planner_call_id: string | null;
  stage: PlannerCall['stage'] | null;
  x: string | null;
  y: string | null;
  model: string | null;
  adapter_version: string | null;
  fallback: string | null;
}

/** What `recordFeedback` writes, as a durable write's payload (store/outbox.ts). */
interface FeedbackRecord {
  id: string;
  stageRunId: string;
  text: string;
  author: string;
  origin: string;
  createdAt: string;
  /** Queue the learning job in the same transaction. */
  learn: boolean;
}

/**
 * Feedback is a durable write: when the store cannot take it (locked past every retry), it is
 * kept in the outbox and stored, with its learning job, by the next open of the store.
 */
const RECORD_FEEDBACK = defineDurableWrite<FeedbackRecord, { feedback: Feedback; created: boolean }>('feedback.record', async (q, input) => {
  const run = await stageRunById(q, input.stageRunId);
  if (!run) {
    throw new Error(`no stage run '${input.stageRunId}' in this store: give the id of a stage that ran here (stage.id)`);
  }
  const existing = await q.get<Feedback>('select * from feedback where id = $1', [input.id]);
  if (existing) return { feedback: cleanFeedback(existing), created: false };
  const row: Feedback = {
    id: input.id,
    stage_run_id: run.id,
    planner_call_id: run.planner_call_id ?? null,
    text: input.text,
    author: input.author,
    origin: input.origin,
    created_at: input.createdAt
  };
  await q.run(
    `insert into feedback (id, stage_run_id, planner_call_id, text, author, origin, created_at)
     values ($id, $stage_run_id, $planner_call_id, $text, $author, $origin, $created_at)`,
    { ...row }
  );
  if (input.learn) await enqueueLearning(q, row.id);
  return { feedback: row, created: true };
});

/**
 * Stores one piece of feedback on a stage run, linked to the planner call that chose the
 * stage's context, and answers at once. With `learning`, the job that learns from it
 * (memories from the text, skills from the stage's trajectory with the feedback) is written
 * in the same transaction and handed to the queue, which runs it in the background (see
 * learning.ts); nothing the LLM does can delay, fail or lose the stored feedback.
 *
 * Idempotent by `id`: a feedback already stored is returned as it is, and nothing is queued again.
 */
export async function recordFeedback(store: Store, input: FeedbackInput, learning?: { queue: LearningQueue }): Promise<FeedbackResult> {
  const text = input.text.trim();
  if (!text) throw new Error(`feedback on stage run ${input.stageRunId} is empty: write what should change`);
  if (!input.author.trim()) throw new Error('feedback needs an author (set NANORESEARCH_AUTHOR or pass { author })');
  const id = input.id ?? newId('fb');

  const { feedback, created } = await store.writeDurable(RECORD_FEEDBACK, {
    id,
    stageRunId: input.stageRunId,
    text,
    author: input.author.trim(),
    origin: input.origin ?? 'code',
    // Fixed here, not in the transaction: a replay from the outbox keeps the time it was given.
    createdAt: input.createdAt ?? nowIso(),
    learn: Boolean(learning)
  });
  if (created) learning?.queue.kick();

  const examples = feedback.planner_call_id ? await sdpoExamples(store, { feedbackId: feedback.id }) : [];
  const call = feedback.planner_call_id ? await store.read(q => plannerCallById(q, feedback.planner_call_id!)) : undefined;
  const states = learning ? await learning.queue.states([feedback.id]) : {};
  return {
    feedback,
    created,
    sdpoExample: examples[0] ?? null,
    notTrainedBecause: examples.length ? null : untrainableReason(call ?? null),
    trainingNote: examples.length ? null : resampleNote(call ?? null),
    learning: states[feedback.id] ?? null
  };
}

/**
 * Why feedback on a stage can make no SDPO row, in words a researcher can act on; null when it
 * trains. The stage's planner call gives x; y is the planner's answer, or, when the stage ran on
 * the fallback plan (planner switched off, or a model error), the answer the current planner
 * gives to the same x when `lab.train()` asks it (resampleNote). Only a stage without a planner
 * call has no x at all.
 */
export function untrainableReason(call: Pick<PlannerCall, 'fallback' | 'y' | 'x'> | null): string | null {
  if (!call) return 'the stage ran before any plan was made (it failed in retrieval or planning), so there is no planner input x to train on';
  if (call.fallback) return call.x ? null : 'the stage ran on the fallback plan and its planner call stored no input x';
  return call.y ? null : 'the planner gave no answer for this stage';
}

/** For feedback on a fallback plan: how it will train (null when it trains on the logged answer or not at all). */
export function resampleNote(call: Pick<PlannerCall, 'fallback' | 'x'> | null): string | null {
  if (!call?.fallback || !call.x) return null;
  const why = call.fallback === 'planner disabled' ? 'with the planner switched off (ablation)' : 'on the fallback plan after a planner model error';
  return `the stage ran ${why}, so lab.train() first asks the current planner for its own plan for the same input x and trains on that answer with this feedback`;
}

/** Feedback items by how they train, and why the others do not (for lab.train()'s refusal). */
export interface TrainingCoverage {
  feedback: number;
  /** Items with an SDPO row now (the planner's own answer, logged or re-sampled). */
  trainable: number;
  /** Items on a fallback plan whose x has not been re-asked yet (resamplePlannerCall). */
  awaitingResample: number;
  /** The others, counted by reason. */
  reasons: Record<string, number>;
}

/** How many feedback items there are, how each trains, and why the others do not. */
export async function trainingCoverage(store: Store): Promise<TrainingCoverage> {
  const rows = await store.read(q =>
    q.all<{ fallback: string | null; y: string | null; x: string | null; has_call: boolean; resampled: boolean }>(
      `select p.fallback, p.y, p.x, p.id is not null as has_call, r.id is not null as resampled
         from feedback f left join planner_calls p on p.id = f.planner_call_id
         left join planner_calls r on p.fallback is not null and r.id = p.id || $1`,
      [RESAMPLED_SUFFIX]
    )
  );
  const coverage: TrainingCoverage = { feedback: rows.length, trainable: 0, awaitingResample: 0, reasons: {} };
  for (const r of rows) {
    if (r.resampled || (r.has_call && r.fallback === null && r.y)) coverage.trainable++;
    else if (r.has_call && r.fallback && r.x) coverage.awaitingResample++;
    else {
      const why = !r.has_call ? 'no plan (the stage failed before planning)' : r.fallback ? 'a fallback plan without a stored x' : 'no planner answer';
      coverage.reasons[why] = (coverage.reasons[why] ?? 0) + 1;
    }
  }
  return coverage;
}

/** Feedback on fallback plans whose x has not been re-asked yet: their planner call ids, oldest first. */
export async function callsAwaitingResample(store: Store): Promise<string[]> {
  const rows = await store.read(q =>
    q.all<{ id: string }>(
      `select distinct p.id, min(f.created_at) as first
         from feedback f join planner_calls p on p.id = f.planner_call_id
         left join planner_calls r on r.id = p.id || $1
        where p.fallback is not null and r.id is null
        group by p.id order by first, p.id`,
      [RESAMPLED_SUFFIX]
    )
  );
  return rows.map(r => r.id);
}

/** planner/resampledCallId(id) = id + this suffix (kept here too: feedback/ does not import the planner). */
const RESAMPLED_SUFFIX = '-resampled';

/**
 * The SDPO training rows: one per feedback on a stage whose plan the planner policy produced
 * (x, y exactly as stored, the feedback text as the teacher's hindsight), and one per feedback
 * on a stage that ran on the fallback plan once its x has been re-asked (the re-sampled call's y).
 *
 * Several feedback notes on one planner call give one row EACH rather than one concatenated row:
 * a row then never changes once written (later notes add rows), so a training round is
 * reproducible from the rows it used, and each note is weighed as its own signal.
 *
 * Feedback on a fallback plan is never paired with the fallback plan itself: that plan was not
 * the policy's answer, so it is not a y the policy could be distilled on.
 */
export async function sdpoExamples(store: Store, filter: { feedbackId?: string } = {}): Promise<SdpoExample[]> {
  const rows = await store.read(q =>
    q.all<FeedbackJoin>(
      `select f.id as feedback_id, f.text as feedback_text, f.created_at as feedback_created_at,
              coalesce(r.id, p.id) as planner_call_id, p.stage, p.x,
              case when r.id is null then p.y else r.y end as y,
              case when r.id is null then p.model else r.model end as model,
              case when r.id is null then p.adapter_version else r.adapter_version end as adapter_version,
              case when r.id is null then p.fallback else r.fallback end as fallback
         from feedback f join planner_calls p on p.id = f.planner_call_id
         left join planner_calls r on p.fallback is not null and r.id = p.id || $2
        where ($1::varchar is null or f.id = $1)
        order by f.created_at, f.id`,
      [filter.feedbackId ?? null, RESAMPLED_SUFFIX]
    )
  );
  return rows
    .filter(r => r.fallback === null && r.y)
    .map(r => ({
      id: stableId('sdpo', r.feedback_id),
      x: r.x ?? '',
      y: r.y!,
      feedback: r.feedback_text,
      stage: r.stage!,
      planner_call_id: r.planner_call_id!,
      model: r.model ?? '',
      adapter_version: r.adapter_version,
      created_at: r.feedback_created_at
    }));
}

/**
 * Writes every SDPO example as JSON Lines to `file` and returns how many. Each row is validated
 * against schema/sdpo-example.schema.json first; the file is written to a temporary name and
 * renamed, so a reader (the trainer) never sees half a file.
 */
export async function exportSdpo(store: Store, file: string): Promise<number> {
  const examples = await sdpoExamples(store);
  for (const example of examples) assertValid<SdpoExample>('sdpo-example', example);
  const target = path.resolve(file);
  await fs.mkdir(path.dirname(target), { recursive: true });
  const temporary = `${target}.tmp-${process.pid}-${Date.now()}`;
  try {
    const handle = await fs.open(temporary, 'w');
    try {
      await handle.writeFile(examples.map(e => JSON.stringify(e)).join('\n') + (examples.length ? '\n' : ''));
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.rename(temporary, target);
  } catch (error) {
    await fs.rm(temporary, { force: true });
    throw error;
  }
  return examples.length;
}

/** A feedback row without the store-only column (synced_from), as the Feedback schema describes it. */
function cleanFeedback(row: Feedback & { synced_from?: unknown }): Feedback {
  const { synced_from: _unused, ...feedback } = row;
  return feedback;
}
