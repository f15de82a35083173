/**
 * User-facing SQL: `store.sql()` runs one read-only query and `formatTable` shows its result
 * in a notebook. Whether a query is read-only is decided by DuckDB's own parser and binder
 * (the prepared statement's type), before anything runs, and the query then runs inside a
 * READ ONLY transaction as a second guard.
 */
import { DuckDBConnection, DuckDBPreparedStatement, StatementType } from '@duckdb/node-api';
import { StoreReadOnlyError } from './errors';
import { Row, abbreviate } from './values';

/** What `store.sql()` returns. */
export interface SqlResult {
  columns: string[];
  rows: Row[];
}

const HOW_TO_WRITE =
  'store.sql() only reads (SELECT, FROM, WITH, DESCRIBE, SHOW, SUMMARIZE); ' +
  'change data through the library (store.write() in code), not through user SQL.';

function refusal(kind: string, query: string): StoreReadOnlyError {
  return new StoreReadOnlyError(
    `Refused ${kind} statement "${abbreviate(query)}": it could change the store and was not run. ${HOW_TO_WRITE}`,
    kind
  );
}

/** Names DuckDB's statement types the way a user wrote them (INSTALL and LOAD share a type). */
function kindOf(type: StatementType, query: string): string {
  const first = /^\s*([A-Za-z]+)/.exec(query)?.[1]?.toUpperCase();
  if (type === StatementType.LOAD && first) return first;
  return StatementType[type] ?? first ?? 'unknown';
}

/**
 * True when DuckDB's parser says the text is not a SELECT. Used when binding fails (a write
 * to a missing table, say), so that the refusal, not a catalog error, is what the user sees.
 */
async function parserSaysNotSelect(connection: DuckDBConnection, query: string): Promise<boolean> {
  // json_serialize_sql takes only a constant string, so the text is quoted as a SQL literal.
  const result = await connection.run(`SELECT json_serialize_sql('${query.replace(/'/g, "''")}') AS tree`);
  const rows = await result.getRowObjectsJS();
  const tree = JSON.parse(String(rows[0]?.tree)) as { error?: boolean; error_message?: string };
  return tree.error === true && /only select statements/i.test(tree.error_message ?? '');
}

/**
 * Throws StoreReadOnlyError unless `query` is exactly one SELECT-type statement. Runs
 * nothing: statements are only parsed and prepared.
 */
export async function assertReadOnlyQuery(connection: DuckDBConnection, query: string): Promise<void> {
  const extracted = await connection.extractStatements(query);
  if (extracted.count !== 1) {
    throw new StoreReadOnlyError(
      `store.sql() runs one query at a time and got ${extracted.count} statements; run them one by one. ${HOW_TO_WRITE}`,
      'MULTI'
    );
  }
  let prepared: DuckDBPreparedStatement;
  try {
    prepared = await extracted.prepare(0);
  } catch (error) {
    if (await parserSaysNotSelect(connection, query)) {
      const first = /^\s*([A-Za-z]+)/.exec(query)?.[1]?.toUpperCase() ?? 'non-SELECT';
      throw refusal(first, query);
    }
    throw error;
  }
  try {
    if (prepared.statementType !== StatementType.SELECT) throw refusal(kindOf(prepared.statementType, query), query);
  } finally {
    prepared.destroySync();
  }
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
