/**
 * @nanoresearch/kernel: the library a notebook imports through the tslab kernel.
 *
 * The notebook surface is `Lab` → `Project` → `Stage`, with the options and results of their
 * methods and the errors they throw. Everything under it (store, LLM layer, retrieval, planner,
 * orchestrator, the extension's bridge) is `@nanoresearch/kernel/internals`, for the CLI, the
 * benches and tests.
 */
export { Lab, DEFAULT_ARCHETYPE } from './lab';
export type { LabOptions, ProjectOptions, FeedbackOptions } from './lab';
export { Project } from './project';
export type { StageCallOptions, ProjectRunOptions } from './project';
export { Stage } from './stage';

/** The set-up cell's LLM configuration (`Lab.open({ llm: llmConfigFromEnv() })`). */
export { llmConfigFromEnv } from './llm';
export type { Llm, LlmConfig, Role, ModelsReport } from './llm';
/** Custom stages (`LabOptions.stages`) and ablations (`LabOptions.ablation`). */
export type { Ablation, StageName, StageFn, StageContext, StageResult, ProgressFn } from './stage-contract';
export type { DisplayWriter, DisplayMessage } from './display';
export type { FeedbackResult, LearningState, LearningStatus } from './feedback';
export type { AdapterRecord, TrainOptions, TrainProgress } from './trainer';
export type { ImportCounts } from './sharing';
export type { Profile, Project as ProjectRecord, Feedback, SdpoExample, StageBundle, StageRun, Usage } from '@nanoresearch/schema';

export { StoreLockedError, StoreVersionError, StoreReadOnlyError, StoreMigrationError, StoreRecoveryError } from './store';
export { LlmError, LlmOutputError, BudgetExceededError } from './llm';
export { AdapterRejectedError, TrainingError } from './trainer';
export { NotebookImportError } from './sharing';
export { SchemaValidationError } from './validate';
