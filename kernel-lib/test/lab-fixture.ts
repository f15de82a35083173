/**
 * Shared set-up of the planner, orchestrator, feedback and Lab tests: a Lab on a temporary
 * store, talking to the scripted OpenAI-compatible server, with a trivial stage function of our
 * own (one LLM call whose prompt names the stage run, so a stage that runs again is visible as a
 * new request on the server).
 */
import { promises as fs } from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { StageBundle } from '@nanoresearch/schema';
import { Lab, type LabOptions } from '../src/lab';
import type { LlmConfig } from '../src/llm';
import type { StageContext, StageFn, StageName, StageResult } from '../src/orchestrator';
import { routeByModel, startScriptedLlmServer, type LlmScript, type ScriptRequest } from '../src/testing';

export const MODELS = { default: 'default', planner: 'planner', judge: 'judge' };
/** The scripted models cost nothing; a price is needed all the same under the profiles' cost caps. */
const FREE = Object.fromEntries(Object.values(MODELS).map(model => [model, { inputPerMTok: 0, outputPerMTok: 0 }]));

/** The text of a request's messages, joined. */
export function requestText(req: { messages: Array<{ content: unknown }> }): string {
  return req.messages.map(m => String(m.content)).join('\n');
}

/** The smallest value a JSON schema accepts for each required property: a "nothing to add" answer. */
export function emptyAnswer(schema: Record<string, unknown>): unknown {
  const type = Array.isArray(schema.type) ? schema.type[0] : schema.type;
  if (schema.const !== undefined) return schema.const;
  if (Array.isArray(schema.enum)) return schema.enum[0];
  switch (type) {
    case 'object': {
      const properties = (schema.properties ?? {}) as Record<string, Record<string, unknown>>;
      const required = (schema.required ?? []) as string[];
      return Object.fromEntries(required.map(key => [key, emptyAnswer(properties[key] ?? {})]));
    }
    case 'array':
      return [];
    case 'string':
      return 'none';
    case 'number':
    case 'integer':
      return 0;
    case 'boolean':
      return false;
    case 'null':
      return null;
    default:
      return null;
  }
}

/** The JSON schema a request asked for (response_format json_schema), if any. */
export function requestedSchema(req: ScriptRequest): Record<string, unknown> | undefined {
  const format = req.response_format as { json_schema?: { schema?: Record<string, unknown> } } | undefined;
  return format?.json_schema?.schema;
}

/** Candidate ids listed in a planner input x ("- <id>: ..." / "- <id> [kind]: ..." lines). */
export function candidateIds(x: string, section: 'skills' | 'memories'): string[] {
  const heading = section === 'skills' ? '## Candidate skills' : '## Candidate memories';
  const start = x.indexOf(heading);
  if (start < 0) return [];
  const block = x.slice(start + heading.length).split('\n## ')[0];
  return [...block.matchAll(/^- ([^\s:[]+)/gm)].map(m => m[1]);
}

/** A planner that selects the first candidate of each kind, with a fixed plan. */
export const selectFirstPlanner: LlmScript = req => {
  const x = requestText(req);
  return JSON.stringify({
    selected_skill_ids: candidateIds(x, 'skills').slice(0, 1),
    selected_memory_ids: candidateIds(x, 'memories').slice(0, 1),
    prompt_plan: 'Start from the strongest simple baseline.',
    update_memory: [],
    update_skill: []
  });
};

/** A judge that has nothing to add (empty skill candidates, no memories). */
export const emptyJudge: LlmScript = req => JSON.stringify(emptyAnswer(requestedSchema(req) ?? { type: 'object' }));

/** The trivial stage: one 'ideation'-role call naming the stage run; records what it saw. */
export interface TrivialStageLog {
  calls: Array<{ stage: StageName; stageRunId: string; previous: string[]; guidance: string }>;
}

export function trivialStage(log: TrivialStageLog, extra: Partial<StageResult> = {}): StageFn {
  return async (ctx: StageContext) => {
    log.calls.push({ stage: ctx.stage, stageRunId: ctx.stageRunId, previous: Object.keys(ctx.previous), guidance: ctx.guidance });
    ctx.progress('asking the model', 0, 1);
    const answer = await ctx.llm.complete({
      role: 'ideation',
      messages: [{ role: 'user', content: `Stage ${ctx.stage} for run ${ctx.stageRunId}. ${ctx.guidance.slice(0, 200)}` }]
    });
    ctx.progress('asking the model', 1, 1);
    return {
      status: 'done',
      output: { stage: ctx.stage, answer: answer.text },
      summary: `${ctx.stage} done`,
      bundleOutputs: { analysis: answer.text },
      trajectory: `Asked the model for ${ctx.stage}; it answered ${answer.text}.`,
      markdown: `**${ctx.stage}**: ${answer.text}`,
      ...extra
    };
  };
}

export function allStages(fn: StageFn): Record<StageName, StageFn> {
  return { ideation: fn, planning: fn, experiment: fn, analysis: fn, writing: fn, review: fn };
}

export interface TestLab {
  lab: Lab;
  home: string;
  server: Awaited<ReturnType<typeof startScriptedLlmServer>>;
  log: TrivialStageLog;
  displays: Array<{ data: Record<string, unknown>; displayId: string; update: boolean }>;
  close(): Promise<void>;
}

/**
 * A Lab on a fresh temporary home, with the scripted server routing by model (planner, judge,
 * default). `scripts` override the default planner / judge / stage-model behaviour.
 */
export async function openTestLab(
  options: {
    scripts?: Partial<Record<keyof typeof MODELS, LlmScript>>;
    lab?: Partial<LabOptions>;
    llm?: Partial<LlmConfig>;
    /** Stage functions replacing the trivial one for some stages. */
    stages?: (log: TrivialStageLog) => Partial<Record<StageName, StageFn>>;
  } = {}
): Promise<TestLab> {
  const home = await fs.mkdtemp(path.join(os.tmpdir(), 'nr-lab-'));
  const server = await startScriptedLlmServer(
    routeByModel({
      planner: options.scripts?.planner ?? selectFirstPlanner,
      judge: options.scripts?.judge ?? emptyJudge,
      default: options.scripts?.default ?? (() => ({ content: 'an answer', usage: { prompt_tokens: 10, completion_tokens: 5 } }))
    })
  );
  const log: TrivialStageLog = { calls: [] };
  const displays: TestLab['displays'] = [];
  const lab = await Lab.open({
    home,
    // Workspaces inside the temporary home, not in the folder jest runs in.
    workspaces: path.join(home, 'projects'),
    llm: { provider: 'openai', baseURL: server.url, apiKey: 'test-key', models: MODELS, prices: FREE, maxRetries: 0, ...options.llm },
    stages: { ...allStages(trivialStage(log)), ...options.stages?.(log) },
    display: (message, update) => displays.push({ data: message.data, displayId: message.transient.display_id, update }),
    ...options.lab
  });
  return {
    lab,
    home,
    server,
    log,
    displays,
    async close() {
      await lab.close();
      await server.close();
      await fs.rm(home, { recursive: true, force: true });
    }
  };
}

/** The stage bundles a test display received, in order. */
export function shownBundles(displays: TestLab['displays']): StageBundle[] {
  return displays.map(d => d.data['application/vnd.nanoresearch.stage+json'] as StageBundle).filter(Boolean);
}
