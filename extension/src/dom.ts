/**
 * A tiny DOM builder: the extension's views are plain DOM, so they render the same in tests
 * (jsdom) and in JupyterLab, and text always goes in as text (never as HTML).
 */
export type Child = Node | string | number | null | undefined | false;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: { class?: string; title?: string; [attr: string]: string | undefined } = {},
  ...children: Array<Child | Child[]>
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined) {
      continue;
    }
    if (key === 'class') {
      el.className = value;
    } else {
      el.setAttribute(key, value);
    }
  }
  append(el, children);
  return el;
}

function append(el: HTMLElement, children: Array<Child | Child[]>): void {
  for (const child of children) {
    if (Array.isArray(child)) {
      append(el, child);
    } else if (child instanceof Node) {
      el.appendChild(child);
    } else if (child !== null && child !== undefined && child !== false) {
      el.appendChild(document.createTextNode(String(child)));
    }
  }
}

/** A table with a header row; cells are text. */
export function table(headers: string[], rows: Array<Array<Child>>, className = 'jp-nr-table'): HTMLTableElement {
  return h(
    'table',
    { class: className },
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        headers.map(title => h('th', {}, title))
      )
    ),
    h(
      'tbody',
      {},
      rows.map(row =>
        h(
          'tr',
          {},
          row.map(cell => h('td', {}, cell))
        )
      )
    )
  );
}

/** Compact number formatting for tokens, costs and durations. */
export function formatTokens(n: number): string {
  return n >= 10000 ? `${(n / 1000).toFixed(1)}k` : String(n);
}

export function formatCost(usd: number): string {
  return usd === 0 ? '$0' : usd < 0.01 ? `$${usd.toFixed(4)}` : `$${usd.toFixed(2)}`;
}

export function formatDuration(ms: number): string {
  if (ms < 1000) {
    return `${Math.round(ms)} ms`;
  }
  const s = ms / 1000;
  return s < 60 ? `${s.toFixed(1)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

/** A value for a table cell: numbers rounded for reading, everything else as text. */
export function formatValue(value: unknown): string {
  if (value === null || value === undefined) {
    return '';
  }
  if (typeof value === 'number') {
    // Four significant digits, without trailing zeros: 0.82, 0.8512, 6.8.
    return Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(4)));
  }
  if (typeof value === 'object') {
    return JSON.stringify(value);
  }
  return String(value);
}
