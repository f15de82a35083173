/** The DuckDB store: see store.ts for the Store API and file-lease.ts for cross-process use. */
export { Store, resolveStorePath } from './store';
export type { StoreOptions } from './store';
export type { Queryable, RunResult } from './queryable';
export { formatTable } from './user-sql';
export type { SqlResult } from './user-sql';
export type { StoreStats } from './file-lease';
export type { StoreRecovery } from './recovery';
export { acquireRunLease, RunLease, RunLeaseHeldError } from './run-lease';
export type { RunLeaseOptions, LeaseHolder } from './run-lease';
export type { TableRebuild } from './integrity';
export { migrations, latestVersion } from './migrations';
export { defineDurableWrite, INSERT_ROWS, StoreWriteQueuedError, outboxDirOf } from './outbox';
export type { DurableKind, DurableApply, RowInserts, ReplayReport, OutboxEntry } from './outbox';
export type { Migration } from './migrations';
export { StoreLockedError, StoreVersionError, StoreReadOnlyError, StoreMigrationError, StoreRecoveryError } from './errors';
export type { Row, Params } from './values';
