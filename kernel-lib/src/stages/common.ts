/** Helpers every stage shares: prompts with guidance, JSON calls, previous outputs, files. */
import { createHash } from 'crypto';
import { existsSync } from 'fs';
import * as path from 'path';
import type { ChatMessage, JsonSchema, Role } from '../llm';
import type { StageContext, StageName } from '../stage-contract';
import { listInside, readInside, writeInside } from '../sandbox/workspace-fs';

/**
 * The system prompt of a stage call: what the model is asked to be, then the stage's guidance
 * (profile, skills, memories, plan). Calls of one stage that share instructions share this whole
 * prompt, so an embedded model evaluates it once and reuses it (see llm/providers/local.ts).
 */
export function systemPrompt(ctx: StageContext, instructions: string): string {
  return [instructions.trim(), ctx.guidance.trim() ? `# Guidance for this researcher\n${ctx.guidance.trim()}` : ''].filter(Boolean).join('\n\n');
}

/**
 * The messages of a stage call. The user turn opens with the task marker (what the call is for:
 * logs and scripted test models read it); it comes after the shared system prompt so that the
 * marker does not break the shared prefix.
 */
export function messages(system: string, task: string, user: string): ChatMessage[] {
  return [
    { role: 'system', content: system },
    { role: 'user', content: `TASK: ${task}\n\n${user}` }
  ];
}

/**
 * Token cap of a structured stage answer. Every schema a stage asks for bounds its strings and
 * arrays (see `bounded`), so a valid answer fits well within this; the cap only stops a model
 * that pads with whitespace.
 */
export const STAGE_JSON_MAX_TOKENS = 1024;

/** Unbounded strings and arrays in a stage schema get these bounds (a small model loops otherwise). */
export interface Bounds {
  /** maxLength for strings without one. */
  text: number;
  /** maxItems for arrays without one. */
  items: number;
  /** Per-property overrides by property name: a number is maxItems (arrays) or maxLength (strings). */
  by?: Record<string, number>;
}

/**
 * `schema` with every string and array bounded: greedy decoding under a grammar cannot stop a
 * model that repeats itself inside an unbounded string or list, and a bound the grammar enforces
 * ends the answer in a few hundred tokens instead of at the token cap.
 */
export function bounded(schema: JsonSchema, bounds: Bounds, name?: string): JsonSchema {
  const out: JsonSchema = { ...schema };
  const type = out.type;
  const override = name !== undefined ? bounds.by?.[name] : undefined;
  if (type === 'string' && out.enum === undefined && out.const === undefined) {
    out.maxLength = override ?? (typeof out.maxLength === 'number' ? out.maxLength : bounds.text);
  }
  if (type === 'array') {
    out.maxItems = override ?? (typeof out.maxItems === 'number' ? out.maxItems : bounds.items);
    if (out.items && typeof out.items === 'object') out.items = bounded(out.items as JsonSchema, bounds);
  }
  if (out.properties && typeof out.properties === 'object') {
    out.properties = Object.fromEntries(Object.entries(out.properties as Record<string, JsonSchema>).map(([key, sub]) => [key, bounded(sub, bounds, key)]));
  }
  return out;
}

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
    messages: messages(systemPrompt(ctx, instructions), task, user),
    jsonSchema,
    schemaName: task.replace(/[^\w]+/g, '_'),
    maxTokens
  });
  return r.value;
}

/** Token cap of a free-text stage answer (a paper section, an analysis): a few paragraphs. */
export const STAGE_TEXT_MAX_TOKENS = 400;

export async function askText(
  ctx: StageContext,
  role: Role,
  task: string,
  instructions: string,
  user: string,
  maxTokens = STAGE_TEXT_MAX_TOKENS
): Promise<string> {
  const r = await ctx.llm.complete({ role, messages: messages(systemPrompt(ctx, instructions), task, user), maxTokens });
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

/**
 * The first fenced code block of an answer (```python … ```), or the whole answer when it has
 * no fence. Code comes as plain text: inside a JSON string a grammar caps it in characters and
 * a small model spends its tokens on escapes.
 */
export function fencedCode(answer: string): string {
  const fence = /```[\w+-]*[^\S\n]*\n([\s\S]*?)(?:\n```|$)/.exec(answer);
  return (fence ? fence[1] : answer).replace(/\s+$/, '') + '\n';
}

export function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Writes a file under the workspace, creating folders; never through a link generated code left there. */
export function writeWorkspaceFile(ctx: StageContext, relative: string, content: string): string {
  writeInside(ctx.workspace, relative, content);
  return path.join(ctx.workspace, relative);
}

/** A Markdown table. */
export function markdownTable(header: string[], rows: (string | number)[][]): string {
  const line = (cells: (string | number)[]) => `| ${cells.map(c => String(c).replace(/\|/g, '\\|')).join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

/** The message of an unknown thrown value. */
export { errorMessage } from '../error-message';

/** Errors that end a stage rather than one step of it: spent budget, cancellation. */
export function isFatal(error: unknown): boolean {
  const name = (error as { name?: string })?.name;
  return name === 'BudgetExceededError' || name === 'AbortError';
}

/**
 * The project's data files as a model needs to see them: path, size, and for a CSV its header
 * and first rows, so a plan and a script use the real file and column names.
 */
export function describeDataFiles(workspace: string): string {
  if (!existsSync(path.join(workspace, 'data'))) return '';
  const lines: string[] = [];
  for (const entry of dataFiles(workspace)) {
    if (/\.(csv|tsv)$/i.test(entry.path)) {
      const rows = readInside(workspace, `data/${entry.path}`).split(/\r?\n/).filter(Boolean);
      lines.push(
        `- data/${entry.path} (${rows.length - 1} rows). First lines:\n${rows
          .slice(0, 4)
          .map(r => `    ${r.slice(0, 200)}`)
          .join('\n')}`
      );
    } else lines.push(`- data/${entry.path} (${entry.bytes} bytes)`);
  }
  return lines.join('\n');
}

/** The regular files directly in `<workspace>/data` (a link or device there is skipped, never followed). */
function dataFiles(workspace: string) {
  return listInside(workspace, 'data').filter(e => e.kind === 'file' && !e.path.includes('/'));
}

/** Facts about one data file, counted in code: numbers a paper may quote about its data. */
export interface DataFacts {
  rows: number;
  columns: number;
  numeric_columns: number;
  /** Distinct values of the last non-numeric column (the label, for a classification CSV). */
  classes?: number;
  label_column?: string;
}

/** The facts of each CSV under `<dir>/data`, by file name. */
export function dataFactsOf(dir: string): Record<string, DataFacts> {
  if (!existsSync(path.join(dir, 'data'))) return {};
  const facts: Record<string, DataFacts> = {};
  for (const { path: name } of dataFiles(dir)) {
    if (!/\.csv$/i.test(name)) continue;
    const [header, ...rows] = readInside(dir, `data/${name}`)
      .split(/\r?\n/)
      .filter(Boolean)
      .map(line => line.split(','));
    if (!header) continue;
    const numeric = header.map((_, i) => rows.length > 0 && rows.every(r => r[i] !== undefined && r[i].trim() !== '' && Number.isFinite(Number(r[i]))));
    const label = numeric.lastIndexOf(false);
    facts[name] = {
      rows: rows.length,
      columns: header.length,
      numeric_columns: numeric.filter(Boolean).length,
      ...(label >= 0 && { classes: new Set(rows.map(r => r[label])).size, label_column: header[label] })
    };
  }
  return facts;
}
