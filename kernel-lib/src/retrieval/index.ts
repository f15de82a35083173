/** Retrieval: BM25 over an in-memory term index (built from one row per document) plus tags, recency, quality, usage, stage and conditions. */
export * from './retrieve';
export * from './weights';
export { tokenize, termKey, tagTerm, stem } from './tokenize';
export { indexDocuments, unindexDocuments, docTerms, skillText, memoryText, memoryDoc, skillDoc, ALWAYS_TERM } from './terms';
export type { DocKind, IndexableDoc } from './terms';
