/**
 * What the system learned from each feedback item, as the kernel's background learning jobs
 * report it (kernel-lib feedback/learning.ts): queued → learning → learned (with the memories
 * and skills it produced) or failed (with the reason, and a Retry).
 *
 * tslab has no comms and a finished cell's output cannot be updated from the kernel, so the
 * state is asked for (`feedback.learning`) and asked again every `intervalMs` while some item
 * is still queued or learning; nothing is asked once every item is learned or failed. The same
 * reply says which ids the store holds, so an entry the store has is never shown as unsynced.
 */
import type { LearningReply, LearningState } from '@nanoresearch/schema';
import { h } from './dom';

export interface ILearningTrackerOptions {
  /** The feedback ids worth asking about now (read on every round). */
  ids: () => string[];
  /** Asks the kernel; rejects when it cannot (no kernel, an error). */
  query: (ids: string[]) => Promise<LearningReply>;
  /** Asks the kernel to queue a failed job again. */
  retry: (id: string) => Promise<LearningState>;
  /** The store holds these ids: mark them synced where the notebook still says otherwise. */
  onStored: (ids: string[]) => void;
  /** A state changed: redraw. */
  onChange: () => void;
  intervalMs?: number;
}

const DEFAULT_INTERVAL_MS = 700;
/** How much slower a notebook whose jobs all wait is asked about (0.7 s → 7 s). */
const WAITING_FACTOR = 10;

/** True while a job may still change without anyone asking for it. */
export function isActive(state: LearningState | null | undefined): boolean {
  return state?.status === 'queued' || state?.status === 'learning';
}

/** The learning states of one notebook's feedback, kept fresh while any job is unfinished. */
export class LearningTracker {
  constructor(private readonly options: ILearningTrackerOptions) {}

  /** The last known state of a feedback item (undefined: not known yet, or it has no job). */
  stateOf(id: string): LearningState | undefined {
    return this.states.get(id) ?? undefined;
  }

  /**
   * Asks now (or right after the round in flight), then keeps asking while a job is
   * unfinished. Resolves after this round.
   */
  refresh(): Promise<void> {
    if (this.stopped) {
      return Promise.resolve();
    }
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.clearTimer();
    this.running = this.round().finally(() => {
      this.running = null;
      if (this.again) {
        this.again = false;
        void this.refresh();
      }
    });
    return this.running;
  }

  /** Retries a failed job; its state shows as queued at once and is followed from there. */
  async retry(id: string): Promise<void> {
    const state = await this.options.retry(id);
    this.states.set(id, state);
    this.options.onChange();
    void this.refresh();
  }

  /** Stops asking (the notebook closed). */
  dispose(): void {
    this.stopped = true;
    this.clearTimer();
  }

  private async round(): Promise<void> {
    const ids = this.options.ids().filter(id => {
      const known = this.states.get(id);
      // Learned, failed and job-less items change only through a retry, which asks itself.
      return known === undefined || isActive(known);
    });
    if (ids.length === 0) {
      return;
    }
    let reply: LearningReply;
    try {
      reply = await this.options.query(ids);
    } catch {
      // No kernel, or it is gone: asked again when a kernel is ready or feedback is added.
      return;
    }
    let changed = false;
    for (const id of ids) {
      const next = reply.states[id];
      if (next === undefined) {
        continue;
      }
      const before = this.states.get(id);
      if (JSON.stringify(before) !== JSON.stringify(next)) {
        changed = true;
      }
      if (next === null && !reply.stored.includes(id)) {
        // Not in the store yet (its add has not arrived): ask again next time, do not settle it.
        this.states.delete(id);
      } else {
        this.states.set(id, next);
      }
    }
    if (reply.stored.length > 0) {
      this.options.onStored(reply.stored);
    }
    if (changed) {
      this.options.onChange();
    }
    const active = ids.map(id => this.states.get(id)).filter(isActive);
    if (active.length > 0) {
      // Jobs that wait for something (the notebook's set-up cell, a running stage) are asked about less often.
      const waitingOnly = active.every(s => s?.status === 'queued' && s.waiting);
      const interval = this.options.intervalMs ?? DEFAULT_INTERVAL_MS;
      this.timer = setTimeout(() => void this.refresh(), waitingOnly ? interval * WAITING_FACTOR : interval);
    }
  }

  private clearTimer(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
  }

  private readonly states = new Map<string, LearningState | null>();
  private running: Promise<void> | null = null;
  private again = false;
  private stopped = false;
  private timer: ReturnType<typeof setTimeout> | null = null;
}

/** What a learning line can do: retry a failed job, open a memory or skill it produced. */
export interface ILearningActions {
  retry?: (feedbackId: string) => void;
  open?: (kind: 'memories' | 'skills', query: string) => void;
}

/** Retry and open through the feedback service (the sidebar's and the card's actions). */
export function learningActions(service: {
  retryLearning(id: string): Promise<void>;
  openLearned(kind: 'memories' | 'skills', query: string): void;
}): ILearningActions {
  return { retry: id => void service.retryLearning(id), open: (kind, query) => service.openLearned(kind, query) };
}

/** The one-line learning state of a feedback item, or null when there is none to show. */
export function renderLearning(state: LearningState | undefined, actions: ILearningActions = {}): HTMLElement | null {
  if (!state) {
    return null;
  }
  const line = h('div', { class: `jp-nr-learning jp-nr-learning-${state.status}`, 'data-learning': state.status });
  switch (state.status) {
    case 'queued':
      line.append(
        h('span', { class: 'jp-nr-learning-label' }, 'Queued to learn'),
        state.waiting ? h('span', { class: 'jp-nr-muted' }, ` — ${state.waiting}`) : ''
      );
      break;
    case 'learning':
      line.append(h('span', { class: 'jp-nr-learning-label' }, 'Learning…'), h('span', { class: 'jp-nr-muted' }, ' memories and skills from this feedback'));
      break;
    case 'learned':
      line.append(h('span', { class: 'jp-nr-learning-label' }, 'Learned'), ...learnedLinks(state, actions));
      break;
    case 'failed': {
      line.append(
        h('span', { class: 'jp-nr-learning-label' }, 'Learning failed'),
        h('div', { class: 'jp-nr-learning-error' }, state.error ?? 'no reason was recorded')
      );
      if (actions.retry) {
        const retry = h('button', { class: 'jp-nr-button jp-nr-retry', type: 'button', title: 'Run the failed learning step again' }, 'Retry');
        retry.addEventListener('click', () => {
          retry.disabled = true;
          actions.retry?.(state.feedback_id);
        });
        line.appendChild(retry);
      }
      break;
    }
  }
  return line;
}

function learnedLinks(state: LearningState, actions: ILearningActions): Array<HTMLElement | string> {
  const links: Array<HTMLElement | string> = [];
  const link = (kind: 'memories' | 'skills', label: string, query: string, title: string): HTMLElement => {
    const a = h('button', { class: `jp-nr-chip jp-nr-link jp-nr-learned-${kind === 'memories' ? 'memory' : 'skill'}`, type: 'button', title }, label);
    a.addEventListener('click', () => actions.open?.(kind, query));
    return a;
  };
  for (const m of state.memories) {
    links.push(link('memories', `memory: ${shorten(m.content, 48)}`, m.content, `${m.kind} · ${m.id} — open in the NanoResearch Lab`));
  }
  for (const s of state.skills) {
    links.push(
      link(
        'skills',
        `skill ${s.decision === 'add' ? 'added' : s.decision === 'merge' ? 'merged' : 'revised'}: ${s.name}`,
        s.name,
        `${s.id} — open in the NanoResearch Lab`
      )
    );
  }
  if (links.length === 0) {
    const discarded = state.discarded ? ` (${state.discarded} skill candidate${state.discarded === 1 ? '' : 's'} discarded by the review)` : '';
    links.push(h('span', { class: 'jp-nr-muted' }, ` — nothing new: no memory or skill came of it${discarded}`));
  }
  return links;
}

function shorten(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}
