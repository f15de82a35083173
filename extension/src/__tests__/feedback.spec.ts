import type { FeedbackRequest } from '@nanoresearch/schema';
import { FeedbackSync } from '../feedback';
import { KernelReadyTrigger } from '../kernelReady';
import { getStageMetadata } from '../metadata';
import { CELL_METADATA_KEY } from '../constants';
import { notebookWithStageCells } from './helpers';

/** A fake kernel-side store: feedback.add is idempotent by id, as kernel-lib's is. */
class FakeKernel {
  running = false;
  rows = new Map<string, FeedbackRequest>();
  calls = 0;
  /** When set, the next send reaches the store but its reply is lost. */
  loseNextReply = false;

  async send(request: FeedbackRequest): Promise<void> {
    this.calls += 1;
    await new Promise(resolve => setTimeout(resolve, 1));
    if (!this.running) {
      throw new Error('No kernel is running for this notebook, so feedback.add cannot run yet.');
    }
    this.rows.set(request.id, request);
    if (this.loseNextReply) {
      this.loseNextReply = false;
      throw new Error('The kernel died before it answered');
    }
  }
}

function setup(stageRunIds: Array<string | null> = ['sr_1']) {
  const { model, cells } = notebookWithStageCells(stageRunIds);
  const kernel = new FakeKernel();
  const sync = new FeedbackSync({
    cells: () => Array.from(model.cells),
    send: request => kernel.send(request),
    origin: () => 'notebook:study.ipynb'
  });
  return { model, cells, kernel, sync };
}

describe('FeedbackSync', () => {
  it('writes feedback into the cell at once, before the kernel answers', () => {
    const { cells, sync, kernel } = setup();
    kernel.running = true;
    const { entry } = sync.add(cells[1], '  Always add a linear baseline. ', 'ana');
    const stored = getStageMetadata(cells[1])!.feedback;
    expect(stored).toEqual([{ ...entry, synced: false }]);
    expect(entry.text).toBe('Always add a linear baseline.');
  });

  it('syncs feedback given with no kernel once a kernel starts, and loses nothing meanwhile', async () => {
    const { model, cells, sync, kernel } = setup();
    const trigger = new KernelReadyTrigger();
    const { flushed } = sync.add(cells[1], 'Use three seeds.', 'ana');
    const offline = await flushed;
    expect(offline.failed).toBe(1);
    expect(kernel.rows.size).toBe(0);
    // The entry is in the saved notebook, unsynced.
    const saved = (model.toJSON().cells[1].metadata as any)[CELL_METADATA_KEY];
    expect(saved.feedback).toEqual([expect.objectContaining({ text: 'Use three seeds.', synced: false })]);

    // A busy → idle cycle of a kernel that is not (re)starting does not trigger a flush...
    expect(trigger.status('idle')).toBe(true); // first idle after attach counts as ready
    expect(trigger.status('busy')).toBe(false);
    expect(trigger.status('idle')).toBe(false);
    // ...a kernel (re)start does.
    kernel.running = true;
    expect(trigger.status('restarting')).toBe(false);
    expect(trigger.status('idle')).toBe(true);
    const online = await sync.flush();
    expect(online).toEqual({ sent: 1, failed: 0, waiting: 0, errors: [] });
    expect(getStageMetadata(cells[1])!.feedback[0].synced).toBe(true);
    const row = [...kernel.rows.values()][0];
    expect(row).toMatchObject({ stage_run_id: 'sr_1', text: 'Use three seeds.', author: 'ana', origin: 'notebook:study.ipynb' });
  });

  it('resends after a lost reply without adding the feedback twice', async () => {
    const { cells, sync, kernel } = setup();
    kernel.running = true;
    kernel.loseNextReply = true;
    const first = await sync.add(cells[1], 'Report variance.', 'ana').flushed;
    expect(first.failed).toBe(1);
    expect(getStageMetadata(cells[1])!.feedback[0].synced).toBe(false);
    const second = await sync.flush();
    expect(second.sent).toBe(1);
    expect(kernel.calls).toBe(2);
    expect(kernel.rows.size).toBe(1);
    expect(getStageMetadata(cells[1])!.feedback[0].synced).toBe(true);
    // Nothing is pending any more: a further flush sends nothing.
    await sync.flush();
    expect(kernel.calls).toBe(2);
  });

  it('runs one flush at a time and still sends feedback added during a flush', async () => {
    const { cells, sync, kernel } = setup(['sr_1', 'sr_2']);
    kernel.running = true;
    const a = sync.add(cells[1], 'first', 'ana').flushed;
    const b = sync.add(cells[2], 'second', 'ben').flushed;
    await Promise.all([a, b]);
    expect(kernel.calls).toBe(2);
    expect([...kernel.rows.values()].map(r => r.stage_run_id).sort()).toEqual(['sr_1', 'sr_2']);
    expect(sync.hasPending()).toBe(false);
  });

  it('keeps feedback of a stage that has not run yet waiting, and refuses non-stage cells', async () => {
    const { cells, sync, kernel } = setup([null]);
    kernel.running = true;
    const result = await sync.add(cells[1], 'Try smaller models.', 'ana').flushed;
    expect(result).toEqual({ sent: 0, failed: 0, waiting: 1, errors: [] });
    expect(kernel.calls).toBe(0);
    expect(() => sync.add(cells[0], 'x', 'ana')).toThrow(/stage cell/);
    expect(() => sync.add(cells[1], '   ', 'ana')).toThrow(/empty/);
  });
});
