/**
 * Conversions between DuckDB values and the plain JS values the rest of the library uses.
 *
 * Out of the store: BIGINT-like integers become numbers (strings when beyond 2^53, so no
 * precision is lost silently), TIMESTAMP becomes an ISO 8601 string, DATE `YYYY-MM-DD`,
 * DECIMAL a number, JSON columns their parsed value.
 *
 * Into the store: for a JSON column, a JS string is taken as JSON text (so already-encoded
 * JSON passes through; to store a string value, pass `JSON.stringify(s)`) and any other value
 * is encoded with `JSON.stringify`; plain objects and arrays are JSON-encoded wherever they go;
 * a `Date` becomes its ISO string, which DuckDB casts to TIMESTAMP.
 */
import {
  DuckDBPreparedStatement,
  DuckDBType,
  DuckDBTypeId,
  DuckDBValue,
  DuckDBValueConverter,
  JS,
  JSDuckDBValueConverter,
  createDuckDBValueConverter,
  jsToDuckDBValue,
  DuckDBDateValue,
  DuckDBTimestampValue
} from '@duckdb/node-api';

/** A row as the store returns it. */
export type Row = Record<string, unknown>;

/** Query parameters: an array for `$1, $2, ...`, an object for `$name`. */
export type Params = readonly unknown[] | Readonly<Record<string, unknown>>;

/** True when a DuckDB type is the JSON logical type (a VARCHAR carrying the JSON alias). */
export function isJsonType(type: DuckDBType): boolean {
  return type.typeId === DuckDBTypeId.VARCHAR && type.alias === 'JSON';
}

function integerOut(value: DuckDBValue): number | string {
  const big = value as bigint;
  return big <= BigInt(Number.MAX_SAFE_INTEGER) && big >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(big) : big.toString();
}

function timestampOut(value: DuckDBValue): string {
  const ts = value as DuckDBTimestampValue;
  // Infinite timestamps have no Date; DuckDB's own text ('infinity') is the honest rendering.
  if (!ts.isFinite) return ts.toString();
  return new Date(Number(ts.micros / 1000n)).toISOString();
}

function dateOut(value: DuckDBValue): string {
  return (value as DuckDBDateValue).toString();
}

function varcharOut(value: DuckDBValue, type: DuckDBType): unknown {
  const text = String(value);
  return isJsonType(type) ? JSON.parse(text) : text;
}

type ConverterTable = Parameters<typeof createDuckDBValueConverter<unknown>>[0];

/**
 * The library's JS converter with the store's choices for integers, timestamps and JSON
 * replacing its bigint / Date / text results; nested types recurse through this converter.
 */
const storeConverter: DuckDBValueConverter<unknown> = (() => {
  const fallback = (value: DuckDBValue, type: DuckDBType, self: DuckDBValueConverter<unknown>) =>
    JSDuckDBValueConverter(value, type, self as unknown as DuckDBValueConverter<JS>);
  const table: Partial<Record<DuckDBTypeId, DuckDBValueConverter<unknown>>> = {
    [DuckDBTypeId.BIGINT]: integerOut,
    [DuckDBTypeId.UBIGINT]: integerOut,
    [DuckDBTypeId.HUGEINT]: integerOut,
    [DuckDBTypeId.UHUGEINT]: integerOut,
    [DuckDBTypeId.BIGNUM]: integerOut,
    [DuckDBTypeId.TIMESTAMP]: timestampOut,
    [DuckDBTypeId.TIMESTAMP_TZ]: timestampOut,
    [DuckDBTypeId.DATE]: dateOut,
    [DuckDBTypeId.VARCHAR]: varcharOut
  };
  const full: Record<number, DuckDBValueConverter<unknown>> = {};
  for (const id of Object.values(DuckDBTypeId)) {
    if (typeof id === 'number') full[id] = table[id as DuckDBTypeId] ?? fallback;
  }
  return createDuckDBValueConverter<unknown>(full as ConverterTable);
})();

/** Converts one DuckDB value of the given type to the store's JS representation. */
export function fromDuckDB(value: DuckDBValue, type: DuckDBType): unknown {
  return storeConverter(value, type, storeConverter);
}

function isPlainJson(value: unknown): boolean {
  if (Array.isArray(value)) return true;
  if (value === null || typeof value !== 'object') return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/**
 * Normalises a JS value for a target column/parameter type (`undefined` when unknown):
 * returns null, a JSON text, an ISO string, or the value itself.
 */
export function toStoreValue(value: unknown, type: DuckDBType | undefined, what: string): DuckDBValue {
  if (value === undefined || value === null) return null;
  if (type && isJsonType(type)) {
    if (typeof value === 'string') {
      try {
        JSON.parse(value);
      } catch {
        throw new TypeError(
          `${what} goes to a JSON column and the string ${JSON.stringify(abbreviate(value))} is not JSON text: ` +
            'pass the value itself (object, array, number, ...) or JSON text; to store a plain string, pass JSON.stringify(it)'
        );
      }
      return value;
    }
    const text = JSON.stringify(value);
    if (text === undefined) throw new TypeError(`${what}: ${typeof value} cannot be stored in a JSON column`);
    return text;
  }
  if (value instanceof Date) {
    if (Number.isNaN(value.getTime())) throw new TypeError(`${what}: invalid Date`);
    return value.toISOString();
  }
  if (isPlainJson(value)) return JSON.stringify(value);
  switch (typeof value) {
    case 'string':
    case 'number':
    case 'boolean':
    case 'bigint':
      return value;
    case 'object':
      // DuckDB value classes (DuckDBTimestampValue, DuckDBListValue, ...) pass through as they are.
      return value as DuckDBValue;
    default:
      throw new TypeError(`${what}: a ${typeof value} cannot be stored`);
  }
}

/** The declared type of a prepared statement's parameter, or undefined where DuckDB left it open. */
function parameterType(prepared: DuckDBPreparedStatement, index: number): DuckDBType | undefined {
  try {
    return prepared.parameterType(index);
  } catch {
    return undefined;
  }
}

/**
 * Binds `params` to a prepared statement: array items to `$1..$n` in order, object keys
 * (with or without the leading `$`) to named parameters. A missing parameter is an error
 * naming it, rather than a silent NULL.
 */
export function bindParams(prepared: DuckDBPreparedStatement, params: Params | undefined, sql: string): void {
  const count = prepared.parameterCount;
  if (count === 0) {
    const given = params === undefined ? 0 : Array.isArray(params) ? params.length : Object.keys(params).length;
    if (given > 0) throw new Error(`Parameters were given but the statement takes none: ${abbreviate(sql)}`);
    return;
  }
  if (params === undefined) throw new Error(`The statement takes ${count} parameter(s) and none were given: ${abbreviate(sql)}`);
  for (let index = 1; index <= count; index++) {
    const name = prepared.parameterName(index);
    let value: unknown;
    if (Array.isArray(params)) {
      const position = Number(name) - 1;
      if (!(position >= 0 && position < params.length)) {
        throw new Error(`Parameter $${name} has no value (${params.length} given): ${abbreviate(sql)}`);
      }
      value = params[position];
    } else {
      const record = params as Readonly<Record<string, unknown>>;
      const key = name in record ? name : `$${name}` in record ? `$${name}` : undefined;
      if (key === undefined) throw new Error(`Parameter $${name} has no value in the params object: ${abbreviate(sql)}`);
      value = record[key];
    }
    const converted = toStoreValue(value, parameterType(prepared, index), `parameter $${name}`);
    if (converted === null) prepared.bindNull(index);
    else prepared.bindValue(index, converted);
  }
}

/** Converts a JS value to what an appender needs for a column of `type`. */
export function toAppendValue(value: unknown, type: DuckDBType, column: string): DuckDBValue {
  const normalised = toStoreValue(value, type, `column ${column}`);
  if (normalised === null) return null;
  switch (type.typeId) {
    case DuckDBTypeId.TIMESTAMP:
    case DuckDBTypeId.TIMESTAMP_TZ: {
      const ms = Date.parse(String(normalised));
      if (Number.isNaN(ms)) throw new TypeError(`column ${column}: ${JSON.stringify(normalised)} is not an ISO timestamp`);
      return new DuckDBTimestampValue(BigInt(ms) * 1000n);
    }
    case DuckDBTypeId.BIGINT:
    case DuckDBTypeId.HUGEINT:
    case DuckDBTypeId.UBIGINT:
      return BigInt(normalised as number | string | bigint);
    case DuckDBTypeId.VARCHAR:
      return typeof normalised === 'string' ? normalised : String(normalised);
    default:
      return jsToDuckDBValue(normalised as never, type);
  }
}

/** First line of a statement, short enough for an error message. */
export function abbreviate(sql: string): string {
  const flat = sql.replace(/\s+/g, ' ').trim();
  return flat.length > 120 ? `${flat.slice(0, 117)}...` : flat;
}
