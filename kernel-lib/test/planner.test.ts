/**
 * Planner: x built deterministically from stage task + profile + candidates with ids; x and y
 * kept exactly in the planner call it returns (it writes nothing); the answer constrained per call to the candidate ids; a model error falls back
 * to the top 3, recorded as such.
 */
import type { Memory, PlannerCall, Skill } from '@nanoresearch/schema';
import {
  Planner,
  buildPlannerInput,
  FALLBACK_PROMPT_PLAN,
  longestJsonChars,
  MAX_PROMPT_PLAN_CHARS,
  MAX_SELECTED,
  plannerMaxTokens,
  plannerSchemaFor
} from '../src/planner';
import { validateAgainst } from '../src/llm';
import { getArchetype } from '../src/profiles';
import { schemaErrors } from '../src/validate';
import { openTestLab, requestText, type TestLab } from './lab-fixture';

/** The parts of a JSON Schema node these tests read (each node has only some). */
interface SchemaNode {
  type?: string;
  enum?: string[];
  maxLength?: number;
  maxItems?: number;
  items?: SchemaNode;
  properties?: Record<string, SchemaNode>;
}

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

async function storedCalls(t: TestLab): Promise<PlannerCall[]> {
  return t.lab.store.read(q => q.all<PlannerCall>('select * from planner_calls'));
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

  test('the token cap fits the longest answer the call schema admits, so no valid plan is cut off', () => {
    // The longest answer: every array at maxItems, every string at maxLength or its longest enum value.
    const longest = (node: SchemaNode): unknown => {
      if (node.enum) return [...node.enum].sort((a, b) => b.length - a.length)[0];
      if (node.type === 'string') return 'x'.repeat(node.maxLength ?? 0);
      if (node.type === 'array') return Array.from({ length: node.maxItems ?? 0 }, () => longest(node.items ?? {}));
      return Object.fromEntries(Object.entries(node.properties ?? {}).map(([key, value]) => [key, longest(value)]));
    };
    for (const candidates of [request, { skills: [], memories: [] }]) {
      const schema = plannerSchemaFor(candidates);
      const answer = longest(schema as SchemaNode);
      expect(validateAgainst(schema, answer)).toEqual([]);
      expect(JSON.stringify(answer).length).toBeLessThanOrEqual(longestJsonChars(schema));
      // Each token of an ASCII answer is at least one character.
      expect(plannerMaxTokens(schema)).toBeGreaterThan(JSON.stringify(answer, null, 1).length);
    }
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
    const planner = new Planner(t.lab.llm, async () => ({
      version: 'v7',
      name: 'nanoresearch-v7',
      ggufPath: '/adapters/v7/adapter.gguf',
      peftDir: '/adapters/v7/peft'
    }));
    const result = await planner.plan(request);

    const sent = t.server.chatRequests.filter(r => r.model === 'planner');
    expect(sent).toHaveLength(1);
    const call = result.call;
    // The planner is pure: it returns the row, the orchestrator commits it with its stage run.
    expect(await storedCalls(t)).toEqual([]);
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

  test('each call is constrained to its candidates: ids are an enum of them, every part bounded', async () => {
    const schema = plannerSchemaFor(request) as { properties: Record<string, SchemaNode> };
    expect(schema.properties.selected_skill_ids.items?.enum).toEqual(skills.map(s => s.id));
    expect(schema.properties.selected_memory_ids.items?.enum).toEqual(memories.map(m => m.id));
    expect(schema.properties.selected_skill_ids.maxItems).toBe(Math.min(MAX_SELECTED, skills.length));
    expect(schema.properties.prompt_plan.maxLength).toBe(MAX_PROMPT_PLAN_CHARS);
    expect(schema.properties.update_skill.items?.properties?.skill_id.enum).toEqual(skills.map(s => s.id));
    // Without candidates nothing can be selected: not even an invented id is expressible.
    const none = plannerSchemaFor({ skills: [], memories: [] }) as { properties: Record<string, SchemaNode> };
    expect(none.properties.selected_skill_ids).toEqual({ type: 'array', maxItems: 0 });
    expect(validateAgainst(none, { selected_skill_ids: ['x'], selected_memory_ids: [], prompt_plan: 'p', update_memory: [], update_skill: [] })).not.toEqual(
      []
    );
    // Every answer the schema admits is a valid PlannerOutput.
    const answer = {
      selected_skill_ids: ['seed-variance'],
      selected_memory_ids: ['mem_a'],
      prompt_plan: 'Go.',
      update_memory: [],
      update_skill: [{ skill_id: 'seed-variance', note: 'n' }]
    };
    expect(validateAgainst(schema, answer)).toEqual([]);
    expect(schemaErrors('planner-output', answer)).toEqual([]);

    // A server that does not enforce the schema and names an id outside the candidates is a model error: no
    // re-ask (y must be the answer to x itself, or x and y would not be a training pair), the fallback, the reason.
    t = await openTestLab({
      scripts: { planner: () => JSON.stringify({ ...answer, selected_skill_ids: ['invented-skill', 'seed-variance'], update_skill: [] }) }
    });
    const result = await new Planner(t.lab.llm).plan(request);
    const sent = t.server.chatRequests.filter(r => r.model === 'planner');
    expect(sent).toHaveLength(1);
    expect(requestText(sent[0])).toContain(buildPlannerInput(request));
    const call = result.call;
    expect(call.fallback).toMatch(/^planner model error, used the top 3 of each: the answer does not match the call's schema: .*must be one of/);
    expect(result.plan.selected_skill_ids).toEqual(['linear-baseline', 'ablation-grid', 'seed-variance']);
  });

  test('malformed planner output falls back to the top 3 with the reason, without a re-ask', async () => {
    t = await openTestLab({ scripts: { planner: () => 'I would pick the linear baseline skill.' } });
    const result = await new Planner(t.lab.llm).plan(request);
    expect(t.server.chatRequests.filter(r => r.model === 'planner')).toHaveLength(1);
    expect(result.plan).toEqual({
      selected_skill_ids: ['linear-baseline', 'ablation-grid', 'seed-variance'],
      selected_memory_ids: ['mem_a', 'mem_b', 'mem_c'],
      prompt_plan: FALLBACK_PROMPT_PLAN,
      update_memory: [],
      update_skill: []
    });
    const call = result.call;
    expect(call.fallback).toBe("planner model error, used the top 3 of each: the answer does not match the call's schema: the answer contains no JSON object");
    expect(call.y).toBe('I would pick the linear baseline skill.');
    expect(result.notes).toEqual([call.fallback]);
  });

  test('an LLM error falls back with the error as the reason', async () => {
    t = await openTestLab({ scripts: { planner: () => ({ status: 500, body: { error: { message: 'model crashed', type: 'server_error' } } }) } });
    const result = await new Planner(t.lab.llm).plan(request);
    const call = result.call;
    expect(call.fallback).toMatch(/^planner model error, used the top 3 of each: .*500/);
    expect(call.y).toBe('');
    expect(result.skills.map(s => s.id)).toEqual(['linear-baseline', 'ablation-grid', 'seed-variance']);
  });

  test('planner disabled: no model call, fallback reason "planner disabled"', async () => {
    t = await openTestLab();
    const result = await new Planner(t.lab.llm).plan({ ...request, enabled: false });
    expect(t.server.chatRequests).toHaveLength(0);
    expect(result.call.fallback).toBe('planner disabled');
    expect(result.memories.map(m => m.id)).toEqual(['mem_a', 'mem_b', 'mem_c']);
  });
});

describe('validateAgainst on per-call schemas', () => {
  const schemaOf = (skillIds: string[]) => plannerSchemaFor({ skills: skillIds.map(id => ({ id }) as Skill), memories: [] });
  const answer = (skillId: string) => ({ selected_skill_ids: [skillId], selected_memory_ids: [], prompt_plan: 'p', update_memory: [], update_skill: [] });

  it("checks each call's own candidate ids, though schemas of one shape share a validator", () => {
    expect(validateAgainst(schemaOf(['sk_a', 'sk_b']), answer('sk_a'))).toEqual([]);
    expect(validateAgainst(schemaOf(['sk_c', 'sk_d']), answer('sk_a'))).toEqual(['/selected_skill_ids/0: must be one of ["sk_c","sk_d"]']);
    expect(validateAgainst(schemaOf(['sk_c', 'sk_d']), { ...answer('sk_c'), update_skill: [{ skill_id: 'sk_a', note: 'n' }] })).toEqual([
      '/update_skill/0/skill_id: must be one of ["sk_c","sk_d"]'
    ]);
  });

  it('still checks an enum under a combinator, and the rest of the schema beside the ids', () => {
    expect(validateAgainst({ anyOf: [{ enum: [1] }, { type: 'string' }] }, 2)).toContain('(root): must be one of [1]');
    expect(validateAgainst(schemaOf(['sk_a']), { ...answer('sk_a'), prompt_plan: 3 })).toEqual(['/prompt_plan: must be string']);
  });
});
