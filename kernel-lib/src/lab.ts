import { promises as fs } from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { Profile, Project as ProjectRecord } from '@nanoresearch/schema';
import { displayTable, type DisplayWriter } from './display';
import { exportSdpo, recordFeedback, type FeedbackResult } from './feedback';
import { stableId, nowIso } from './ids';
import { Literature } from './literature';
import { createLlm, llmConfigFromEnv, modelsReport, type Llm, type LlmConfig, type ModelsReport } from './llm';
import { MemoryBank } from './memory';
import { Orchestrator, type Ablation, type StageFn, type StageName } from './orchestrator';
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
  /** Folder of the store and the projects' workspaces (default $NANORESEARCH_HOME, else .nanoresearch/). */
  home?: string;
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
}

export interface ProjectOptions {
  title?: string;
  /** An archetype name or a full profile; default: the lab's current profile. */
  profile?: string | Profile;
  /** Folder for experiments and the paper (default <home>/projects/<project id>). */
  workspace?: string;
}

export interface FeedbackOptions {
  /** Default: $NANORESEARCH_AUTHOR, else the OS user name. */
  author?: string;
  /** 'code', 'sidebar' or the notebook it came from (default 'code'). */
  origin?: string;
  /** Makes a resend a no-op (the sidebar sends the id it wrote into the cell metadata). */
  id?: string;
}

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
  readonly orchestrator: Orchestrator;
  private readonly stageOverrides: Partial<Record<StageName, StageFn>>;
  private readonly displayWriter: DisplayWriter | null | undefined;

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
    this.stageOverrides = options.stages ?? {};
    this.displayWriter = options.display;
    this.orchestrator = new Orchestrator({
      store,
      llm,
      skills,
      memory,
      ablation: options.ablation,
      activeAdapter: () => activeAdapter(store),
      display: options.display
    });
  }

  /** Opens (creating if needed) the store under `home` and sets the lab up. */
  static async open(options: LabOptions = {}): Promise<Lab> {
    const home = path.resolve(options.home ?? process.env.NANORESEARCH_HOME ?? '.nanoresearch');
    const store = await Store.open({ home, path: options.path });
    try {
      const llm = isLlm(options.llm) ? options.llm : createLlm(options.llm ?? llmConfigFromEnv(), store);
      const skills = await SkillBank.open(store);
      const memory = new MemoryBank(store);
      return new Lab(home, store, llm, skills, memory, options);
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
    const now = nowIso();
    const stored = await this.store.write(async q => {
      const existing = await q.get<Profile>('select created_at from profiles where id = $1', [chosen.id]);
      const row = { ...chosen, created_at: existing?.created_at ?? chosen.created_at ?? now, updated_at: now };
      await q.run('delete from profiles where id = $1', [row.id]);
      await q.run(
        `insert into profiles (id, name, archetype, research, resources, writing, publication, interaction, notes, created_at, updated_at)
         values ($id, $name, $archetype, $research, $resources, $writing, $publication, $interaction, $notes, $created_at, $updated_at)`,
        { archetype: null, notes: null, ...row }
      );
      return row;
    });
    return stored;
  }

  /** The current profile: the one most recently set with useProfile, else the default archetype. */
  async profile(): Promise<Profile> {
    const latest = await this.store.read(q =>
      q.get<Profile>('select * from profiles order by updated_at desc nulls last, id limit 1')
    );
    return latest ? withoutNulls(latest) : this.useProfile(DEFAULT_ARCHETYPE);
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
      const existing = await q.get<ProjectRecord>('select * from projects where id = $1', [id]);
      if (existing) return withoutNulls(existing);
      const now = nowIso();
      const row: ProjectRecord = {
        id,
        title: options.title?.trim() || cleanTopic,
        topic: cleanTopic,
        profile_id: profile.id,
        workspace: path.resolve(options.workspace ?? path.join(this.home, 'projects', id)),
        status: 'active',
        created_at: now,
        updated_at: now
      };
      await q.run(
        `insert into projects (id, title, topic, profile_id, workspace, status, created_at, updated_at)
         values ($id, $title, $topic, $profile_id, $workspace, $status, $created_at, $updated_at)`,
        { ...row }
      );
      return row;
    });
    if (record.workspace) await fs.mkdir(record.workspace, { recursive: true });
    return new Project(this, record);
  }

  /** Read-only SQL over the store; shown as a table in a notebook, returned as rows. */
  async sql(query: string): Promise<Record<string, unknown>[]> {
    const result = await this.store.sql(query);
    displayTable(formatTable(result), this.displayWriter);
    return result.rows;
  }

  /** Feedback on a stage run (see Stage.feedback); idempotent by `options.id`. */
  async feedback(stageRunId: string, text: string, options: FeedbackOptions = {}): Promise<FeedbackResult> {
    return recordFeedback(
      this.store,
      { stageRunId, text, author: options.author ?? defaultAuthor(), origin: options.origin ?? 'code', id: options.id },
      { llm: this.llm, memory: this.memory, skills: this.skills }
    );
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

  /** Switches the planner to adapter `version` (rollback), or to the base model with null. */
  useAdapter(version: string | null): Promise<AdapterRecord | null> {
    return useAdapter(this.store, version);
  }

  /** The stage function that runs `stage`: an override given to open(), else the built-in one. */
  stageFunction(stage: StageName): StageFn {
    return this.stageOverrides[stage] ?? builtinStageFunctions[stage];
  }

  /** Every stage's function, overrides applied. */
  stageFunctionTable(): Record<StageName, StageFn> {
    return { ...builtinStageFunctions, ...this.stageOverrides };
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

  /** Releases the store file. */
  async close(): Promise<void> {
    await this.store.close();
  }

  private async storedProfile(profile: string | Profile): Promise<Profile> {
    if (typeof profile !== 'string') return this.useProfile(profile);
    const byId = await this.store.read(q => q.get<Profile>('select * from profiles where id = $1', [profile]));
    if (byId) return withoutNulls(byId);
    if (!(profile in archetypes)) {
      throw new Error(`unknown profile '${profile}': use an archetype (${Object.keys(archetypes).join(', ')}) or a stored profile id`);
    }
    const archetype = getArchetype(profile);
    const stored = await this.store.read(q => q.get<Profile>('select * from profiles where id = $1', [archetype.id]));
    return stored ? withoutNulls(stored) : this.useProfile(profile);
  }
}

/** Who gives feedback when the caller does not say: $NANORESEARCH_AUTHOR, else the OS user. */
export function defaultAuthor(env: NodeJS.ProcessEnv = process.env): string {
  if (env.NANORESEARCH_AUTHOR?.trim()) return env.NANORESEARCH_AUTHOR.trim();
  try {
    return os.userInfo().username || 'researcher';
  } catch {
    return 'researcher';
  }
}

function isLlm(value: LlmConfig | Llm | undefined): value is Llm {
  return typeof (value as Llm | undefined)?.complete === 'function';
}

/** A stored row with its SQL NULLs (optional columns never set) removed, as the schemas expect. */
function withoutNulls<T extends object>(row: T): T {
  return Object.fromEntries(Object.entries(row).filter(([, v]) => v !== null)) as T;
}
