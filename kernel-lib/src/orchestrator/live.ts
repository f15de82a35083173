import type { StageBundle, Usage } from '@nanoresearch/schema';
import type { StageDisplay } from '../display';
import { runningMarkdown } from '../display';
import type { LlmActivity } from '../llm';

type Progress = NonNullable<StageBundle['progress']>;
export type StagePhase = NonNullable<Progress['phase']>;

/** Characters of the live preview of a call's answer: one short line on the card. */
const PREVIEW_CHARS = 80;

interface CallInFlight {
  role: string;
  model: string;
  startedAt: number;
  tokens?: number;
  text?: string;
}

/**
 * The card of a stage while it runs. It is shown the moment the stage starts and follows it
 * through Retrieve → Plan → Stage → Update (`phase`), with the stage's own steps, the tokens and
 * calls so far, and the LLM call in flight (its live token count and the end of its text where
 * the provider streams). The browser counts the elapsed time from `started_at` by itself, so
 * nothing needs sending just to move the clock.
 *
 * Display updates closer together than `intervalMs` are merged: the latest state is always shown,
 * at most one interval late, so a model streaming tokens does not flood the notebook. `onProgress`
 * (the CLI, tests) hears every phase and step change and every ended call, unmerged.
 */
export class LiveStageCard {
  private progress: Progress;
  private readonly usage: Usage = { prompt_tokens: 0, completion_tokens: 0, calls: 0, cost_usd: 0, wall_ms: 0, cache_hits: 0 };
  private readonly calls = new Map<string, CallInFlight>();
  private lastShown = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private closed = false;

  constructor(
    private readonly options: {
      display: StageDisplay;
      /** The running card for a progress and the usage so far. */
      bundle: (progress: Progress, usage: Usage) => StageBundle;
      onProgress?: (bundle: StageBundle) => void;
      startedAt: number;
      intervalMs: number;
      now?: () => number;
    }
  ) {
    this.progress = { step: 'starting', phase: 'retrieving' };
  }

  /** Where the card is shown (the final card replaces the live one there). */
  get display(): StageDisplay {
    return this.options.display;
  }

  /** Enters a phase with its first step, shown at once. */
  phase(phase: StagePhase, step: string): void {
    this.progress = { step, phase };
    this.changed(true);
  }

  /** A step of the stage itself (ctx.progress). */
  step(step: string, done?: number, total?: number): void {
    const progress: Progress = { step, phase: this.progress.phase ?? 'running' };
    if (done !== undefined) progress.done = Math.max(0, Math.floor(done));
    if (total !== undefined) progress.total = Math.max(0, Math.floor(total));
    this.progress = progress;
    this.changed(false, true);
  }

  /** Usage spent outside the stage's own LLM scope (the planner's call), counted in. */
  addUsage(spent: Pick<Usage, 'prompt_tokens' | 'completion_tokens' | 'calls' | 'cost_usd' | 'cache_hits'>): void {
    this.usage.prompt_tokens += spent.prompt_tokens;
    this.usage.completion_tokens += spent.completion_tokens;
    this.usage.calls += spent.calls;
    this.usage.cost_usd += spent.cost_usd;
    this.usage.cache_hits = (this.usage.cache_hits ?? 0) + (spent.cache_hits ?? 0);
    this.changed(false);
  }

  /** An LLM call of the stage started, generated text, or ended. */
  activity(event: LlmActivity): void {
    if (event.type === 'start') {
      this.calls.set(event.callId, { role: event.role, model: event.model, startedAt: event.startedAt });
      this.changed(false);
    } else if (event.type === 'text') {
      const call = this.calls.get(event.callId);
      if (!call) return;
      call.tokens = event.tokens;
      call.text = event.text;
      this.changed(false);
    } else {
      this.calls.delete(event.callId);
      this.addUsage({
        prompt_tokens: event.usage.promptTokens,
        completion_tokens: event.usage.completionTokens,
        calls: 1,
        cost_usd: event.costUsd,
        cache_hits: event.cached ? 1 : 0
      });
      this.notify();
    }
  }

  /** The running card as it is now. */
  current(): StageBundle {
    const now = (this.options.now ?? Date.now)();
    const progress: Progress = { ...this.progress };
    const call = this.latestCall();
    if (call) {
      progress.llm = { role: call.role, model: call.model, started_at: new Date(call.startedAt).toISOString() };
      if (call.tokens !== undefined) progress.llm.tokens = call.tokens;
      if (call.text) progress.llm.preview = previewOf(call.text);
    }
    return this.options.bundle(progress, { ...this.usage, wall_ms: Math.max(0, now - this.options.startedAt) });
  }

  /** Usage so far (what the final card replaces with the stored sum). */
  spent(): Usage {
    return { ...this.usage };
  }

  /** Stops updating: the final card follows. */
  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** The call started last: with calls in parallel (the Update step), the newest is what the card shows. */
  private latestCall(): CallInFlight | undefined {
    let latest: CallInFlight | undefined;
    for (const call of this.calls.values()) if (!latest || call.startedAt >= latest.startedAt) latest = call;
    return latest;
  }

  private notify(): void {
    this.options.onProgress?.(this.current());
  }

  private changed(force: boolean, notify = force): void {
    if (this.closed) return;
    if (notify) this.notify();
    const now = (this.options.now ?? Date.now)();
    const wait = this.lastShown + this.options.intervalMs - now;
    if (force || wait <= 0) {
      this.show(now);
    } else if (!this.timer) {
      this.timer = setTimeout(() => this.show((this.options.now ?? Date.now)()), wait);
      // A pending update never keeps the process alive (the CLI exits when its work is done).
      this.timer.unref?.();
    }
  }

  private show(now: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.closed) return;
    this.lastShown = now;
    const bundle = this.current();
    this.options.display.show(bundle, runningMarkdown(bundle));
  }
}

/** The end of a call's text so far, on one line, starting at a word. */
export function previewOf(text: string): string {
  const line = text.replace(/\s+/g, ' ').trim();
  if (line.length <= PREVIEW_CHARS) return line;
  const tail = line.slice(-PREVIEW_CHARS);
  const space = tail.indexOf(' ');
  return `…${space > 0 && space < 20 ? tail.slice(space + 1) : tail}`;
}
