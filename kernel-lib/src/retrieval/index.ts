/** Retrieval: BM25 over precomputed term tables plus tags, recency, quality, usage, stage and conditions. */
export * from './retrieve';
export * from './weights';
export { tokenize, termKey, tagTerm, stem } from './tokenize';
export { indexDocuments, unindexDocuments, compactPostings, skillText, memoryText, memoryDoc, skillDoc, ALWAYS_TERM } from './terms';
export type { DocKind, IndexableDoc } from './terms';
