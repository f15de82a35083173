/**
 * Names shared by every plugin of the extension.
 *
 * The MIME type and the metadata key are also exported by `@nanoresearch/schema`, but that
 * package's runtime entry loads the JSON schema files with Node's `path` and cannot be bundled
 * for the browser; the extension imports only its types, and a unit test checks that these
 * strings equal the schema package's.
 */
import type { CellMetadata } from '@nanoresearch/schema';

/** MIME type of the stage bundle a stage cell displays. */
export const STAGE_MIME_TYPE = 'application/vnd.nanoresearch.stage+json';

/** MIME type of the kernel bridge's replies to the extension's execute requests. */
export const BRIDGE_MIME_TYPE = 'application/vnd.nanoresearch.bridge+json';

/** The one cell metadata key the extension writes. */
export const CELL_METADATA_KEY = 'nanoresearch';

/** The research stages in the order a project runs them. */
export const STAGES: ReadonlyArray<CellMetadata['stage']> = [
  'ideation',
  'planning',
  'experiment',
  'analysis',
  'writing',
  'review'
];

export type StageName = CellMetadata['stage'];

/** Readable stage names for badges, menus and the palette. */
export const STAGE_LABELS: Record<StageName, string> = {
  ideation: 'Ideation',
  planning: 'Planning',
  experiment: 'Experiment',
  analysis: 'Analysis',
  writing: 'Writing',
  review: 'Review'
};

/** The `project` method that runs each stage (see kernel-lib's Project class). */
export const STAGE_METHODS: Record<StageName, string> = {
  ideation: 'ideate',
  planning: 'plan',
  experiment: 'experiment',
  analysis: 'analyze',
  writing: 'write',
  review: 'review'
};

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
