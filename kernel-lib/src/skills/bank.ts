/**
 * The skill bank over the store: built-ins synced from `skills/*\/SKILL.md`, distillation of
 * new skills from a stage's trajectory and feedback (LLM, role 'judge'), the deterministic
 * review gate in front of every write, usage counting, and SKILL.md export/import.
 */
import fs from 'fs';
import path from 'path';
import type { Skill } from '@nanoresearch/schema';
import { errorMessage } from '../error-message';
import { newId } from '../ids';
import type { Llm } from '../llm/types';
import type { StageName } from '../stage-contract';
import type { Queryable } from '../store/queryable';
import { schemaErrors } from '../validate';
import { indexDocuments, skillDoc, skillText, unindexDocuments } from '../retrieval/terms';
import { bumpSkillCounter, skillFromRow, skillToRow, slugify } from '../records/skills';
import { ReviewDecision, ReviewVerdict, SkillCandidate, reviewCandidate, unionInstructions } from './review';
import { parseSkillMd, renderSkillMd } from './skill-md';
import { quoteUntrusted, UNTRUSTED_SYSTEM_RULE } from '../llm/untrusted';

/** The part of a `Store` the bank uses. */
export interface SkillStore {
  read<T>(fn: (q: Queryable) => Promise<T>): Promise<T>;
  write<T>(fn: (q: Queryable) => Promise<T>): Promise<T>;
}

/** Where the built-in skills live: `<repo>/skills`, found from this file in src/ or dist/. */
export function defaultBuiltinDir(): string {
  const candidates = [path.resolve(__dirname, '..', '..', '..', 'skills'), path.resolve(process.cwd(), 'skills')];
  return candidates.find(d => fs.existsSync(d)) ?? candidates[0];
}

export interface SkillFilter {
  stage?: StageName;
  status?: Skill['status'];
  source?: Skill['source'];
  tag?: string;
}

export type SkillPatch = Partial<Pick<Skill, 'name' | 'description' | 'when_to_use' | 'instructions' | 'stages' | 'tags' | 'status'>>;

/** What happened to one candidate. */
export interface ReviewOutcome extends ReviewVerdict {
  candidate: SkillCandidate;
  /** The skill written (added, merged or revised); undefined when discarded. */
  skill?: Skill;
  reviewId: string;
}

/** The JSON schema of the distillation answer: at most 3 candidates, an empty list being valid. */
export const DISTILL_SCHEMA = {
  title: 'skill_candidates',
  type: 'object',
  additionalProperties: false,
  required: ['skills'],
  properties: {
    skills: {
      type: 'array',
      // Every part bounded: under a grammar a small model repeats itself in an unbounded list or string.
      maxItems: 3,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'description', 'instructions'],
        properties: {
          name: { type: 'string', minLength: 3, maxLength: 60 },
          description: { type: 'string', minLength: 10, maxLength: 200 },
          when_to_use: { type: 'string', maxLength: 200 },
          instructions: { type: 'array', minItems: 1, maxItems: 5, items: { type: 'string', minLength: 5, maxLength: 200 } },
          stages: { type: 'array', maxItems: 2, items: { type: 'string', enum: ['ideation', 'planning', 'experiment', 'analysis', 'writing', 'review'] } },
          tags: { type: 'array', maxItems: 4, items: { type: 'string', maxLength: 30 } }
        }
      }
    }
  }
} as const;

const DISTILL_SYSTEM_PROMPT = `You distil reusable research procedures ("skills") from one stage of a research run and
the researcher's feedback on it. A skill is a short, general procedure another project could follow: a name, a
one-sentence description, when to use it, and 2-6 concrete numbered instructions (imperative, specific: numbers,
checks, artefacts). Do not restate the task, do not write generic advice ("be careful"). Return at most 3 skills
as {"skills": [...]}; return {"skills": []} when nothing reusable happened: no skill is better than a vague one.`;

const TRACE_EXCERPT_CHARS = 1000;

function assertValidSkill(skill: Skill): void {
  const errors = schemaErrors('skill', skill);
  if (errors.length) throw new Error(`Skill ${skill.id} is not a valid record: ${errors.join('; ')}`);
}

async function writeSkill(q: Queryable, skill: Skill, reindex: boolean): Promise<void> {
  assertValidSkill(skill);
  const row = skillToRow(skill);
  const columns = Object.keys(row);
  await q.run(`INSERT OR REPLACE INTO skills (${columns.join(', ')}) VALUES (${columns.map(c => `$${c}`).join(', ')})`, row);
  if (!reindex) return;
  if (skill.status === 'active') await indexDocuments(q, 'skill', [skillDoc(skill)]);
  else await unindexDocuments(q, 'skill', [skill.id]);
}

function union<T>(a: readonly T[] | undefined, b: readonly T[] | undefined): T[] | undefined {
  if (!a && !b) return undefined;
  return [...new Set([...(a ?? []), ...(b ?? [])])];
}

export class SkillBank {
  private constructor(
    private readonly store: SkillStore,
    readonly builtinDir: string
  ) {}

  /** Opens the bank and syncs the built-in skills into the store. */
  static async open(store: SkillStore, options: { builtinDir?: string } = {}): Promise<SkillBank> {
    const bank = new SkillBank(store, options.builtinDir ?? defaultBuiltinDir());
    await bank.syncBuiltins();
    return bank;
  }

  /** Reads every `<dir>/<name>/SKILL.md`; a malformed file is an error naming it. */
  static readSkillDir(dir: string, source: Skill['source']): Skill[] {
    if (!fs.existsSync(dir)) throw new Error(`Skill folder ${dir} does not exist`);
    const skills: Skill[] = [];
    for (const entry of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const file = path.join(dir, entry.name, 'SKILL.md');
      if (!entry.isDirectory() || !fs.existsSync(file)) continue;
      const skill = parseSkillMd(fs.readFileSync(file, 'utf8'), file, source);
      if (skill.id !== entry.name) throw new Error(`${file}: front matter name "${skill.id}" must equal its folder name "${entry.name}"`);
      skills.push(skill);
    }
    return skills;
  }

  /**
   * Upserts the built-ins by id: text, stages and tags follow the files; usage and success
   * counts, status and creation time are kept. Returns how many were added and updated.
   */
  async syncBuiltins(dir: string = this.builtinDir): Promise<{ added: number; updated: number }> {
    const builtins = SkillBank.readSkillDir(dir, 'builtin');
    const now = new Date().toISOString();
    return this.store.write(async q => {
      let added = 0;
      let updated = 0;
      for (const skill of builtins) {
        const row = await q.get<Record<string, unknown>>('SELECT * FROM skills WHERE id = $1', [skill.id]);
        if (!row) {
          await writeSkill(q, { ...skill, created_at: now, updated_at: now }, true);
          added++;
          continue;
        }
        const old = skillFromRow(row);
        const sameText = skillText(old) === skillText(skill) && JSON.stringify(old.tags) === JSON.stringify(skill.tags);
        if (sameText && JSON.stringify(old.stages) === JSON.stringify(skill.stages) && old.version === skill.version) continue;
        await writeSkill(
          q,
          {
            ...skill,
            status: old.status,
            usage_count: old.usage_count ?? 0,
            success_count: old.success_count ?? 0,
            created_at: old.created_at,
            updated_at: now
          },
          !sameText
        );
        updated++;
      }
      return { added, updated };
    });
  }

  async get(id: string): Promise<Skill | undefined> {
    const row = await this.store.read(q => q.get<Record<string, unknown>>('SELECT * FROM skills WHERE id = $1', [id]));
    return row ? skillFromRow(row) : undefined;
  }

  async list(filter: SkillFilter = {}): Promise<Skill[]> {
    const where: string[] = [];
    const params: Record<string, unknown> = {};
    if (filter.status) {
      where.push('status = $status');
      params.status = filter.status;
    }
    if (filter.source) {
      where.push('source = $source');
      params.source = filter.source;
    }
    if (filter.stage) {
      where.push(`(stages IS NULL OR json_array_length(stages) = 0 OR list_contains(from_json(stages, '["VARCHAR"]'), $stage))`);
      params.stage = filter.stage;
    }
    if (filter.tag) {
      where.push(`list_contains(from_json(coalesce(tags, '[]'), '["VARCHAR"]'), $tag)`);
      params.tag = filter.tag;
    }
    const sql = `SELECT * FROM skills ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id`;
    const rows = await this.store.read(q => q.all<Record<string, unknown>>(sql, where.length ? params : undefined));
    return rows.map(skillFromRow);
  }

  /** Edits a skill; a change to its procedure bumps the version. */
  async update(id: string, patch: SkillPatch): Promise<Skill> {
    return this.store.write(async q => {
      const old = await this.mustGet(q, id);
      const next: Skill = { ...old, ...patch, updated_at: new Date().toISOString() };
      const indexChanged = skillText(next) !== skillText(old) || JSON.stringify(next.tags) !== JSON.stringify(old.tags) || next.status !== old.status;
      if (skillText(next) !== skillText(old)) next.version = old.version + 1;
      await writeSkill(q, next, indexChanged);
      return next;
    });
  }

  async retire(id: string): Promise<Skill> {
    return this.update(id, { status: 'retired' });
  }

  /** Counts one use of each skill: the planner selected it for a stage. */
  async markUsed(ids: readonly string[]): Promise<void> {
    await this.bump('usage_count', ids);
  }

  /** Counts one success of each skill: the stage that used it completed and was not rejected. */
  async markSucceeded(ids: readonly string[]): Promise<void> {
    await this.bump('success_count', ids);
  }

  /**
   * Runs candidates through the review gate and applies each decision, logging it in
   * `skill_reviews` (decision, reason, similarity). One transaction for the batch.
   */
  async review(
    candidates: readonly SkillCandidate[],
    context: {
      stage?: StageName;
      stageRunId?: string;
      trace?: string;
      source?: Skill['source'];
      origin?: string;
      preferred?: readonly { id: string; version: number }[];
    } = {}
  ): Promise<ReviewOutcome[]> {
    return this.store.write(async q => {
      const outcomes: ReviewOutcome[] = [];
      for (let i = 0; i < candidates.length; i++) {
        const candidate = candidates[i];
        const activeRows = await q.all<Record<string, unknown>>(`SELECT * FROM skills WHERE status = 'active'`);
        const verdict = reviewCandidate(candidate, activeRows.map(skillFromRow));
        const skill = await this.apply(q, candidate, verdict, { ...context, preferred: context.preferred?.[i] });
        const reviewId = newId('rev');
        await q.run(
          `INSERT INTO skill_reviews (id, skill_id, candidate, decision, reason, similarity, created_at)
           VALUES ($id, $skill_id, $candidate, $decision, $reason, $similarity, $created_at)`,
          {
            id: reviewId,
            skill_id: skill?.id ?? verdict.target?.id ?? null,
            candidate,
            decision: verdict.decision,
            reason: verdict.reason,
            similarity: verdict.similarity,
            created_at: new Date().toISOString()
          }
        );
        outcomes.push({ ...verdict, candidate, skill, reviewId });
      }
      return outcomes;
    });
  }

  /**
   * Asks the judge model for at most 3 skill candidates from a stage's trajectory and the
   * feedback on it, then reviews them. An empty answer is valid (nothing learned). Fails
   * closed: an LLM or schema failure throws and nothing is written.
   */
  async distill(args: { stage: StageName; trajectory: string; feedback?: string; llm: Llm; stageRunId?: string }): Promise<ReviewOutcome[]> {
    let candidates: SkillCandidate[];
    try {
      const answer = await args.llm.completeJson<{ skills: SkillCandidate[] }>({
        role: 'judge',
        messages: [
          { role: 'system', content: `${DISTILL_SYSTEM_PROMPT}\n${UNTRUSTED_SYSTEM_RULE}` },
          {
            role: 'user',
            // The trajectory holds model output and program output, the feedback may be a colleague's: both are quoted data.
            content: `Stage: ${args.stage}\n\nTrajectory:\n${quoteUntrusted('trajectory', args.trajectory.slice(0, 6000))}\n\nFeedback:\n${args.feedback?.trim() ? quoteUntrusted('feedback', args.feedback.trim()) : '(none)'}`
          }
        ],
        jsonSchema: DISTILL_SCHEMA as unknown as Record<string, unknown>,
        temperature: 0,
        // Three short skills fit well within this; a small model rambling in a string is cut off.
        maxTokens: 1024
      });
      candidates = answer.value.skills;
    } catch (error) {
      throw new Error(`Skill distillation for stage ${args.stage} failed (no skill was written): ${errorMessage(error)}`, {
        cause: error
      });
    }
    if (candidates.length === 0) return [];
    return this.review(
      candidates.map(c => ({ ...c, stages: c.stages ?? [args.stage] })),
      { stage: args.stage, stageRunId: args.stageRunId, trace: args.trajectory, source: 'distilled' }
    );
  }

  /** Writes every active skill as `<dir>/<id>/SKILL.md`; returns the files written. */
  async exportTo(dir: string): Promise<string[]> {
    const skills = await this.list({ status: 'active' });
    const files: string[] = [];
    for (const skill of skills) {
      const folder = path.join(dir, skill.id);
      fs.mkdirSync(folder, { recursive: true });
      const file = path.join(folder, 'SKILL.md');
      fs.writeFileSync(file, renderSkillMd(skill));
      files.push(file);
    }
    return files;
  }

  /**
   * Imports SKILL.md folders (a colleague's export) through the review gate: new skills keep
   * their id and version, restated ones merge, duplicates are discarded, all logged.
   * `origin` (default: the folder's absolute path) is kept in each new skill's provenance.
   */
  async importFrom(dir: string, origin: string = path.resolve(dir)): Promise<ReviewOutcome[]> {
    const skills = SkillBank.readSkillDir(dir, 'imported');
    return this.review(
      skills.map(s => ({ name: s.name, description: s.description, when_to_use: s.when_to_use, instructions: s.instructions, stages: s.stages, tags: s.tags })),
      { source: 'imported', origin, preferred: skills.map(s => ({ id: s.id, version: s.version })) }
    );
  }

  private async apply(
    q: Queryable,
    candidate: SkillCandidate,
    verdict: ReviewVerdict,
    context: { stage?: StageName; stageRunId?: string; trace?: string; source?: Skill['source']; origin?: string; preferred?: { id: string; version: number } }
  ): Promise<Skill | undefined> {
    const now = new Date().toISOString();
    const decision: ReviewDecision = verdict.decision;
    if (decision === 'discard') return undefined;
    const target = verdict.target;
    if (decision === 'add' || !target) {
      const id = await this.freeId(q, context.preferred?.id ?? slugify(candidate.name));
      const provenance: Skill['provenance'] = {};
      if (context.stage) provenance.stage = context.stage;
      if (context.stageRunId) provenance.stage_run_id = context.stageRunId;
      if (context.trace) provenance.trace_excerpt = context.trace.slice(0, TRACE_EXCERPT_CHARS);
      if (context.origin) provenance.origin = context.origin;
      const skill: Skill = {
        id,
        name: candidate.name.trim(),
        description: candidate.description.trim(),
        instructions: candidate.instructions.map(s => s.trim()).filter(Boolean),
        source: context.source ?? 'distilled',
        version: context.preferred?.version ?? 1,
        status: 'active',
        usage_count: 0,
        success_count: 0,
        provenance,
        created_at: now,
        updated_at: now
      };
      if (candidate.when_to_use?.trim()) skill.when_to_use = candidate.when_to_use.trim();
      if (candidate.stages?.length) skill.stages = candidate.stages;
      if (candidate.tags?.length) skill.tags = candidate.tags;
      await writeSkill(q, skill, true);
      return skill;
    }
    const next: Skill = {
      ...target,
      instructions: decision === 'merge' ? unionInstructions(target.instructions, candidate.instructions) : candidate.instructions.map(s => s.trim()),
      stages: union(target.stages, candidate.stages),
      tags: union(target.tags, candidate.tags),
      version: target.version + 1,
      updated_at: now
    };
    if (decision === 'revise' && candidate.when_to_use?.trim()) next.when_to_use = candidate.when_to_use.trim();
    for (const k of ['stages', 'tags'] as const) if (next[k] === undefined) delete next[k];
    await writeSkill(q, next, true);
    return next;
  }

  /** `base`, or `base-2`, `base-3`, ... whichever id is not taken. */
  private async freeId(q: Queryable, base: string): Promise<string> {
    const slug = slugify(base);
    const taken = new Set((await q.all<{ id: string }>(`SELECT id FROM skills WHERE id = $1 OR id LIKE $2`, [slug, `${slug}-%`])).map(r => r.id));
    if (!taken.has(slug)) return slug;
    for (let n = 2; ; n++) if (!taken.has(`${slug}-${n}`)) return `${slug}-${n}`;
  }

  private async bump(column: 'usage_count' | 'success_count', ids: readonly string[]): Promise<void> {
    if (ids.length === 0) return;
    await this.store.write(q => bumpSkillCounter(q, column, ids));
  }

  private async mustGet(q: Queryable, id: string): Promise<Skill> {
    const row = await q.get<Record<string, unknown>>('SELECT * FROM skills WHERE id = $1', [id]);
    if (!row) throw new Error(`No skill with id "${id}"; list them with skillBank.list()`);
    return skillFromRow(row);
  }
}
