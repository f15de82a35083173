/**
 * The stage contract: what a stage function receives and returns, and what a stage run records
 * about itself. A leaf module: it imports only the schema and the types of the store and the
 * LLM, so retrieval, memory, skills, profiles, the planner, the stages, feedback and the
 * orchestrator can all depend on it without depending on one another.
 */
import type { Memory, PlannerOutput, Profile, Project, Skill, StageBundle, StageName } from '@nanoresearch/schema';
import type { Llm } from './llm';
import type { Store } from './store';

/** The six research stages, in the order `project.run()` takes them (`STAGE_NAMES` in @nanoresearch/schema, defined once there). */
export type { StageName };

/** Progress a stage reports while it works; shown live in the stage card and on the CLI. */
export type ProgressFn = (step: string, done?: number, total?: number) => void;

/**
 * What a stage function receives: the context the orchestrator retrieved and the planner chose,
 * an LLM scoped to this stage run's budget, and the outputs of the stages before it.
 */
export interface StageContext {
  stage: StageName;
  stageRunId: string;
  runId: string;
  project: Project;
  profile: Profile;
  /** LLM scoped to this stage run: its budget and its accounting rows. */
  llm: Llm;
  /** Read access for stages that consult the store (the literature corpus); a stage's own records go in its StageResult. */
  store: Store;
  /** The planner's answer y (after id validation or fallback). */
  plan: PlannerOutput;
  /** The skills and memories the planner selected (or the fallback top 3 of each). */
  skills: Skill[];
  memories: Memory[];
  /** Profile excerpt + selected skills + memories + prompt plan, rendered for prompts. */
  guidance: string;
  /** Outputs of the stages already completed in this run, by stage. */
  previous: Partial<Record<StageName, unknown>>;
  /** Folder of this project's files: experiments, results, paper. */
  workspace: string;
  progress: ProgressFn;
  signal?: AbortSignal;
}

/** A memory a stage learned, e.g. a failed direction with the conditions it failed under. */
export interface LearnedMemory {
  kind: Memory['kind'];
  content: string;
  key?: string;
  tags?: string[];
  conditions?: Memory['conditions'];
  importance?: number;
}

/** A file a stage produced, with its checksum: a row of the `artifacts` table once the orchestrator records it. */
export interface ArtifactRecord {
  /** Relative to the project's workspace. */
  path: string;
  kind: 'metrics' | 'manifest' | 'result' | 'code' | 'data' | 'log';
  sha256: string;
  bytes: number;
}

/** What a stage function returns. A failed stage returns status 'failed' with an error, it does not throw. */
export interface StageResult {
  status: 'done' | 'failed';
  output: unknown;
  summary: string;
  error?: string;
  /** Key outputs for the stage card. */
  bundleOutputs: StageBundle['outputs'];
  /** A readable account of what happened, for skill distillation. */
  trajectory: string;
  /** Memories this stage learned (failed directions, data strategies, ...). */
  memories?: LearnedMemory[];
  /** Files the stage produced; the orchestrator records them in `artifacts` with the stage's end. */
  artifacts?: ArtifactRecord[];
  /** A Markdown rendering of the result: the fallback under the stage MIME bundle. */
  markdown: string;
}

export type StageFn = ((ctx: StageContext) => Promise<StageResult>) & {
  /**
   * Stages whose output this one reads. When one has not completed in the run, the orchestrator
   * fails the stage at once, before retrieval and planning spend anything on it.
   */
  requires?: readonly StageName[];
};

/** The function of every stage: what the orchestrator is built with. */
export type StageTable = Record<StageName, StageFn>;

/**
 * Ablation switches: each turns one co-evolving part off, so its effect can be measured.
 * memory: no memory retrieval and no memory writes; skills: no skill retrieval and no
 * distillation; skillDistillation: skills are retrieved but the bank is frozen (no distillation
 * at a stage's end), so what a stage sees does not change with its runs; planner: no planner
 * call (the top 3 retrieved skills and memories are used).
 */
export interface Ablation {
  memory: boolean;
  skills: boolean;
  skillDistillation: boolean;
  planner: boolean;
}

/** What a workspace file is on a stage card. */
export type ArtifactKind = NonNullable<StageBundle['artifacts']>[number]['kind'];

/** One file a stage wrote, as its stage run keeps it: relative to the project's workspace. */
export interface StageArtifact {
  path: string;
  kind: ArtifactKind;
}

/**
 * What the orchestrator keeps in `stage_runs.input` besides the stage's own output (which is
 * `stage_runs.output`): the inputs it gave the stage and the record of what happened around it.
 * It lives in the stage run row so the row alone (embedded in a shared notebook's cell metadata)
 * carries the whole trajectory.
 */
export interface StageRunInput {
  topic: string;
  /** The stage task the planner was given. */
  task: string;
  ablation: Ablation;
  /** What the planner step noted: dropped ids, fallbacks. */
  planner_notes: string[];
  /** The stage's account of what happened (StageResult.trajectory); empty until it ends. */
  trajectory: string;
  /** The stage's Markdown rendering (StageResult.markdown); empty until it ends. */
  markdown: string;
  bundle_outputs: StageBundle['outputs'];
  /** What the Update step did or failed to do (memories written, skill review decisions, errors). */
  update_notes: string[];
  /** The files the stage wrote, relative to the workspace (the card links them); set when it ends. */
  artifacts?: StageArtifact[];
}
