/** Skill bank: built-ins, distillation, the review gate, usage counts, SKILL.md import/export. */
export * from './bank';
export * from './review';
export { parseSkillMd, renderSkillMd, parseFrontMatter } from './skill-md';
export { skillFromRow, skillToRow, slugify } from '../records/skills';
