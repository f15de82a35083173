/** Helpers every stage shares: prompts with guidance, JSON calls, previous outputs, files. */
import { createHash } from 'crypto';
import { mkdirSync, writeFileSync } from 'fs';
import * as path from 'path';
import type { ChatMessage, JsonSchema, Role } from '../llm';
import type { StageContext, StageName } from '../orchestrator/types';

/**
 * The system prompt of a stage call: the task marker (scripted test models route on it),
 * what the model is asked to be, and the stage's guidance (profile, skills, memories, plan).
 */
export function systemPrompt(ctx: StageContext, task: string, instructions: string): string {
  return [`TASK: ${task}`, instructions.trim(), ctx.guidance.trim() ? `# Guidance for this researcher\n${ctx.guidance.trim()}` : ''].filter(Boolean).join('\n\n');
}

export function messages(system: string, user: string): ChatMessage[] {
  return [
    { role: 'system', content: system },
    { role: 'user', content: user }
  ];
}

/**
 * Token cap of a structured stage answer: room for a full blueprint or a set of hypotheses from a
 * capable model, while a small model that rambles inside a string is cut off instead of filling the
 * context (which took minutes per call with the embedded model).
 */
export const STAGE_JSON_MAX_TOKENS = 2048;

/** A JSON call with the stage's guidance in the system prompt. */
export async function askJson<T>(
  ctx: StageContext,
  role: Role,
  task: string,
  instructions: string,
  user: string,
  jsonSchema: JsonSchema,
  maxTokens = STAGE_JSON_MAX_TOKENS
): Promise<T> {
  const r = await ctx.llm.completeJson<T>({
    role,
    messages: messages(systemPrompt(ctx, task, instructions), user),
    jsonSchema,
    schemaName: task.replace(/[^\w]+/g, '_'),
    maxTokens
  });
  return r.value;
}

export async function askText(ctx: StageContext, role: Role, task: string, instructions: string, user: string, maxTokens?: number): Promise<string> {
  const r = await ctx.llm.complete({ role, messages: messages(systemPrompt(ctx, task, instructions), user), maxTokens });
  return r.text.trim();
}

/** The output of an earlier stage of this run, or a clear error naming the missing stage. */
export function previousOutput<T>(ctx: StageContext, stage: StageName): T {
  const out = ctx.previous[stage];
  if (out === undefined || out === null) {
    throw new Error(`the ${ctx.stage} stage needs the output of the ${stage} stage, which has not completed in this run; run ${stage} first`);
  }
  return out as T;
}

export function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Writes a file under the workspace, creating folders. */
export function writeWorkspaceFile(ctx: StageContext, relative: string, content: string): string {
  const file = path.join(ctx.workspace, relative);
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, content);
  return file;
}

/** A Markdown table. */
export function markdownTable(header: string[], rows: (string | number)[][]): string {
  const line = (cells: (string | number)[]) => `| ${cells.map(c => String(c).replace(/\|/g, '\\|')).join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

/** The message of an unknown thrown value. */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Errors that end a stage rather than one step of it: spent budget, cancellation. */
export function isFatal(error: unknown): boolean {
  const name = (error as { name?: string })?.name;
  return name === 'BudgetExceededError' || name === 'AbortError';
}
