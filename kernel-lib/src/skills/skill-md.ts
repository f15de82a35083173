/**
 * SKILL.md files (Agent Skills format): YAML front matter with `name` (the skill's slug id)
 * and `description`, plus our fields `title`, `stages`, `tags`, `version`, `source`; a body
 * with "# Title", "## When to use" and a numbered "## Instructions" list.
 *
 * The front matter parser reads the subset this format writes (scalars, quoted strings,
 * inline `[a, b]` lists and block `- item` lists), so no YAML dependency is needed; anything
 * outside that subset is an error naming the line, not a silent misread.
 */
import type { Skill } from '@nanoresearch/schema';

export type FrontMatterValue = string | number | string[];

/** Splits a SKILL.md into its front matter fields and its body. */
export function parseFrontMatter(text: string, file = 'SKILL.md'): { fields: Record<string, FrontMatterValue>; body: string } {
  const normalised = text.replace(/\r\n/g, '\n');
  const match = /^---\n([\s\S]*?)\n---\n?([\s\S]*)$/.exec(normalised);
  if (!match) throw new Error(`${file}: no YAML front matter (the file must start with a '---' line and close it with another)`);
  const fields: Record<string, FrontMatterValue> = {};
  const lines = match[1].split('\n');
  let listKey: string | undefined;
  lines.forEach((line, index) => {
    const where = `${file}: front matter line ${index + 2}`;
    if (!line.trim() || line.trim().startsWith('#')) return;
    const item = /^\s+-\s+(.*)$/.exec(line);
    if (item) {
      if (!listKey) throw new Error(`${where}: a list item outside a list ("${line.trim()}")`);
      (fields[listKey] as string[]).push(unquote(item[1].trim(), where));
      return;
    }
    const pair = /^([A-Za-z_][\w-]*):\s*(.*)$/.exec(line);
    if (!pair) throw new Error(`${where}: expected "key: value", got "${line}"`);
    const [, key, raw] = pair;
    const value = raw.trim();
    listKey = undefined;
    if (value === '') {
      fields[key] = [];
      listKey = key;
    } else if (value.startsWith('[')) {
      if (!value.endsWith(']')) throw new Error(`${where}: an inline list must close on the same line`);
      const inner = value.slice(1, -1).trim();
      fields[key] = inner ? splitInlineList(inner).map(v => unquote(v.trim(), where)) : [];
    } else if (/^-?\d+(\.\d+)?$/.test(value)) {
      fields[key] = Number(value);
    } else {
      fields[key] = unquote(value, where);
    }
  });
  return { fields, body: match[2] };
}

function splitInlineList(inner: string): string[] {
  const out: string[] = [];
  let current = '';
  let quote: string | undefined;
  for (const ch of inner) {
    if (quote) {
      current += ch;
      if (ch === quote) quote = undefined;
    } else if (ch === '"' || ch === "'") {
      quote = ch;
      current += ch;
    } else if (ch === ',') {
      out.push(current);
      current = '';
    } else current += ch;
  }
  out.push(current);
  return out;
}

function unquote(value: string, where: string): string {
  if (value.startsWith('"')) {
    try {
      return JSON.parse(value) as string;
    } catch {
      throw new Error(`${where}: bad double-quoted string ${value}`);
    }
  }
  if (value.startsWith("'")) {
    if (!value.endsWith("'") || value.length < 2) throw new Error(`${where}: unterminated single-quoted string ${value}`);
    return value.slice(1, -1).replace(/''/g, "'");
  }
  return value;
}

/** A scalar as front matter writes it: quoted whenever plain YAML could misread it. */
function yamlScalar(value: string, inList = false): string {
  return /^[A-Za-z0-9][\w .,/()+-]*$/.test(value) &&
    !(inList && value.includes(',')) &&
    !/:\s|\s#/.test(value) &&
    !/^(true|false|null|yes|no|~)$/i.test(value) &&
    !/^-?\d/.test(value)
    ? value
    : JSON.stringify(value);
}

/** The body sections of a skill: title, "When to use" paragraph, numbered instructions. */
function parseBody(body: string, file: string): { title?: string; whenToUse?: string; instructions: string[] } {
  const title = /^#\s+(.+)$/m.exec(body)?.[1].trim();
  const sections = new Map<string, string>();
  const parts = body.split(/^##\s+/m).slice(1);
  for (const part of parts) {
    const newline = part.indexOf('\n');
    const heading = (newline < 0 ? part : part.slice(0, newline)).trim().toLowerCase();
    sections.set(heading, newline < 0 ? '' : part.slice(newline + 1).trim());
  }
  const instructionsText = sections.get('instructions');
  if (instructionsText === undefined) throw new Error(`${file}: no "## Instructions" section`);
  const instructions: string[] = [];
  for (const line of instructionsText.split('\n')) {
    const numbered = /^\s*\d+[.)]\s+(.*)$/.exec(line);
    if (numbered) instructions.push(numbered[1].trim());
    else if (line.trim() && instructions.length) instructions[instructions.length - 1] += ` ${line.trim()}`;
  }
  if (instructions.length === 0) throw new Error(`${file}: "## Instructions" has no numbered items ("1. ...")`);
  const whenToUse = sections.get('when to use');
  return { title, whenToUse: whenToUse ? whenToUse.replace(/\s*\n\s*/g, ' ') : undefined, instructions };
}

const STAGE_NAMES = new Set(['ideation', 'planning', 'experiment', 'analysis', 'writing', 'review']);

/** Parses a SKILL.md into a Skill record (usage counts zero, timestamps unset). */
export function parseSkillMd(text: string, file: string, source: Skill['source']): Skill {
  const { fields, body } = parseFrontMatter(text, file);
  const id = fields.name;
  if (typeof id !== 'string' || !/^[a-z0-9][a-z0-9-]*$/.test(id)) {
    throw new Error(`${file}: front matter "name" must be a lowercase slug like "literature-triage" (got ${JSON.stringify(id)})`);
  }
  if (typeof fields.description !== 'string' || !fields.description.trim()) throw new Error(`${file}: front matter "description" is missing`);
  const list = (key: string): string[] | undefined => {
    const v = fields[key];
    if (v === undefined) return undefined;
    if (!Array.isArray(v)) throw new Error(`${file}: front matter "${key}" must be a list`);
    return v;
  };
  const stages = list('stages');
  for (const s of stages ?? []) if (!STAGE_NAMES.has(s)) throw new Error(`${file}: unknown stage "${s}" (stages are ${[...STAGE_NAMES].join(', ')})`);
  const parsed = parseBody(body, file);
  const version = fields.version === undefined ? 1 : fields.version;
  if (typeof version !== 'number' || !Number.isInteger(version) || version < 1) throw new Error(`${file}: "version" must be a positive integer`);
  const skill: Skill = {
    id,
    name: typeof fields.title === 'string' ? fields.title : (parsed.title ?? id),
    description: fields.description.trim(),
    instructions: parsed.instructions,
    source,
    version,
    status: 'active',
    usage_count: 0,
    success_count: 0
  };
  if (parsed.whenToUse) skill.when_to_use = parsed.whenToUse;
  if (stages) skill.stages = stages as Skill['stages'];
  const tags = list('tags');
  if (tags) skill.tags = tags;
  if (typeof fields.origin === 'string') skill.provenance = { origin: fields.origin };
  return skill;
}

/** Renders a skill as SKILL.md; `parseSkillMd` reads it back to the same fields. */
export function renderSkillMd(skill: Skill): string {
  const lines = ['---', `name: ${skill.id}`, `description: ${yamlScalar(skill.description)}`, `title: ${yamlScalar(skill.name)}`];
  if (skill.stages) lines.push(`stages: [${skill.stages.join(', ')}]`);
  if (skill.tags) lines.push(`tags: [${skill.tags.map(t => yamlScalar(t, true)).join(', ')}]`);
  lines.push(`version: ${skill.version}`);
  if (skill.provenance?.origin) lines.push(`origin: ${yamlScalar(skill.provenance.origin)}`);
  lines.push('---', '', `# ${skill.name}`, '');
  if (skill.when_to_use) lines.push('## When to use', '', skill.when_to_use, '');
  lines.push('## Instructions', '', ...skill.instructions.map((s, i) => `${i + 1}. ${s}`), '');
  return lines.join('\n');
}
