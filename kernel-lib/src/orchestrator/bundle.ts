import {
  STAGE_LABELS,
  type Feedback,
  type Memory,
  type PlannerOutput,
  type Profile,
  type Project,
  type Skill,
  type StageBundle,
  type StageRun
} from '@nanoresearch/schema';
import { renderMemory } from '../records/memories';
import { renderProfileFor } from '../profiles';
import { inputOf, projectById, stageRunById } from '../records';
import type { StageName } from '../stage-contract';
import type { Store } from '../store';
import { artifactLinks } from './artifacts';

/** The card title of a stage: "Ideation · <project title>". */
export function stageTitle(stage: StageName, project: Pick<Project, 'title'>): string {
  return `${STAGE_LABELS[stage]} · ${project.title}`;
}

/**
 * The stage card data (schema/stage-bundle.schema.json) of a stage run. `extra` supplies what
 * the stage_runs row does not hold: title, outputs, progress, the used skills' names, feedback.
 */
export function stageBundle(run: StageRun, extra: Partial<StageBundle> & { title: string }): StageBundle {
  const status = run.status === 'pending' ? 'running' : run.status;
  const bundle: StageBundle = {
    version: 1,
    stage: run.stage,
    project_id: run.project_id,
    stage_run_id: run.id,
    status,
    title: extra.title,
    summary: run.summary ?? '',
    error: run.error ?? null,
    progress: extra.progress ?? null,
    outputs: extra.outputs ?? {},
    skills_used: extra.skills_used ?? (run.skills_used ?? []).map(id => ({ id, name: id })),
    memories_used: extra.memories_used ?? [],
    usage: run.usage ?? { prompt_tokens: 0, completion_tokens: 0, calls: 0, cost_usd: 0, wall_ms: 0, cache_hits: 0 },
    feedback: extra.feedback ?? []
  };
  if (run.started_at) bundle.started_at = run.started_at;
  if (extra.artifacts?.length) bundle.artifacts = extra.artifacts;
  return bundle;
}

/**
 * The Markdown fallback under a stage card: the stage's own rendering (or its status line), then
 * the feedback given on it.
 */
export function stageMarkdown(run: StageRun, bundle: StageBundle): string {
  const input = inputOf(run);
  const head = input.markdown || `**${bundle.title}** — ${bundle.status}${bundle.error ? `: ${bundle.error}` : bundle.summary ? `: ${bundle.summary}` : ''}`;
  // Relative links open the files in JupyterLab (and on GitHub beside the notebook).
  const links = (bundle.artifacts ?? []).map(a => (a.href ? `[${a.path}](${a.href.split('/').map(encodeURIComponent).join('/')})` : `\`${a.path}\``));
  const files = links.length ? `\n\n**Files:** ${links.join(' · ')}` : '';
  const feedback = bundle.feedback ?? [];
  if (!feedback.length) return `${head}${files}`;
  return `${head}${files}\n\n**Feedback**\n${feedback.map(f => `- ${f.text} — ${f.author}`).join('\n')}`;
}

/**
 * The guidance a stage puts into its prompts: the profile excerpt for the stage, the planner's
 * prompt plan, and the selected skills and memories.
 */
export function renderGuidance(stage: StageName, profile: Profile, skills: Skill[], memories: Memory[], plan: PlannerOutput): string {
  const parts = [`## Researcher profile\n${renderProfileFor(stage, profile).trim()}`];
  if (plan.prompt_plan.trim()) parts.push(`## Plan for this stage\n${plan.prompt_plan.trim()}`);
  if (skills.length) {
    parts.push(
      `## Skills to follow\n${skills
        .map(s => `### ${s.name}\n${s.description}\n${s.instructions.map((step, i) => `${i + 1}. ${step}`).join('\n')}`)
        .join('\n\n')}`
    );
  }
  if (memories.length) {
    parts.push(`## What we know from earlier work\n${memories.map(m => `- ${renderMemory(m)}`).join('\n')}`);
  }
  return parts.join('\n\n');
}

/**
 * A stored stage run and its card, rebuilt from the store: used for stages a resumed run skips,
 * for `Stage` objects and for refreshing a card after feedback.
 */
export async function loadStageBundle(store: Store, stageRunId: string): Promise<{ run: StageRun; bundle: StageBundle }> {
  return store.read(async q => {
    const run = await stageRunById(q, stageRunId);
    if (!run) throw new Error(`no stage run '${stageRunId}' in this store`);
    const project = await projectById(q, run.project_id);
    const skillIds = run.skills_used ?? [];
    const memoryIds = run.memories_used ?? [];
    const skills = skillIds.length
      ? await q.all<Pick<Skill, 'id' | 'name'>>(`select id, name from skills where id in (${placeholders(skillIds)})`, skillIds)
      : [];
    const memories = memoryIds.length
      ? await q.all<Pick<Memory, 'id' | 'kind' | 'content'>>(`select id, kind, content from memories where id in (${placeholders(memoryIds)})`, memoryIds)
      : [];
    const feedback = await q.all<Feedback>('select id, text, author, created_at from feedback where stage_run_id = $1 order by created_at, id', [stageRunId]);
    const skillNames = new Map(skills.map(s => [s.id, s.name]));
    const memoryRows = new Map(memories.map(m => [m.id, m]));
    const input = inputOf(run);
    const bundle = stageBundle(run, {
      title: stageTitle(run.stage, project ?? { title: run.project_id }),
      outputs: input.bundle_outputs ?? {},
      skills_used: skillIds.map(id => ({ id, name: skillNames.get(id) ?? id })),
      memories_used: memoryIds.flatMap(id => {
        const m = memoryRows.get(id);
        return m ? [{ id, kind: m.kind, content: m.content }] : [];
      }),
      feedback: feedback.map(f => ({ id: f.id, text: f.text, author: f.author, created_at: f.created_at })),
      artifacts: artifactLinks(input.artifacts ?? [], project?.workspace ?? '')
    });
    return { run, bundle };
  });
}

/** `$1, $2, ...` for a positional IN list. */
function placeholders(values: unknown[]): string {
  return values.map((_, i) => `$${i + 1}`).join(', ');
}
