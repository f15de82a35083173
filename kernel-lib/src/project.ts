import type { Project as ProjectRecord, StageBundle } from '@nanoresearch/schema';
import type { Orchestrator } from './orchestrator';
import type { StageName } from './stage-contract';
import { Stage, type StageHost } from './stage';

/** What a Project runs its stages with: the lab's orchestrator, which the lab keeps to itself. */
export type StageRunner = Pick<Orchestrator, 'runStage' | 'runStages' | 'latestRun' | 'latestStageRuns'>;

/** Options of one stage call (`project.ideate()` etc.). */
export interface StageCallOptions {
  /** Called with the stage card data at each change (start, progress, end). */
  onProgress?: (bundle: StageBundle) => void;
  signal?: AbortSignal;
}

/** Options of `project.run()`. */
export interface ProjectRunOptions extends StageCallOptions {
  /** First and last stage to run (default: ideation … review). */
  from?: StageName;
  to?: StageName;
  /** Start a new run instead of resuming the latest one. */
  restart?: boolean;
}

/**
 * A research project: one topic pursued under one profile. Each stage method runs that stage
 * (Retrieve → Plan → Stage → Update), shows its card in the notebook and returns a `Stage`;
 * `run()` takes every stage in order, resuming after the last completed one.
 */
export class Project {
  /** Made by `lab.project()`: a notebook does not construct one. */
  constructor(
    private readonly lab: StageHost,
    private readonly runner: StageRunner,
    /** The projects row. */
    readonly record: ProjectRecord
  ) {}

  get id(): string {
    return this.record.id;
  }

  get topic(): string {
    return this.record.topic;
  }

  get title(): string {
    return this.record.title;
  }

  /** Folder of this project's experiments, results and paper. */
  get workspace(): string {
    return this.record.workspace ?? '';
  }

  /** Literature search, gaps, hypotheses with a novelty check; selects one hypothesis. */
  ideate(options?: StageCallOptions): Promise<Stage> {
    return this.stage('ideation', options);
  }

  /** An experiment blueprint for the selected hypothesis, critiqued and revised. */
  plan(options?: StageCallOptions): Promise<Stage> {
    return this.stage('planning', options);
  }

  /** Writes and runs the experiment code in the sandbox; measured metrics as artifacts. */
  experiment(options?: StageCallOptions): Promise<Stage> {
    return this.stage('experiment', options);
  }

  /** Analysis of the measured results only. */
  analyze(options?: StageCallOptions): Promise<Stage> {
    return this.stage('analysis', options);
  }

  /** The paper, section by section, every number grounded in an artifact. */
  write(options?: StageCallOptions): Promise<Stage> {
    return this.stage('writing', options);
  }

  /** Section reviews, citation check and bounded revision. */
  review(options?: StageCallOptions): Promise<Stage> {
    return this.stage('review', options);
  }

  /** Runs one stage as a new attempt in the project's latest run. */
  async stage(stage: StageName, options: StageCallOptions = {}): Promise<Stage> {
    const outcome = await this.runner.runStage(this.record, stage, options);
    return new Stage(this.lab, outcome, outcome.display);
  }

  /**
   * Runs the stages in order, resuming the latest run: stages already done are not paid for
   * again (their stored outputs feed the next ones); stops at the first stage that fails.
   * Returns every stage of the range that has a run, in order.
   */
  async run(options: ProjectRunOptions = {}): Promise<Stage[]> {
    const outcomes = await this.runner.runStages(this.record, options);
    return outcomes.map(outcome => new Stage(this.lab, outcome, outcome.display));
  }

  /** The latest attempt of each stage in the project's latest run. */
  async stages(): Promise<Stage[]> {
    const run = await this.runner.latestRun(this.record.id);
    if (!run) return [];
    const latest = await this.runner.latestStageRuns(run.id);
    const stages: Stage[] = [];
    for (const stageRun of latest.values()) stages.push(await Stage.load(this.lab, stageRun.id));
    return stages;
  }
}
