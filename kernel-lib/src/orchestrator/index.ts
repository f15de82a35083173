import { STAGE_NAMES, type Project, type StageBundle, type StageRun } from '@nanoresearch/schema';
import { displayStage, type DisplayWriter } from '../display';
import type { Llm } from '../llm';
import type { MemoryBank } from '../memory';
import { Planner, type PlannerAdapter } from '../planner';
import { insertRun, latestRunOf, latestStageRunsOf, type RunRecord } from '../records';
import type { SkillBank } from '../skills';
import type { Ablation, StageName, StageTable } from '../stage-contract';
import { acquireRunLease, type RunLease, type Store } from '../store';
import { loadStageBundle, stageMarkdown } from './bundle';
import { newRunRecord, StageAttempt, type PipelineDeps, type StageOutcome } from './pipeline';

export * from './types';
export { loadStageBundle, renderGuidance, stageBundle, stageMarkdown, stageTitle } from './bundle';
export { artifactKind, artifactLinks, collectArtifacts, type StageArtifact } from './artifacts';
export { LiveStageCard, previewOf, type StagePhase } from './live';
export { prerequisiteError, type StageOutcome } from './pipeline';
export type { RunRecord } from '../records';

/** All switches on: the full co-evolving system. */
export const FULL_SYSTEM: Ablation = { memory: true, skills: true, skillDistillation: true, planner: true };

export interface OrchestratorOptions {
  store: Store;
  llm: Llm;
  skills: SkillBank;
  memory: MemoryBank;
  /** The function of each stage (the built-in stages, with a Lab's overrides). */
  stages: StageTable;
  ablation?: Partial<Ablation>;
  /** The planner's LoRA adapter (the trainer client's `activeAdapter`); none = the base model. */
  activeAdapter?: () => Promise<PlannerAdapter | null>;
  /** Where stage cards go: undefined = the tslab kernel when there is one, null = nowhere. */
  display?: DisplayWriter | null;
}

export interface RunStageOptions {
  /** The run this stage belongs to; default: the project's latest run (a new one if it has none). */
  runId?: string;
  /** The project's run lease when the caller holds it (runStages); else the stage takes it for itself. */
  lease?: RunLease;
  /** Called with the stage's card data at each change (start, progress, end). */
  onProgress?: (bundle: StageBundle) => void;
  signal?: AbortSignal;
}

export interface RunStagesOptions {
  /** First and last stage of the range (default: all six). */
  from?: StageName;
  to?: StageName;
  /** Start a new run instead of resuming the latest one. */
  restart?: boolean;
  onProgress?: (bundle: StageBundle) => void;
  signal?: AbortSignal;
}

/**
 * Runs research stages as Retrieve → Plan → Stage → Update (pipeline.ts), persisting each stage
 * run's state (pending → running → done | failed) so a crash loses nothing and a run resumes
 * where it stopped without paying again for completed stages.
 */
export class Orchestrator {
  readonly ablation: Ablation;
  private readonly deps: PipelineDeps;
  /** Stage calls running now; background learning from feedback waits while any runs (feedback/learning.ts). */
  private running = 0;

  constructor(private readonly options: OrchestratorOptions) {
    this.ablation = { ...FULL_SYSTEM, ...options.ablation };
    const { store, llm, memory, skills, display } = options;
    this.deps = { store, llm, memory, skills, display, ablation: this.ablation, planner: new Planner(llm, options.activeAdapter) };
  }

  /** True while a stage runs in this orchestrator. */
  get busy(): boolean {
    return this.running > 0;
  }

  /**
   * Runs the stages from `from` to `to` in order, resuming the latest run: stages already done
   * in it are not run again (their stored outputs feed the later stages) until the first stage
   * that is not done; from there every stage runs. Stops at the first failed stage.
   */
  async runStages(project: Project, options: RunStagesOptions = {}): Promise<StageOutcome[]> {
    const stages = stageRange(options.from, options.to);
    return this.whileRunning(async () => {
      // One runner per project: a second kernel is refused, naming the holder, before it reads what to resume.
      const lease = await acquireRunLease(this.options.store, project.id);
      try {
        const run = options.restart ? await this.newRun(project) : await this.currentRun(project);
        const latest = await this.latestStageRuns(run.id);
        const outcomes: StageOutcome[] = [];
        let resuming = true;
        for (const stage of stages) {
          const done = latest.get(stage);
          if (resuming && done?.status === 'done') {
            outcomes.push(await this.storedOutcome(done.id));
            continue;
          }
          resuming = false;
          const outcome = await this.attempt(project, stage, { ...options, runId: run.id });
          outcomes.push(outcome);
          if (outcome.run.status !== 'done' || lease.lost) break;
        }
        return outcomes;
      } finally {
        await lease.release();
      }
    });
  }

  /** Runs one stage as a new attempt in the project's latest run (or `options.runId`), holding the project's run lease. */
  async runStage(project: Project, stage: StageName, options: RunStageOptions = {}): Promise<StageOutcome> {
    return this.whileRunning(async () => {
      if (options.lease) return this.attempt(project, stage, options);
      const lease = await acquireRunLease(this.options.store, project.id);
      try {
        return await this.attempt(project, stage, options, lease);
      } finally {
        // Given back with the stage's end already, unless the attempt failed before that commit.
        await lease.release();
      }
    });
  }

  /** The project's latest run, or a new one when it has none. */
  async currentRun(project: Project): Promise<RunRecord> {
    return (await this.latestRun(project.id)) ?? this.newRun(project);
  }

  /** The project's latest run, or null when it never ran. */
  async latestRun(projectId: string): Promise<RunRecord | null> {
    return (await this.options.store.read(q => latestRunOf(q, projectId))) ?? null;
  }

  /** Starts a new run of the project. */
  async newRun(project: Project): Promise<RunRecord> {
    const run = newRunRecord(project, this.ablation);
    await this.options.store.write(q => insertRun(q, run));
    return run;
  }

  /** The latest attempt of each stage in a run. */
  latestStageRuns(runId: string): Promise<Map<StageName, StageRun>> {
    return this.options.store.read(q => latestStageRunsOf(q, runId));
  }

  /** One attempt of `stage`; `endLease`, a lease taken for this attempt alone, is given back in its end commit. */
  private attempt(project: Project, stage: StageName, options: RunStageOptions, endLease?: RunLease): Promise<StageOutcome> {
    const { runId, onProgress, signal } = options;
    return new StageAttempt(this.deps, { project, stage, fn: this.options.stages[stage], runId, onProgress, signal, endLease }).execute();
  }

  private async whileRunning<T>(work: () => Promise<T>): Promise<T> {
    this.running += 1;
    try {
      return await work();
    } finally {
      this.running -= 1;
    }
  }

  /** A stage already done in this run, shown again (so run()'s output lists every stage) but not re-run. */
  private async storedOutcome(stageRunId: string): Promise<StageOutcome> {
    const { run, bundle } = await loadStageBundle(this.options.store, stageRunId);
    const markdown = stageMarkdown(run, bundle);
    return { run, bundle, markdown, display: displayStage(bundle, markdown, { writer: this.options.display }) };
  }
}

/** The stages from `from` to `to`, in pipeline order. */
export function stageRange(from: StageName = STAGE_NAMES[0], to: StageName = STAGE_NAMES[STAGE_NAMES.length - 1]): StageName[] {
  const start = STAGE_NAMES.indexOf(from);
  const end = STAGE_NAMES.indexOf(to);
  if (start < 0 || end < 0) throw new Error(`unknown stage '${start < 0 ? from : to}': stages are ${STAGE_NAMES.join(', ')}`);
  if (start > end) throw new Error(`stage '${from}' comes after '${to}': give from/to in the order ${STAGE_NAMES.join(' → ')}`);
  return STAGE_NAMES.slice(start, end + 1);
}
