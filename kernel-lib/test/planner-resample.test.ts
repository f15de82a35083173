/**
 * Every piece of feedback trains, or says why not (issue 10, item 3): feedback on a stage that ran on
 * the fallback plan (planner switched off, or a planner model error) trains on the current planner's
 * own answer to the same x, asked at lab.train(); the fallback plan itself is never a y. What cannot
 * train says exactly why, and lab.train()'s refusal counts the items by cause.
 */
import type { PlannerCall } from '@nanoresearch/schema';
import { sdpoExamples, trainingCoverage } from '../src/feedback';
import { resamplePlannerCall, resampledCallId } from '../src/planner';
import { schemaErrors } from '../src/validate';
import { openTestLab, requestText, selectFirstPlanner, type TestLab } from './lab-fixture';

const TOPIC = 'Small MLPs on tabular data';
let t: TestLab | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

const callOf = (lab: TestLab, id: string) => lab.lab.store.read(q => q.get<PlannerCall>('select * from planner_calls where id = $1', [id]));

test("feedback on a stage run with the planner switched off trains on the planner's own answer to the same x", async () => {
  let asked = 0;
  t = await openTestLab({
    lab: { ablation: { planner: false } },
    scripts: {
      planner: req => {
        asked++;
        return selectFirstPlanner(req);
      }
    }
  });
  const idea = await (await t.lab.project(TOPIC)).ideate();
  const result = await idea.feedback('Always include a linear baseline.', { author: 'ada' });
  expect(asked).toBe(0); // the ablation ran without the model
  const original = (await callOf(t, result.feedback.planner_call_id!))!;
  expect(original.fallback).toBe('planner disabled');
  // x is what the planner would have been given, so it can be asked later.
  expect(original.x.length).toBeGreaterThan(100);
  expect(result).toMatchObject({ sdpoExample: null, notTrainedBecause: null });
  expect(result.trainingNote).toBe(
    'the stage ran with the planner switched off (ablation), so lab.train() first asks the current planner for its own plan for the same input x and trains on that answer with this feedback'
  );
  expect(await trainingCoverage(t.lab.store)).toEqual({ feedback: 1, trainable: 0, awaitingResample: 1, reasons: {} });

  // What lab.train() does first: ask the planner for x (no adapter yet: the base planner).
  const resampled = await resamplePlannerCall(t.lab.store, t.lab.llm, original.id);
  expect('call' in resampled).toBe(true);
  const call = (resampled as { call: PlannerCall }).call;
  expect(asked).toBe(1);
  const sent = t.server.chatRequests.filter(r => r.model === 'planner');
  expect(requestText(sent[0]!)).toBe(original.x); // the very x the stage's call stored
  expect(call).toMatchObject({ id: resampledCallId(original.id), stage_run_id: original.stage_run_id, x: original.x, fallback: null });
  expect(JSON.parse(call.y)).toMatchObject({ prompt_plan: 'Start from the strongest simple baseline.' });
  expect(schemaErrors('planner-call', call)).toEqual([]);
  // The stage still points at the plan it used.
  const stageRun = await t.lab.store.read(q => q.get<{ planner_call_id: string }>('select planner_call_id from stage_runs where id = $1', [idea.id]));
  expect(stageRun!.planner_call_id).toBe(original.id);

  // The feedback now has its row: x from the stage's call, y the re-sampled answer.
  const rows = await sdpoExamples(t.lab.store);
  expect(rows).toHaveLength(1);
  expect(rows[0]).toMatchObject({ x: original.x, y: call.y, feedback: 'Always include a linear baseline.', planner_call_id: call.id });
  expect(schemaErrors('sdpo-example', rows[0])).toEqual([]);
  expect(await trainingCoverage(t.lab.store)).toEqual({ feedback: 1, trainable: 1, awaitingResample: 0, reasons: {} });

  // Idempotent: the same row, no second question.
  expect(await resamplePlannerCall(t.lab.store, t.lab.llm, original.id)).toEqual({ call: await callOf(t, call.id) });
  expect(asked).toBe(1);
});

test("a planner model error: the fallback plan is not trained; a re-ask that fails again is named in lab.train()'s refusal with the counts", async () => {
  t = await openTestLab({ scripts: { planner: () => 'I would pick the linear baseline skill.' } });
  const project = await t.lab.project(TOPIC);
  const idea = await project.ideate();
  const result = await idea.feedback('Prefer methods that run on a CPU.', { author: 'ada' });
  const original = (await callOf(t, result.feedback.planner_call_id!))!;
  expect(original.fallback).toMatch(/^planner model error/);
  expect(original.y).toBe('I would pick the linear baseline skill.'); // kept: it explains the failure, never trained
  expect(result.notTrainedBecause).toBeNull();
  expect(result.trainingNote).toMatch(/^the stage ran on the fallback plan after a planner model error, so lab.train\(\) first asks/);

  // The planner still fails: nothing to train on, and the refusal says why, per item.
  await expect(t.lab.train({ display: null })).rejects.toThrow(
    /^nothing to train on: none of the 1 feedback item\(s\) can train the planner: 1 planner call\(s\) on a fallback plan that could not be re-asked: re-asking the planner for its own plan failed: the answer does not match the call's schema: the answer contains no JSON object$/
  );
  expect(await callOf(t, resampledCallId(original.id))).toBeUndefined();
  expect(await sdpoExamples(t.lab.store)).toEqual([]);
});

test('feedback on a stage that failed before planning has no x, and says so', async () => {
  t = await openTestLab();
  const project = await t.lab.project(TOPIC);
  const idea = await project.ideate();
  // A stage run without a planner call (as when retrieval failed): detach the call.
  await t.lab.store.write(q => q.run('update stage_runs set planner_call_id = null where id = $1', [idea.id]));
  const result = await t.lab.feedback(idea.id, 'Too broad.', { author: 'ada' });
  expect(result.sdpoExample).toBeNull();
  expect(result.trainingNote).toBeNull();
  expect(result.notTrainedBecause).toBe(
    'the stage ran before any plan was made (it failed in retrieval or planning), so there is no planner input x to train on'
  );
  await expect(t.lab.train({ display: null })).rejects.toThrow(
    /^nothing to train on: none of the 1 feedback item\(s\) can train the planner: 1 on no plan \(the stage failed before planning\)$/
  );
});
