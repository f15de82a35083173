/**
 * @nanoresearch/kernel/internals: the modules under the notebook surface (store, LLM layer,
 * profiles, skills, memory, retrieval, planner, feedback, orchestrator, display, stages, the
 * bridge), for the CLI, the benches, the JupyterLab extension's bridge call and tests. Not a
 * stable API: a notebook imports `@nanoresearch/kernel` (see index.ts).
 */
export * from './index';

export { defaultAuthor } from './lab';
export { resolveAuthor, setAuthorSetting } from './author';
export type { ResolvedAuthor, AuthorSource } from './author';
export type { StageRunner } from './project';
export type { StageHost } from './stage';

export { Store, formatTable } from './store';
export type { StoreOptions, Queryable, SqlResult, Row } from './store';

export { createLlm, CAPABLE_ENDPOINT_HINT } from './llm';
export type { LlmRequest, LlmResponse, Budget, ChatMessage } from './llm';

export { archetypes, getArchetype, validateProfile, renderProfileFor } from './profiles';
export { SkillBank } from './skills';
export { MemoryBank } from './memory';
export type { RememberInput } from './memory';
export { retrieve } from './retrieval';
export type { RetrievalQuery, RetrievalResult, Scored } from './retrieval';

export { Planner, buildPlannerInput, fallbackPlan, STAGE_TASKS } from './planner';
export type { PlanRequest, PlanResult, PlannerAdapter } from './planner';
export { recordFeedback, sdpoExamples, exportSdpo, LearningQueue } from './feedback';
export type { FeedbackInput, FeedbackLearners } from './feedback';
export { train, listAdapters, activeAdapter, useAdapter, trainerCommand } from './trainer';
export type { ActiveAdapter, TrainTarget } from './trainer';
export { Orchestrator, FULL_SYSTEM, stageRange, loadStageBundle, stageBundle, stageMarkdown } from './orchestrator';
export type { LearnedMemory, StageRunInput, StageOutcome, RunStageOptions, RunStagesOptions, RunRecord } from './orchestrator';
export { stageFunctions } from './stages';

export { StageDisplay, LiveDisplay, displayStage, displayTable, kernelDisplayWriter, progressLine } from './display';
export { newId, stableId, nowIso } from './ids';
export { bridge, Bridge } from './bridge';
export { importNotebook } from './sharing';
export type { ImportTarget } from './sharing';

export { STAGES, STAGE_MIME_TYPE, CELL_METADATA_KEY, BRIDGE_MIME_TYPE } from '@nanoresearch/schema';
export type { Skill, Memory, PlannerCall, PlannerOutput, CellMetadata, BridgeReply, BridgeMethods } from '@nanoresearch/schema';
