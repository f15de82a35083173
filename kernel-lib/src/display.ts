import { randomBytes } from 'crypto';
import { STAGE_MIME_TYPE, type StageBundle } from '@nanoresearch/schema';

/**
 * One Jupyter `display_data` / `update_display_data` message body, as tslab's kernel sends it.
 * `transient.display_id` lets a later message with `update = true` replace the output in place.
 */
export interface DisplayMessage {
  data: Record<string, unknown>;
  metadata: Record<string, unknown>;
  transient: { display_id: string };
}

/** Sends one display message; `update` turns it into an update of the output with the same display id. */
export type DisplayWriter = (message: DisplayMessage, update: boolean) => void;

/**
 * The writer of the tslab kernel this process runs in, or null outside a kernel (CLI, tests).
 *
 * tslab's public `display.raw` sends a single MIME type, and a stage card needs two (the stage
 * bundle and its Markdown fallback) in one message. tslab keeps the writer of the executing cell
 * in `tslab/dist/jupyter`'s `lastWriteDisplayData`. We only look at that module when the kernel has
 * already loaded it: requiring it ourselves would pull in tslab's bundled TypeScript compiler
 * (hundreds of milliseconds) just to learn that we are not in a kernel.
 */
export function kernelDisplayWriter(): DisplayWriter | null {
  let modulePath: string;
  try {
    modulePath = require.resolve('tslab/dist/jupyter');
  } catch {
    return null;
  }
  if (!require.cache[modulePath]) return null;
  const jupyter = require.cache[modulePath]!.exports as { lastWriteDisplayData?: DisplayWriter | null };
  if (typeof jupyter.lastWriteDisplayData !== 'function') return null;
  // Read the variable at each call: tslab replaces it for every executed cell.
  return (message, update) => kernelSends.write(jupyter.lastWriteDisplayData!, message, update);
}

/** A retried display message gives up after this long: the card is a view, the store holds the truth. */
const BUSY_GIVE_UP_MS = 10_000;
const BUSY_RETRY_MS = 2;

/** zeromq's EBUSY: a send while the socket's previous one is still being written. */
function isSocketBusy(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === 'EBUSY' || /busy writing/i.test(String((error as Error | null)?.message ?? error));
}

/**
 * The kernel's display messages in order, never throwing into the caller. tslab sends on its
 * iopub socket without waiting for the previous send; zeromq defers every 512th send to the next
 * turn of the event loop and throws "Socket is busy writing" (EBUSY) at a send made before that
 * one is written. A stage card update that hit it failed the stage it showed. Here a busy send is
 * queued and retried a moment later, after which later messages queue behind it; an update of a
 * display whose update is already queued replaces the queued one (only the latest state is worth
 * showing). Any other failure of a display is dropped.
 */
export class DisplaySendQueue {
  private readonly queued: Array<{ send: DisplayWriter; message: DisplayMessage; update: boolean }> = [];
  private timer: NodeJS.Timeout | null = null;
  private busySince = 0;

  constructor(private readonly options: { retryMs?: number; giveUpMs?: number } = {}) {}

  /** Sends `message` with `send` (the writer of the cell it belongs to) now, or after the ones queued before it. */
  write(send: DisplayWriter, message: DisplayMessage, update: boolean): void {
    if (this.queued.length === 0 && this.trySend(send, message, update)) return;
    const id = message.transient.display_id;
    const pending = update ? this.queued.find(entry => entry.message.transient.display_id === id) : undefined;
    if (pending) pending.message = message;
    else this.queued.push({ send, message, update });
    this.schedule();
  }

  /** Messages waiting for the socket. */
  get pending(): number {
    return this.queued.length;
  }

  private trySend(send: DisplayWriter, message: DisplayMessage, update: boolean): boolean {
    try {
      send(message, update);
    } catch (error) {
      if (isSocketBusy(error)) return false;
    }
    return true;
  }

  private schedule(): void {
    if (this.timer) return;
    if (this.busySince === 0) this.busySince = Date.now();
    this.timer = setTimeout(() => this.flush(), this.options.retryMs ?? BUSY_RETRY_MS);
  }

  private flush(): void {
    this.timer = null;
    while (this.queued.length > 0) {
      const { send, message, update } = this.queued[0];
      if (!this.trySend(send, message, update)) {
        if (Date.now() - this.busySince < (this.options.giveUpMs ?? BUSY_GIVE_UP_MS)) return this.schedule();
        this.queued.length = 0;
        break;
      }
      this.queued.shift();
    }
    this.busySince = 0;
  }
}

/** One queue for the process: tslab has one iopub socket. */
const kernelSends = new DisplaySendQueue();

/**
 * Where displays go: an explicit writer (tests inject one), else the kernel's, else nowhere.
 * `undefined` means "detect"; `null` means "display nothing".
 */
export function resolveDisplayWriter(writer?: DisplayWriter | null): DisplayWriter | null {
  return writer === undefined ? kernelDisplayWriter() : writer;
}

/**
 * One output in a notebook cell that can be shown once and then updated in place
 * (a stage card while its stage runs, a training progress bar, ...).
 */
export class LiveDisplay {
  readonly displayId: string;
  private shown = false;
  private readonly writer: DisplayWriter | null;

  constructor(options: { displayId?: string; writer?: DisplayWriter | null } = {}) {
    this.displayId = options.displayId ?? `nanoresearch-${randomBytes(6).toString('hex')}`;
    this.writer = resolveDisplayWriter(options.writer);
  }

  /** True when there is somewhere to display to. */
  get active(): boolean {
    return this.writer !== null;
  }

  /** Shows `data` (MIME type → value) the first time, then replaces what was shown. */
  show(data: Record<string, unknown>): void {
    if (!this.writer) return;
    this.writer({ data, metadata: {}, transient: { display_id: this.displayId } }, this.shown);
    this.shown = true;
  }
}

/**
 * A stage card: the stage bundle (rendered by the JupyterLab extension) plus a Markdown
 * fallback (for plain Jupyter, GitHub and nbconvert), in ONE display message, updated in place
 * as the stage makes progress. Outside a kernel it displays nothing; with
 * NANORESEARCH_PROGRESS=stderr it prints one progress line per update instead.
 */
export class StageDisplay {
  private readonly live: LiveDisplay;
  private readonly progressToStderr: boolean;

  constructor(options: { displayId?: string; writer?: DisplayWriter | null; env?: NodeJS.ProcessEnv } = {}) {
    this.live = new LiveDisplay(options);
    this.progressToStderr = !this.live.active && (options.env ?? process.env).NANORESEARCH_PROGRESS === 'stderr';
  }

  get displayId(): string {
    return this.live.displayId;
  }

  show(bundle: StageBundle, markdown: string): void {
    if (this.live.active) {
      this.live.show({ [STAGE_MIME_TYPE]: bundle, 'text/markdown': markdown });
    } else if (this.progressToStderr) {
      process.stderr.write(`${progressLine(bundle)}\n`);
    }
  }
}

/** Shows a stage card once and returns its display, so a caller can update it in place. */
export function displayStage(bundle: StageBundle, markdown: string, options: { displayId?: string; writer?: DisplayWriter | null } = {}): StageDisplay {
  const display = new StageDisplay(options);
  display.show(bundle, markdown);
  return display;
}

/** One line describing a stage's state, for terminals and logs. */
export function progressLine(bundle: StageBundle): string {
  const progress = bundle.progress;
  const count = progress && progress.total !== undefined ? ` (${progress.done ?? 0}/${progress.total})` : '';
  const detail =
    bundle.status === 'running'
      ? progress
        ? `${progress.step}${count}`
        : 'started'
      : bundle.status === 'failed'
        ? (bundle.error ?? 'failed')
        : bundle.summary;
  return `[${bundle.stage}] ${bundle.status}: ${detail}`;
}

/** The Markdown shown while a stage runs (the stage's own Markdown replaces it when it ends). */
export function runningMarkdown(bundle: StageBundle): string {
  const progress = bundle.progress;
  const step = progress ? `: ${progress.step}${progress.total !== undefined ? ` (${progress.done ?? 0}/${progress.total})` : ''}` : '';
  return `**${bundle.title}** — running${step}`;
}

/** Shows a table (from `formatTable`) as HTML with a Markdown fallback; nothing outside a kernel. */
export function displayTable(table: { markdown: string; html: string }, writer?: DisplayWriter | null): void {
  new LiveDisplay({ writer }).show({ 'text/html': table.html, 'text/markdown': table.markdown });
}

/** What a finished SDPO round's card shows. */
export interface TrainingSummary {
  version: string;
  steps: number;
  examples: number;
  /** Examples the trainer used (some may be too long for the model's context). */
  examplesUsed?: number;
  finalLoss: number;
  meanAdvantage: number;
  /** The loss at each step, in order (the curve). */
  losses: number[];
  wallMs: number;
  parentVersion?: string | null;
}

/**
 * The result card of `lab.train()`: the new adapter's version, steps, examples, final loss and time,
 * with the loss curve as a small plot (an SVG image, so JupyterLab's HTML sanitizer keeps it in a
 * reopened notebook), and the same facts as Markdown for plain Jupyter and GitHub.
 */
export function trainingCard(summary: TrainingSummary): { html: string; markdown: string } {
  const seconds = summary.wallMs / 1000;
  const time = seconds < 60 ? `${seconds.toFixed(1)} s` : `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  const used =
    summary.examplesUsed !== undefined && summary.examplesUsed !== summary.examples
      ? `${summary.examplesUsed} of ${summary.examples}`
      : String(summary.examples);
  const facts: Array<[string, string]> = [
    ['steps', String(summary.steps)],
    ['examples', used],
    ['final loss', summary.finalLoss.toFixed(4)],
    ['mean advantage', summary.meanAdvantage.toFixed(4)],
    ['time', time]
  ];
  if (summary.parentVersion) facts.push(['continued from', summary.parentVersion]);
  const plot =
    summary.losses.length >= 2
      ? `<img alt="loss per step" src="data:image/svg+xml;base64,${Buffer.from(lossCurveSvg(summary.losses)).toString('base64')}" style="display:block;margin-top:6px">`
      : '';
  const html =
    `<div class="nanoresearch-training" style="border:1px solid #8884;border-radius:6px;padding:8px 12px;max-width:440px;font-size:13px">` +
    `<div style="font-weight:600;margin-bottom:4px">Planner adapter ${escapeHtml(summary.version)} trained · the planner now uses it</div>` +
    `<table style="border-collapse:collapse">${facts.map(([k, v]) => `<tr><td style="padding:1px 12px 1px 0;opacity:.7">${escapeHtml(k)}</td><td style="padding:1px 0">${escapeHtml(v)}</td></tr>`).join('')}</table>` +
    plot +
    `</div>`;
  const markdown =
    `**Planner adapter ${summary.version} trained** — the planner now uses it.\n\n` +
    `| ${facts.map(([k]) => k).join(' | ')} |\n| ${facts.map(() => '---').join(' | ')} |\n| ${facts.map(([, v]) => v).join(' | ')} |` +
    (summary.losses.length ? `\n\nLoss per step: ${summary.losses.map(l => l.toFixed(3)).join(', ')}` : '');
  return { html, markdown };
}

/** A small line plot of the loss per step (320×90), axes labelled with the first and last step and the loss range. */
export function lossCurveSvg(losses: number[]): string {
  const width = 320;
  const height = 90;
  const pad = { left: 44, right: 8, top: 8, bottom: 18 };
  const min = Math.min(...losses);
  const max = Math.max(...losses);
  const span = max - min || 1;
  const x = (i: number) => pad.left + ((width - pad.left - pad.right) * i) / Math.max(1, losses.length - 1);
  const y = (v: number) => pad.top + (height - pad.top - pad.bottom) * (1 - (v - min) / span);
  const points = losses.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
  const label = (value: number) => (Math.abs(value) >= 100 ? value.toFixed(0) : value.toPrecision(3));
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="10" fill="#888">` +
    `<line x1="${pad.left}" y1="${pad.top}" x2="${pad.left}" y2="${height - pad.bottom}" stroke="#8888"/>` +
    `<line x1="${pad.left}" y1="${height - pad.bottom}" x2="${width - pad.right}" y2="${height - pad.bottom}" stroke="#8888"/>` +
    `<text x="${pad.left - 4}" y="${pad.top + 8}" text-anchor="end">${label(max)}</text>` +
    `<text x="${pad.left - 4}" y="${height - pad.bottom}" text-anchor="end">${label(min)}</text>` +
    `<text x="${pad.left}" y="${height - 4}">step 1</text>` +
    `<text x="${width - pad.right}" y="${height - 4}" text-anchor="end">step ${losses.length}</text>` +
    `<polyline points="${points}" fill="none" stroke="#2f80ed" stroke-width="2"/>` +
    `</svg>`
  );
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, c => `&#${c.charCodeAt(0)};`);
}
