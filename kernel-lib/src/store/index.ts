/** The DuckDB store: see store.ts for the Store API and file-lease.ts for cross-process use. */
export { Store, resolveStorePath } from './store';
export type { StoreOptions } from './store';
export type { Queryable, RunResult } from './queryable';
export { formatTable } from './user-sql';
export type { SqlResult } from './user-sql';
export type { StoreStats } from './file-lease';
export { migrations, latestVersion } from './migrations';
export type { Migration } from './migrations';
export { StoreLockedError, StoreVersionError, StoreReadOnlyError, StoreMigrationError } from './errors';
export type { Row, Params } from './values';
