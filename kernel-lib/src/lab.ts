import { promises as fs } from 'fs';
import * as path from 'path';
import type { Profile, Project as ProjectRecord } from '@nanoresearch/schema';
import { resolveAuthor } from './author';
import { displayTable, type DisplayWriter } from './display';
import { exportSdpo, LearningQueue, recordFeedback, type FeedbackResult, type LearningState } from './feedback';
import { errorMessage } from './error-message';
import { stableId, nowIso } from './ids';
import { insertProject, latestProfile, profileById, projectById, saveProfile } from './records';
import { Literature } from './literature';
import { CAPABLE_ENDPOINT_HINT, createLlm, llmConfigFromEnv, LlmError, LlmOutputError, modelsReport, type Llm, type LlmConfig, type ModelsReport } from './llm';
import { MemoryBank } from './memory';
import { Orchestrator } from './orchestrator';
import type { Ablation, StageFn, StageName } from './stage-contract';
import { archetypes, getArchetype, validateProfile } from './profiles';
import { Project } from './project';
import { SkillBank } from './skills';
import { importNotebook, type ImportCounts } from './sharing';
import { stageFunctions as builtinStageFunctions } from './stages';
import { formatTable, Store } from './store';
import { activeAdapter, listAdapters, train, useAdapter, type AdapterRecord, type TrainOptions } from './trainer';

/** The profile a lab uses until `useProfile` names another. */
export const DEFAULT_ARCHETYPE = 'evidence-first';

export interface LabOptions {
  /** Folder of the store and the planner's adapters (default $NANORESEARCH_HOME, else .nanoresearch/). */
  home?: string;
  /**
   * Folder the projects' workspaces (experiments, results, paper) are created in: default
   * $NANORESEARCH_WORKSPACES, else `nanoresearch/` in the current folder. In a notebook that is
   * beside the notebook, a visible folder JupyterLab opens every file of (the store's home is
   * often hidden or outside the folder JupyterLab serves).
   */
  workspaces?: string;
  /** The store file, when it is not `<home>/store.duckdb`. */
  path?: string;
  /** An LLM configuration, or a ready Llm (default: from the environment, see llmConfigFromEnv). */
  llm?: LlmConfig | Llm;
  /** Switch memory, skills or the planner off to measure what each contributes. */
  ablation?: Partial<Ablation>;
  /** Stage functions replacing the built-in ones (custom stages, tests). */
  stages?: Partial<Record<StageName, StageFn>>;
  /** Where stage cards go: undefined = the tslab kernel when there is one, null = nowhere. */
  display?: DisplayWriter | null;
  /**
   * Run the background learning from feedback in this Lab (default true). The bridge opens a
   * Lab of its own with false when the notebook has none yet: that Lab has not the notebook's
   * LLM limits, so its jobs wait in the store for the notebook's Lab.
   */
  learnInBackground?: boolean;
}

export interface ProjectOptions {
  title?: string;
  /** An archetype name or a full profile; default: the lab's current profile. */
  profile?: string | Profile;
  /** Folder for experiments and the paper (default <workspaces>/<topic>-<id>, see LabOptions.workspaces). */
  workspace?: string;
}

export interface FeedbackOptions {
  /** Default: the JupyterLab `author` setting, else $NANORESEARCH_AUTHOR, else git's user.name, else the OS user (see resolveAuthor). */
  author?: string;
  /** 'code', 'sidebar' or the notebook it came from (default 'code'). */
  origin?: string;
  /** Makes a resend a no-op (the sidebar sends the id it wrote into the cell metadata). */
  id?: string;
  /** When it was given (default now): feedback given offline in the sidebar is sent later. */
  createdAt?: string;
}

/** Labs open in this process, oldest first: the bridge answers the extension with the notebook's own (see Lab.lastOpened). */
const openLabs: Lab[] = [];

/**
 * The notebook's entry point: one researcher's store, LLM, skill bank, memory and projects.
 *
 * ```ts
 * const lab = await Lab.open();
 * const project = await lab.project('Tabular classification with small MLPs', { profile: 'ablation-focused' });
 * const idea = await project.ideate();
 * await idea.feedback('Always include a linear baseline.');
 * ```
 */
export class Lab {
  /** Runs the stages of this lab's projects; reached through `Project`, not part of the notebook surface. */
  private readonly orchestrator: Orchestrator;
  /** Learning from feedback, in the background (see feedback/learning.ts). */
  readonly learning: LearningQueue;
  private readonly displayWriter: DisplayWriter | null | undefined;
  /** Where new projects' workspaces are created (LabOptions.workspaces). */
  private readonly workspaces: string;

  private constructor(
    /** Folder of the store and the workspaces. */
    readonly home: string,
    readonly store: Store,
    readonly llm: Llm,
    /** The skill bank: list, get, update, retire, export/import SKILL.md folders. */
    readonly skills: SkillBank,
    /** User and project memory: list, get, update, retire. */
    readonly memory: MemoryBank,
    options: LabOptions
  ) {
    this.displayWriter = options.display;
    this.workspaces = path.resolve(options.workspaces ?? process.env.NANORESEARCH_WORKSPACES ?? 'nanoresearch');
    this.orchestrator = new Orchestrator({
      store,
      llm,
      skills,
      memory,
      // The stage table is fixed when the lab opens: the built-in stages with the lab's overrides.
      stages: { ...builtinStageFunctions, ...options.stages },
      ablation: options.ablation,
      activeAdapter: () => activeAdapter(store),
      display: options.display
    });
    this.learning = new LearningQueue(
      store,
      { llm, memory, skills },
      {
        run: options.learnInBackground !== false,
        isBusy: () => this.orchestrator.busy,
        describe: error => describeLlmFailure(error, llm)
      }
    );
  }

  /**
   * The Lab most recently opened in this process and not closed: in a notebook kernel, the one
   * the set-up cell opened, with the notebook's LLM configuration and limits.
   */
  static lastOpened(): Lab | undefined {
    return openLabs[openLabs.length - 1];
  }

  /** Opens (creating if needed) the store under `home` and sets the lab up. */
  static async open(options: LabOptions = {}): Promise<Lab> {
    const home = path.resolve(options.home ?? process.env.NANORESEARCH_HOME ?? '.nanoresearch');
    const store = await Store.open({ home, path: options.path });
    try {
      const llm = isLlm(options.llm) ? options.llm : createLlm(options.llm ?? llmConfigFromEnv(), store);
      const skills = await SkillBank.open(store);
      const memory = new MemoryBank(store);
      const lab = new Lab(home, store, llm, skills, memory, options);
      openLabs.push(lab);
      // Resume learning jobs a dead kernel left unfinished, and any still queued.
      lab.learning.kick();
      return lab;
    } catch (error) {
      await store.close();
      throw error;
    }
  }

  /** Which parts of the system are on. */
  get ablation(): Ablation {
    return this.orchestrator.ablation;
  }

  /**
   * Makes a profile the current one (stored in `profiles`): an archetype name
   * (ablation-focused, evidence-first, exploratory, resource-constrained, dataset-driven) or a
   * full profile. New projects use the current profile; the latest one set stays current
   * across sessions.
   */
  async useProfile(profile: string | Profile): Promise<Profile> {
    const chosen = typeof profile === 'string' ? getArchetype(profile) : validateProfile(profile);
    return this.store.write(q => saveProfile(q, chosen, nowIso()));
  }

  /** The current profile: the one most recently set with useProfile, else the default archetype. */
  async profile(): Promise<Profile> {
    const latest = await this.store.read(latestProfile);
    return latest ?? this.useProfile(DEFAULT_ARCHETYPE);
  }

  /**
   * The project on `topic` under the given (or current) profile, created on first use. The same
   * topic under two profiles is two projects, each with its own workspace and runs, so their
   * results can be compared side by side.
   */
  async project(topic: string, options: ProjectOptions = {}): Promise<Project> {
    const cleanTopic = topic.trim().replace(/\s+/g, ' ');
    if (!cleanTopic) throw new Error('a project needs a topic: lab.project("what you want to research")');
    const profile = options.profile === undefined ? await this.profile() : await this.storedProfile(options.profile);
    const id = stableId('prj', cleanTopic.toLowerCase(), profile.id);
    const record = await this.store.write(async q => {
      const existing = await projectById(q, id);
      if (existing) return existing;
      const now = nowIso();
      const row: ProjectRecord = {
        id,
        title: options.title?.trim() || cleanTopic,
        topic: cleanTopic,
        profile_id: profile.id,
        workspace: path.resolve(options.workspace ?? path.join(this.workspaces, workspaceName(cleanTopic, id))),
        status: 'active',
        created_at: now,
        updated_at: now
      };
      await insertProject(q, row);
      return row;
    });
    if (record.workspace) await fs.mkdir(record.workspace, { recursive: true });
    return new Project(this, this.orchestrator, record);
  }

  /** Read-only SQL over the store; shown as a table in a notebook, returned as rows. */
  async sql(query: string): Promise<Record<string, unknown>[]> {
    const result = await this.store.sql(query);
    displayTable(formatTable(result), this.displayWriter);
    return result.rows;
  }

  /**
   * Feedback on a stage run (see Stage.feedback); idempotent by `options.id`. Returns once the
   * feedback is stored; learning from it runs in the background (`learningStates`, `learningIdle`).
   */
  async feedback(stageRunId: string, text: string, options: FeedbackOptions = {}): Promise<FeedbackResult> {
    return recordFeedback(
      this.store,
      { stageRunId, text, author: options.author ?? defaultAuthor(), origin: options.origin ?? 'code', id: options.id, createdAt: options.createdAt },
      { queue: this.learning }
    );
  }

  /** The learning state (queued, learning, learned, failed) of each feedback id; null where there is no job. */
  learningStates(feedbackIds: string[]): Promise<Record<string, LearningState | null>> {
    return this.learning.states(feedbackIds);
  }

  /** Queues a failed learning job again (only the failed steps run). */
  retryLearning(feedbackId: string): Promise<LearningState> {
    return this.learning.retry(feedbackId);
  }

  /** Resolves when no learning job is left that this Lab can run now. */
  learningIdle(): Promise<void> {
    return this.learning.idle();
  }

  /** Writes the SDPO training examples (JSON Lines) to `file`; returns how many. */
  exportSdpo(file: string): Promise<number> {
    return exportSdpo(this.store, file);
  }

  /**
   * One SDPO round over all feedback so far: runs the Python trainer with a live progress bar,
   * registers the new planner adapter and makes it active. On failure the active adapter is kept.
   */
  train(options: TrainOptions = {}): Promise<AdapterRecord> {
    return train(this, { display: this.displayWriter, ...options });
  }

  /** Which model serves each role (embedded, or an OpenAI-compatible endpoint), and how to switch. */
  models(): ModelsReport {
    return modelsReport(this.llm.config);
  }

  /** The planner adapters trained so far, oldest first (`active` marks the one in use). */
  adapters(): Promise<AdapterRecord[]> {
    return listAdapters(this.store);
  }

  /** Switches the planner to adapter `version` (rollback; published to the planner's LoRA server first, if any), or to the base model with null. */
  useAdapter(version: string | null): Promise<AdapterRecord | null> {
    return useAdapter(this.store, version, this.llm.config.plannerServer);
  }

  /**
   * Imports a BibTeX or CSL-JSON file into the local literature corpus (the papers table), which
   * ideation searches first and which works offline; returns how many papers were imported.
   */
  importCorpus(file: string): Promise<number> {
    return new Literature({ store: this.store }).importCorpus(path.resolve(file));
  }

  /** Imports a colleague's notebook (stage runs, planner calls, feedback) into this store; see sharing/. */
  importNotebook(notebookPath: string): Promise<ImportCounts> {
    return importNotebook(this, notebookPath);
  }

  /** Stops background learning (an unfinished job is resumed by the next Lab) and releases the store file. */
  async close(): Promise<void> {
    const index = openLabs.indexOf(this);
    if (index >= 0) openLabs.splice(index, 1);
    await this.learning.close();
    await this.store.close();
  }

  private async storedProfile(profile: string | Profile): Promise<Profile> {
    if (typeof profile !== 'string') return this.useProfile(profile);
    const byId = await this.store.read(q => profileById(q, profile));
    if (byId) return byId;
    if (!(profile in archetypes)) {
      throw new Error(`unknown profile '${profile}': use an archetype (${Object.keys(archetypes).join(', ')}) or a stored profile id`);
    }
    const archetype = getArchetype(profile);
    const stored = await this.store.read(q => profileById(q, archetype.id));
    return stored ?? this.useProfile(profile);
  }
}

/** Who gives feedback when the caller does not say (see resolveAuthor for the order). */
export function defaultAuthor(env: NodeJS.ProcessEnv = process.env): string {
  return resolveAuthor({ env }).author;
}

/**
 * A learning step's error as the sidebar shows it: what happened, and with the embedded model,
 * how to use a capable one (the real fix for a small model's malformed or slow answers).
 */
function describeLlmFailure(error: unknown, llm: Llm): string {
  const message = errorMessage(error);
  const modelCaused = error instanceof LlmError || error instanceof LlmOutputError;
  return modelCaused && llm.config.provider === 'local' ? `${message}. ${CAPABLE_ENDPOINT_HINT}` : message;
}

/** A project's folder name: its topic in a few words (readable in the file browser), then its id's tail (unique). */
export function workspaceName(topic: string, projectId: string): string {
  const words = topic
    .toLowerCase()
    .normalize('NFKD')
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 48)
    .replace(/-+$/, '');
  return `${words || 'project'}-${projectId.slice(-6)}`;
}

function isLlm(value: LlmConfig | Llm | undefined): value is Llm {
  return typeof (value as Llm | undefined)?.complete === 'function';
}
