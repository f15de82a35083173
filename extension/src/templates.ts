/**
 * The code the stage cell commands insert. The set-up cell opens the lab and the project; each
 * stage cell runs one stage of that project. tslab accepts a `const` declared again in a later
 * cell (the new binding replaces the old), so running a cell twice or inserting a stage twice is fine.
 */
import { STAGE_LABELS, STAGE_METHODS, StageName } from './constants';

/** The set-up code that every stage cell depends on. */
export function setupCode(topic: string): string {
  return [
    'import { Lab } from "@nanoresearch/kernel";',
    'const lab = await Lab.open();',
    `const project = await lab.project(${JSON.stringify(topic)});`
  ].join('\n');
}

/** True when a cell's source already opens the lab and a project. */
export function isSetupSource(source: string): boolean {
  return /Lab\.open\s*\(/.test(source) && /\.project\s*\(/.test(source);
}

/** The code of a stage cell. */
export function stageCode(stage: StageName): string {
  return [
    `// NanoResearch · ${STAGE_LABELS[stage]} stage`,
    `const ${stage} = await project.${STAGE_METHODS[stage]}();`
  ].join('\n');
}
