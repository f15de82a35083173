/** Sharing: importing a colleague's notebook (trajectories and feedback) into one's own store. */
export { importNotebook, NotebookImportError } from './import-notebook';
export type { ImportCounts, ImportTarget } from './import-notebook';
