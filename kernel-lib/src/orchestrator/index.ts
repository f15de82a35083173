import {
  STAGES,
  type Memory,
  type PlannerOutput,
  type Profile,
  type Project,
  type Skill,
  type StageBundle,
  type StageRun,
  type Usage
} from '@nanoresearch/schema';
import { StageDisplay, displayStage, type DisplayWriter } from '../display';
import { newId, nowIso } from '../ids';
import { BudgetExceededError, CAPABLE_ENDPOINT_HINT, LlmError, LlmOutputError, type Budget, type Llm, type LlmActivityListener } from '../llm';
import type { MemoryBank } from '../memory';
import { Planner, STAGE_TASKS, type PlannerAdapter } from '../planner';
import { retrieve } from '../retrieval';
import type { SkillBank } from '../skills';
import { writeInside } from '../sandbox/workspace-fs';
import { acquireRunLease, type Queryable, type RunLease, type Store } from '../store';
import { artifactLinks, collectArtifacts } from './artifacts';
import { loadStageBundle, renderGuidance, stageBundle, stageMarkdown, stageTitle } from './bundle';
import { LiveStageCard } from './live';
import type { Ablation, StageContext, StageFn, StageName, StageResult, StageRunInput } from './types';

export * from './types';
export { loadStageBundle, renderGuidance, stageBundle, stageMarkdown, stageTitle } from './bundle';
export { artifactKind, artifactLinks, collectArtifacts, type StageArtifact } from './artifacts';
export { LiveStageCard, previewOf, type StagePhase } from './live';

/** All switches on: the full co-evolving system. */
export const FULL_SYSTEM: Ablation = { memory: true, skills: true, planner: true };

/** Card updates closer together than this are merged into one (the latest is always shown). */
const PROGRESS_DISPLAY_INTERVAL_MS = 100;

const NO_USAGE: Usage = { prompt_tokens: 0, completion_tokens: 0, calls: 0, cost_usd: 0, wall_ms: 0, cache_hits: 0 };

export interface OrchestratorOptions {
  store: Store;
  llm: Llm;
  skills: SkillBank;
  memory: MemoryBank;
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

/** One finished (or failed) stage run with what its card shows. */
export interface StageOutcome {
  run: StageRun;
  bundle: StageBundle;
  markdown: string;
  /** The card in the notebook, when this process ran the stage (to update it after feedback). */
  display?: StageDisplay;
}

/** A row of the `runs` table: one pass of a project through its stages. */
export interface RunRecord {
  id: string;
  project_id: string;
  status: 'running' | 'done' | 'failed';
  config: { ablation: Ablation; profile_id: string } | null;
  started_at: string;
  finished_at: string | null;
}

/**
 * Runs research stages as Retrieve → Plan → Stage → Update, persisting each stage run's state
 * (pending → running → done | failed) so a crash loses nothing and a run resumes where it
 * stopped without paying again for completed stages.
 */
export class Orchestrator {
  readonly ablation: Ablation;
  private readonly planner: Planner;
  /** Stage calls running now; background learning from feedback waits while any runs (feedback/learning.ts). */
  private running = 0;

  constructor(private readonly options: OrchestratorOptions) {
    this.ablation = { ...FULL_SYSTEM, ...options.ablation };
    this.planner = new Planner(options.store, options.llm, options.activeAdapter);
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
  async runStages(
    project: Project,
    stageFunctions: Record<StageName, StageFn>,
    options: RunStagesOptions = {}
  ): Promise<StageOutcome[]> {
    const stages = stageRange(options.from, options.to);
    this.running += 1;
    // One runner per project: a second kernel is refused, naming the holder, before it reads what to resume.
    const lease = await acquireRunLease(this.options.store, project.id).catch(error => {
      this.running -= 1;
      throw error;
    });
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
        const outcome = await this.runStage(project, stage, stageFunctions[stage], {
          runId: run.id,
          lease,
          onProgress: options.onProgress,
          signal: options.signal
        });
        outcomes.push(outcome);
        if (outcome.run.status !== 'done' || lease.lost) break;
      }
      return outcomes;
    } finally {
      this.running -= 1;
      await lease.release();
    }
  }

  /** Runs one stage as a new attempt in the project's latest run (or `options.runId`), holding the project's run lease. */
  async runStage(project: Project, stage: StageName, fn: StageFn, options: RunStageOptions = {}): Promise<StageOutcome> {
    this.running += 1;
    try {
      if (options.lease) return await this.runLeasedStage(project, stage, fn, options);
      const lease = await acquireRunLease(this.options.store, project.id);
      try {
        return await this.runLeasedStage(project, stage, fn, { ...options, lease });
      } finally {
        await lease.release();
      }
    } finally {
      this.running -= 1;
    }
  }

  private async runLeasedStage(project: Project, stage: StageName, fn: StageFn, options: RunStageOptions): Promise<StageOutcome> {
    const { store, llm } = this.options;
    const startedAt = Date.now();
    const startedIso = new Date(startedAt).toISOString();
    // The card is shown before anything is awaited, so a researcher sees the stage start at once;
    // its id is the stage run's, chosen here and stored with the row below.
    const stageRunId = newId('sr');
    const card = (run: StageRun, extra: Partial<StageBundle>): StageBundle =>
      stageBundle(run, { title: stageTitle(stage, project), ...extra });
    let shown: StageRun = {
      id: stageRunId,
      project_id: project.id,
      run_id: options.runId ?? '',
      stage,
      status: 'pending',
      attempt: 0,
      input: {},
      summary: '',
      error: null,
      planner_call_id: null,
      skills_used: [],
      memories_used: [],
      usage: { ...NO_USAGE },
      started_at: startedIso,
      finished_at: null,
      origin: 'local'
    };
    let used: Pick<StageBundle, 'skills_used' | 'memories_used'> = { skills_used: [], memories_used: [] };
    const live = new LiveStageCard({
      display: new StageDisplay({ writer: this.options.display }),
      bundle: (progress, usage) => ({ ...card(shown, { ...used, progress }), usage }),
      onProgress: options.onProgress,
      startedAt,
      intervalMs: PROGRESS_DISPLAY_INTERVAL_MS
    });
    live.phase('retrieving', 'retrieving skills and memories');
    let runId: string;
    let inputs: Awaited<ReturnType<Orchestrator['stageInputs']>>;
    try {
      runId = options.runId ?? (await this.currentRun(project)).id;
      inputs = await this.stageInputs(project, runId, stage);
    } catch (error) {
      // Nothing is stored yet: the card says why it stopped instead of running forever.
      live.close();
      live.display.show({ ...live.current(), status: 'failed', error: errorMessage(error), progress: null }, `**${stageTitle(stage, project)}** — failed: ${errorMessage(error)}`);
      throw error;
    }
    const { profile, previous, failed } = inputs;
    const input: StageRunInput = {
      topic: project.topic,
      task: STAGE_TASKS[stage],
      ablation: this.ablation,
      planner_notes: [],
      trajectory: '',
      markdown: '',
      bundle_outputs: {},
      update_notes: []
    };
    const missing = (fn.requires ?? []).filter(required => !(required in previous));
    if (missing.length > 0) {
      // Fail before retrieval and planning: nothing is spent on a stage that cannot run.
      const stageRun = await this.insertStageRun(project, runId, stage, input, { id: stageRunId, started_at: startedIso });
      return this.finish(stageRun, input, startedAt, live, card, {
        status: 'failed',
        error: prerequisiteError(stage, missing, failed),
        onProgress: options.onProgress
      });
    }
    // Retrieval reads while the pending stage run commits: the two overlap instead of queueing.
    const retrieval = this.retrieveCandidates(project, stage);
    retrieval.catch(() => undefined); // a failure is handled where it is awaited below
    const stageRun = await this.insertStageRun(project, runId, stage, input, { id: stageRunId, started_at: startedIso });
    shown = stageRun;

    // Retrieve and Plan.
    let skills: Skill[] = [];
    let memories: Memory[] = [];
    let plan: PlannerOutput;
    // Filled in by the planner's commit below; plan() resolves only after that commit.
    const committed: { budget?: RunBudget; usage?: Usage } = {};
    try {
      const candidates = await retrieval;
      live.phase('planning', this.ablation.planner ? 'choosing skills and memories (planner)' : 'taking the top skills and memories (planner off)');
      const planned = await this.planner.plan(
        {
          stageRunId: stageRun.id,
          stage,
          topic: project.topic,
          profile,
          skills: candidates.skills,
          memories: candidates.memories,
          enabled: this.ablation.planner
        },
        // The stage is running from the moment its plan is stored: one commit for both.
        async (q, call, notes) => {
          stageRun.status = 'running';
          stageRun.planner_call_id = call.id;
          stageRun.skills_used = call.parsed!.selected_skill_ids;
          stageRun.memories_used = call.parsed!.selected_memory_ids;
          input.planner_notes = notes;
          await saveStageRun(q, stageRun, input);
          // Read after the planner's own llm_calls row is in: its tokens count against the run too.
          committed.budget = await runBudget(q, runId, profile);
          committed.usage = await usageOf(q, stageRun.id, 0);
        }
      );
      ({ skills, memories, plan } = planned);
    } catch (error) {
      // The planner itself falls back on model failures; reaching here means retrieval or the store failed.
      return this.finish(stageRun, input, startedAt, live, card, {
        status: 'failed',
        error: `retrieval or planning failed before the stage started: ${errorMessage(error)}`,
        onProgress: options.onProgress
      });
    }

    used = { skills_used: skills.map(s => ({ id: s.id, name: s.name })), memories_used: memories.map(memoryRef) };
    if (committed.usage) live.addUsage(committed.usage);
    live.phase('running', 'started');

    // Stage.
    const budget = committed.budget!;
    let result: StageResult | undefined;
    let failure: string | undefined;
    if (budget.exhausted) {
      failure = budget.exhausted;
    } else {
      const scoped = llm.scoped({ budget: budget.limits, stageRunId: stageRun.id, onActivity: event => live.activity(event) });
      const ctx: StageContext = {
        stage,
        stageRunId: stageRun.id,
        runId,
        project,
        profile,
        llm: scoped,
        store,
        plan,
        skills,
        memories,
        guidance: renderGuidance(stage, profile, skills, memories, plan),
        previous,
        workspace: project.workspace ?? '',
        progress: (step, done, total) => live.step(step, done, total),
        signal: options.signal
      };
      try {
        result = await fn(ctx);
      } catch (error) {
        failure =
          error instanceof BudgetExceededError
            ? `stopped: ${budget.describe(error)}`
            : `the ${stage} stage threw: ${errorMessage(error)}${modelFailureHint(error, llm)}`;
      }
    }

    // Update: only from a stage that returned a result (done, or failed with its own account).
    if (result) {
      live.phase('learning', 'learning from the run: memories and skill review');
      input.update_notes = await this.update(project, stage, stageRun.id, result, plan, skills, memories, event => live.activity(event));
    }
    return this.finish(stageRun, input, startedAt, live, card, {
      status: result?.status ?? 'failed',
      error: failure ?? (result?.status === 'failed' ? result.error ?? 'the stage reported a failure without a reason' : null),
      result,
      used,
      onProgress: options.onProgress
    });
  }

  /** The project's latest run, or a new one when it has none. */
  async currentRun(project: Project): Promise<RunRecord> {
    return (await this.latestRun(project.id)) ?? this.newRun(project);
  }

  /** The project's latest run, or null when it never ran. */
  async latestRun(projectId: string): Promise<RunRecord | null> {
    const latest = await this.options.store.read(q =>
      q.get<RunRecord>('select * from runs where project_id = $1 order by started_at desc, id desc limit 1', [projectId])
    );
    return latest ?? null;
  }

  /** Starts a new run of the project. */
  async newRun(project: Project): Promise<RunRecord> {
    const run: RunRecord = {
      id: newId('run'),
      project_id: project.id,
      status: 'running',
      config: { ablation: this.ablation, profile_id: project.profile_id },
      started_at: nowIso(),
      finished_at: null
    };
    await this.options.store.write(q =>
      q.run(
        `insert into runs (id, project_id, status, config, started_at, finished_at)
         values ($id, $project_id, $status, $config, $started_at, $finished_at)`,
        { ...run }
      )
    );
    return run;
  }

  /** The latest attempt of each stage in a run. */
  async latestStageRuns(runId: string): Promise<Map<StageName, StageRun>> {
    const rows = await this.options.store.read(q =>
      q.all<StageRun>('select * from stage_runs where run_id = $1 order by attempt, started_at', [runId])
    );
    return new Map(rows.map(r => [r.stage, r]));
  }

  /** A stage already done in this run, shown again (so run()'s output lists every stage) but not re-run. */
  private async storedOutcome(stageRunId: string): Promise<StageOutcome> {
    const { run, bundle } = await loadStageBundle(this.options.store, stageRunId);
    const markdown = stageMarkdown(run, bundle);
    return { run, bundle, markdown, display: displayStage(bundle, markdown, { writer: this.options.display }) };
  }

  /**
   * The project's profile and the outputs of the stages before `stage` that are done in this
   * run (ctx.previous), read in one go.
   */
  private async stageInputs(
    project: Project,
    runId: string,
    stage: StageName
  ): Promise<{ profile: Profile; previous: Partial<Record<StageName, unknown>>; failed: Partial<Record<StageName, string>> }> {
    const earlier = STAGES.slice(0, STAGES.indexOf(stage));
    const { profile, done } = await this.options.store.read(async q => ({
      profile: await q.get<Profile>('select * from profiles where id = $1', [project.profile_id]),
      done: earlier.length
        ? await q.all<Pick<StageRun, 'stage' | 'status' | 'output' | 'error'>>(
            'select stage, status, output, error from stage_runs where run_id = $1 order by attempt, started_at',
            [runId]
          )
        : []
    }));
    if (!profile) {
      throw new Error(`project ${project.id} names profile '${project.profile_id}', which is not in the store: call lab.useProfile(...)`);
    }
    const latest = new Map(done.map(r => [r.stage, r]));
    const previous: Partial<Record<StageName, unknown>> = {};
    // Why an earlier stage's latest attempt failed: a stage that needs it says so, not "run it first".
    const failed: Partial<Record<StageName, string>> = {};
    for (const name of earlier) {
      const run = latest.get(name);
      if (run?.status === 'done') previous[name] = run.output;
      else if (run?.status === 'failed') failed[name] = run.error ?? 'no reason was recorded';
    }
    return { profile, previous, failed };
  }

  /** Retrieval with the ablation switches applied: a part switched off contributes no candidates. */
  private async retrieveCandidates(project: Project, stage: StageName): Promise<{ skills: Skill[]; memories: Memory[] }> {
    if (!this.ablation.skills && !this.ablation.memory) return { skills: [], memories: [] };
    const found = await retrieve(this.options.store, {
      stage,
      query: `${project.topic}\n${STAGE_TASKS[stage]}`,
      projectId: project.id
    });
    return {
      skills: this.ablation.skills ? found.skills.map(s => s.item) : [],
      memories: this.ablation.memory ? found.memories.map(m => m.item) : []
    };
  }

  /**
   * Update: learned memories and the planner's update_memory into memory, skill distillation
   * from the trajectory, usage counts for what the planner selected. Each part that fails is
   * noted (the stage's result stands).
   */
  private async update(
    project: Project,
    stage: StageName,
    stageRunId: string,
    result: StageResult,
    plan: PlannerOutput,
    skills: Skill[],
    memories: Memory[],
    onActivity?: LlmActivityListener
  ): Promise<string[]> {
    const { memory, skills: skillBank, llm } = this.options;
    const attempt = async (what: string, step: () => Promise<string | undefined>): Promise<string | undefined> => {
      try {
        return await step();
      } catch (error) {
        return `${what} failed: ${errorMessage(error)}`;
      }
    };
    // Independent steps run side by side: the store writes of one overlap the judge call of another.
    const steps: Array<Promise<string | undefined>> = [];
    if (this.ablation.memory) {
      steps.push(attempt('remembering', async () => {
        const learned = [
          ...(result.memories ?? []).map(m => ({ ...m, source: 'stage' })),
          ...plan.update_memory.map(m => ({ kind: m.kind, content: m.content, source: 'planner' }))
        ];
        if (learned.length) await memory.rememberAll(learned.map(m => ({ ...m, projectId: project.id, stages: [stage] })));
        if (memories.length) await memory.markUsed(memories.map(m => m.id));
        return `memories remembered: ${learned.length}, marked used: ${memories.length}`;
      }));
    }
    if (this.ablation.skills) {
      steps.push(attempt('skill usage', async () => {
        if (skills.length) await skillBank.markUsed(skills.map(s => s.id));
        return undefined;
      }));
      steps.push(attempt('skill distillation', async () => {
        const notesForSkills = plan.update_skill.map(u => `Planner note${u.skill_id ? ` on ${u.skill_id}` : ''}: ${u.note}`);
        const decisions = await skillBank.distill({
          stage,
          trajectory: [result.trajectory, ...notesForSkills].join('\n'),
          llm: llm.scoped({ stageRunId, onActivity }),
          stageRunId
        });
        return `skill review: ${decisions.map(d => d.decision).join(', ') || 'no candidates'}`;
      }));
    }
    return (await Promise.all(steps)).filter((note): note is string => note !== undefined);
  }

  private async insertStageRun(
    project: Project,
    runId: string,
    stage: StageName,
    input: StageRunInput,
    identity: Pick<StageRun, 'id' | 'started_at'>
  ): Promise<StageRun> {
    return this.options.store.write(async q => {
      const previous = await q.get<{ attempts: number | null }>(
        'select max(attempt) as attempts from stage_runs where run_id = $1 and stage = $2',
        [runId, stage]
      );
      // This process holds the project's run lease, so an earlier attempt still 'running' belongs
      // to a process that ended (crash, kernel restart) before leases, or whose lease was taken over.
      await q.run(
        `update stage_runs set status = 'failed', error = 'interrupted: the process running it ended', finished_at = $3
          where run_id = $1 and stage = $2 and status in ('pending', 'running')`,
        [runId, stage, nowIso()]
      );
      const row: StageRun = {
        id: identity.id,
        project_id: project.id,
        run_id: runId,
        stage,
        status: 'pending',
        attempt: Number(previous?.attempts ?? 0) + 1,
        input: { ...input },
        summary: '',
        error: null,
        planner_call_id: null,
        skills_used: [],
        memories_used: [],
        usage: { prompt_tokens: 0, completion_tokens: 0, calls: 0, cost_usd: 0, wall_ms: 0, cache_hits: 0 },
        started_at: identity.started_at,
        finished_at: null,
        origin: 'local'
      };
      await q.run(
        `insert into stage_runs (id, project_id, run_id, stage, status, attempt, input, output, summary, error,
                                 planner_call_id, skills_used, memories_used, usage, started_at, finished_at, origin)
         values ($id, $project_id, $run_id, $stage, $status, $attempt, $input, $output, $summary, $error,
                 $planner_call_id, $skills_used, $memories_used, $usage, $started_at, $finished_at, $origin)`,
        { ...row, output: null }
      );
      return row;
    });
  }

  /**
   * Records the stage's end (usage from its llm_calls rows, the files it wrote, its log), updates
   * the run, and replaces the live card with the final one.
   */
  private async finish(
    stageRun: StageRun,
    input: StageRunInput,
    startedAt: number,
    live: LiveStageCard,
    card: (run: StageRun, extra: Partial<StageBundle>) => StageBundle,
    end: {
      status: 'done' | 'failed';
      error: string | null;
      result?: StageResult;
      used?: Pick<StageBundle, 'skills_used' | 'memories_used'>;
      onProgress?: (bundle: StageBundle) => void;
    }
  ): Promise<StageOutcome> {
    const { result } = end;
    live.close();
    stageRun.status = end.status;
    stageRun.error = end.error;
    // Any JSON value (the generated type narrows it to an object; stages also return arrays or strings).
    stageRun.output = (result?.output ?? null) as StageRun['output'];
    stageRun.summary = result?.summary ?? end.error ?? '';
    stageRun.finished_at = nowIso();
    input.trajectory = result?.trajectory ?? '';
    input.markdown = result?.markdown ?? '';
    input.bundle_outputs = result?.bundleOutputs ?? {};
    let workspace = '';
    await this.options.store.write(async q => {
      workspace = (await q.get<{ workspace: string | null }>('select workspace from projects where id = $1', [stageRun.project_id]))?.workspace ?? '';
      const log = workspace ? this.writeStageLog(workspace, stageRun, input) : undefined;
      input.artifacts = workspace ? await collectArtifacts(q, stageRun.id, stageRun.output, workspace, log ? [log] : []) : [];
      stageRun.usage = await usageOf(q, stageRun.id, Date.now() - startedAt);
      await saveStageRun(q, stageRun, input);
      await settleRun(q, stageRun);
    });
    const bundle = card(stageRun, { ...end.used, outputs: input.bundle_outputs, progress: null, artifacts: artifactLinks(input.artifacts ?? [], workspace) });
    const markdown = stageMarkdown(stageRun, bundle);
    end.onProgress?.(bundle);
    live.display.show(bundle, markdown);
    return { run: stageRun, bundle, markdown, display: live.display };
  }

  /**
   * The stage's log, `logs/<stage>-<attempt>.log` in the workspace: its account of what happened,
   * what Update did, and the error. Returns the path, or undefined when it could not be written
   * (said in update_notes: the stage's result stands).
   */
  private writeStageLog(workspace: string, run: StageRun, input: StageRunInput): string | undefined {
    const file = `logs/${run.stage}-${run.attempt}.log`;
    const head = [`${run.stage} attempt ${run.attempt} (stage run ${run.id}): ${run.status}`, `started ${run.started_at}, finished ${run.finished_at}`];
    if (run.error) head.push(`error: ${run.error}`);
    const update = input.update_notes.length ? `\n\nUpdate:\n${input.update_notes.map(n => `- ${n}`).join('\n')}` : '';
    const text = `${head.join('\n')}\n\n${input.trajectory || '(the stage left no account)'}${update}`;
    try {
      writeInside(workspace, file, `${text}\n`);
      return file;
    } catch (error) {
      input.update_notes.push(`stage log not written: ${errorMessage(error)}`);
      return undefined;
    }
  }

}

/** The LLM budget left to a stage and how to explain running out of it. */
interface RunBudget {
  limits: Budget;
  /** Set when nothing is left: why the stage cannot start. */
  exhausted?: string;
  /** Says which of the profile's budgets a BudgetExceededError hit. */
  describe: (error: BudgetExceededError) => string;
}

/**
 * What is left of the run's budget (profile resources: max_tokens_per_run, max_llm_cost_usd)
 * after the stage runs before this one, so a resumed run does not get a fresh budget.
 */
async function runBudget(q: Queryable, runId: string, profile: Profile): Promise<RunBudget> {
  const maxTokens = profile.resources.max_tokens_per_run;
  const maxCost = profile.resources.max_llm_cost_usd;
  // The scoped LLM only knows what was left for this stage; say which of the profile's budgets ran out.
  // The real options: the profile's resources (lab.useProfile) or a new run with a fresh budget.
  const raise = (field: string, value: number): string =>
    `Raise it in the profile: lab.useProfile({ ...profile, resources: { ...profile.resources, ${field}: ${value * 2} } }), ` +
    'or start a new run with project.run({ restart: true })';
  const describe = (error: BudgetExceededError): string =>
    error.limit === 'maxTokens' && maxTokens !== undefined
      ? `the run's token budget ran out (profile resources.max_tokens_per_run ${maxTokens}): ${error.problem}. ${raise('max_tokens_per_run', maxTokens)}`
      : error.limit === 'maxCostUsd' && maxCost !== undefined
        ? `the run's cost budget ran out (profile resources.max_llm_cost_usd $${maxCost}): ${error.problem}. ${raise('max_llm_cost_usd', maxCost)}`
        : error.message;
  if (maxTokens === undefined && maxCost === undefined) return { limits: {}, describe };
  const spent = await q.get<{ tokens: number | null; cost: number | null }>(
    `select sum(coalesce(c.prompt_tokens, 0) + coalesce(c.completion_tokens, 0)) as tokens, sum(coalesce(c.cost_usd, 0)) as cost
       from llm_calls c join stage_runs s on s.id = c.stage_run_id where s.run_id = $1`,
    [runId]
  );
  const tokens = Number(spent?.tokens ?? 0);
  const cost = Number(spent?.cost ?? 0);
  const limits: Budget = {};
  if (maxTokens !== undefined) limits.maxTokens = maxTokens - tokens;
  if (maxCost !== undefined) limits.maxCostUsd = maxCost - cost;
  if (limits.maxTokens !== undefined && limits.maxTokens <= 0) {
    return { limits, describe, exhausted: `stopped: the run's token budget is spent (${tokens} of max_tokens_per_run ${maxTokens}). ${raise('max_tokens_per_run', maxTokens!)}` };
  }
  if (limits.maxCostUsd !== undefined && limits.maxCostUsd <= 0) {
    return { limits, describe, exhausted: `stopped: the run's cost budget is spent ($${cost.toFixed(4)} of max_llm_cost_usd $${maxCost}). ${raise('max_llm_cost_usd', maxCost!)}` };
  }
  return { limits, describe };
}

/** Writes a stage run's state (everything but its identity) in the caller's transaction. */
async function saveStageRun(q: Queryable, run: StageRun, input: StageRunInput): Promise<void> {
  run.input = { ...input };
  await q.run(
    `update stage_runs set status = $status, input = $input, output = $output, summary = $summary, error = $error,
            planner_call_id = $planner_call_id, skills_used = $skills_used, memories_used = $memories_used,
            usage = $usage, finished_at = $finished_at
      where id = $id`,
    {
      id: run.id,
      status: run.status,
      input: run.input,
      output: run.output ?? null,
      summary: run.summary ?? '',
      error: run.error ?? null,
      planner_call_id: run.planner_call_id ?? null,
      skills_used: run.skills_used ?? [],
      memories_used: run.memories_used ?? [],
      usage: run.usage,
      finished_at: run.finished_at ?? null
    }
  );
}

/** Usage of one stage run, summed from its llm_calls rows (planner call and Update included). */
async function usageOf(q: Queryable, stageRunId: string, wallMs: number): Promise<Usage> {
  const row = await q.get<{ prompt: number | null; completion: number | null; calls: number; cost: number | null; hits: number | null }>(
    `select sum(prompt_tokens) as prompt, sum(completion_tokens) as completion, count(*) as calls,
            sum(coalesce(cost_usd, 0)) as cost, sum(case when cache_hit then 1 else 0 end) as hits
       from llm_calls where stage_run_id = $1`,
    [stageRunId]
  );
  return {
    prompt_tokens: Number(row?.prompt ?? 0),
    completion_tokens: Number(row?.completion ?? 0),
    calls: Number(row?.calls ?? 0),
    cost_usd: Number(row?.cost ?? 0),
    wall_ms: wallMs,
    cache_hits: Number(row?.hits ?? 0)
  };
}

/** The run is failed when a stage failed, done when its last stage is done, running otherwise. */
async function settleRun(q: Queryable, stageRun: StageRun): Promise<void> {
  const last = STAGES[STAGES.length - 1];
  const status = stageRun.status === 'failed' ? 'failed' : stageRun.stage === last ? 'done' : 'running';
  await q.run('update runs set status = $1, finished_at = $2 where id = $3', [status, status === 'running' ? null : nowIso(), stageRun.run_id]);
}

/** The stages from `from` to `to`, in pipeline order. */
export function stageRange(from: StageName = STAGES[0], to: StageName = STAGES[STAGES.length - 1]): StageName[] {
  const start = STAGES.indexOf(from);
  const end = STAGES.indexOf(to);
  if (start < 0 || end < 0) throw new Error(`unknown stage '${start < 0 ? from : to}': stages are ${STAGES.join(', ')}`);
  if (start > end) throw new Error(`stage '${from}' comes after '${to}': give from/to in the order ${STAGES.join(' → ')}`);
  return STAGES.slice(start, end + 1) as StageName[];
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

function memoryRef(memory: Memory): StageBundle['memories_used'][number] {
  return { id: memory.id, kind: memory.kind, content: memory.content };
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
