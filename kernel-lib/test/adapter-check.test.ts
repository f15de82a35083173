/**
 * lab.train() checks a new adapter before the planner uses it: the real trainer (the repository's
 * .venv, a tiny random Llama built locally) writes the adapter, then the planner (a scripted server
 * on loopback) is asked for the plans of the latest planner inputs. An adapter whose plans say
 * nothing where the stored plans did is registered inactive; lab.useAdapter() can still pick it.
 */
import { promises as fs } from 'fs';
import * as path from 'path';
import { checkPlanner, emptyPlanReason } from '../src/planner';
import { AdapterRejectedError, CHECKED_PLANNER_INPUTS } from '../src/trainer';
import type { LlmScript } from '../src/testing';
import { candidateIds, openTestLab, requestText, selectFirstPlanner, type TestLab } from './lab-fixture';
import { writeTinyModel } from './tiny-model';

jest.setTimeout(240_000);

const TOPIC = 'Small MLPs on tabular data';
/** Rows in the tiny model's vocabulary: what the trainer learns is not under test here, the check is. */
const ROWS = [{ id: 'r1', x: 'topic t1', y: 'alpha a1 a2', feedback: 'likes alpha', stage: 'planning' }];

let t: TestLab | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

/** A planner whose prompt_plan is `plan()` at the time of the request. */
const plannerSaying = (plan: () => string) => (req: Parameters<typeof requestText>[0]) => {
  const x = requestText(req);
  return JSON.stringify({
    selected_skill_ids: candidateIds(x, 'skills').slice(0, 1),
    selected_memory_ids: [],
    prompt_plan: plan(),
    update_memory: [],
    update_skill: []
  });
};

async function trainRound(lab: TestLab, options: { checkPlans?: boolean } = {}) {
  const tinyModel = path.join(lab.home, 'tiny-llama');
  await fs.access(tinyModel).catch(() => writeTinyModel(tinyModel));
  return lab.lab.train({
    steps: 1,
    base: tinyModel,
    trainerArgs: ['--rank', '4', '--alpha', '8', '--threads', '1'],
    display: null,
    exportExamples: async (_store, file) => {
      await fs.writeFile(file, ROWS.map(r => JSON.stringify(r)).join('\n') + '\n');
      return ROWS.length;
    },
    ...options
  });
}

test('emptyPlanReason: a plan of a few words, JSON of the answer itself, or a few words repeated says nothing', () => {
  expect(emptyPlanReason({ prompt_plan: 'Start from the strongest simple baseline.' })).toBeNull();
  expect(emptyPlanReason({ prompt_plan: 'Use the top-ranked skills and memories where they directly help this stage.' })).toBeNull();
  expect(emptyPlanReason({ prompt_plan: '...' })).toBe('prompt_plan has 0 words');
  expect(emptyPlanReason({ prompt_plan: 'Data Preparation.' })).toBe('prompt_plan has 2 words');
  expect(emptyPlanReason({ prompt_plan: '{"selected_skill_ids": [' })).toBe('prompt_plan holds JSON of the answer itself');
  expect(emptyPlanReason({ prompt_plan: 'data data plan data plan data data plan data plan data data' })).toBe('prompt_plan repeats a few words');
  expect(emptyPlanReason({ prompt_plan: 'Évaluer la référence linéaire sur données tabulaires.' })).toBeNull();
});

test('an adapter whose plans say nothing is trained and saved but not given to the planner; useAdapter can still pick it', async () => {
  let plan = 'Start from the strongest simple baseline.';
  t = await openTestLab({ scripts: { planner: plannerSaying(() => plan) } });
  const project = await t.lab.project(TOPIC);
  await project.ideate();
  await project.plan();
  await project.experiment();
  await project.analyze();
  const stored = await t.lab.store.read(q => q.all<{ x: string }>('select x from planner_calls order by created_at desc'));
  expect(stored).toHaveLength(4);
  const before = t.server.chatRequests.length;

  plan = '...'; // what the planner says from now on: as if the new weights had collapsed
  const error = await trainRound(t).catch(e => e);
  expect(error).toBeInstanceOf(AdapterRejectedError);
  expect(error.message).toMatch(
    /^adapter v1 was trained and saved in .*adapters\/v1, but the planner keeps the base model: on 3 of the 3 latest planner inputs its plan says nothing where the plan before did \(e\.g\. prompt_plan "\.\.\.": prompt_plan has 0 words\)\. Train again with a lower learning rate or fewer steps .*lab\.useAdapter\('v1'\)/
  );
  expect(error.version).toBe('v1');
  expect(error.checks).toHaveLength(CHECKED_PLANNER_INPUTS);
  // The latest inputs, each asked once, with its stored x.
  const asked = t.server.chatRequests
    .slice(before)
    .filter(r => r.model === 'planner')
    .map(requestText);
  expect(asked).toEqual(stored.slice(0, CHECKED_PLANNER_INPUTS).map(r => r.x));
  // Accounted to training, not to the stages whose inputs were asked again.
  const ledger = await t.lab.store.read(q => q.all<{ n: number }>("select count(*)::int as n from llm_calls where role = 'planner' and stage_run_id is null"));
  expect(ledger[0].n).toBe(CHECKED_PLANNER_INPUTS);
  expect((await t.lab.adapters()).map(a => [a.version, a.active])).toEqual([['v1', false]]);

  await t.lab.useAdapter('v1');
  expect((await t.lab.adapters()).map(a => [a.version, a.active])).toEqual([['v1', true]]);
});

test('an adapter whose plans are as empty as the stored ones, or fine, becomes active; checkPlans: false skips the check', async () => {
  let plan = '...';
  t = await openTestLab({ scripts: { planner: plannerSaying(() => plan) } });
  const project = await t.lab.project(TOPIC);
  await project.ideate();
  await project.plan();
  // Both stored plans were empty already: the new adapter is no worse on them.
  expect((await trainRound(t)).active).toBe(true);

  plan = 'Start from the strongest simple baseline.';
  await project.experiment();
  plan = 'Data.';
  // One of three inputs newly empty is not most of them.
  const second = await trainRound(t);
  expect(second).toMatchObject({ version: 'v2', active: true });

  const beforeSkip = t.server.chatRequests.length;
  plan = '...';
  await project.analyze();
  await project.write();
  const third = await trainRound(t, { checkPlans: false });
  expect(third).toMatchObject({ version: 'v3', active: true });
  const planner = t.server.chatRequests.slice(beforeSkip).filter(r => r.model === 'planner');
  expect(planner).toHaveLength(2); // the two stages' own calls: no check was asked
});

test('an answer that is no plan counts as empty; an input the endpoint could not answer is skipped, with why', async () => {
  let planner: LlmScript = selectFirstPlanner;
  t = await openTestLab({ scripts: { planner: req => planner(req) } });
  const project = await t.lab.project(TOPIC);
  await project.ideate();
  await project.plan();
  // Each check with an adapter of its own: the LLM layer's cache keys on the adapter, as it must.
  const adapter = (version: string) => ({
    version,
    name: `nanoresearch-${version}`,
    ggufPath: `/nonexistent/${version}.gguf`,
    peftDir: `/nonexistent/${version}`
  });

  planner = () => ({ content: 'I would pick the linear baseline skill.' });
  const prose = await checkPlanner(t.lab.store, t.lab.llm, adapter('v8'), CHECKED_PLANNER_INPUTS);
  expect(prose.skipped).toEqual([]);
  expect(prose.checks.map(c => [c.promptPlan, c.empty, c.emptyBefore])).toEqual([
    ['I would pick the linear baseline skill.', "the answer is not a plan under the call's schema", null],
    ['I would pick the linear baseline skill.', "the answer is not a plan under the call's schema", null]
  ]);

  planner = () => ({ status: 503 });
  const down = await checkPlanner(t.lab.store, t.lab.llm, adapter('v9'), CHECKED_PLANNER_INPUTS);
  expect(down.checks).toEqual([]);
  expect(down.skipped).toHaveLength(2);
  expect(down.skipped[0]).toMatch(/^re-asking the planner for its own plan failed: .*503/);
});
