import type { StageBundle, StageRun, Usage } from '@nanoresearch/schema';
import type { StageDisplay } from './display';
import type { FeedbackResult } from './feedback';
import { loadStageBundle, stageMarkdown, type StageOutcome } from './orchestrator';
import type { StageName } from './stage-contract';
import type { Store } from './store';

/** What a Stage needs of the lab that ran it: the store it is read from, and where feedback goes (Lab.feedback). */
export interface StageHost {
  readonly store: Store;
  feedback(stageRunId: string, text: string, options?: { author?: string; id?: string; origin?: string }): Promise<FeedbackResult>;
}

/**
 * One stage run as a notebook sees it: what it produced, its card data, and `feedback()` to
 * tell the system what should change. Returned by `project.ideate()` etc. and `project.run()`.
 */
export class Stage {
  /** The stage run id (stage_runs.id): what feedback and the sidebar refer to. */
  readonly id: string;
  readonly stage: StageName;
  private record: StageRun;
  private card: StageBundle;

  constructor(
    private readonly lab: StageHost,
    outcome: Pick<StageOutcome, 'run' | 'bundle'>,
    private readonly display?: StageDisplay
  ) {
    this.id = outcome.run.id;
    this.stage = outcome.run.stage;
    this.record = outcome.run;
    this.card = outcome.bundle;
  }

  /** A stored stage run, by id. */
  static async load(lab: StageHost, stageRunId: string): Promise<Stage> {
    return new Stage(lab, await loadStageBundle(lab.store, stageRunId));
  }

  get status(): StageRun['status'] {
    return this.record.status;
  }

  /** The stage's output (its own JSON shape per stage). */
  get output(): unknown {
    return this.record.output;
  }

  get summary(): string {
    return this.record.summary ?? '';
  }

  /** Why the stage failed, or null. */
  get error(): string | null {
    return this.record.error ?? null;
  }

  get usage(): Usage | undefined {
    return this.record.usage;
  }

  /** The stage card data (MIME type application/vnd.nanoresearch.stage+json). */
  get bundle(): StageBundle {
    return this.card;
  }

  /** The stage_runs row. */
  get run(): StageRun {
    return this.record;
  }

  /**
   * Gives feedback on this stage: stored (linked to the planner call, so it becomes an SDPO
   * example) and shown on the stage card at once; learning from it (memories, skills) runs in
   * the background (`result.learning`, `lab.learningStates([id])`, `await lab.learningIdle()`).
   */
  async feedback(text: string, options: { author?: string; id?: string } = {}): Promise<FeedbackResult> {
    const result = await this.lab.feedback(this.id, text, { ...options, origin: 'code' });
    await this.refresh();
    this.display?.show(this.card, stageMarkdown(this.record, this.card));
    return result;
  }

  /** Re-reads the stage run and its card from the store. */
  async refresh(): Promise<this> {
    const { run, bundle } = await loadStageBundle(this.lab.store, this.id);
    this.record = run;
    this.card = bundle;
    return this;
  }

  toJSON(): { id: string; stage: StageName; status: StageRun['status']; summary: string; error: string | null } {
    return { id: this.id, stage: this.stage, status: this.status, summary: this.summary, error: this.error };
  }
}
