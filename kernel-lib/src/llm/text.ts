/** Cleaning model answers: reasoning blocks out, the JSON value in them found. */

/**
 * Removes `<think>…</think>` blocks (reasoning models emit them before the answer), and an
 * unterminated leading `<think>` block (the answer was cut off while still reasoning).
 */
export function stripThinking(text: string): string {
  let out = text.replace(/<think>[\s\S]*?<\/think>/gi, '');
  // A closing tag without an opening one: some servers put the opening tag in the prompt.
  const orphanClose = out.search(/<\/think>/i);
  if (orphanClose >= 0 && !/<think>/i.test(out.slice(0, orphanClose))) {
    out = out.slice(orphanClose + '</think>'.length);
  }
  if (/^\s*<think>/i.test(out)) out = '';
  return out.trim();
}

/**
 * The JSON value in an answer: the whole answer when it parses, else the first balanced
 * `{…}` object (inside a ```json fence or after leading prose). Returns undefined when none parses.
 */
export function extractJson(text: string): { value: unknown } | undefined {
  const trimmed = text.trim();
  const whole = tryParse(trimmed);
  if (whole) return whole;
  const fenced = /```(?:json)?\s*\n?([\s\S]*?)```/i.exec(trimmed);
  if (fenced) {
    const inFence = tryParse(fenced[1].trim());
    if (inFence) return inFence;
  }
  for (let start = trimmed.indexOf('{'); start >= 0; start = trimmed.indexOf('{', start + 1)) {
    const end = balancedEnd(trimmed, start);
    if (end < 0) continue;
    const candidate = tryParse(trimmed.slice(start, end + 1));
    if (candidate) return candidate;
  }
  return undefined;
}

function tryParse(text: string): { value: unknown } | undefined {
  if (!text) return undefined;
  try {
    return { value: JSON.parse(text) };
  } catch {
    return undefined;
  }
}

/** Index of the `}` closing the object opened at `start`, skipping braces inside strings; -1 if none. */
function balancedEnd(text: string, start: number): number {
  let depth = 0;
  let inString = false;
  for (let i = start; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c === '{' || c === '[') depth++;
    else if (c === '}' || c === ']') {
      depth--;
      if (depth === 0) return c === '}' ? i : -1;
    }
  }
  return -1;
}
