/** Test helpers: real notebook and cell models, so metadata goes through JupyterLab's own API. */
import { NotebookModel } from '@jupyterlab/notebook';
import type { ICellModel } from '@jupyterlab/cells';
import type { StageBundle } from '@nanoresearch/schema';
import { CELL_METADATA_KEY } from '../constants';
import { newStageMetadata } from '../metadata';
import stageBundleJson from './fixtures/stage-bundle.json';

export const bundleFixture = (): StageBundle => JSON.parse(JSON.stringify(stageBundleJson));

/** A notebook whose cells are: a plain code cell, then one stage cell per given stage run id. */
export function notebookWithStageCells(stageRunIds: Array<string | null>): { model: NotebookModel; cells: ICellModel[] } {
  const model = new NotebookModel();
  model.sharedModel.insertCell(0, { cell_type: 'code', source: 'const x = 1', metadata: {} });
  stageRunIds.forEach((id, i) => {
    const metadata = { ...newStageMetadata('ideation', 'ana'), stage_run_id: id, status: id ? 'done' : 'new' };
    model.sharedModel.insertCell(i + 1, {
      cell_type: 'code',
      source: `const ideation = await project.ideate(); // ${i}`,
      metadata: { [CELL_METADATA_KEY]: metadata as any }
    });
  });
  return { model, cells: Array.from(model.cells) };
}
