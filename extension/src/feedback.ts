/**
 * Feedback that is never lost: an entry is written into the cell's metadata at once
 * (synced: false), then sent to the kernel, then marked synced: true. Entries that could not
 * be sent (no kernel, a dead kernel, an error) stay unsynced in the notebook file and are sent
 * again when a kernel starts; the kernel adds feedback idempotently by id, so a resend after a
 * lost reply adds nothing twice.
 */
import { UUID } from '@lumino/coreutils';
import type { CellMetadata, FeedbackRequest } from '@nanoresearch/schema';
import { IMetadataHost, getStageMetadata, setStageMetadata, unsyncedFeedback, withFeedback, withSynced } from './metadata';
import type { FeedbackEntry, IFlushResult } from './tokens';

export interface IFeedbackSyncOptions {
  /** The notebook's cells, in order (read on every flush, so added cells count). */
  cells: () => Iterable<IMetadataHost>;
  /** Sends one entry to the kernel; rejects when it could not. */
  send: (request: FeedbackRequest) => Promise<unknown>;
  /** Where feedback given here comes from, e.g. 'sidebar:<notebook path>'. */
  origin: () => string;
}

/** A new feedback entry, not yet synced. */
export function newFeedbackEntry(text: string, author: string, now = new Date()): FeedbackEntry {
  return { id: `fb_${UUID.uuid4()}`, text, author, created_at: now.toISOString(), synced: false };
}

/**
 * The feedback of one notebook: adds entries to cell metadata and syncs them to the kernel,
 * one flush at a time.
 */
export class FeedbackSync {
  constructor(private readonly options: IFeedbackSyncOptions) {}

  /**
   * Writes the entry into the cell's metadata now, then starts a flush. Resolves with the entry
   * once it is written; `flushed` says how the send went. Throws when the cell is not a stage cell.
   */
  add(cell: IMetadataHost, text: string, author: string): { entry: FeedbackEntry; flushed: Promise<IFlushResult> } {
    const metadata = getStageMetadata(cell);
    if (!metadata) {
      throw new Error('Feedback can only be given on a stage cell (a cell with nanoresearch metadata).');
    }
    const trimmed = text.trim();
    if (!trimmed) {
      throw new Error('Feedback text is empty.');
    }
    const entry = newFeedbackEntry(trimmed, author);
    setStageMetadata(cell, withFeedback(metadata, entry));
    return { entry, flushed: this.flush() };
  }

  /** True when some stage cell holds feedback the store does not have yet. */
  hasPending(): boolean {
    for (const cell of this.options.cells()) {
      const metadata = getStageMetadata(cell);
      if (metadata && unsyncedFeedback(metadata).length > 0) {
        return true;
      }
    }
    return false;
  }

  /**
   * Sends every unsynced entry of every stage cell that has a stage run. A flush asked for
   * while one runs is run once more after it, so an entry added meanwhile is not missed.
   */
  flush(): Promise<IFlushResult> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = this.flushLoop().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private async flushLoop(): Promise<IFlushResult> {
    const total: IFlushResult = { sent: 0, failed: 0, waiting: 0, errors: [] };
    do {
      this.again = false;
      const once = await this.flushOnce();
      total.sent += once.sent;
      total.failed += once.failed;
      total.waiting = once.waiting;
      total.errors.push(...once.errors);
      // Stop after a failure: the next trigger (a kernel start, new feedback) tries again.
    } while (this.again && total.failed === 0);
    return total;
  }

  private async flushOnce(): Promise<IFlushResult> {
    const result: IFlushResult = { sent: 0, failed: 0, waiting: 0, errors: [] };
    for (const cell of Array.from(this.options.cells())) {
      const metadata = getStageMetadata(cell);
      if (!metadata) {
        continue;
      }
      const pending = unsyncedFeedback(metadata);
      if (pending.length === 0) {
        continue;
      }
      if (!metadata.stage_run_id) {
        result.waiting += pending.length;
        continue;
      }
      for (const entry of pending) {
        try {
          await this.options.send(toRequest(metadata, entry, this.options.origin()));
        } catch (reason) {
          result.failed += 1;
          result.errors.push(reason instanceof Error ? reason.message : String(reason));
          return result;
        }
        // Re-read: the cell may have changed while the request ran.
        const latest = getStageMetadata(cell);
        if (latest) {
          setStageMetadata(cell, withSynced(latest, [entry.id]));
        }
        result.sent += 1;
      }
    }
    return result;
  }

  private running: Promise<IFlushResult> | null = null;
  private again = false;
}

function toRequest(metadata: CellMetadata, entry: FeedbackEntry, origin: string): FeedbackRequest {
  return {
    stage_run_id: metadata.stage_run_id as string,
    id: entry.id,
    text: entry.text,
    author: entry.author,
    origin,
    created_at: entry.created_at
  };
}
