/**
 * Orchestrator: Retrieve → Plan → Stage → Update with persisted stage state, resume without
 * paying again, budget stops, thrown stages recorded, ablation switches, live stage cards.
 */
import type { StageRun } from '@nanoresearch/schema';
import { getArchetype } from '../src/profiles';
import type { StageContext, StageFn } from '../src/orchestrator';
import { schemaErrors } from '../src/validate';
import { Lab } from '../src/lab';
import { CAPABLE_ENDPOINT_HINT, LlmOutputError, type Llm } from '../src/llm';
import { openTestLab, requestText, selectFirstPlanner, shownBundles, trivialStage, type TestLab, type TrivialStageLog } from './lab-fixture';

const TOPIC = 'Tabular classification with small MLPs';

describe('orchestrator', () => {
  let t: TestLab | undefined;
  afterEach(async () => {
    await t?.close();
    t = undefined;
  });

  test('two kernels on one project: the second is refused while the first runs, and no stage runs twice', async () => {
    let release!: () => void;
    const gate = new Promise<void>(resolve => (release = resolve));
    let runs = 0;
    const slow: StageFn = async ctx => {
      runs++;
      await gate;
      return { status: 'done', output: { ok: true }, summary: 'done', bundleOutputs: {}, trajectory: '', markdown: `${ctx.stage}` };
    };
    t = await openTestLab({ stages: () => ({ ideation: slow }) });
    const first = (await t.lab.project('Leases')).ideate();
    // A second Lab on the same home, as a second kernel would open it.
    const second = await Lab.open({ home: t.home, llm: t.lab.llm, display: null, stages: { ideation: slow } });
    try {
      await new Promise(resolve => setTimeout(resolve, 300));
      await expect((await second.project('Leases')).ideate()).rejects.toThrow(/is being run by process \d+/);
      release();
      expect((await first).status).toBe('done');
      expect(runs).toBe(1);
      const rows = await t.lab.store.read(q => q.all<{ status: string }>("select status from stage_runs where stage = 'ideation'"));
      expect(rows).toEqual([{ status: 'done' }]);
    } finally {
      release();
      await second.close();
    }
  });

  test('a stage runs Retrieve → Plan → Stage → Update and its state and usage are stored', async () => {
    t = await openTestLab();
    const project = await t.lab.project(TOPIC);
    const idea = await project.ideate();

    expect(idea.status).toBe('done');
    expect(idea.output).toEqual({ stage: 'ideation', answer: 'an answer' });
    const [row] = await t.lab.store.read(q => q.all<StageRun>('select * from stage_runs'));
    expect(row).toMatchObject({ id: idea.id, status: 'done', stage: 'ideation', attempt: 1, summary: 'ideation done' });
    expect(row.planner_call_id).toMatch(/^plan_/);
    // Usage sums this stage run's llm_calls: the planner call, the stage's own call and the
    // Update step's skill distillation (the judge).
    expect(row.usage).toMatchObject({ calls: 3, prompt_tokens: expect.any(Number), cache_hits: 0 });
    expect(t.server.chatRequests.map(r => r.model)).toEqual(['planner', 'default', 'judge']);
    expect(row.usage!.prompt_tokens).toBeGreaterThanOrEqual(10);
    // The planner selected the first skill candidate: it is used and its usage count went up.
    expect(row.skills_used).toHaveLength(1);
    const [skill] = await t.lab.store.read(q => q.all<{ usage_count: number }>('select usage_count from skills where id = $1', [row.skills_used![0]]));
    expect(skill.usage_count).toBe(1);
    // The guidance the stage got contains the selected skill and the planner's plan.
    expect(t.log.calls[0].guidance).toContain('Start from the strongest simple baseline.');
  });

  test("the planner's accounting commits with its plan, and is recorded on its own when the plan cannot commit", async () => {
    t = await openTestLab();
    const store = t.lab.store;
    const writes: string[][] = [];
    let failPlan = false;
    const writeDurable = store.writeDurable.bind(store);
    store.writeDurable = (async (kind: Parameters<typeof writeDurable>[0], payload: unknown, also?: Parameters<typeof writeDurable>[2]) => {
      const tables = ((payload as { inserts?: Array<{ table: string }> }).inserts ?? []).map(i => i.table);
      writes.push(tables);
      if (failPlan && tables.includes('planner_calls')) throw new Error('disk full (test)');
      return writeDurable(kind, payload, also);
    }) as typeof store.writeDurable;
    const project = await t.lab.project(TOPIC);
    expect((await project.ideate()).status).toBe('done');
    // One commit holds the planner's call and its accounting; no ledger commit of its own.
    expect(writes).toContainEqual(['llm_calls', 'llm_cache', 'planner_calls']);
    expect(writes.filter(tables => tables.includes('llm_calls') && !tables.includes('planner_calls'))).toHaveLength(2);

    failPlan = true;
    const failed = await (await t.lab.project('Another topic')).ideate();
    expect(failed.status).toBe('failed');
    expect(failed.error).toContain('disk full (test)');
    const planners = await store.read(q => q.all<{ n: number }>("select count(*)::INTEGER as n from llm_calls where role = 'planner'"));
    expect(planners).toEqual([{ n: 2 }]);
  });

  test('a stage that throws is recorded as failed with the error; run() resumes there without re-running done stages', async () => {
    let experimentCalls = 0;
    t = await openTestLab({
      stages: log => ({
        experiment: async ctx => {
          if (experimentCalls++ === 0) throw new Error('CUDA out of memory');
          return trivialStage(log)(ctx);
        }
      })
    });
    const project = await t.lab.project(TOPIC);

    const first = await project.run();
    expect(first.map(s => [s.stage, s.status])).toEqual([
      ['ideation', 'done'],
      ['planning', 'done'],
      ['experiment', 'failed']
    ]);
    expect(first[2].error).toBe('the experiment stage threw: CUDA out of memory');
    const failedRow = await t.lab.store.read(q => q.get<StageRun>("select * from stage_runs where stage = 'experiment'"));
    expect(failedRow).toMatchObject({ status: 'failed', error: 'the experiment stage threw: CUDA out of memory' });

    const requestsBefore = t.server.chatRequests.length;
    const doneIds = new Set(first.slice(0, 2).map(s => s.id));
    const second = await project.run();
    expect(second.map(s => [s.stage, s.status])).toEqual([
      ['ideation', 'done'],
      ['planning', 'done'],
      ['experiment', 'done'],
      ['analysis', 'done'],
      ['writing', 'done'],
      ['review', 'done']
    ]);
    // Completed stages were reused (same ids), not run or paid for again.
    expect(second.slice(0, 2).map(s => s.id)).toEqual(first.slice(0, 2).map(s => s.id));
    const newRequests = t.server.chatRequests.slice(requestsBefore).map(requestText);
    for (const id of doneIds) expect(newRequests.some(text => text.includes(id))).toBe(false);
    expect(newRequests.some(text => text.includes('Stage ideation') || text.includes('Stage planning'))).toBe(false);
    // The resumed experiment saw the stored outputs of the stages before it.
    const experimentCall = t.log.calls.filter(c => c.stage === 'experiment').pop()!;
    expect(experimentCall.previous).toEqual(['ideation', 'planning']);
    expect(second[2].run.attempt).toBe(2);

    const runs = await t.lab.store.read(q => q.all<{ status: string }>('select status from runs'));
    expect(runs).toEqual([{ status: 'done' }]);
    // Everything is done: a third run() pays for nothing.
    const requestsAfter = t.server.chatRequests.length;
    const third = await project.run();
    expect(third.map(s => s.status)).toEqual(Array(6).fill('done'));
    expect(t.server.chatRequests.length).toBe(requestsAfter);
  });

  test('a stage whose prerequisite has not completed fails at once, before retrieval and planning', async () => {
    t = await openTestLab({
      stages: log => ({ planning: Object.assign(trivialStage(log), { requires: ['ideation'] as const }) })
    });
    const project = await t.lab.project(TOPIC);

    const plan = await project.plan();
    expect(plan.status).toBe('failed');
    expect(plan.error).toBe(
      'the planning stage needs the output of ideation: ideation has not run in this run; run it first (project.ideate()); then run planning again'
    );
    // Nothing was spent: no planner call, no stage call, no stored plan.
    expect(t.server.chatRequests).toHaveLength(0);
    expect(t.log.calls).toHaveLength(0);
    const row = await t.lab.store.read(q => q.get<StageRun>('select * from stage_runs where id = $1', [plan.id]));
    expect(row).toMatchObject({ status: 'failed', planner_call_id: null });

    await project.ideate();
    expect((await project.plan()).status).toBe('done');
  });

  test('a stage whose prerequisite failed in this run says why it failed and to rerun it, not "run it first"', async () => {
    t = await openTestLab({
      stages: log => ({
        ideation: trivialStage(log, { status: 'failed', error: 'no hypothesis survived the novelty check' }),
        planning: Object.assign(trivialStage(log), { requires: ['ideation'] as const })
      })
    });
    const project = await t.lab.project(TOPIC);
    expect((await project.ideate()).status).toBe('failed');
    const plan = await project.plan();
    expect(plan.error).toBe(
      'the planning stage needs the output of ideation: ideation failed in this run (no hypothesis survived the novelty check); ' +
        'fix it and rerun it (project.ideate()); then run planning again'
    );
    expect(plan.error).not.toMatch(/run it first/);
  });

  test('a stage the embedded model failed says how to point the lab at a capable endpoint, once', async () => {
    t = await openTestLab();
    // The same Llm, reporting the embedded provider (the model itself is not needed to fail).
    const embedded = Object.create(t.lab.llm, { config: { value: { ...t.lab.llm.config, provider: 'local' } } }) as Llm;
    const lab = await Lab.open({
      home: t.home,
      workspaces: t.home,
      llm: embedded,
      display: null,
      stages: {
        ideation: async () => {
          throw new LlmOutputError('ideation_output', ['/hypotheses: must NOT have fewer than 1 items'], '{"hypotheses": []}');
        }
      }
    });
    try {
      const idea = await (await lab.project(TOPIC)).ideate();
      expect(idea.error).toMatch(/^the ideation stage threw: The model's answer does not match the JSON schema "ideation_output"/);
      expect(idea.error).toContain(`. ${CAPABLE_ENDPOINT_HINT}`);
      expect(idea.error!.split(CAPABLE_ENDPOINT_HINT)).toHaveLength(2);
      // The card shows the error once: the summary that repeats it is not a second line.
      expect(idea.bundle.error).toBe(idea.error);
    } finally {
      await lab.close();
    }
  });

  test('a stage left running by a dead process is marked interrupted and run again on resume', async () => {
    t = await openTestLab();
    const project = await t.lab.project(TOPIC);
    await project.run({ to: 'planning' });
    // Simulate a kernel killed while planning ran: its row stays 'running'.
    await t.lab.store.write(q => q.run("update stage_runs set status = 'running', finished_at = null where stage = 'planning'"));
    const callsBefore = t.log.calls.length;

    const stages = await project.run({ to: 'planning' });
    expect(stages.map(s => [s.stage, s.status, s.run.attempt])).toEqual([
      ['ideation', 'done', 1],
      ['planning', 'done', 2]
    ]);
    expect(t.log.calls.slice(callsBefore).map(c => c.stage)).toEqual(['planning']);
    const interrupted = await t.lab.store.read(q => q.get<StageRun>("select * from stage_runs where stage = 'planning' and attempt = 1"));
    expect(interrupted).toMatchObject({ status: 'failed', error: 'interrupted: the process running it ended' });
  });

  test('a spent budget stops the run cleanly at the stage that hit it, naming the budget', async () => {
    // A stage that keeps asking: the scoped LLM refuses once the run's budget is reached.
    const greedy =
      (log: TrivialStageLog): StageFn =>
      async (ctx: StageContext) => {
        for (let i = 0; i < 10; i++) {
          await ctx.llm.complete({ role: 'ideation', messages: [{ role: 'user', content: `${ctx.stageRunId} call ${i}` }] });
        }
        return trivialStage(log)(ctx);
      };
    t = await openTestLab({
      scripts: {
        planner: req => ({ content: selectFirstPlanner(req) as string, usage: { prompt_tokens: 5, completion_tokens: 5 } }),
        default: () => ({ content: 'long answer', usage: { prompt_tokens: 40, completion_tokens: 20 } })
      },
      stages: log => ({ ideation: greedy(log), planning: greedy(log) })
    });
    const tight = { ...getArchetype('evidence-first'), id: 'tight-budget', name: 'Tight budget', resources: { max_tokens_per_run: 150 } };
    await t.lab.useProfile(tight);
    const project = await t.lab.project(TOPIC);
    const stages = await project.run();

    expect(stages).toHaveLength(1);
    expect(stages[0].status).toBe('failed');
    expect(stages[0].error).toMatch(
      /^stopped: the run's token budget ran out \(profile resources\.max_tokens_per_run 150\): LLM budget exceeded .*\(maxTokens\)/
    );
    // The fix it names is a real option (the profile's resources), and the generic advice is not repeated.
    expect(stages[0].error).toContain('lab.useProfile({ ...profile, resources: { ...profile.resources, max_tokens_per_run: 300 } })');
    expect(stages[0].error).not.toContain('narrow the task');
    const rows = await t.lab.store.read(q => q.all<StageRun>('select stage, status from stage_runs'));
    expect(rows).toEqual([{ stage: 'ideation', status: 'failed' }]);
    const run = await t.lab.store.read(q => q.get<{ status: string }>('select status from runs'));
    expect(run!.status).toBe('failed');
  });

  test('ablations change what is retrieved and planned', async () => {
    t = await openTestLab({ lab: { ablation: { memory: false, planner: false } } });
    await t.lab.memory.remember({ kind: 'user_constraint', content: 'Always include a linear baseline.' });
    const project = await t.lab.project(TOPIC);
    const idea = await project.ideate();

    const call = await t.lab.store.read(q =>
      q.get<{ fallback: string; y: string; candidate_memory_ids: string[]; candidate_skill_ids: string[] }>(
        'select * from planner_calls where stage_run_id = $1',
        [idea.id]
      )
    );
    expect(call!.fallback).toBe('planner disabled');
    expect(call!.y).toBe('');
    expect(call!.candidate_memory_ids).toEqual([]);
    expect(call!.candidate_skill_ids.length).toBeGreaterThan(0);
    expect(idea.run.skills_used).toEqual(call!.candidate_skill_ids.slice(0, 3));
    expect(t.server.chatRequests.filter(r => r.model === 'planner')).toHaveLength(0);

    // The same store with memory on: the constraint is a candidate and reaches the planner.
    const full = await openTestLab();
    try {
      await full.lab.memory.remember({ kind: 'user_constraint', content: 'Always include a linear baseline.' });
      const fullIdea = await (await full.lab.project(TOPIC)).ideate();
      const fullCall = await full.lab.store.read(q =>
        q.get<{ fallback: string | null; candidate_memory_ids: string[] }>('select * from planner_calls where stage_run_id = $1', [fullIdea.id])
      );
      expect(fullCall!.fallback).toBeNull();
      expect(fullCall!.candidate_memory_ids).toHaveLength(1);
      expect(full.server.chatRequests.filter(r => r.model === 'planner')).toHaveLength(1);
    } finally {
      await full.close();
    }
  });

  test('skillDistillation off: skills are retrieved and planned with, but the bank is frozen (no judge call)', async () => {
    t = await openTestLab({ lab: { ablation: { skillDistillation: false } } });
    const skillsBefore = await t.lab.store.read(q => q.all<{ id: string; version: number }>('select id, version from skills order by id'));
    const idea = await (await t.lab.project(TOPIC)).ideate();

    expect(idea.status).toBe('done');
    const call = await t.lab.store.read(q => q.get<{ candidate_skill_ids: string[] }>('select * from planner_calls where stage_run_id = $1', [idea.id]));
    expect(call!.candidate_skill_ids.length).toBeGreaterThan(0);
    expect(t.server.chatRequests.map(r => r.model)).toEqual(['planner', 'default']);
    expect(await t.lab.store.read(q => q.all('select * from skill_reviews'))).toEqual([]);
    expect(await t.lab.store.read(q => q.all<{ id: string; version: number }>('select id, version from skills order by id'))).toEqual(skillsBefore);
  });

  test('memories a stage learned are remembered for the project', async () => {
    t = await openTestLab({
      stages: log => ({
        experiment: trivialStage(log, {
          memories: [
            {
              kind: 'failed_direction',
              content: 'A 4-layer MLP overfit the 300-row dataset.',
              conditions: { dataset: 'uci-small', method: 'mlp-4', failure_mode: 'overfitting' }
            }
          ]
        })
      })
    });
    const project = await t.lab.project(TOPIC);
    const stage = await project.experiment();
    expect(stage.status).toBe('done');
    const memories = await t.lab.store.read(q => q.all<{ kind: string; scope: string; content: string }>('select kind, scope, content from memories'));
    expect(memories).toEqual([{ kind: 'failed_direction', scope: project.id, content: 'A 4-layer MLP overfit the 300-row dataset.' }]);
  });

  test('a failing Update step is noted on the stage run; the stage result stands', async () => {
    t = await openTestLab({ scripts: { judge: () => ({ status: 500, body: { error: { message: 'judge down', type: 'server_error' } } }) } });
    const idea = await (await t.lab.project(TOPIC)).ideate();
    expect(idea.status).toBe('done');
    const notes = (idea.run.input as { update_notes: string[] }).update_notes;
    expect(notes.some(n => n.startsWith('skill distillation failed: Skill distillation for stage ideation failed'))).toBe(true);
    expect(notes).toContain('memories remembered: 0, marked used: 0');
  });

  test('run() ranges and restarts: from/to in pipeline order, restart opens a new run', async () => {
    t = await openTestLab();
    const project = await t.lab.project(TOPIC);
    await expect(project.run({ from: 'writing', to: 'ideation' })).rejects.toThrow("stage 'writing' comes after 'ideation'");
    const first = await project.run({ to: 'ideation' });
    const again = await project.run({ to: 'ideation', restart: true });
    expect(again[0].id).not.toBe(first[0].id);
    expect(again[0].run.run_id).not.toBe(first[0].run.run_id);
    expect((await project.stages()).map(s => s.id)).toEqual([again[0].id]);
  });

  test('the stage card is one display with both MIME types, updated in place, and validates', async () => {
    t = await openTestLab();
    const project = await t.lab.project(TOPIC);
    const idea = await project.ideate();

    expect(t.displays.length).toBeGreaterThanOrEqual(2);
    const ids = new Set(t.displays.map(d => d.displayId));
    expect(ids.size).toBe(1);
    expect(t.displays.map(d => d.update)).toEqual([false, ...Array(t.displays.length - 1).fill(true)]);
    for (const d of t.displays) {
      expect(Object.keys(d.data).sort()).toEqual(['application/vnd.nanoresearch.stage+json', 'text/markdown']);
    }
    const bundles = shownBundles(t.displays);
    expect(bundles[0]).toMatchObject({ status: 'running', progress: { phase: 'retrieving' } });
    const last = bundles[bundles.length - 1];
    expect(last).toMatchObject({ status: 'done', stage_run_id: idea.id, summary: 'ideation done', progress: null });
    for (const bundle of bundles) expect(schemaErrors('stage-bundle', bundle)).toEqual([]);
    expect(schemaErrors('stage-bundle', idea.bundle)).toEqual([]);

    // Feedback updates the same card with the feedback listed.
    await idea.feedback('Compare against gradient-boosted trees too.', { author: 'ada' });
    const afterFeedback = shownBundles(t.displays).pop()!;
    expect(t.displays[t.displays.length - 1]).toMatchObject({ update: true });
    expect(afterFeedback.feedback).toEqual([expect.objectContaining({ text: 'Compare against gradient-boosted trees too.', author: 'ada' })]);
    expect(schemaErrors('stage-bundle', afterFeedback)).toEqual([]);
    expect(String(t.displays[t.displays.length - 1].data['text/markdown'])).toContain('Compare against gradient-boosted trees too. — ada');
  });
});
