/**
 * The code the stage cell commands insert. The set-up cell opens the lab and the project; each
 * stage cell runs one stage of that project. tslab accepts a `const` declared again in a later
 * cell (the new binding replaces the old), so running a cell twice or inserting a stage twice is fine.
 */
import { STAGE_LABELS, STAGE_METHODS, StageName } from './constants';

/** What the set-up cell carries from the settings: the quickstart's defaults. */
export interface ISetupDefaults {
  /** NANORESEARCH_LITERATURE_SOURCES when the environment does not set it ('' = leave it to the environment). */
  literatureSources?: string;
  /** The embedded model's per-call limit in ms when the environment does not set one (0 = none). */
  embeddedCallTimeoutMs?: number;
}

/** The set-up code that every stage cell depends on. */
export function setupCode(topic: string, defaults: ISetupDefaults = {}): string {
  const lines = ['import { Lab, llmConfigFromEnv } from "@nanoresearch/kernel";'];
  const sources = defaults.literatureSources?.trim();
  if (sources) {
    lines.push(
      '',
      '// Literature sources (setting "Literature sources"; "none" = your imported corpus only).',
      '// NANORESEARCH_LITERATURE_SOURCES set before JupyterLab started wins.',
      `process.env.NANORESEARCH_LITERATURE_SOURCES ??= ${JSON.stringify(sources)};`
    );
  }
  lines.push('', 'const llm = llmConfigFromEnv();');
  const timeout = defaults.embeddedCallTimeoutMs;
  if (timeout && timeout > 0) {
    lines.push(
      '// The embedded model gets a per-call limit (setting "Per-call limit of the embedded model"), so a call',
      '// that runs away stops; NANORESEARCH_LLM_TIMEOUT_MS wins. An endpoint keeps its own limits.',
      `const lab = await Lab.open({ llm: llm.provider === "local" ? { ...llm, timeoutMs: llm.timeoutMs ?? ${timeout} } : llm });`
    );
  } else {
    lines.push('const lab = await Lab.open({ llm });');
  }
  lines.push(`const project = await lab.project(${JSON.stringify(topic)});`);
  return lines.join('\n');
}

/**
 * True when the notebook's cells already open the lab and a project, in one set-up cell or in
 * several (stage cells need both `lab` and `project`). The one test of "is there a set-up": the
 * insert command asks for a topic, and a set-up cell is inserted, exactly when it is false.
 */
export function hasSetup(sources: readonly string[]): boolean {
  return sources.some(source => /Lab\.open\s*\(/.test(source)) && sources.some(source => /\.project\s*\(/.test(source));
}

/** The code of a stage cell. */
export function stageCode(stage: StageName): string {
  return [`// NanoResearch · ${STAGE_LABELS[stage]} stage`, `const ${stage} = await project.${STAGE_METHODS[stage]}();`].join('\n');
}
