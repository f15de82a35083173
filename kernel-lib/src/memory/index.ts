/** Memory: typed, deterministic-id memories with support, contradiction and decay. */
export * from './bank';
export * from '../records/memories';
