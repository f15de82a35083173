import type { Memory, PlannerOutput, Profile, Project, Skill, StageBundle, StageRun } from '@nanoresearch/schema';

/** The six research stages, in the order `project.run()` takes them. */
export type StageName = StageRun['stage'];

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
  llm: import('../llm').Llm;
  store: import('../store').Store;
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

/**
 * Ablation switches: each turns one co-evolving part off, so its effect can be measured.
 * memory: no memory retrieval and no memory writes; skills: no skill retrieval and no
 * distillation; planner: no planner call (the top 3 retrieved skills and memories are used).
 */
export interface Ablation {
  memory: boolean;
  skills: boolean;
  planner: boolean;
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
  artifacts?: import('./artifacts').StageArtifact[];
}
