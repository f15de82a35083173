import { existsSync, statSync } from 'fs';
import * as path from 'path';
import { embeddedRoleModels } from './embedded';
import { ROLES, type JsonMode, type LlmConfig, type LoraServerKind, type ModelPrice, type PlannerServerConfig } from './types';

/** Model name the OpenAI-compatible provider uses when NANORESEARCH_MODEL is not set. */
export const DEFAULT_REMOTE_MODEL = 'gpt-4o-mini';

const JSON_MODES: readonly JsonMode[] = ['json_schema', 'json_object', 'none'];
const LORA_SERVER_KINDS: readonly LoraServerKind[] = ['vllm', 'llama.cpp'];

/**
 * The LLM configuration from environment variables:
 * - NANORESEARCH_LLM_BASE_URL (or OPENAI_BASE_URL) selects an OpenAI-compatible server, with
 *   NANORESEARCH_LLM_API_KEY (or OPENAI_API_KEY); NANORESEARCH_JSON_MODE = json_schema | json_object | none.
 * - Otherwise the embedded models (kernel-lib/embedded-models.json: a stage model and a small planner)
 *   from $NANORESEARCH_MODELS_DIR, or the repository's models/ folder.
 * - NANORESEARCH_MODEL names the default model, NANORESEARCH_MODEL_<ROLE> (e.g. _PLANNER) one role's;
 *   for the embedded provider a name is an embedded model's or a .gguf file's.
 * - NANORESEARCH_PLANNER_BASE_URL puts the planner role on its own LoRA-serving endpoint (each
 *   user's adapter served on one base model: llm/lora-server.ts), with NANORESEARCH_PLANNER_API_KEY
 *   and NANORESEARCH_PLANNER_SERVER = vllm (default) | llama.cpp; NANORESEARCH_MODEL_PLANNER must
 *   name the base model it serves.
 * - NANORESEARCH_LLM_THREADS, NANORESEARCH_LLM_TIMEOUT_MS, NANORESEARCH_LLM_MAX_RETRIES, and NANORESEARCH_LLM_PRICES
 *   (JSON: {"model": {"inputPerMTok": 0.15, "outputPerMTok": 0.6}}).
 */
export function llmConfigFromEnv(env: NodeJS.ProcessEnv = process.env): LlmConfig {
  const baseURL = env.NANORESEARCH_LLM_BASE_URL || env.OPENAI_BASE_URL;
  const local = !baseURL;
  // The embedded roles apply only while nothing overrides the default: a model named for all
  // roles is meant for all of them.
  const models: LlmConfig['models'] = env.NANORESEARCH_MODEL
    ? { default: env.NANORESEARCH_MODEL }
    : local
      ? embeddedRoleModels()
      : { default: DEFAULT_REMOTE_MODEL };
  for (const role of ROLES) {
    const model = env[`NANORESEARCH_MODEL_${role.toUpperCase()}`];
    if (model) models[role] = model;
  }
  const config: LlmConfig = local
    ? { provider: 'local', models, modelsDir: localModelsDir(env) }
    : { provider: 'openai', baseURL, apiKey: env.NANORESEARCH_LLM_API_KEY || env.OPENAI_API_KEY, models };
  const plannerServer = plannerServerFromEnv(env);
  if (plannerServer) config.plannerServer = plannerServer;
  const jsonMode = env.NANORESEARCH_JSON_MODE;
  if (jsonMode) {
    if (!JSON_MODES.includes(jsonMode as JsonMode)) {
      throw new Error(`NANORESEARCH_JSON_MODE=${jsonMode} is not one of ${JSON_MODES.join(', ')}`);
    }
    config.jsonMode = jsonMode as JsonMode;
  }
  const threads = positiveInt(env, 'NANORESEARCH_LLM_THREADS');
  if (threads !== undefined) config.threads = threads;
  const timeoutMs = positiveInt(env, 'NANORESEARCH_LLM_TIMEOUT_MS');
  if (timeoutMs !== undefined) config.timeoutMs = timeoutMs;
  const maxRetries = positiveInt(env, 'NANORESEARCH_LLM_MAX_RETRIES');
  if (maxRetries !== undefined) config.maxRetries = maxRetries;
  if (env.NANORESEARCH_LLM_PRICES) config.prices = parsePrices(env.NANORESEARCH_LLM_PRICES);
  return config;
}

/** The planner's LoRA-serving endpoint from NANORESEARCH_PLANNER_*; undefined when none is set. */
export function plannerServerFromEnv(env: NodeJS.ProcessEnv = process.env): PlannerServerConfig | undefined {
  const baseURL = env.NANORESEARCH_PLANNER_BASE_URL;
  if (!baseURL) return undefined;
  const kind = env.NANORESEARCH_PLANNER_SERVER || 'vllm';
  if (!LORA_SERVER_KINDS.includes(kind as LoraServerKind)) {
    throw new Error(`NANORESEARCH_PLANNER_SERVER=${kind} is not one of ${LORA_SERVER_KINDS.join(', ')}`);
  }
  if (!env.NANORESEARCH_MODEL_PLANNER) {
    throw new Error(
      `NANORESEARCH_PLANNER_BASE_URL=${baseURL} is set but NANORESEARCH_MODEL_PLANNER is not: set it to the base model ` +
        `the server serves (the model \`vllm serve\` was given; GET ${baseURL.replace(/\/+$/, '')}/models lists it)`
    );
  }
  const server: PlannerServerConfig = { kind: kind as LoraServerKind, baseURL };
  if (env.NANORESEARCH_PLANNER_API_KEY) server.apiKey = env.NANORESEARCH_PLANNER_API_KEY;
  return server;
}

/**
 * Where the embedded models are: $NANORESEARCH_MODELS_DIR, else the repository's models/ folder
 * (found by walking up from this file). Returned even when a file is missing, so the error on
 * first use can name it and say how to fetch it.
 */
export function localModelsDir(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (env.NANORESEARCH_MODELS_DIR) return path.resolve(env.NANORESEARCH_MODELS_DIR);
  const root = findRepoRoot(__dirname);
  return root ? path.join(root, 'models') : undefined;
}

/** The nearest folder at or above `from` holding a `models/` folder. */
export function findRepoRoot(from: string): string | undefined {
  for (let dir = path.resolve(from); ; dir = path.dirname(dir)) {
    const models = path.join(dir, 'models');
    if (existsSync(models) && statSync(models).isDirectory()) return dir;
    if (path.dirname(dir) === dir) return undefined;
  }
}

function positiveInt(env: NodeJS.ProcessEnv, name: string): number | undefined {
  const raw = env[name];
  if (raw === undefined || raw === '') return undefined;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0) throw new Error(`${name}=${raw} must be a non-negative integer`);
  return value;
}

function parsePrices(raw: string): Record<string, ModelPrice> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch (err) {
    throw new Error(`NANORESEARCH_LLM_PRICES is not valid JSON: ${(err as Error).message}`);
  }
  const prices: Record<string, ModelPrice> = {};
  for (const [model, price] of Object.entries(parsed as Record<string, Partial<ModelPrice>>)) {
    if (typeof price?.inputPerMTok !== 'number' || typeof price?.outputPerMTok !== 'number') {
      throw new Error(`NANORESEARCH_LLM_PRICES["${model}"] needs numeric inputPerMTok and outputPerMTok`);
    }
    prices[model] = { inputPerMTok: price.inputPerMTok, outputPerMTok: price.outputPerMTok };
  }
  return prices;
}
