/**
 * Feedback: stored and linked to the planner call, idempotent by id, learned from (memory and
 * skills) in a background job that resumes after a crash, turned into SDPO examples and
 * exported as schema-valid JSONL, atomically.
 */
import { spawnSync } from 'child_process';
import { promises as fs } from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { Feedback } from '@nanoresearch/schema';
import { exportSdpo, recordFeedback, sdpoExamples } from '../src/feedback';
import { Lab } from '../src/lab';
import { schemaErrors } from '../src/validate';
import { emptyAnswer, openTestLab, requestedSchema, requestText, type TestLab } from './lab-fixture';
import type { ScriptRequest } from '../src/testing';

const TOPIC = 'Small MLPs on tabular data';

/** A judge that turns "Always ..." feedback into a user constraint and proposes no skills. */
function constraintJudge(req: ScriptRequest): string {
  const schema = requestedSchema(req) ?? { type: 'object' };
  const answer = emptyAnswer(schema) as Record<string, unknown>;
  const text = requestText(req);
  if ('memories' in answer && text.includes('Always include a linear baseline')) {
    answer.memories = [{ kind: 'user_constraint', content: 'Always include a linear baseline.' }];
  }
  return JSON.stringify(answer);
}

describe('feedback', () => {
  let t: TestLab | undefined;
  afterEach(async () => {
    await t?.close();
    t = undefined;
  });

  test("feedback becomes an SDPO example with the exact x and y of the stage's planner call", async () => {
    t = await openTestLab();
    const idea = await (await t.lab.project(TOPIC)).ideate();
    const { feedback, sdpoExample, created } = await idea.feedback('Always include a linear baseline.', { author: 'ada' });

    expect(created).toBe(true);
    const call = await t.lab.store.read(q =>
      q.get<{ id: string; x: string; y: string; model: string }>('select * from planner_calls where stage_run_id = $1', [idea.id])
    );
    expect(feedback).toMatchObject({ stage_run_id: idea.id, planner_call_id: call!.id, author: 'ada', origin: 'code' });
    expect(schemaErrors('feedback', feedback)).toEqual([]);
    expect(sdpoExample).toMatchObject({
      x: call!.x,
      y: call!.y,
      feedback: 'Always include a linear baseline.',
      stage: 'ideation',
      planner_call_id: call!.id,
      model: 'planner',
      adapter_version: null
    });
    expect(schemaErrors('sdpo-example', sdpoExample)).toEqual([]);
  });

  test('feedback triggers memory extraction and skill distillation with the feedback, in the background', async () => {
    t = await openTestLab({ scripts: { judge: constraintJudge } });
    const idea = await (await t.lab.project(TOPIC)).ideate();
    const judgeBefore = t.server.chatRequests.filter(r => r.model === 'judge').length;
    const result = await idea.feedback('Always include a linear baseline.', { author: 'ada' });
    expect(result.learning).toMatchObject({ feedback_id: result.feedback.id, status: expect.stringMatching(/^(queued|learning)$/) });
    await t.lab.learningIdle();

    const judged = t.server.chatRequests.filter(r => r.model === 'judge').slice(judgeBefore);
    expect(judged.length).toBeGreaterThanOrEqual(2); // memory extraction + skill distillation
    expect(judged.every(r => requestText(r).includes('Always include a linear baseline.'))).toBe(true);
    const memories = await t.lab.store.read(q => q.all<{ id: string; kind: string; scope: string }>('select id, kind, scope from memories'));
    expect(memories).toEqual([{ id: expect.any(String), kind: 'user_constraint', scope: 'global' }]);
    const state = (await t.lab.learningStates([result.feedback.id]))[result.feedback.id];
    // The state links the memories the feedback produced.
    expect(state).toMatchObject({
      status: 'learned',
      attempts: 1,
      error: null,
      memories: [{ id: memories[0].id, kind: 'user_constraint', content: 'Always include a linear baseline.' }],
      skills: []
    });
  });

  test('feedback answers before learning ends; the next stage waits for nothing; learning waits while a stage runs', async () => {
    let releaseJudge: () => void = () => undefined;
    const judgeGate = new Promise<void>(resolve => (releaseJudge = resolve));
    // Only the learning from this feedback is held up; the stages' own Update answers at once.
    // The experiment stage waits for the test (to hold a stage running while feedback comes in).
    let releaseStage: () => void = () => undefined;
    const stageGate = new Promise<void>(resolve => (releaseStage = resolve));
    t = await openTestLab({
      scripts: { judge: async req => (requestText(req).includes('Always include a linear baseline.') && (await judgeGate), constraintJudge(req)) },
      stages: () => ({
        experiment: async () => {
          await stageGate;
          return { status: 'done', output: {}, summary: 'ok', trajectory: '', markdown: '', bundleOutputs: {} };
        }
      })
    });
    const project = await t.lab.project(TOPIC);
    const idea = await project.ideate();

    const started = Date.now();
    const result = await idea.feedback('Always include a linear baseline.', { author: 'ada' });
    expect(Date.now() - started).toBeLessThan(1000);
    // Stored at once, and an SDPO example already, while the judge has not answered.
    expect(await t.lab.store.read(q => q.get('select id from feedback where id = $1', [result.feedback.id]))).toBeTruthy();
    expect(result.sdpoExample).not.toBeNull();
    // The next stage runs while the learning job is stuck on the judge.
    const plan = await project.plan();
    expect(plan.status).toBe('done');
    expect((await t.lab.learningStates([result.feedback.id]))[result.feedback.id]?.status).toBe('learning');
    releaseJudge();
    await t.lab.learningIdle();
    expect((await t.lab.learningStates([result.feedback.id]))[result.feedback.id]?.status).toBe('learned');

    // A job queued while a stage runs waits for the stage, saying so, and then runs.
    // The scripted experiment stage holds until releaseStage(): the waiting state below shows the lab saw it running.
    const slow = project.experiment();
    await new Promise(resolve => setTimeout(resolve, 100));
    const before = t.server.chatRequests.length;
    const second = await plan.feedback('Plan fewer runs.', { author: 'ada' });
    await new Promise(resolve => setTimeout(resolve, 700));
    expect((await t.lab.learningStates([second.feedback.id]))[second.feedback.id]).toMatchObject({
      status: 'queued',
      waiting: 'it starts when the running stage ends'
    });
    const askedAboutFeedback = () =>
      t!.server.chatRequests.slice(before).filter(r => r.model === 'judge' && requestText(r).includes('Plan fewer runs.')).length;
    expect(askedAboutFeedback()).toBe(0);
    releaseStage();
    await slow;
    await t.lab.learningIdle();
    expect(askedAboutFeedback()).toBeGreaterThanOrEqual(2);
    expect((await t.lab.learningStates([second.feedback.id]))[second.feedback.id]?.status).toBe('learned');
  });

  test('a failed learning step is reported with its reason; Retry runs only the failed step', async () => {
    let failSkills = true;
    const judge = (req: ScriptRequest) => {
      const schema = requestedSchema(req) ?? { type: 'object' };
      const isDistill = 'skills' in (emptyAnswer(schema) as Record<string, unknown>);
      if (isDistill && failSkills && requestText(req).includes('Prefer CPU-only methods')) {
        return { status: 400, body: { error: { message: 'context length exceeded', type: 'invalid_request_error' } } };
      }
      return constraintJudge(req);
    };
    t = await openTestLab({ scripts: { judge } });
    const idea = await (await t.lab.project(TOPIC)).ideate();
    const result = await idea.feedback('Prefer CPU-only methods.', { author: 'ada' });
    await t.lab.learningIdle();
    const failed = (await t.lab.learningStates([result.feedback.id]))[result.feedback.id]!;
    expect(failed.status).toBe('failed');
    expect(failed.error).toMatch(/^skill distillation failed: The LLM server at .* answered HTTP 400 .*context length exceeded/);
    // Not the memory bank's "nothing was stored": the feedback is stored, and so is its memory step.
    expect(failed.error).not.toMatch(/nothing was stored/);
    const memoryRequests = () =>
      t!.server.chatRequests.filter(r => r.model === 'judge' && 'memories' in (emptyAnswer(requestedSchema(r) ?? {}) as object)).length;
    const memoriesBefore = memoryRequests();

    failSkills = false;
    expect(await t.lab.retryLearning(result.feedback.id)).toMatchObject({ status: 'queued' });
    await t.lab.learningIdle();
    expect((await t.lab.learningStates([result.feedback.id]))[result.feedback.id]).toMatchObject({ status: 'learned', attempts: 2, error: null });
    expect(memoryRequests()).toBe(memoriesBefore);
    await expect(t.lab.retryLearning(result.feedback.id)).rejects.toThrow(/is learned, not failed: there is nothing to retry/);
  });

  test('a kernel restart resumes unfinished learning jobs from the store', async () => {
    t = await openTestLab({ scripts: { judge: constraintJudge } });
    const idea = await (await t.lab.project(TOPIC)).ideate();
    // A Lab that stores feedback but does not learn (as the bridge's own), then "dies".
    const early = await Lab.open({ home: t.home, llm: t.lab.llm, display: null, learnInBackground: false });
    const queued = await early.feedback(idea.id, 'Always include a linear baseline.', { author: 'ada' });
    expect(queued.learning).toMatchObject({ status: 'queued', waiting: expect.stringMatching(/run the set-up cell/) });
    await early.close();
    // A job a dead process had claimed: its pid no longer exists on this host.
    const dead = spawnSync(process.execPath, ['-e', '0']).pid;
    const second = await t.lab.feedback(idea.id, 'Prefer CPU-only methods.', { author: 'ada' });
    await t.lab.learningIdle();
    await t.lab.store.write(q =>
      q.run(
        `update learning_jobs set status = 'learning', owner_id = 'learner_dead', owner_pid = $2, owner_host = $3, heartbeat_at = now() where feedback_id = $1`,
        [second.feedback.id, dead, os.hostname()]
      )
    );
    // The first job was queued in the store while no learning Lab ran; t.lab picked it up when kicked.
    const reopened = await Lab.open({ home: t.home, llm: t.lab.llm, display: null });
    try {
      await reopened.learningIdle();
      const states = await reopened.learningStates([queued.feedback.id, second.feedback.id]);
      expect(states[queued.feedback.id]?.status).toBe('learned');
      expect(states[second.feedback.id]).toMatchObject({ status: 'learned', attempts: 2 });
    } finally {
      await reopened.close();
    }
  });

  test('resending feedback with the same id stores and learns nothing new', async () => {
    t = await openTestLab();
    const idea = await (await t.lab.project(TOPIC)).ideate();
    const first = await t.lab.feedback(idea.id, 'Use fewer datasets.', { id: 'fb-sidebar-1', author: 'ada', origin: 'sidebar' });
    await t.lab.learningIdle();
    const requestsAfterFirst = t.server.chatRequests.length;
    const again = await t.lab.feedback(idea.id, 'Use fewer datasets.', { id: 'fb-sidebar-1', author: 'ada', origin: 'sidebar' });

    expect(first.created).toBe(true);
    expect(again.created).toBe(false);
    expect(again.feedback).toEqual(first.feedback);
    expect(again.sdpoExample).toEqual(first.sdpoExample);
    await t.lab.learningIdle();
    expect(t.server.chatRequests.length).toBe(requestsAfterFirst);
    expect(await t.lab.store.read(q => q.get('select count(*) as n from learning_jobs'))).toEqual({ n: 1 });
    const rows = await t.lab.store.read(q => q.all<Feedback>('select * from feedback'));
    expect(rows).toHaveLength(1);
  });

  test('several notes on one stage give one example each; fallback plans give none; export is schema-valid JSONL', async () => {
    t = await openTestLab();
    const project = await t.lab.project(TOPIC);
    const idea = await project.ideate();
    await idea.feedback('Narrow the topic to one dataset.', { author: 'ada' });
    await idea.feedback('Prefer methods that run on a CPU.', { author: 'bob' });

    // A stage that ran on the fallback plan: the fallback plan itself is never a y; the feedback trains on
    // the planner's own answer to the same x, asked at lab.train() (planner-resample.test.ts covers that path).
    const noPlanner = await openTestLab({ lab: { ablation: { planner: false } } });
    try {
      const fallbackIdea = await (await noPlanner.lab.project(TOPIC)).ideate();
      const result = await fallbackIdea.feedback('Too broad.', { author: 'ada' });
      expect(result.sdpoExample).toBeNull();
      expect(result.notTrainedBecause).toBeNull();
      expect(result.trainingNote).toMatch(/planner switched off \(ablation\).*lab\.train\(\) first asks the current planner/);
      expect(await sdpoExamples(noPlanner.lab.store)).toEqual([]);
    } finally {
      await noPlanner.close();
    }

    const file = path.join(t.home, 'export', 'sdpo.jsonl');
    expect(await exportSdpo(t.lab.store, file)).toBe(2);
    expect(await t.lab.exportSdpo(file)).toBe(2);
    const lines = (await fs.readFile(file, 'utf8')).trimEnd().split('\n');
    expect(lines).toHaveLength(2);
    const rows = lines.map(line => JSON.parse(line));
    for (const row of rows) expect(schemaErrors('sdpo-example', row)).toEqual([]);
    expect(rows.map(r => r.feedback)).toEqual(['Narrow the topic to one dataset.', 'Prefer methods that run on a CPU.']);
    expect(new Set(rows.map(r => r.planner_call_id)).size).toBe(1);
    expect(new Set(rows.map(r => r.id)).size).toBe(2);
    // Written through a temporary file and renamed: nothing else is left in the folder.
    expect(await fs.readdir(path.dirname(file))).toEqual(['sdpo.jsonl']);
  });

  test('feedback on an unknown stage run or with empty text is refused with a clear message', async () => {
    t = await openTestLab();
    await expect(recordFeedback(t.lab.store, { stageRunId: 'sr_missing', text: 'x', author: 'ada' })).rejects.toThrow(
      "no stage run 'sr_missing' in this store"
    );
    const idea = await (await t.lab.project(TOPIC)).ideate();
    await expect(idea.feedback('   ')).rejects.toThrow(/is empty/);
  });
});
