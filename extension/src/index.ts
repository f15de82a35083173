/**
 * NanoResearch Notebook for JupyterLab: one plugin per concern, each in its concern's module.
 *
 * - plugin           the kernel bridge of each notebook + settings (core.ts, provides INanoBridge)
 * - feedback         feedback kept in cell metadata and synced to the store (feedbackService.ts, provides IFeedbackService)
 * - stage-cells      insert-stage commands, badges, metadata from stage bundles (stageCells.ts)
 * - stage-card       the MIME renderer of stage bundles (card.ts)
 * - feedback-sidebar the right-hand feedback panel (sidebar.ts)
 * - lab-panel        skills, memories, adapters, read-only SQL (labPanel.ts)
 * - sharing          import a colleague's notebook into the store (sharing.ts)
 */
import { stageCardPlugin } from './card';
import { corePlugin } from './core';
import { feedbackPlugin } from './feedbackService';
import { labPanelPlugin } from './labPanel';
import { sharingPlugin } from './sharing';
import { sidebarPlugin } from './sidebar';
import { stageCellsPlugin } from './stageCells';

export * from './tokens';
export { BridgeClient, BridgeError, NanoBridge } from './bridge';

export default [corePlugin, feedbackPlugin, stageCellsPlugin, stageCardPlugin, sidebarPlugin, labPanelPlugin, sharingPlugin];
