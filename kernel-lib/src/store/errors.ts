/**
 * Errors the store raises. Each message says what failed and how to fix it, because these
 * surface in notebook cells where the user has no stack trace context.
 */

/**
 * The message of anything thrown. DuckDB's native errors may come from another JS realm
 * (jest's sandbox, a notebook kernel's vm context), where `instanceof Error` is false.
 */
export function messageOf(error: unknown): string {
  const message = (error as { message?: unknown } | null)?.message;
  return typeof message === 'string' ? message : String(error);
}

/** Another process held the store file for longer than `lockTimeoutMs`. */
export class StoreLockedError extends Error {
  override readonly name = 'StoreLockedError';
  constructor(
    readonly file: string,
    readonly holderPid: number | null,
    readonly waitedMs: number,
    readonly cause?: unknown,
    /** Processes still queued ahead of this one when it gave up. */
    readonly queuedAhead = 0
  ) {
    const holder = holderPid === null ? 'another process' : `process ${holderPid}`;
    super(
      `The store ${file} is locked by ${holder}; waited ${waitedMs} ms` +
        `${queuedAhead > 0 ? ` with ${queuedAhead} other process${queuedAhead > 1 ? 'es' : ''} still queued ahead` : ''}. ` +
        `DuckDB lets one process hold a file at a time. Finish or close the other notebook kernel / CLI ` +
        `that uses this store${holderPid === null ? '' : ` (e.g. \`kill ${holderPid}\` if it is stuck)`}, ` +
        `or raise lockTimeoutMs.`
    );
  }
}

/** The store file was written by a newer library than this one. */
export class StoreVersionError extends Error {
  override readonly name = 'StoreVersionError';
  constructor(
    readonly file: string,
    readonly storeVersion: number,
    readonly knownVersion: number
  ) {
    super(`store at ${file} has schema version ${storeVersion}; this library knows up to ${knownVersion}: ` + `upgrade @nanoresearch/kernel`);
  }
}

/** A user query given to `store.sql()` would change the store, or is not a single query. */
export class StoreReadOnlyError extends Error {
  override readonly name = 'StoreReadOnlyError';
  constructor(
    message: string,
    readonly statementKind: string
  ) {
    super(message);
  }
}

/** A migration failed; the store stays at the version before it. */
export class StoreMigrationError extends Error {
  override readonly name = 'StoreMigrationError';
  constructor(
    readonly file: string,
    readonly version: number,
    readonly migrationName: string,
    readonly cause: unknown
  ) {
    super(`Migration ${version} (${migrationName}) failed on ${file} and was rolled back: ` + messageOf(cause));
  }
}

/**
 * A store could not be made sound after an unclean shutdown: DuckDB could not replay its
 * write-ahead log, or a table rebuilt from its rows still fails the index check.
 */
export class StoreRecoveryError extends Error {
  override readonly name = 'StoreRecoveryError';
  constructor(
    readonly file: string,
    readonly problems: string[],
    readonly cause?: unknown
  ) {
    super(
      cause === undefined
        ? `The store ${file} still fails its index check after rebuilding: ${problems.join('; ')}. ` +
            `Nothing was deleted. Keep a copy of ${file}, then export what it holds with the DuckDB CLI ` +
            `(EXPORT DATABASE) and report the problem with the DuckDB version.`
        : `DuckDB could not replay the write-ahead log of ${file}: ${problems.join('; ')}. ` +
            `The writes since the last checkpoint are in ${file}.wal. Keep a copy of both files; moving ${file}.wal ` +
            `aside opens the store without those writes (they are lost). Report the DuckDB error with its version.`
    );
  }
}
