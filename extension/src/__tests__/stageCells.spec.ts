import { NotebookModel } from '@jupyterlab/notebook';
import { Signal } from '@lumino/signaling';
import { CELL_METADATA_KEY } from '../constants';
import { ensureStageKernel, insertStageCell } from '../stageCells';
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

/**
 * The parts of a SessionContext ensureStageKernel reads, starting as a new notebook's does: its
 * kernel requested ('initializing') before the server has a session for it.
 */
class StartingSession {
  session: { kernel: { name: string } } | null = null;
  readonly sessionChanged = new Signal<this, unknown>(this);
  readonly statusChanged = new Signal<this, string>(this);
  readonly ready = Promise.resolve();
  readonly changeKernel = jest.fn(async ({ name }: { name: string }) => this.start(name));
  /** The kernel requested before the session exists; null is "No Kernel". */
  constructor(private readonly requested: string | null = 'starting') {}
  get kernelDisplayStatus(): string {
    return this.session ? 'idle' : 'initializing';
  }
  get hasNoKernel(): boolean {
    return !this.session && this.requested === null;
  }
  async initialize(): Promise<boolean> {
    return false;
  }
  start(name: string): void {
    this.session = { kernel: { name } };
    this.sessionChanged.emit(this.session);
  }
}

describe('ensureStageKernel', () => {
  it('waits for the kernel a new notebook is starting, and keeps it when it is the stage kernel', async () => {
    const sessionContext = new StartingSession();
    const choice = ensureStageKernel({ sessionContext } as any, 'tslab', ['tslab', 'python3']);
    setTimeout(() => sessionContext.start('tslab'), 20);
    await expect(choice).resolves.toBe('kept');
    // A change while the first kernel starts would preempt it: two kernels, the first shut down.
    expect(sessionContext.changeKernel).not.toHaveBeenCalled();
  });

  it('switches once the starting kernel is another one', async () => {
    const sessionContext = new StartingSession();
    const choice = ensureStageKernel({ sessionContext } as any, 'tslab', ['tslab', 'python3']);
    setTimeout(() => sessionContext.start('python3'), 20);
    await expect(choice).resolves.toBe('switched');
    expect(sessionContext.changeKernel).toHaveBeenCalledTimes(1);
    expect(sessionContext.session?.kernel.name).toBe('tslab');
  });

  it('switches a notebook on "No Kernel" at once', async () => {
    const sessionContext = new StartingSession(null);
    // A wait for a kernel that is not coming would time the test out.
    await expect(ensureStageKernel({ sessionContext } as any, 'tslab', ['tslab'], 60_000)).resolves.toBe('switched');
    expect(sessionContext.session?.kernel.name).toBe('tslab');
  });

  it('says the stage kernel is missing rather than switching to a kernel the server lacks', async () => {
    const sessionContext = new StartingSession();
    sessionContext.start('python3');
    await expect(ensureStageKernel({ sessionContext } as any, 'tslab', ['python3'])).resolves.toBe('missing');
    expect(sessionContext.changeKernel).not.toHaveBeenCalled();
  });

  it('stops waiting for a kernel that never arrives, and switches', async () => {
    const sessionContext = new StartingSession();
    await expect(ensureStageKernel({ sessionContext } as any, 'tslab', ['tslab'], 30)).resolves.toBe('switched');
    expect(sessionContext.changeKernel).toHaveBeenCalledWith({ name: 'tslab' });
  });
});
