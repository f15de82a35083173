/**
 * Planner: x built deterministically from stage task + profile + candidates with ids; x and y
 * stored exactly; ids outside the candidates dropped; any failure falls back to the top 3.
 */
import type { Memory, PlannerCall, Skill } from '@nanoresearch/schema';
import { Planner, buildPlannerInput, FALLBACK_PROMPT_PLAN } from '../src/planner';
import { getArchetype } from '../src/profiles';
import { schemaErrors } from '../src/validate';
import { openTestLab, requestText, type TestLab } from './lab-fixture';

const profile = getArchetype('ablation-focused');
const now = '2026-01-01T00:00:00.000Z';

function skill(id: string, name: string): Skill {
  return { id, name, description: `${name} for small experiments.`, instructions: ['Do it.'], source: 'builtin', version: 1, status: 'active' };
}

function memory(id: string, content: string, kind: Memory['kind'] = 'user_constraint'): Memory {
  return { id, kind, scope: 'global', key: content.toLowerCase(), content, importance: 0.5, confidence: 0.5, status: 'active', created_at: now };
}

const skills = ['linear-baseline', 'ablation-grid', 'seed-variance', 'early-stopping'].map(id => skill(id, id.replace('-', ' ')));
const memories = [
  memory('mem_a', 'Always include a linear baseline.'),
  memory('mem_b', 'Report three seeds.'),
  memory('mem_c', 'A 4-layer MLP overfit.', 'failed_direction'),
  memory('mem_d', 'Prefers CPU-only experiments.')
];
const request = { stageRunId: 'sr_test', stage: 'planning' as const, topic: 'Small MLPs on tabular data', profile, skills, memories };

async function storedCall(t: TestLab, stageRunId = 'sr_test'): Promise<PlannerCall> {
  const call = await t.lab.store.read(q => q.get<PlannerCall>('select * from planner_calls where stage_run_id = $1', [stageRunId]));
  return call!;
}

describe('planner', () => {
  let t: TestLab | undefined;
  afterEach(async () => {
    await t?.close();
    t = undefined;
  });

  test('x is compact, deterministic and lists every candidate with its id', () => {
    const x = buildPlannerInput(request);
    expect(buildPlannerInput({ ...request, skills: [...skills], memories: [...memories] })).toBe(x);
    for (const s of skills) expect(x).toContain(`- ${s.id}: `);
    for (const m of memories) expect(x).toContain(`- ${m.id} [${m.kind}]`);
    expect(x).toContain('## Stage: planning');
    expect(x).toContain('Small MLPs on tabular data');
    expect(x.length).toBeLessThan(4000);
    // Another candidate order is another x (the order is part of what the planner saw).
    expect(buildPlannerInput({ ...request, skills: [...skills].reverse() })).not.toBe(x);
  });

  test('x and y are stored exactly as sent and answered, with model and adapter version', async () => {
    const y = JSON.stringify({
      selected_skill_ids: ['ablation-grid'],
      selected_memory_ids: ['mem_b', 'mem_a'],
      prompt_plan: 'Grid over depth and width; three seeds.',
      update_memory: [{ kind: 'user_profile', content: 'Likes ablation grids.' }],
      update_skill: []
    });
    t = await openTestLab({ scripts: { planner: () => y } });
    const planner = new Planner(t.lab.store, t.lab.llm, async () => ({ version: 'v7', ggufPath: '/adapters/v7/adapter.gguf' }));
    const result = await planner.plan(request);

    const sent = t.server.chatRequests.filter(r => r.model === 'planner');
    expect(sent).toHaveLength(1);
    const call = await storedCall(t);
    expect(call.x).toBe(requestText(sent[0]));
    expect(call.x).toBe(buildPlannerInput(request));
    expect(call.y).toBe(y);
    expect(call).toMatchObject({ model: 'planner', adapter_version: 'v7', fallback: null, stage: 'planning' });
    expect(call.candidate_skill_ids).toEqual(skills.map(s => s.id));
    expect(schemaErrors('planner-call', call)).toEqual([]);
    expect(result.skills.map(s => s.id)).toEqual(['ablation-grid']);
    expect(result.memories.map(m => m.id)).toEqual(['mem_b', 'mem_a']);
    expect(result.plan.update_memory).toEqual([{ kind: 'user_profile', content: 'Likes ablation grids.' }]);
    expect(result.notes).toEqual([]);
  });

  test('ids that were not candidates are dropped, and the drop is noted', async () => {
    t = await openTestLab({
      scripts: {
        planner: () =>
          JSON.stringify({
            selected_skill_ids: ['invented-skill', 'seed-variance'],
            selected_memory_ids: ['mem_zzz'],
            prompt_plan: 'Go.',
            update_memory: [],
            update_skill: [{ skill_id: 'nope', note: 'x' }]
          })
      }
    });
    const result = await new Planner(t.lab.store, t.lab.llm).plan(request);
    expect(result.plan.selected_skill_ids).toEqual(['seed-variance']);
    expect(result.plan.selected_memory_ids).toEqual([]);
    expect(result.plan.update_skill).toEqual([]);
    expect(result.notes).toEqual([
      'planner selected skill ids that were not candidates, dropped: invented-skill',
      'planner selected memory ids that were not candidates, dropped: mem_zzz',
      "planner noted an update for skill 'nope', which was not a candidate: dropped"
    ]);
    const call = await storedCall(t);
    expect(call.fallback).toBeNull();
    expect(call.parsed!.selected_skill_ids).toEqual(['seed-variance']);
  });

  test('malformed planner output (after the re-ask) falls back to the top 3 with the reason', async () => {
    t = await openTestLab({ scripts: { planner: () => 'I would pick the linear baseline skill.' } });
    const result = await new Planner(t.lab.store, t.lab.llm).plan(request);
    expect(t.server.chatRequests.filter(r => r.model === 'planner')).toHaveLength(2); // asked, then re-asked once
    expect(result.plan).toEqual({
      selected_skill_ids: ['linear-baseline', 'ablation-grid', 'seed-variance'],
      selected_memory_ids: ['mem_a', 'mem_b', 'mem_c'],
      prompt_plan: FALLBACK_PROMPT_PLAN,
      update_memory: [],
      update_skill: []
    });
    const call = await storedCall(t);
    expect(call.fallback).toMatch(/^planner failed, used the top 3 of each: The model's answer does not match the JSON schema/);
    expect(call.y).toBe('I would pick the linear baseline skill.');
    expect(result.notes).toEqual([call.fallback]);
  });

  test('an LLM error falls back with the error as the reason', async () => {
    t = await openTestLab({ scripts: { planner: () => ({ status: 500, body: { error: { message: 'model crashed', type: 'server_error' } } }) } });
    const result = await new Planner(t.lab.store, t.lab.llm).plan(request);
    const call = await storedCall(t);
    expect(call.fallback).toMatch(/^planner failed, used the top 3 of each: .*500/);
    expect(call.y).toBe('');
    expect(result.skills.map(s => s.id)).toEqual(['linear-baseline', 'ablation-grid', 'seed-variance']);
  });

  test('planner disabled: no model call, fallback reason "planner disabled"', async () => {
    t = await openTestLab();
    const result = await new Planner(t.lab.store, t.lab.llm).plan({ ...request, enabled: false });
    expect(t.server.chatRequests).toHaveLength(0);
    expect((await storedCall(t)).fallback).toBe('planner disabled');
    expect(result.memories.map(m => m.id)).toEqual(['mem_a', 'mem_b', 'mem_c']);
  });
});
