/** The LLM layer: one interface, two providers, with cache, budgets, accounting and JSON validation. */
export * from './types';
export { createLlm } from './client';
export { HeldLedgerRows } from './ledger';
export { disposeLocalModels } from './providers/local';
export { LoraServer, LoraServerError } from './lora-server';
export { llmConfigFromEnv, plannerServerFromEnv, localModelsDir, findRepoRoot, DEFAULT_REMOTE_MODEL } from './config';
export { embeddedModels, embeddedRoleModels, embeddedModel, ggufPathFor, modelsReport, type EmbeddedModel, type ModelsReport } from './embedded';
export { LlmError, LlmOutputError, BudgetExceededError, UnpricedModelError, CAPABLE_ENDPOINT_HINT } from './errors';
export { stripThinking, extractJson } from './text';
export { validateAgainst } from './validate';
