/**
 * One module per table: its row↔record mapping and the only place its SQL lives. A layer just
 * above the store: it imports the store, the schema and the stage contract, nothing else.
 * `memories.ts` and `skills.ts` are imported by path (their banks in memory/ and skills/ hold
 * the rest of those tables' logic).
 */
export * from './rows';
export * from './stage-runs';
export * from './runs';
export * from './artifacts';
export * from './planner-calls';
export * from './llm-calls';
export * from './profiles';
export * from './projects';
