/**
 * Decides when a notebook's kernel has just become ready: after it started, restarted or was
 * replaced, the first 'idle' status. Feedback waiting for a kernel is flushed then, and not on
 * every idle (a failing flush would otherwise retrigger itself through its own request's idle).
 */
export class KernelReadyTrigger {
  /** Call when the session's kernel is replaced (a new kernel, or none). */
  kernelChanged(): void {
    this.waiting = true;
  }

  /** Call on every kernel status; returns true when the kernel has just become ready. */
  status(status: string): boolean {
    if (status === 'starting' || status === 'restarting' || status === 'autorestarting' || status === 'dead') {
      this.waiting = true;
      return false;
    }
    if (status === 'idle' && this.waiting) {
      this.waiting = false;
      return true;
    }
    return false;
  }

  private waiting = true;
}
