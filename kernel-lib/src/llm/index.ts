/** The LLM layer: one interface, two providers, with cache, budgets, accounting and JSON validation. */
export * from './types';
export { createLlm } from './client';
export { disposeLocalModels } from './providers/local';
export { llmConfigFromEnv, localModelPath, findRepoRoot, LOCAL_MODEL_FILE, DEFAULT_REMOTE_MODEL } from './config';
export { LlmError, LlmOutputError, BudgetExceededError } from './errors';
export { stripThinking, extractJson } from './text';
export { validateAgainst } from './validate';
