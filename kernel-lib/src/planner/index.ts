import { PlannerOutputSchema, type Memory, type PlannerCall, type PlannerOutput, type Profile, type Skill } from '@nanoresearch/schema';
import { errorMessage } from '../error-message';
import { newId, nowIso } from '../ids';
import { extractJson, validateAgainst, type ChatMessage, type LedgerRowHolder, type Llm, type LlmActivityListener, type LlmAdapter } from '../llm';
import { renderEmbeddedPrompt } from '../llm/providers/local';
import { clipText, renderMemory } from '../records/memories';
import { renderProfileFor } from '../profiles';
import { insertPlannerCallOnce, plannerCallById, recentAnsweredPlannerCalls } from '../records';
import type { Store } from '../store';
import type { StageName } from '../stage-contract';

/** What each stage is asked to do: the task line of the planner's input x. */
export const STAGE_TASKS: Record<StageName, string> = {
  ideation: 'Survey the literature on the topic, find gaps and propose testable hypotheses; select one.',
  planning: 'Turn the selected hypothesis into an experiment blueprint with baselines, ablations and success criteria within budget.',
  experiment: 'Write and run the experiment code; debug failures; produce measured metrics.',
  analysis: 'Analyse the measured results honestly: comparisons, effect sizes, what the evidence supports.',
  writing: 'Write the paper section by section; every number must come from a measured artifact.',
  review: 'Review the paper section by section, score it, check citations and revise weak sections.'
};

/** How many top-ranked candidates of each kind the fallback plan uses. */
export const FALLBACK_TOP_K = 3;
export const FALLBACK_PROMPT_PLAN = 'Use the top-ranked skills and memories where they directly help this stage.';
/** prompt_plan's bound: about 40 words, rendered into every stage prompt. */
export const MAX_PROMPT_PLAN_CHARS = 280;
/** Most ids of each kind a plan selects: a focused subset, and a short answer for a small model. */
export const MAX_SELECTED = 4;
/** update_memory / update_skill: at most this many entries of this many characters. */
const MAX_UPDATES = 2;
const MAX_UPDATE_CHARS = 120;
/**
 * The token cap of a planner call: room for the longest answer its schema allows, so the grammar
 * (which bounds every part) and never the cap ends a plan — a truncated answer would be no plan.
 * An ASCII token is at least one character; the margin covers the whitespace the grammar lets a
 * model put between JSON tokens.
 */
export function plannerMaxTokens(schema: Record<string, unknown>): number {
  return Math.ceil(longestJsonChars(schema) * 1.25) + 32;
}

/** Characters of the longest JSON text `schema` admits (strings bounded by maxLength or an enum, arrays by maxItems). */
export function longestJsonChars(schema: Record<string, unknown>): number {
  const node = schema as {
    type?: string;
    enum?: unknown[];
    maxLength?: number;
    maxItems?: number;
    items?: Record<string, unknown>;
    properties?: Record<string, Record<string, unknown>>;
  };
  if (node.enum) return Math.max(...node.enum.map(v => JSON.stringify(v).length));
  switch (node.type) {
    case 'string':
      if (node.maxLength === undefined) throw new Error('a planner schema string needs a maxLength: the answer must be bounded');
      return node.maxLength + 2;
    case 'array': {
      const items = node.maxItems ?? 0;
      return 2 + (items && node.items ? items * (longestJsonChars(node.items) + 1) : 0);
    }
    case 'object':
      return 2 + Object.entries(node.properties ?? {}).reduce((sum, [key, value]) => sum + key.length + 4 + longestJsonChars(value), 0);
    default:
      throw new Error(`a planner schema node of type ${node.type ?? '(none)'} has no bounded length`);
  }
}
/** Candidate texts are cut to these lengths in x: x must stay short for a small planner model. */
const SKILL_TEXT_CHARS = 160;
const MEMORY_TEXT_CHARS = 220;

/**
 * The adapter the planner runs with: the trainer client's `activeAdapter(store)` (its
 * ActiveAdapter), typed from the LLM layer below so the planner does not import the trainer.
 */
export type PlannerAdapter = LlmAdapter & { version: string };

export interface PlanRequest {
  stageRunId: string;
  stage: StageName;
  topic: string;
  profile: Profile;
  /** Retrieved candidates, best first. */
  skills: Skill[];
  memories: Memory[];
  /** False when the planner ablation is off: the fallback plan is used without asking the model. */
  enabled?: boolean;
  /** Told of the planner's LLM call as it runs and ends (the live stage card counts its tokens). */
  onActivity?: LlmActivityListener;
  /** Takes the accounting rows of the planner's LLM calls, for the caller to commit with `call`; absent: each call commits its own. */
  ledgerRows?: LedgerRowHolder;
}

export interface PlanResult {
  /** y after id validation, or the fallback plan. */
  plan: PlannerOutput;
  skills: Skill[];
  memories: Memory[];
  /** The planner_calls row of this call, for the caller to commit (with its stage run, in one write). */
  call: PlannerCall;
  /** What was dropped or why the fallback was used, for the stage's record. */
  notes: string[];
}

/**
 * The planner step: builds x from the stage task, the profile and the retrieved candidates
 * (with their ids), asks the planner model (role 'planner', with the active LoRA adapter) for
 * y, keeps only ids that were among the candidates, and falls back to the top 3 of each when
 * the model fails. It writes nothing but its LLM calls' accounting (and not that when given
 * `ledgerRows`): it returns the planner_calls row, whose exact x and y strings are the SDPO
 * training input and output, and the orchestrator commits it together with the stage run it
 * planned and the held accounting rows.
 */
export class Planner {
  constructor(
    private readonly llm: Llm,
    private readonly activeAdapter: () => Promise<PlannerAdapter | null> = async () => null
  ) {}

  /** Plans one stage: the plan, what it selected, and the planner call to store. */
  async plan(request: PlanRequest): Promise<PlanResult> {
    const { onActivity, ledgerRows } = request;
    const llm = onActivity || ledgerRows ? this.llm.scoped({ onActivity, holdLedger: ledgerRows }) : this.llm;
    const userText = buildPlannerInput(request);
    const schema = plannerSchemaFor(request);
    const notes: string[] = [];
    let x = userText;
    let y = '';
    let model = plannerModel(llm);
    let adapterVersion: string | null = null;
    let fallback: string | null = null;
    let plan: PlannerOutput;

    if (request.enabled === false) {
      fallback = 'planner disabled';
      plan = fallbackPlan(request);
      // x as the planner would have seen it, so feedback on this stage can still train (re-sampled y).
      x = await plannerPrompt(llm, userText, schema).catch(() => userText);
    } else {
      try {
        x = await plannerPrompt(llm, userText, schema);
        const answer = await askPlanner(llm, userText, schema, await this.activeAdapter(), request.stageRunId);
        ({ y, model, adapterVersion } = answer);
        plan = keepCandidateIds(answer.value, request, notes);
      } catch (error) {
        // Under the per-call schema a valid model cannot answer wrongly: reaching here is a model
        // or server error. Keep what it did say: it explains the failure.
        if (error instanceof PlannerAnswerError) ({ y, model, adapterVersion } = error);
        fallback = `planner model error, used the top ${FALLBACK_TOP_K} of each: ${errorMessage(error)}`;
        plan = fallbackPlan(request);
      }
    }
    if (fallback) notes.push(fallback);

    const call: PlannerCall = {
      id: newId('plan'),
      stage_run_id: request.stageRunId,
      stage: request.stage,
      x,
      y,
      // The plan the stage actually used: y after id validation, or the fallback plan.
      parsed: plan,
      candidate_skill_ids: request.skills.map(s => s.id),
      candidate_memory_ids: request.memories.map(m => m.id),
      model,
      adapter_version: adapterVersion,
      fallback,
      created_at: nowIso()
    };
    const skillsById = new Map(request.skills.map(s => [s.id, s]));
    const memoriesById = new Map(request.memories.map(m => [m.id, m]));
    return {
      plan,
      skills: plan.selected_skill_ids.map(id => skillsById.get(id)!),
      memories: plan.selected_memory_ids.map(id => memoriesById.get(id)!),
      call,
      notes
    };
  }
}

/** The embedded or served model the planner role runs on. */
function plannerModel(llm: Llm): string {
  return llm.config.models.planner ?? llm.config.models.default;
}

/** The planner's messages: the whole instruction (buildPlannerInput) as the one user turn. */
function plannerMessages(userText: string): ChatMessage[] {
  return [{ role: 'user', content: userText }];
}

/**
 * x, the exact prompt the planner model is given for `userText`. With the embedded model: the
 * whole prompt after the model's chat template, system message (the JSON instruction) included,
 * up to and including the assistant header, as the text of the very token ids the model
 * evaluates (special tokens written out, e.g. `<|im_start|>`); the trainer tokenises this text
 * back to the same ids and scores y right after it. With an OpenAI-compatible server, which
 * applies the template itself: the user message, which the trainer renders as the one user turn.
 */
export async function plannerPrompt(llm: Llm, userText: string, schema: Record<string, unknown>): Promise<string> {
  if (llm.config.provider !== 'local') return userText;
  const rendered = await renderEmbeddedPrompt(llm.config.modelsDir, { model: plannerModel(llm), messages: plannerMessages(userText), jsonSchema: schema });
  return rendered.text;
}

/**
 * The user message inside a stored x: the inverse of plannerPrompt for the current planner
 * model (x = the rendering's prefix + user message + suffix, and rendering that message again
 * must give x exactly), or null when x is not this model's rendering of any planner call.
 */
export async function plannerUserText(llm: Llm, x: string, schema: Record<string, unknown>): Promise<string | null> {
  if (llm.config.provider !== 'local') return x;
  const marker = '\u241eNANORESEARCH_USER_TEXT\u241e';
  const probe = await plannerPrompt(llm, marker, schema);
  const at = probe.indexOf(marker);
  const [prefix, suffix] = [probe.slice(0, at), probe.slice(at + marker.length)];
  if (at < 0 || !x.startsWith(prefix) || !x.endsWith(suffix) || x.length < prefix.length + suffix.length) return null;
  const userText = x.slice(prefix.length, x.length - suffix.length);
  return (await plannerPrompt(llm, userText, schema)) === x ? userText : null;
}

/** A planner answer that is not a plan under the call's schema; carries what the model said. */
class PlannerAnswerError extends Error {
  constructor(
    message: string,
    readonly y: string,
    readonly model: string,
    readonly adapterVersion: string | null
  ) {
    super(message);
  }
}

/**
 * One planner generation: the messages of plannerMessages(userText) under the call's schema
 * (the grammar on the embedded model), greedy, with the active adapter. No re-ask: y must be the
 * answer to x itself, or the pair would not be a training example.
 */
async function askPlanner(
  llm: Llm,
  userText: string,
  schema: Record<string, unknown>,
  adapter: PlannerAdapter | null,
  stageRunId: string | null
): Promise<{ y: string; value: PlannerOutput; model: string; adapterVersion: string | null }> {
  const adapterVersion = adapter?.version ?? null;
  const response = await llm.complete({
    role: 'planner',
    messages: plannerMessages(userText),
    jsonSchema: schema,
    schemaName: 'planner_output',
    temperature: 0,
    maxTokens: plannerMaxTokens(schema),
    adapter,
    stageRunId
  });
  const found = extractJson(response.text);
  const errors = found ? validateAgainst(schema, found.value) : ['the answer contains no JSON object'];
  if (errors.length) {
    throw new PlannerAnswerError(`the answer does not match the call's schema: ${errors.join('; ')}`, response.text, response.model, adapterVersion);
  }
  return { y: response.text, value: found!.value as PlannerOutput, model: response.model, adapterVersion };
}

/** The id of the re-sampled planner call that stands in for fallback call `callId` in training. */
export function resampledCallId(callId: string): string {
  return `${callId}-resampled`;
}

/**
 * Makes a fallback planner call trainable: asks the current planner (the active adapter) for its
 * own answer to the very x the stage's call stored, and stores that as a planner call of its own
 * (id resampledCallId(call.id), same stage run, fallback null; the stage run still points at the
 * plan it used). SDPO needs y from the policy and the user's hindsight on the stage: feedback on a
 * stage that ran on the fallback plan (planner off, or a model error) is hindsight about what the
 * stage should have done for this x, and the re-sampled y is the policy's own attempt at it.
 * Idempotent: a call re-sampled before returns that row. Returns the row, or why it cannot be made.
 */
export async function resamplePlannerCall(
  store: Store,
  llm: Llm,
  callId: string,
  activeAdapter: () => Promise<PlannerAdapter | null> = async () => null
): Promise<{ call: PlannerCall } | { reason: string }> {
  const read = (id: string) => store.read(q => plannerCallById(q, id));
  const existing = await read(resampledCallId(callId));
  if (existing) return { call: existing };
  const original = await read(callId);
  if (!original) return { reason: `there is no planner call '${callId}' in this store` };
  if (!original.fallback) return { call: original };
  const asked = await askAgain(llm, original, await activeAdapter(), original.stage_run_id);
  if ('reason' in asked) return asked;
  const { answer, request } = asked;
  const call: PlannerCall = {
    ...original,
    id: resampledCallId(callId),
    y: answer.y,
    parsed: keepCandidateIds(answer.value, request, []),
    model: answer.model,
    adapter_version: answer.adapterVersion,
    fallback: null,
    created_at: nowIso()
  };
  await store.write(q => insertPlannerCallOnce(q, call));
  return { call: (await read(call.id)) ?? call };
}

/**
 * The planner's answer, with `adapter`, to the very x a stored call holds; or why it cannot be
 * asked. `stageRunId` is the stage run its LLM call is accounted to (null: to none).
 */
async function askAgain(
  llm: Llm,
  original: PlannerCall,
  adapter: PlannerAdapter | null,
  stageRunId: string | null
): Promise<{ answer: Awaited<ReturnType<typeof askPlanner>>; request: Pick<PlanRequest, 'skills' | 'memories'> } | { reason: string; notAPlan?: string }> {
  const request = {
    skills: (original.candidate_skill_ids ?? []).map(id => ({ id })) as Skill[],
    memories: (original.candidate_memory_ids ?? []).map(id => ({ id })) as Memory[]
  };
  const schema = plannerSchemaFor(request);
  const userText = await plannerUserText(llm, original.x, schema);
  if (userText === null) {
    return {
      reason: `its stored prompt x is not what the current planner model (${plannerModel(llm)}) renders for a planner call, so the planner cannot be asked the same x again`
    };
  }
  try {
    return { answer: await askPlanner(llm, userText, schema, adapter, stageRunId), request };
  } catch (error) {
    const reason = `re-asking the planner for its own plan failed: ${errorMessage(error)}`;
    return error instanceof PlannerAnswerError ? { reason, notAPlan: error.y } : { reason };
  }
}

/** Fewest words in a prompt_plan a stage can follow (the fallback plan has 14). */
const MIN_PLAN_WORDS = 4;
const ANSWER_KEYS = /"(selected_skill_ids|selected_memory_ids|prompt_plan|update_memory|update_skill)"/;

/**
 * Why a schema-valid plan still says nothing a stage can follow, or null. Training can drift a
 * small planner into such answers: the personalization benchmark's third rounds saw prompt_plan
 * '...' on every held-out topic at one learning rate, and the answer's own JSON opening
 * ('{"selected_skill_ids": [') written into prompt_plan at another.
 */
export function emptyPlanReason(plan: Pick<PlannerOutput, 'prompt_plan'>): string | null {
  const text = plan.prompt_plan;
  if (ANSWER_KEYS.test(text)) return 'prompt_plan holds JSON of the answer itself';
  const words = text.toLowerCase().match(/\p{L}{2,}/gu) ?? [];
  if (words.length < MIN_PLAN_WORDS) return `prompt_plan has ${words.length} word${words.length === 1 ? '' : 's'}`;
  if (words.length >= 12 && new Set(words).size < words.length / 4) return 'prompt_plan repeats a few words';
  return null;
}

/** One answer of checkPlanner: the plan the checked adapter gave for a stored call's x, beside the stored one. */
export interface PlanCheck {
  callId: string;
  promptPlan: string;
  /** emptyPlanReason of this answer. */
  empty: string | null;
  /** emptyPlanReason of the stored answer (what the planner said before). */
  emptyBefore: string | null;
}

/**
 * Asks the planner with `adapter` for the x of the `count` latest answered planner calls, and
 * judges each answer with emptyPlanReason beside the stored one: how the trainer client checks a
 * new adapter before the planner uses it. An answer that is no plan at all is an empty one; a call
 * that could not be asked (its x is another model's rendering, the endpoint failed) is skipped, with why.
 */
export async function checkPlanner(store: Store, llm: Llm, adapter: PlannerAdapter, count: number): Promise<{ checks: PlanCheck[]; skipped: string[] }> {
  const checks: PlanCheck[] = [];
  const skipped: string[] = [];
  for (const call of await store.read(q => recentAnsweredPlannerCalls(q, count))) {
    const asked = await askAgain(llm, call, adapter, null); // the check is training's cost, not the stage's
    if ('reason' in asked && asked.notAPlan === undefined) {
      skipped.push(asked.reason);
      continue;
    }
    const before = (call.parsed as PlannerOutput | null)?.prompt_plan;
    checks.push({
      callId: call.id,
      ...('reason' in asked
        ? { promptPlan: asked.notAPlan!, empty: "the answer is not a plan under the call's schema" }
        : { promptPlan: asked.answer.value.prompt_plan, empty: emptyPlanReason(asked.answer.value) }),
      emptyBefore: before === undefined ? null : emptyPlanReason({ prompt_plan: before })
    });
  }
  return { checks, skipped };
}

/**
 * The planner input x. Compact and deterministic: the same stage, topic, profile and candidates
 * (in the same order) always give the same string, because x is what SDPO trains on and what a
 * later round must be able to reproduce. The whole instruction is this one user message; the
 * stored x is this message as the planner model is given it (plannerPrompt).
 */
export function buildPlannerInput(request: Pick<PlanRequest, 'stage' | 'topic' | 'profile' | 'skills' | 'memories'>): string {
  const skills = request.skills.map(s => `- ${s.id}: ${s.name}. ${clipText(s.description, SKILL_TEXT_CHARS)}`);
  const memories = request.memories.map(m => `- ${m.id} ${renderMemory(m, { maxChars: MEMORY_TEXT_CHARS })}`);
  return [
    'You plan one stage of a research project for this researcher. Choose the skills and memories the stage',
    'should follow and say in prompt_plan (under 40 words) how to approach it for this researcher.',
    'Answer with one JSON object: {"selected_skill_ids": [...], "selected_memory_ids": [...], "prompt_plan": "...",',
    '"update_memory": [{"kind": "...", "content": "..."}], "update_skill": [{"skill_id": "...", "note": "..."}]}.',
    'Use only ids listed below; select a focused subset. Leave update_memory and update_skill empty unless a',
    'stable preference or a reusable rule is evident.',
    '',
    `## Stage: ${request.stage}`,
    STAGE_TASKS[request.stage],
    `Topic: ${request.topic.trim()}`,
    '',
    '## Researcher profile',
    renderProfileFor(request.stage, request.profile).trim(),
    '',
    '## Candidate skills',
    ...(skills.length ? skills : ['(none)']),
    '',
    '## Candidate memories',
    ...(memories.length ? memories : ['(none)'])
  ].join('\n');
}

/**
 * The decoding constraint of one planner call, built from its candidates: ids are an enum of the
 * candidate ids (at most MAX_SELECTED, none when there are no candidates), the plan and updates
 * bounded. Under it any model, the embedded 135M one included, writes a valid plan with real ids in
 * a few dozen tokens; it is also what the answer is validated against.
 */
export function plannerSchemaFor(request: Pick<PlanRequest, 'skills' | 'memories'>): Record<string, unknown> {
  const base = PlannerOutputSchema as unknown as { properties: Record<string, { items?: { properties: Record<string, unknown> } }> };
  const idList = (ids: string[]) =>
    // No uniqueItems: a grammar cannot enforce it, and a repeated id is harmless (keepCandidateIds collapses it).
    ids.length ? { type: 'array', items: { type: 'string', enum: ids }, maxItems: Math.min(MAX_SELECTED, ids.length) } : { type: 'array', maxItems: 0 };
  const skillIds = request.skills.map(s => s.id);
  return {
    title: 'PlannerOutput',
    type: 'object',
    additionalProperties: false,
    properties: {
      selected_skill_ids: idList(skillIds),
      selected_memory_ids: idList(request.memories.map(m => m.id)),
      prompt_plan: { type: 'string', minLength: 1, maxLength: MAX_PROMPT_PLAN_CHARS },
      update_memory: {
        type: 'array',
        maxItems: MAX_UPDATES,
        items: {
          type: 'object',
          additionalProperties: false,
          properties: {
            kind: base.properties.update_memory.items!.properties.kind,
            content: { type: 'string', minLength: 1, maxLength: MAX_UPDATE_CHARS }
          },
          required: ['kind', 'content']
        }
      },
      update_skill: skillIds.length
        ? {
            type: 'array',
            maxItems: MAX_UPDATES,
            items: {
              type: 'object',
              additionalProperties: false,
              properties: { skill_id: { type: 'string', enum: skillIds }, note: { type: 'string', minLength: 1, maxLength: MAX_UPDATE_CHARS } },
              required: ['skill_id', 'note']
            }
          }
        : { type: 'array', maxItems: 0 }
    },
    required: ['selected_skill_ids', 'selected_memory_ids', 'prompt_plan', 'update_memory', 'update_skill']
  };
}

/** The plan used when the planner is off or failed: the top-ranked candidates of each kind. */
export function fallbackPlan(request: Pick<PlanRequest, 'skills' | 'memories'>): PlannerOutput {
  return {
    selected_skill_ids: request.skills.slice(0, FALLBACK_TOP_K).map(s => s.id),
    selected_memory_ids: request.memories.slice(0, FALLBACK_TOP_K).map(m => m.id),
    prompt_plan: FALLBACK_PROMPT_PLAN,
    update_memory: [],
    update_skill: []
  };
}

/** y with every id that was not a candidate removed (and noted), duplicates collapsed. */
function keepCandidateIds(output: PlannerOutput, request: Pick<PlanRequest, 'skills' | 'memories'>, notes: string[]): PlannerOutput {
  const skillIds = new Set(request.skills.map(s => s.id));
  const memoryIds = new Set(request.memories.map(m => m.id));
  const keep = (ids: string[], allowed: Set<string>, what: string): string[] => {
    const unknown = ids.filter(id => !allowed.has(id));
    if (unknown.length) notes.push(`planner selected ${what} ids that were not candidates, dropped: ${unknown.join(', ')}`);
    return [...new Set(ids.filter(id => allowed.has(id)))];
  };
  return {
    selected_skill_ids: keep(output.selected_skill_ids, skillIds, 'skill'),
    selected_memory_ids: keep(output.selected_memory_ids, memoryIds, 'memory'),
    prompt_plan: output.prompt_plan.slice(0, MAX_PROMPT_PLAN_CHARS),
    update_memory: output.update_memory,
    update_skill: output.update_skill.filter(u => {
      if (u.skill_id === undefined || skillIds.has(u.skill_id)) return true;
      notes.push(`planner noted an update for skill '${u.skill_id}', which was not a candidate: dropped`);
      return false;
    })
  };
}
