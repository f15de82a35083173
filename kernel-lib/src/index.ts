/**
 * @nanoresearch/kernel: the library a notebook imports through the tslab kernel.
 *
 * The notebook surface is `Lab` → `Project` → `Stage`; the modules below it (store, LLM layer,
 * profiles, skills, memory, retrieval, planner, feedback, orchestrator, display, stages) are
 * exported for scripts, the CLI, the JupyterLab extension's bridge and tests.
 */
export { Lab, defaultAuthor, DEFAULT_ARCHETYPE } from './lab';
export { resolveAuthor, setAuthorSetting } from './author';
export type { ResolvedAuthor, AuthorSource } from './author';
export type { LabOptions, ProjectOptions, FeedbackOptions } from './lab';
export { Project } from './project';
export type { StageCallOptions, ProjectRunOptions } from './project';
export { Stage } from './stage';

export { Store, formatTable, StoreLockedError, StoreVersionError, StoreReadOnlyError } from './store';
export type { StoreOptions, Queryable, SqlResult, Row } from './store';

export { createLlm, llmConfigFromEnv, LlmError, LlmOutputError, BudgetExceededError, CAPABLE_ENDPOINT_HINT } from './llm';
export type { Llm, LlmConfig, LlmRequest, LlmResponse, Role, Budget, ChatMessage } from './llm';

export { archetypes, getArchetype, validateProfile, renderProfileFor } from './profiles';
export { SkillBank } from './skills';
export { MemoryBank } from './memory';
export type { RememberInput } from './memory';
export { retrieve } from './retrieval';
export type { RetrievalQuery, RetrievalResult, Scored } from './retrieval';

export { Planner, buildPlannerInput, fallbackPlan, STAGE_TASKS } from './planner';
export type { PlanRequest, PlanResult, PlannerAdapter } from './planner';
export { recordFeedback, sdpoExamples, exportSdpo, LearningQueue } from './feedback';
export type { FeedbackInput, FeedbackResult, FeedbackLearners, LearningState, LearningStatus } from './feedback';
export { train, listAdapters, activeAdapter, useAdapter, trainerCommand, TrainingError } from './trainer';
export type { AdapterRecord, ActiveAdapter, TrainOptions, TrainProgress, TrainTarget } from './trainer';
export { Orchestrator, FULL_SYSTEM, stageRange, loadStageBundle, stageBundle, stageMarkdown } from './orchestrator';
export type {
  Ablation,
  StageName,
  StageContext,
  StageResult,
  StageFn,
  LearnedMemory,
  ProgressFn,
  StageRunInput,
  StageOutcome,
  RunStageOptions,
  RunStagesOptions,
  RunRecord
} from './orchestrator';
export { stageFunctions } from './stages';

export { StageDisplay, LiveDisplay, displayStage, displayTable, kernelDisplayWriter, progressLine } from './display';
export type { DisplayWriter, DisplayMessage } from './display';
export { newId, stableId, nowIso } from './ids';
export { bridge, Bridge, BRIDGE_MIME_TYPE } from './bridge';
export type { BridgePayload, FeedbackAddParams } from './bridge';
export { importNotebook, NotebookImportError } from './sharing';
export type { ImportCounts, ImportTarget } from './sharing';

export { STAGES, STAGE_MIME_TYPE, CELL_METADATA_KEY } from '@nanoresearch/schema';
export type {
  Profile,
  Skill,
  Memory,
  Feedback,
  PlannerCall,
  PlannerOutput,
  SdpoExample,
  StageBundle,
  StageRun,
  Usage,
  CellMetadata
} from '@nanoresearch/schema';
