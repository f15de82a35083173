/**
 * Names shared by every plugin of the extension.
 *
 * The stage names, their labels, the MIME type and the metadata key come from
 * `@nanoresearch/schema/dist/constants`: the schema package's small browser-safe module (its main
 * entry loads the JSON schema files with Node's `path` and cannot be bundled for the browser).
 */
import type { StageName } from '@nanoresearch/schema/dist/constants';

export { CELL_METADATA_KEY, STAGE_NAMES, STAGE_LABELS, STAGE_MIME_TYPE } from '@nanoresearch/schema/dist/constants';
export type { StageName };

/** The `project` method that runs each stage (see kernel-lib's Project class). */
export const STAGE_METHODS: Record<StageName, string> = {
  ideation: 'ideate',
  planning: 'plan',
  experiment: 'experiment',
  analysis: 'analyze',
  writing: 'write',
  review: 'review'
};

/** The translation domain of the extension's user-visible strings (ITranslator.load). */
export const TRANSLATION_DOMAIN = 'nanoresearch';

/** Where the extension's commands are listed in the command palette. */
export const PALETTE_CATEGORY = 'NanoResearch';

/** Plugin id whose settings live in schema/plugin.json. */
export const SETTINGS_PLUGIN_ID = '@nanoresearch/jupyterlab:plugin';

/** Command ids. */
export const CommandIDs = {
  insertStage: 'nanoresearch:insert-stage',
  openLabPanel: 'nanoresearch:open-lab-panel',
  openFeedback: 'nanoresearch:open-feedback',
  importNotebook: 'nanoresearch:import-notebook'
} as const;

/** Id of the feedback sidebar (also Galata's `page.sidebar.openTab` id). */
export const FEEDBACK_SIDEBAR_ID = 'nanoresearch-feedback';
