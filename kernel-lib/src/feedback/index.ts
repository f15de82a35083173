import { promises as fs } from 'fs';
import * as path from 'path';
import type { Feedback, PlannerCall, SdpoExample, StageRun } from '@nanoresearch/schema';
import { newId, nowIso, stableId } from '../ids';
import type { Llm } from '../llm';
import type { MemoryBank } from '../memory';
import type { SkillBank } from '../skills';
import type { Store } from '../store';
import type { StageRunInput } from '../orchestrator/types';
import { assertValid } from '../validate';

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

/** What Update-from-feedback needs: the LLM (role 'judge') and the banks it updates. */
export interface FeedbackLearners {
  llm: Llm;
  memory: MemoryBank;
  skills: SkillBank;
}

export interface FeedbackResult {
  feedback: Feedback;
  /** False when a feedback with this id was already stored (nothing was written or learned again). */
  created: boolean;
  /** The SDPO row this feedback makes, or null when the stage's plan was not the policy's own answer. */
  sdpoExample: SdpoExample | null;
  /** Null when the feedback trains the planner; else exactly why it will not (see untrainableReason). */
  notTrainedBecause: string | null;
  /** What Update-from-feedback did, and any step that failed (the feedback itself is stored either way). */
  updateNotes: string[];
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

/**
 * Stores one piece of feedback on a stage run, linked to the planner call that chose the stage's
 * context, then learns from it: memories extracted from the text (MemoryBank.fromFeedback) and
 * skills distilled from the stage's trajectory with the feedback (SkillBank.distill).
 *
 * Idempotent by `id`: a feedback already stored is returned as it is, without learning twice.
 * The row is committed before any learning, so an LLM failure never loses the feedback; such a
 * failure is reported in `updateNotes` (and on stderr) rather than thrown.
 */
export async function recordFeedback(
  store: Store,
  input: FeedbackInput,
  learners?: FeedbackLearners
): Promise<FeedbackResult> {
  const text = input.text.trim();
  if (!text) throw new Error(`feedback on stage run ${input.stageRunId} is empty: write what should change`);
  if (!input.author.trim()) throw new Error('feedback needs an author (set NANORESEARCH_AUTHOR or pass { author })');
  const id = input.id ?? newId('fb');

  const { feedback, created, stageRun } = await store.write(async q => {
    const run = await q.get<StageRun>('select * from stage_runs where id = $1', [input.stageRunId]);
    if (!run) {
      throw new Error(`no stage run '${input.stageRunId}' in this store: give the id of a stage that ran here (stage.id)`);
    }
    const existing = await q.get<Feedback>('select * from feedback where id = $1', [id]);
    if (existing) return { feedback: cleanFeedback(existing), created: false, stageRun: run };
    const row: Feedback = {
      id,
      stage_run_id: run.id,
      planner_call_id: run.planner_call_id ?? null,
      text,
      author: input.author.trim(),
      origin: input.origin ?? 'code',
      created_at: input.createdAt ?? nowIso()
    };
    await q.run(
      `insert into feedback (id, stage_run_id, planner_call_id, text, author, origin, created_at)
       values ($id, $stage_run_id, $planner_call_id, $text, $author, $origin, $created_at)`,
      { ...row }
    );
    return { feedback: row, created: true, stageRun: run };
  });

  const examples = feedback.planner_call_id ? await sdpoExamples(store, { feedbackId: feedback.id }) : [];
  const call = feedback.planner_call_id
    ? await store.read(q => q.get<Pick<PlannerCall, 'fallback' | 'y'>>('select fallback, y from planner_calls where id = $1', [feedback.planner_call_id]))
    : undefined;
  const updateNotes = created && learners ? await learnFromFeedback(feedback, stageRun, learners) : [];
  return { feedback, created, sdpoExample: examples[0] ?? null, notTrainedBecause: examples.length ? null : untrainableReason(call ?? null), updateNotes };
}

/**
 * Why feedback on a stage makes no SDPO row, in words a researcher can act on. Feedback is
 * evidence about the planner's answer y only when y is what the stage used.
 */
export function untrainableReason(call: Pick<PlannerCall, 'fallback' | 'y'> | null): string {
  if (!call) return 'the stage ran before any plan was made (it failed in retrieval or planning), so there is no planner answer to train';
  if (call.fallback === 'planner disabled') return 'the stage ran with the planner switched off (ablation), so its plan was not the planner\'s answer';
  if (call.fallback) return `the stage ran on the fallback plan because the planner model failed (${call.fallback}), so its plan was not the planner's answer`;
  return 'the planner gave no answer for this stage';
}

/** How many feedback items there are, how many train, and why the others do not (for lab.train()'s refusal). */
export async function trainingCoverage(store: Store): Promise<{ feedback: number; trainable: number; reasons: Record<string, number> }> {
  const rows = await store.read(q =>
    q.all<{ fallback: string | null; y: string | null; has_call: boolean }>(
      `select p.fallback, p.y, p.id is not null as has_call from feedback f left join planner_calls p on p.id = f.planner_call_id`
    )
  );
  const reasons: Record<string, number> = {};
  let trainable = 0;
  for (const r of rows) {
    if (r.has_call && r.fallback === null && r.y) trainable++;
    else {
      const why = !r.has_call ? 'no plan (the stage failed before planning)' : r.fallback === 'planner disabled' ? 'planner switched off' : 'fallback plan after a planner model error';
      reasons[why] = (reasons[why] ?? 0) + 1;
    }
  }
  return { feedback: rows.length, trainable, reasons };
}

/** Update-from-feedback. Each step is independent: one failing does not stop the other. */
async function learnFromFeedback(feedback: Feedback, run: StageRun, learners: FeedbackLearners): Promise<string[]> {
  const notes: string[] = [];
  try {
    const memories = await learners.memory.fromFeedback({
      text: feedback.text,
      stage: run.stage,
      projectId: run.project_id,
      llm: learners.llm
    });
    notes.push(`memories from feedback: ${memories.length}`);
  } catch (error) {
    notes.push(`memory extraction failed: ${errorMessage(error)}`);
  }
  try {
    const input = (run.input ?? {}) as Partial<StageRunInput>;
    const decisions = await learners.skills.distill({
      stage: run.stage,
      trajectory: input.trajectory || run.summary || '',
      feedback: feedback.text,
      llm: learners.llm,
      stageRunId: run.id
    });
    notes.push(`skill review: ${decisions.map(d => d.decision).join(', ') || 'no candidates'}`);
  } catch (error) {
    notes.push(`skill distillation failed: ${errorMessage(error)}`);
  }
  for (const note of notes.filter(n => n.includes('failed'))) process.stderr.write(`nanoresearch feedback: ${note}\n`);
  return notes;
}

/**
 * The SDPO training rows: one per feedback on a stage whose plan the planner policy produced
 * (x, y exactly as stored, the feedback text as the teacher's hindsight).
 *
 * Several feedback notes on one planner call give one row EACH rather than one concatenated row:
 * a row then never changes once written (later notes add rows), so a training round is
 * reproducible from the rows it used, and each note is weighed as its own signal.
 *
 * Feedback on a stage that ran on the fallback plan (planner disabled, failed or unparseable)
 * makes no row: the plan the stage used was not the policy's answer y, so the feedback is not
 * evidence about y.
 */
export async function sdpoExamples(store: Store, filter: { feedbackId?: string } = {}): Promise<SdpoExample[]> {
  const rows = await store.read(q =>
    q.all<FeedbackJoin>(
      `select f.id as feedback_id, f.text as feedback_text, f.created_at as feedback_created_at,
              p.id as planner_call_id, p.stage, p.x, p.y, p.model, p.adapter_version, p.fallback
         from feedback f join planner_calls p on p.id = f.planner_call_id
        where ($1::varchar is null or f.id = $1)
        order by f.created_at, f.id`,
      [filter.feedbackId ?? null]
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

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
