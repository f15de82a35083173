import { NotebookModel } from '@jupyterlab/notebook';
import { CELL_METADATA_KEY } from '../constants';
import { insertStageCell } from '../stageCells';
import { stageCode } from '../templates';

/** A real notebook model with these code cells, in a panel whose last cell is active. */
function notebookPanel(sources: string[]) {
  const model = new NotebookModel();
  sources.forEach((source, index) => model.sharedModel.insertCell(index, { cell_type: 'code', source, metadata: {} }));
  const content = { activeCellIndex: sources.length - 1, mode: 'edit' };
  return { panel: { model, content } as any, sources: () => Array.from(model.cells).map(cell => cell.sharedModel.getSource()) };
}

describe('insertStageCell', () => {
  it('adds no second set-up cell to a notebook that opens the lab and the project in cells of their own', () => {
    const openLab = 'import { Lab } from "@nanoresearch/kernel";\nconst lab = await Lab.open();';
    const openProject = 'const project = await lab.project("Split set-up");';
    const { panel, sources } = notebookPanel([openLab, openProject]);
    // No topic: the notebook has its project, so none is needed (an empty one would throw in the kernel).
    expect(insertStageCell(panel, 'ideation', '', 'ana')).toBe(2);
    expect(sources()).toEqual([openLab, openProject, stageCode('ideation')]);
    expect(panel.model.cells.get(2).getMetadata(CELL_METADATA_KEY)).toMatchObject({ stage: 'ideation', status: 'new' });
  });

  it('puts the set-up cell with the topic at the top of a notebook that has none', () => {
    const { panel, sources } = notebookPanel(['const lab = await Lab.open();']);
    insertStageCell(panel, 'planning', 'Small MLPs', 'ana');
    expect(sources()[0]).toContain('const project = await lab.project("Small MLPs");');
    expect(sources()).toHaveLength(3);
    expect(sources()).toContain(stageCode('planning'));
  });
});
