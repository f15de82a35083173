/**
 * User-facing SQL: `store.sql()` runs one read-only query and `formatTable` shows its result
 * in a notebook. Whether a query is read-only is decided by DuckDB's own parser before the
 * query is prepared: preparing already binds it, and binding runs table functions' bind steps
 * (read_csv sniffs its file) and creates EXPORT DATABASE's folder. The query then runs inside a
 * READ ONLY transaction on an instance with external access off (file-lease.ts), so it can
 * neither change the store nor touch a host file (but the store's own file, its log and spill
 * folder, which the instance must reach: reading those shows nothing the tables do not).
 */
import { DuckDBConnection } from '@duckdb/node-api';
import { StoreReadOnlyError, messageOf } from './errors';
import { Row, abbreviate } from './values';

/** What `store.sql()` returns. */
export interface SqlResult {
  columns: string[];
  rows: Row[];
}

const HOW_TO_WRITE =
  'store.sql() only reads (SELECT, FROM, WITH, DESCRIBE, SHOW, SUMMARIZE); ' + 'change data through the library (store.write() in code), not through user SQL.';

function refusal(kind: string, query: string): StoreReadOnlyError {
  return new StoreReadOnlyError(`Refused ${kind} statement "${abbreviate(query)}": it could change the store and was not run. ${HOW_TO_WRITE}`, kind);
}

/**
 * How the user wrote a non-SELECT statement, for the message: its first keyword, or for
 * `WITH … INSERT/UPDATE/DELETE` the statement after the common table expressions.
 */
function kindOf(query: string): string {
  const first = /^\s*\(*\s*([A-Za-z]+)/.exec(query)?.[1]?.toUpperCase() ?? 'non-SELECT';
  if (first !== 'WITH') return first;
  return /\b(INSERT|UPDATE|DELETE|MERGE)\b/i.exec(query)?.[1]?.toUpperCase() ?? first;
}

/**
 * Throws StoreReadOnlyError unless `query` is exactly one SELECT-type statement. Only parses:
 * nothing is bound, prepared or run. DuckDB's `json_serialize_sql` serialises SELECT
 * statements only (DESCRIBE, SHOW, SUMMARIZE and FROM-first queries parse as SELECT) and
 * reports any other statement as not one.
 */
export async function assertReadOnlyQuery(connection: DuckDBConnection, query: string): Promise<void> {
  const extracted = await connection.extractStatements(query);
  if (extracted.count !== 1) {
    throw new StoreReadOnlyError(`store.sql() runs one query at a time and got ${extracted.count} statements; run them one by one. ${HOW_TO_WRITE}`, 'MULTI');
  }
  // json_serialize_sql takes only a constant string, so the text is quoted as a SQL literal.
  const result = await connection.run(`SELECT json_serialize_sql('${query.replace(/'/g, "''")}') AS tree`);
  const rows = await result.getRowObjectsJS();
  const tree = JSON.parse(String(rows[0]?.tree)) as { error?: boolean; error_message?: string };
  if (tree.error !== true) return;
  if (/only select statements/i.test(tree.error_message ?? '')) throw refusal(kindOf(query), query);
  throw new Error(`store.sql() could not parse "${abbreviate(query)}": ${tree.error_message}`);
}

/**
 * DuckDB's refusal of a file access (external access is off) as a StoreReadOnlyError saying
 * why; any other error is returned as it is.
 */
export function explainFileAccess(error: unknown, query: string): unknown {
  const message = messageOf(error);
  if (!/file system operations are disabled by configuration/i.test(message)) return error;
  const file = /Cannot access (?:file|directory) "([^"]*)"/i.exec(message)?.[1];
  return new StoreReadOnlyError(
    `Refused "${abbreviate(query)}": store.sql() reads the store's tables only and cannot read or write files` +
      `${file ? ` (${file})` : ''}. To look at a file, open it outside the store (e.g. with the DuckDB CLI); ` +
      `to bring data into the store, use the library. DuckDB said: ${message.split('\n')[0]}`,
    'FILE_ACCESS'
  );
}

function cellText(value: unknown, maxChars: number): string {
  let text: string;
  if (value === null || value === undefined) text = 'NULL';
  else if (typeof value === 'string') text = value;
  else if (typeof value === 'object') text = JSON.stringify(value);
  else text = String(value);
  return text.length > maxChars ? `${text.slice(0, maxChars - 1)}…` : text;
}

function escapeMarkdown(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\|/g, '\\|').replace(/\r?\n/g, ' ');
}

function escapeHtml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Cells longer than this are cut, so one big JSON value does not swamp the notebook. */
const MAX_CELL_CHARS = 200;

/**
 * Renders a query result as a Markdown table and an HTML table for notebook display,
 * showing at most `maxRows` rows and saying how many were left out.
 */
export function formatTable(result: SqlResult, maxRows = 50): { markdown: string; html: string } {
  const shown = result.rows.slice(0, Math.max(0, maxRows));
  const cells = shown.map(row => result.columns.map(column => cellText(row[column], MAX_CELL_CHARS)));
  const omitted = result.rows.length - shown.length;
  const footer =
    result.rows.length === 0
      ? '(no rows)'
      : omitted > 0
        ? `${shown.length} of ${result.rows.length} rows shown (${omitted} more not shown)`
        : `${result.rows.length} row${result.rows.length === 1 ? '' : 's'}`;

  const markdown = [
    `| ${result.columns.map(escapeMarkdown).join(' | ')} |`,
    `| ${result.columns.map(() => '---').join(' | ')} |`,
    ...cells.map(row => `| ${row.map(escapeMarkdown).join(' | ')} |`),
    '',
    `_${footer}_`
  ].join('\n');

  const html = [
    '<table class="nanoresearch-sql">',
    `<thead><tr>${result.columns.map(c => `<th>${escapeHtml(c)}</th>`).join('')}</tr></thead>`,
    `<tbody>${cells.map(row => `<tr>${row.map(c => `<td>${escapeHtml(c)}</td>`).join('')}</tr>`).join('')}</tbody>`,
    '</table>',
    `<p><em>${escapeHtml(footer)}</em></p>`
  ].join('\n');

  return { markdown, html };
}
