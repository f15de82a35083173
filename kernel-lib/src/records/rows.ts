/** What every row↔record module shares: how SQL NULLs become absent optional fields. */

/**
 * A stored row with its SQL NULLs (optional columns never set) removed, as the schemas expect;
 * the columns in `keepNull` keep an explicit null (fields whose schema allows null).
 */
export function withoutNulls<T extends object>(row: T, keepNull: readonly string[] = []): T {
  return Object.fromEntries(Object.entries(row).filter(([key, value]) => value !== null || keepNull.includes(key))) as T;
}
