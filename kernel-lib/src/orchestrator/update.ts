import type { Memory, PlannerOutput, Project } from '@nanoresearch/schema';
import { errorMessage } from '../error-message';
import type { Llm, LlmActivityListener } from '../llm';
import type { MemoryBank } from '../memory';
import type { SkillBank } from '../skills';
import type { Ablation, StageName, StageResult } from '../stage-contract';

/** What the Update step learns from, and with what. */
export interface UpdateRequest {
  project: Project;
  stage: StageName;
  stageRunId: string;
  result: StageResult;
  plan: PlannerOutput;
  /** The memories the stage was given (their use is counted with the stage's end). */
  memories: Memory[];
  onActivity?: LlmActivityListener;
}

export interface UpdateDeps {
  ablation: Ablation;
  memory: MemoryBank;
  skills: SkillBank;
  llm: Llm;
}

/**
 * Update: learned memories and the planner's update_memory into memory, and skill distillation
 * from the trajectory, side by side (the store writes of one overlap the judge call of the other).
 * Each part that fails is noted: the stage's result stands. Returns the notes.
 */
export async function updateFromStage(deps: UpdateDeps, request: UpdateRequest): Promise<string[]> {
  const steps: Array<Promise<string>> = [];
  if (deps.ablation.memory) steps.push(noteFailure('remembering', () => remember(deps.memory, request)));
  if (deps.ablation.skills && deps.ablation.skillDistillation) steps.push(noteFailure('skill distillation', () => distill(deps, request)));
  return Promise.all(steps);
}

async function noteFailure(what: string, step: () => Promise<string>): Promise<string> {
  try {
    return await step();
  } catch (error) {
    return `${what} failed: ${errorMessage(error)}`;
  }
}

async function remember(memory: MemoryBank, { project, stage, result, plan, memories }: UpdateRequest): Promise<string> {
  const learned = [
    ...(result.memories ?? []).map(m => ({ ...m, source: 'stage' })),
    ...plan.update_memory.map(m => ({ kind: m.kind, content: m.content, source: 'planner' }))
  ];
  if (learned.length) await memory.rememberAll(learned.map(m => ({ ...m, projectId: project.id, stages: [stage] })));
  return `memories remembered: ${learned.length}, marked used: ${memories.length}`;
}

async function distill({ skills, llm }: UpdateDeps, { stage, stageRunId, result, plan, onActivity }: UpdateRequest): Promise<string> {
  const notesForSkills = plan.update_skill.map(u => `Planner note${u.skill_id ? ` on ${u.skill_id}` : ''}: ${u.note}`);
  const decisions = await skills.distill({
    stage,
    trajectory: [result.trajectory, ...notesForSkills].join('\n'),
    llm: llm.scoped({ stageRunId, onActivity }),
    stageRunId
  });
  return `skill review: ${decisions.map(d => d.decision).join(', ') || 'no candidates'}`;
}
