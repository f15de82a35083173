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
  return (message, update) => jupyter.lastWriteDisplayData!(message, update);
}

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
export function displayStage(
  bundle: StageBundle,
  markdown: string,
  options: { displayId?: string; writer?: DisplayWriter | null } = {}
): StageDisplay {
  const display = new StageDisplay(options);
  display.show(bundle, markdown);
  return display;
}

/** One line describing a stage's state, for terminals and logs. */
export function progressLine(bundle: StageBundle): string {
  const progress = bundle.progress;
  const count = progress && progress.total !== undefined ? ` (${progress.done ?? 0}/${progress.total})` : '';
  const detail =
    bundle.status === 'running' ? (progress ? `${progress.step}${count}` : 'started')
    : bundle.status === 'failed' ? (bundle.error ?? 'failed')
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
