import { applyBundle, newStageMetadata } from '../metadata';
import type { LearningReply, LearningState } from '@nanoresearch/schema';
import { LearningTracker, renderLearning } from '../learning';
import { renderFeedbackList } from '../card';
import { bundleFixture } from './helpers';

function state(id: string, status: LearningState['status'], extra: Partial<LearningState> = {}): LearningState {
  return {
    feedback_id: id,
    status,
    attempts: 1,
    error: null,
    memories: [],
    skills: [],
    discarded: 0,
    waiting: null,
    updated_at: '2026-11-21T00:00:00Z',
    ...extra
  };
}

/** A fake kernel whose jobs move on one step per question, as background jobs do. */
class FakeKernel {
  asked: string[][] = [];
  stored = new Set<string>();
  script = new Map<string, LearningState['status'][]>();
  failing = false;

  async query(ids: string[]): Promise<LearningReply> {
    this.asked.push(ids);
    if (this.failing) {
      throw new Error('No kernel is running for this notebook');
    }
    const states: Record<string, LearningState | null> = {};
    for (const id of ids) {
      const steps = this.script.get(id);
      states[id] = steps ? state(id, steps.length > 1 ? steps.shift()! : steps[0]) : null;
    }
    return { stored: ids.filter(id => this.stored.has(id)), states };
  }
}

function tracker(kernel: FakeKernel, ids: string[]) {
  const changes: number[] = [];
  const stored: string[][] = [];
  const t = new LearningTracker({
    ids: () => ids,
    query: asked => kernel.query(asked),
    retry: async id => {
      kernel.script.set(id, ['queued', 'learning', 'learned']);
      return state(id, 'queued', { attempts: 2 });
    },
    onStored: s => stored.push(s),
    onChange: () => changes.push(1),
    intervalMs: 5
  });
  return { t, changes, stored };
}

const settle = () => new Promise(resolve => setTimeout(resolve, 60));

describe('LearningTracker', () => {
  it('follows a job queued → learning → learned, then stops asking', async () => {
    const kernel = new FakeKernel();
    kernel.stored.add('fb_1');
    kernel.script.set('fb_1', ['queued', 'learning', 'learned']);
    const { t, stored } = tracker(kernel, ['fb_1']);
    await t.refresh();
    expect(t.stateOf('fb_1')?.status).toBe('queued');
    await settle();
    expect(t.stateOf('fb_1')?.status).toBe('learned');
    const asked = kernel.asked.length;
    expect(asked).toBe(3);
    await t.refresh();
    await settle();
    // Learned is final: nothing more is asked.
    expect(kernel.asked.length).toBe(asked);
    expect(stored[0]).toEqual(['fb_1']);
    t.dispose();
  });

  it('reports ids the store holds, keeps asking about ones not stored yet, and settles job-less (imported) ones', async () => {
    const kernel = new FakeKernel();
    kernel.stored.add('fb_imported');
    const { t, stored } = tracker(kernel, ['fb_imported', 'fb_not_sent']);
    await t.refresh();
    expect(stored).toEqual([['fb_imported']]);
    expect(t.stateOf('fb_imported')).toBeUndefined();
    await t.refresh();
    // The imported one is settled (no job); the unsent one is asked about again.
    expect(kernel.asked[1]).toEqual(['fb_not_sent']);
    t.dispose();
  });

  it('a failed job is final until Retry, which follows it again to learned', async () => {
    const kernel = new FakeKernel();
    kernel.script.set('fb_1', ['failed']);
    kernel.stored.add('fb_1');
    const { t } = tracker(kernel, ['fb_1']);
    await t.refresh();
    expect(t.stateOf('fb_1')?.status).toBe('failed');
    await t.retry('fb_1');
    expect(t.stateOf('fb_1')?.status).toMatch(/^(queued|learning)$/);
    await settle();
    expect(t.stateOf('fb_1')?.status).toBe('learned');
    t.dispose();
  });

  it('stops quietly when there is no kernel and starts again when asked', async () => {
    const kernel = new FakeKernel();
    kernel.failing = true;
    kernel.stored.add('fb_1');
    kernel.script.set('fb_1', ['learned']);
    const { t } = tracker(kernel, ['fb_1']);
    await t.refresh();
    await settle();
    expect(kernel.asked).toHaveLength(1);
    kernel.failing = false;
    await t.refresh();
    expect(t.stateOf('fb_1')?.status).toBe('learned');
    t.dispose();
  });
});

describe('renderLearning', () => {
  it('shows each state: queued with what it waits for, learning, learned with links, failed with the reason and Retry', () => {
    expect(renderLearning(undefined)).toBeNull();
    const queued = renderLearning(state('a', 'queued', { waiting: 'it starts when the running stage ends' }))!;
    expect(queued.dataset.learning).toBe('queued');
    expect(queued.textContent).toBe('Queued to learn — it starts when the running stage ends');
    expect(renderLearning(state('a', 'learning'))!.textContent).toMatch(/^Learning…/);

    const opened: Array<[string, string]> = [];
    const learned = renderLearning(
      state('a', 'learned', {
        memories: [{ id: 'mem_1', kind: 'user_constraint', content: 'Always include a linear baseline.' }],
        skills: [{ id: 'sk_1', name: 'linear-baseline-first', decision: 'add' }]
      }),
      { open: (kind, query) => opened.push([kind, query]) }
    )!;
    const links = Array.from(learned.querySelectorAll('button'));
    expect(links.map(l => l.textContent)).toEqual(['memory: Always include a linear baseline.', 'skill added: linear-baseline-first']);
    links.forEach(l => l.click());
    expect(opened).toEqual([
      ['memories', 'Always include a linear baseline.'],
      ['skills', 'linear-baseline-first']
    ]);
    expect(renderLearning(state('a', 'learned', { discarded: 2 }))!.textContent).toBe(
      'Learned — nothing new: no memory or skill came of it (2 skill candidates discarded by the review)'
    );

    const retried: string[] = [];
    const failed = renderLearning(state('fb_9', 'failed', { error: 'skill distillation failed: HTTP 400' }), { retry: id => retried.push(id) })!;
    expect(failed.querySelector('.jp-nr-learning-error')!.textContent).toBe('skill distillation failed: HTTP 400');
    const retry = failed.querySelector<HTMLButtonElement>('button.jp-nr-retry')!;
    retry.click();
    expect(retried).toEqual(['fb_9']);
    expect(retry.disabled).toBe(true);
  });

  it('is part of each feedback entry of the card', () => {
    const list = document.createElement('ul');
    renderFeedbackList(list, [{ id: 'fb_1', text: 'More seeds.', author: 'ana', synced: true }], {
      stateOf: id => state(id, 'learning'),
      actions: {}
    });
    const li = list.querySelector('li')!;
    expect(li.dataset.learning).toBe('learning');
    expect(li.querySelector('.jp-nr-learning')).not.toBeNull();
  });
});

describe('applyBundle', () => {
  it('marks an entry synced once the bundle (the store) lists it', () => {
    const metadata = {
      ...newStageMetadata('ideation', 'ana'),
      stage_run_id: 'sr_1',
      status: 'done' as const,
      feedback: [{ id: 'fb_1', text: 'More seeds.', author: 'ana', created_at: '2026-11-21T00:00:00Z', synced: false }]
    };
    const bundle = {
      ...bundleFixture(),
      stage_run_id: 'sr_1',
      feedback: [{ id: 'fb_1', text: 'More seeds.', author: 'ana', created_at: '2026-11-21T00:00:00Z' }]
    };
    const next = applyBundle(metadata, bundle)!;
    expect(next.feedback).toEqual([expect.objectContaining({ id: 'fb_1', synced: true })]);
  });
});
