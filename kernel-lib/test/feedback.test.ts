/**
 * Feedback: stored and linked to the planner call, idempotent by id, learned from (memory and
 * skills), turned into SDPO examples and exported as schema-valid JSONL, atomically.
 */
import { promises as fs } from 'fs';
import * as path from 'path';
import type { Feedback } from '@nanoresearch/schema';
import { exportSdpo, recordFeedback, sdpoExamples } from '../src/feedback';
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

  test('feedback becomes an SDPO example with the exact x and y of the stage\'s planner call', async () => {
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

  test('feedback triggers memory extraction and skill distillation with the feedback', async () => {
    t = await openTestLab({ scripts: { judge: constraintJudge } });
    const idea = await (await t.lab.project(TOPIC)).ideate();
    const judgeBefore = t.server.chatRequests.filter(r => r.model === 'judge').length;
    const result = await idea.feedback('Always include a linear baseline.', { author: 'ada' });

    const judged = t.server.chatRequests.filter(r => r.model === 'judge').slice(judgeBefore);
    expect(judged.length).toBeGreaterThanOrEqual(2); // memory extraction + skill distillation
    expect(judged.every(r => requestText(r).includes('Always include a linear baseline.'))).toBe(true);
    const memories = await t.lab.store.read(q => q.all<{ kind: string; scope: string }>('select kind, scope from memories'));
    expect(memories).toEqual([{ kind: 'user_constraint', scope: 'global' }]);
    expect(result.updateNotes.some(n => n.startsWith('memories from feedback: 1'))).toBe(true);
  });

  test('resending feedback with the same id stores and learns nothing new', async () => {
    t = await openTestLab();
    const idea = await (await t.lab.project(TOPIC)).ideate();
    const first = await t.lab.feedback(idea.id, 'Use fewer datasets.', { id: 'fb-sidebar-1', author: 'ada', origin: 'sidebar' });
    const requestsAfterFirst = t.server.chatRequests.length;
    const again = await t.lab.feedback(idea.id, 'Use fewer datasets.', { id: 'fb-sidebar-1', author: 'ada', origin: 'sidebar' });

    expect(first.created).toBe(true);
    expect(again.created).toBe(false);
    expect(again.feedback).toEqual(first.feedback);
    expect(again.sdpoExample).toEqual(first.sdpoExample);
    expect(t.server.chatRequests.length).toBe(requestsAfterFirst);
    const rows = await t.lab.store.read(q => q.all<Feedback>('select * from feedback'));
    expect(rows).toHaveLength(1);
  });

  test('several notes on one stage give one example each; fallback plans give none; export is schema-valid JSONL', async () => {
    t = await openTestLab();
    const project = await t.lab.project(TOPIC);
    const idea = await project.ideate();
    await idea.feedback('Narrow the topic to one dataset.', { author: 'ada' });
    await idea.feedback('Prefer methods that run on a CPU.', { author: 'bob' });

    // A stage that ran on the fallback plan: its feedback is stored but is no SDPO evidence.
    const noPlanner = await openTestLab({ lab: { ablation: { planner: false } } });
    try {
      const fallbackIdea = await (await noPlanner.lab.project(TOPIC)).ideate();
      const result = await fallbackIdea.feedback('Too broad.', { author: 'ada' });
      expect(result.sdpoExample).toBeNull();
      expect(result.notTrainedBecause).toMatch(/planner switched off \(ablation\)/);
      expect(await sdpoExamples(noPlanner.lab.store)).toEqual([]);
      // Training refuses with the real cause and the count, not "no feedback yet".
      await expect(noPlanner.lab.train({ display: null })).rejects.toThrow(
        /nothing to train on: none of the 1 feedback item\(s\) can train the planner: 1 on planner switched off/
      );
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
