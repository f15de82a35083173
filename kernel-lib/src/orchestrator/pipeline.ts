/**
 * One stage attempt as Retrieve → Plan → Stage → Update: the card shown at once, the stage run
 * stored as running with its plan (one write), the stage function, learning from its result, and
 * the end recorded (one write).
 */
import { STAGE_NAMES, type Memory, type PlannerOutput, type Profile, type Project, type Skill, type StageBundle, type StageRun } from '@nanoresearch/schema';
import { StageDisplay, type DisplayWriter } from '../display';
import { errorMessage } from '../error-message';
import { newId, nowIso } from '../ids';
import { BudgetExceededError, CAPABLE_ENDPOINT_HINT, HeldLedgerRows, LlmError, LlmOutputError, type Llm, type LlmActivity } from '../llm';
import type { MemoryBank } from '../memory';
import { STAGE_TASKS, type Planner } from '../planner';
import { latestRunOf, latestStageRunsOf, pendingStageRun, profileById, type RunRecord } from '../records';
import { retrieve } from '../retrieval';
import type { SkillBank } from '../skills';
import type { Ablation, StageContext, StageFn, StageName, StageResult, StageRunInput } from '../stage-contract';
import type { RunLease, Store } from '../store';
import { artifactLinks } from './artifacts';
import type { RunBudget } from './budget';
import { renderGuidance, stageBundle, stageMarkdown, stageTitle } from './bundle';
import { LiveStageCard } from './live';
import { commitEnd, commitPlan } from './runs';
import { updateFromStage } from './update';

/** Card updates closer together than this are merged into one (the latest is always shown). */
const PROGRESS_DISPLAY_INTERVAL_MS = 100;

/** What every stage attempt of an orchestrator works with. */
export interface PipelineDeps {
  store: Store;
  llm: Llm;
  planner: Planner;
  memory: MemoryBank;
  skills: SkillBank;
  ablation: Ablation;
  display: DisplayWriter | null | undefined;
}

/** One finished (or failed) stage run with what its card shows. */
export interface StageOutcome {
  run: StageRun;
  bundle: StageBundle;
  markdown: string;
  /** The card in the notebook, when this process ran the stage (to update it after feedback). */
  display?: StageDisplay;
}

export interface AttemptRequest {
  project: Project;
  stage: StageName;
  fn: StageFn;
  /** The run the attempt belongs to; default: the project's latest run (a new one if it has none). */
  runId?: string;
  onProgress?: (bundle: StageBundle) => void;
  signal?: AbortSignal;
  /** A run lease taken for this attempt alone: given back in the stage's end commit. */
  endLease?: RunLease;
}

/** What the stage is given, read in one go before anything is stored. */
interface Prepared {
  profile: Profile;
  previous: Partial<Record<StageName, unknown>>;
  failed: Partial<Record<StageName, string>>;
  /** The run to create with the stage run, when the project has none. */
  newRun?: RunRecord;
}

/** The plan the stage runs under, committed. */
interface Planned {
  plan: PlannerOutput;
  skills: Skill[];
  memories: Memory[];
  budget: RunBudget;
}

interface End {
  status: 'done' | 'failed';
  error: string | null;
  result?: StageResult;
  planned?: Planned;
  /** The attempt ended before its plan was committed: its row (and a new run) are stored with its end. */
  unstored?: Pick<Prepared, 'newRun'>;
}

/** Runs one stage attempt; the caller holds the project's run lease. */
export class StageAttempt {
  private readonly startedAt = Date.now();
  private readonly run: StageRun;
  private readonly input: StageRunInput;
  private readonly live: LiveStageCard;
  private used: Pick<StageBundle, 'skills_used' | 'memories_used'> = { skills_used: [], memories_used: [] };
  /** Whether the stage run is in the store (from its plan's commit on). */
  private stored = false;

  constructor(
    private readonly deps: PipelineDeps,
    private readonly request: AttemptRequest
  ) {
    const { project, stage } = request;
    this.input = {
      topic: project.topic,
      task: STAGE_TASKS[stage],
      ablation: deps.ablation,
      planner_notes: [],
      trajectory: '',
      markdown: '',
      bundle_outputs: {},
      update_notes: []
    };
    // The card is shown before anything is awaited, so a researcher sees the stage start at once;
    // its id is the stage run's, chosen here and stored with the row when the plan commits.
    this.run = pendingStageRun(
      { id: newId('sr'), project_id: project.id, run_id: request.runId ?? '', stage, started_at: new Date(this.startedAt).toISOString() },
      this.input
    );
    this.live = new LiveStageCard({
      display: new StageDisplay({ writer: deps.display }),
      bundle: (progress, usage) => ({ ...this.card({ ...this.used, progress }), usage }),
      onProgress: request.onProgress,
      startedAt: this.startedAt,
      intervalMs: PROGRESS_DISPLAY_INTERVAL_MS
    });
  }

  async execute(): Promise<StageOutcome> {
    const { fn, stage } = this.request;
    this.live.phase('retrieving', 'retrieving skills and memories');
    const prepared = await this.prepare();
    const missing = (fn.requires ?? []).filter(required => !(required in prepared.previous));
    if (missing.length > 0) {
      // Fail before retrieval and planning: nothing is spent on a stage that cannot run.
      return this.finish({ status: 'failed', error: prerequisiteError(stage, missing, prepared.failed), unstored: prepared });
    }
    let planned: Planned;
    try {
      planned = await this.planAndCommit(await this.retrieveCandidates(), prepared);
    } catch (error) {
      // The planner itself falls back on model failures; reaching here means retrieval or the store failed.
      const unstored = this.stored ? undefined : prepared;
      return this.finish({ status: 'failed', error: `retrieval or planning failed before the stage started: ${errorMessage(error)}`, unstored });
    }
    const { result, failure } = await this.runStageFunction(planned, prepared);
    // Update: only from a stage that returned a result (done, or failed with its own account).
    if (result) await this.learn(result, planned);
    const error = failure ?? (result?.status === 'failed' ? (result.error ?? 'the stage reported a failure without a reason') : null);
    return this.finish({ status: result?.status ?? 'failed', error, result, planned });
  }

  private card(extra: Partial<StageBundle>): StageBundle {
    return stageBundle(this.run, { title: stageTitle(this.request.stage, this.request.project), ...extra });
  }

  /**
   * The run (the project's latest, unless the request names one), the profile and the outputs
   * of the stages before this one that are done in the run, in one read. Nothing is stored
   * when it fails: the card says why it stopped instead of running forever.
   */
  private async prepare(): Promise<Prepared> {
    try {
      const prepared = await this.read();
      this.run.run_id = this.request.runId ?? prepared.runId ?? prepared.newRun!.id;
      return prepared;
    } catch (error) {
      const title = stageTitle(this.request.stage, this.request.project);
      this.live.close();
      this.live.display.show(
        { ...this.live.current(), status: 'failed', error: errorMessage(error), progress: null },
        `**${title}** — failed: ${errorMessage(error)}`
      );
      throw error;
    }
  }

  private async read(): Promise<Prepared & { runId?: string }> {
    const { project, stage, runId: givenRunId } = this.request;
    const earlier = STAGE_NAMES.slice(0, STAGE_NAMES.indexOf(stage));
    const { runId, profile, latest } = await this.deps.store.read(async q => {
      const runId = givenRunId ?? (await latestRunOf(q, project.id))?.id;
      return {
        runId,
        profile: await profileById(q, project.profile_id),
        latest: runId && earlier.length ? await latestStageRunsOf(q, runId) : new Map<StageName, StageRun>()
      };
    });
    if (!profile) throw new Error(`project ${project.id} names profile '${project.profile_id}', which is not in the store: call lab.useProfile(...)`);
    const previous: Partial<Record<StageName, unknown>> = {};
    // Why an earlier stage's latest attempt failed: a stage that needs it says so, not "run it first".
    const failed: Partial<Record<StageName, string>> = {};
    for (const name of earlier) {
      const run = latest.get(name);
      if (run?.status === 'done') previous[name] = run.output;
      else if (run?.status === 'failed') failed[name] = run.error ?? 'no reason was recorded';
    }
    const newRun = runId ? undefined : newRunRecord(project, this.deps.ablation);
    return { runId, profile, previous, failed, newRun };
  }

  /** Retrieval with the ablation switches applied: a part switched off contributes no candidates. */
  private async retrieveCandidates(): Promise<{ skills: Skill[]; memories: Memory[] }> {
    const { ablation, store } = this.deps;
    const { project, stage } = this.request;
    if (!ablation.skills && !ablation.memory) return { skills: [], memories: [] };
    const found = await retrieve(store, { stage, query: `${project.topic}\n${STAGE_TASKS[stage]}`, projectId: project.id });
    return {
      skills: ablation.skills ? found.skills.map(s => s.item) : [],
      memories: ablation.memory ? found.memories.map(m => m.item) : []
    };
  }

  /**
   * Plan: the planner chooses; its call, the accounting of its LLM calls, the running stage run
   * and the budget read are one commit.
   */
  private async planAndCommit(candidates: { skills: Skill[]; memories: Memory[] }, { profile, newRun }: Prepared): Promise<Planned> {
    const { planner, ablation, store } = this.deps;
    const { project, stage } = this.request;
    this.live.phase('planning', ablation.planner ? 'choosing skills and memories (planner)' : 'taking the top skills and memories (planner off)');
    const onActivity = (event: LlmActivity) => this.live.activity(event);
    const ledger = new HeldLedgerRows();
    const planned = await planner.plan({
      stageRunId: this.run.id,
      stage,
      topic: project.topic,
      profile,
      ...candidates,
      enabled: ablation.planner,
      onActivity,
      ledgerRows: ledger
    });
    this.run.status = 'running';
    this.run.planner_call_id = planned.call.id;
    this.run.skills_used = planned.plan.selected_skill_ids;
    this.run.memories_used = planned.plan.selected_memory_ids;
    this.input.planner_notes = planned.notes;
    this.run.input = { ...this.input };
    const budget = await commitPlan(store, this.run, { call: planned.call, profile, newRun, ledger: ledger.rows });
    this.stored = true;
    this.used = {
      skills_used: planned.skills.map(s => ({ id: s.id, name: s.name })),
      memories_used: planned.memories.map(m => ({ id: m.id, kind: m.kind, content: m.content }))
    };
    this.live.phase('running', 'started');
    return { plan: planned.plan, skills: planned.skills, memories: planned.memories, budget };
  }

  /** Stage: the stage function under the run's budget; a throw becomes the stage's failure. */
  private async runStageFunction(planned: Planned, prepared: Prepared): Promise<{ result?: StageResult; failure?: string }> {
    const { llm, store } = this.deps;
    const { project, stage, fn, signal } = this.request;
    const { budget, plan, skills, memories } = planned;
    if (budget.exhausted) return { failure: budget.exhausted };
    const ctx: StageContext = {
      stage,
      stageRunId: this.run.id,
      runId: this.run.run_id,
      project,
      profile: prepared.profile,
      llm: llm.scoped({ budget: budget.limits, stageRunId: this.run.id, onActivity: event => this.live.activity(event) }),
      store,
      plan,
      skills,
      memories,
      guidance: renderGuidance(stage, prepared.profile, skills, memories, plan),
      previous: prepared.previous,
      workspace: project.workspace ?? '',
      progress: (step, done, total) => this.live.step(step, done, total),
      signal
    };
    try {
      return { result: await fn(ctx) };
    } catch (error) {
      if (error instanceof BudgetExceededError) return { failure: `stopped: ${budget.describe(error)}` };
      return { failure: `the ${stage} stage threw: ${errorMessage(error)}${modelFailureHint(error, llm)}` };
    }
  }

  /** Update: what the stage and the planner learned goes into memory and the skill bank. */
  private async learn(result: StageResult, planned: Planned): Promise<void> {
    const { project, stage } = this.request;
    this.live.phase('learning', 'learning from the run: memories and skill review');
    this.input.update_notes = await updateFromStage(this.deps, {
      project,
      stage,
      stageRunId: this.run.id,
      result,
      plan: planned.plan,
      memories: planned.memories,
      onActivity: event => this.live.activity(event)
    });
  }

  /** Records the stage's end and replaces the live card with the final one. */
  private async finish(end: End): Promise<StageOutcome> {
    const { result } = end;
    const workspace = this.request.project.workspace ?? '';
    this.live.close();
    this.run.status = end.status;
    this.run.error = end.error;
    // Any JSON value (the generated type narrows it to an object; stages also return arrays or strings).
    this.run.output = (result?.output ?? null) as StageRun['output'];
    this.run.summary = result?.summary ?? end.error ?? '';
    this.run.finished_at = nowIso();
    this.input.trajectory = result?.trajectory ?? '';
    this.input.markdown = result?.markdown ?? '';
    this.input.bundle_outputs = result?.bundleOutputs ?? {};
    this.run.input = { ...this.input };
    await commitEnd(this.deps.store, this.run, {
      result,
      workspace,
      // A use counts when the stage ran with what it was given and returned a result.
      skillIds: result ? (end.planned?.skills ?? []).map(s => s.id) : [],
      memoryIds: result ? (end.planned?.memories ?? []).map(m => m.id) : [],
      wallMs: Date.now() - this.startedAt,
      unstored: end.unstored,
      lease: this.request.endLease
    });
    const artifacts = artifactLinks((this.run.input as Partial<StageRunInput>).artifacts ?? [], workspace);
    const bundle = this.card({ ...this.used, outputs: this.input.bundle_outputs, progress: null, artifacts });
    const markdown = stageMarkdown(this.run, bundle);
    this.request.onProgress?.(bundle);
    this.live.display.show(bundle, markdown);
    return { run: this.run, bundle, markdown, display: this.live.display };
  }
}

/** A new run of the project, stored with its first stage run. */
export function newRunRecord(project: Project, ablation: Ablation): RunRecord {
  return {
    id: newId('run'),
    project_id: project.id,
    status: 'running',
    config: { ablation, profile_id: project.profile_id },
    started_at: nowIso(),
    finished_at: null
  };
}

/** The stage methods of a Project, to name the call that runs a stage. */
const STAGE_CALLS: Record<StageName, string> = {
  ideation: 'project.ideate()',
  planning: 'project.plan()',
  experiment: 'project.experiment()',
  analysis: 'project.analyze()',
  writing: 'project.write()',
  review: 'project.review()'
};

/**
 * Why a stage cannot start: each earlier stage it needs either failed in this run (say why,
 * and that it must be fixed and rerun) or never ran in it (say which call runs it).
 */
export function prerequisiteError(stage: StageName, missing: StageName[], failed: Partial<Record<StageName, string>>): string {
  const reasons = missing.map(name =>
    failed[name] !== undefined
      ? `${name} failed in this run (${failed[name]}); fix it and rerun it (${STAGE_CALLS[name]})`
      : `${name} has not run in this run; run it first (${STAGE_CALLS[name]})`
  );
  return `the ${stage} stage needs the output of ${missing.join(' and ')}: ${reasons.join('; ')}; then run ${stage} again`;
}

/**
 * What to add to a stage failure the model caused: how to use a capable model. An error from
 * the embedded model or a malformed answer is where a stronger endpoint is the real fix.
 */
function modelFailureHint(error: unknown, llm: Llm): string {
  if (!(error instanceof LlmError || error instanceof LlmOutputError)) return '';
  return llm.config.provider === 'local' ? `. ${CAPABLE_ENDPOINT_HINT}` : '';
}
