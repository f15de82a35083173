/**
 * Number grounding: every number a draft states must come from an artifact.
 *
 * Deterministic. Numbers are extracted from the text (decimals, percentages, thousands
 * separators, scientific notation, ± values, ranges), non-claims are set aside (section
 * numbers, years, citation keys, figure/table/equation labels, list markers, identifiers
 * such as F1 or arXiv ids), and each claim is matched against the artifacts at the precision
 * the draft shows (0.8571 grounds "0.857" and "0.86", never "0.858"). Accepted forms, each
 * recorded as a `Derivation` a reader can audit:
 *  - a value anywhere in the artifacts, a table cell included (a Markdown/CSV table string, or
 *    `{ columns, rows }`), as is or ×100 ("85.7%", "85.7", "85.7 points", "52.4 pp");
 *  - `mean ± std`: each part a value, or the mean / standard deviation of an artifact array;
 *  - the other side of a split ("70/30" from a train fraction of 0.7);
 *  - a simple derived value of two artifact values of the same quantity in two conditions (one
 *    metric in two runs): difference, ratio, relative change, in either scale. A derived match
 *    needs two significant digits and a comparison said around it ("gains", "higher", "pp"), so
 *    a plain invented number is not grounded by some combination of values by chance.
 * Small counts ("3 seeds") are claims too: a bare integer is grounded only by an integer (or a
 * value of at least 10), never by rounding a fraction.
 */

export interface GroundedNumber {
  /** The number as written, e.g. "85.7%" or "1,024". */
  text: string;
  value: number;
  /** 1-based line of the draft. */
  line: number;
  grounded: boolean;
  /** Artifact path of the (first) value that grounds it, e.g. "metrics.centroid.accuracy". */
  source?: string;
  /** How it follows from the artifacts. */
  derivation?: Derivation;
}

export interface Derivation {
  kind: 'value' | 'table-cell' | 'mean' | 'std' | 'split-complement' | 'difference' | 'ratio' | 'relative-change';
  /** The artifact paths used, e.g. ["metrics.a.accuracy", "metrics.b.accuracy"]. */
  sources: string[];
  /** How the draft writes it: 1 as is, 100 as a percentage or points, 0.01 a stored percentage written as a fraction. */
  scale: 1 | 100 | 0.01;
  /** The exact value before scaling. */
  value: number;
  /** For a reader, e.g. "(metrics.a.accuracy − metrics.b.accuracy) × 100 = 52.381". */
  formula: string;
}

export interface IgnoredNumber {
  text: string;
  line: number;
  reason: 'year' | 'label' | 'citation' | 'identifier' | 'list-marker' | 'heading';
}

export interface GroundingReport {
  numbers: GroundedNumber[];
  ungrounded: GroundedNumber[];
  ignored: IgnoredNumber[];
  /** The audit trail: one entry per grounded number. */
  derivations: (Derivation & { text: string; line: number })[];
}

/** Any JSON-like artifacts: metrics, tables, comparisons, the manifest. Numbers are found at any depth. */
export type GroundingArtifacts = Record<string, unknown>;

interface ArtifactValue {
  value: number;
  source: string;
  /** A cell of a table artifact rather than a plain field. */
  cell?: boolean;
}

interface ArtifactArray {
  values: number[];
  source: string;
}

const NUMERIC_STRING = /^\s*-?\d+(\.\d+)?([eE][-+]?\d+)?\s*$/;
const CELL_NUMBER = /[-−]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?/g;

/** The numbers of a table cell as written ("85.7%" → 85.7, "0.86 ± 0.01" → 0.86 and 0.01). */
function cellNumbers(cell: string): number[] {
  return [...cell.replace(/(\d),(?=\d{3}\b)/g, '$1').matchAll(CELL_NUMBER)].map(m => Number(m[0].replace('−', '-')));
}

/** A Markdown pipe table or a CSV table in a string: header and data rows (separator rows dropped). */
function parseTableString(text: string): string[][] | undefined {
  const lines = text
    .split(/\r?\n/)
    .map(l => l.trim())
    .filter(Boolean);
  if (lines.length < 2) return undefined;
  if (lines.every(l => l.startsWith('|'))) {
    return lines
      .filter(l => !/^\|[\s|:-]+\|$/.test(l))
      .map(l =>
        l
          .replace(/^\||\|$/g, '')
          .split('|')
          .map(c => c.trim())
      );
  }
  const rows = lines.map(l => l.split(',').map(c => c.trim()));
  return rows.every(r => r.length === rows[0].length && r.length > 1) ? rows : undefined;
}

function pushTable(out: ArtifactValue[], at: string, header: string[], rows: unknown[][]): void {
  rows.forEach((row, r) => {
    const label = typeof row[0] === 'string' && !NUMERIC_STRING.test(row[0]) ? row[0] : String(r + 1);
    row.forEach((cell, c) => {
      const numbers = typeof cell === 'number' ? [cell] : typeof cell === 'string' ? cellNumbers(cell) : [];
      numbers.forEach((value, k) => {
        if (Number.isFinite(value)) out.push({ value, source: `${at}[row ${label}, ${header[c] ?? `column ${c + 1}`}]${k ? `[${k + 1}]` : ''}`, cell: true });
      });
    });
  });
}

function collect(artifacts: GroundingArtifacts): { values: ArtifactValue[]; arrays: ArtifactArray[] } {
  const values: ArtifactValue[] = [];
  const arrays: ArtifactArray[] = [];
  const walk = (node: unknown, at: string) => {
    if (typeof node === 'number' && Number.isFinite(node)) values.push({ value: node, source: at });
    else if (typeof node === 'string' && NUMERIC_STRING.test(node)) values.push({ value: Number(node), source: at });
    else if (typeof node === 'string') {
      const table = parseTableString(node);
      if (table) pushTable(values, at, table[0], table.slice(1));
    } else if (Array.isArray(node)) {
      const numbers = node.filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
      if (numbers.length >= 2 && numbers.length === node.length) arrays.push({ values: numbers, source: at });
      node.forEach((v, i) => walk(v, `${at}[${i}]`));
    } else if (node && typeof node === 'object') {
      const record = node as Record<string, unknown>;
      if (Array.isArray(record.columns) && Array.isArray(record.rows) && record.rows.every(Array.isArray)) {
        pushTable(values, at, record.columns.map(String), record.rows as unknown[][]);
        for (const [k, v] of Object.entries(record)) if (k !== 'columns' && k !== 'rows') walk(v, at ? `${at}.${k}` : k);
      } else for (const [k, v] of Object.entries(record)) walk(v, at ? `${at}.${k}` : k);
    }
  };
  walk(artifacts, '');
  return { values, arrays };
}

/** Every finite number in the artifacts with its path (numeric strings and table cells count too). */
export function artifactValues(artifacts: GroundingArtifacts): { value: number; source: string }[] {
  return collect(artifacts).values.map(({ value, source }) => ({ value, source }));
}

/** A value the draft may state, with how it was obtained. */
interface Candidate {
  value: number;
  kind: Derivation['kind'];
  sources: string[];
  /** The formula without the scale, e.g. "metrics.a.accuracy − metrics.b.accuracy". */
  expression: string;
}

const show = (v: number) => String(Number(v.toPrecision(6)));

/**
 * Pairs of values that measure the same quantity in two conditions: their paths differ in exactly
 * one segment, not the last (metrics.method.accuracy and metrics.baseline.accuracy). Unrelated
 * pairs (an accuracy and a row count, two metrics of one run) are left out: each pair adds five
 * derived values, and every one of them could ground an invented number by chance.
 */
function siblingPairs(values: ArtifactValue[]): [ArtifactValue, ArtifactValue][] {
  const buckets = new Map<string, ArtifactValue[]>();
  for (const v of values) {
    const segments = v.source.split(/(?=[.[])/);
    segments.slice(0, -1).forEach((_, i) => {
      const key = segments.map((seg, k) => (k === i ? '*' : seg)).join('');
      buckets.set(key, [...(buckets.get(key) ?? []), v]);
    });
  }
  const pairs: [ArtifactValue, ArtifactValue][] = [];
  const seen = new Set<string>();
  for (const members of buckets.values()) {
    // A long series (per-epoch losses) would give thousands of meaningless pairs.
    if (members.length < 2 || members.length > 50) continue;
    for (let a = 0; a < members.length; a++) {
      for (let b = a + 1; b < members.length; b++) {
        const id = `${members[a].source}\u0000${members[b].source}`;
        if (!seen.has(id)) pairs.push([members[a], members[b]]);
        seen.add(id);
      }
    }
  }
  return pairs;
}

function derivedCandidates(values: ArtifactValue[]): Candidate[] {
  const out: Candidate[] = [];
  for (const [x, y] of siblingPairs(values)) {
    const a = x.source;
    const b = y.source;
    out.push({ value: Math.abs(x.value - y.value), kind: 'difference', sources: [a, b], expression: `|${a} − ${b}| = |${show(x.value)} − ${show(y.value)}|` });
    for (const [p, q] of [
      [x, y],
      [y, x]
    ]) {
      if (q.value === 0) continue;
      out.push({
        value: p.value / q.value,
        kind: 'ratio',
        sources: [p.source, q.source],
        expression: `${p.source} / ${q.source} = ${show(p.value)} / ${show(q.value)}`
      });
      out.push({
        value: (p.value - q.value) / q.value,
        kind: 'relative-change',
        sources: [p.source, q.source],
        expression: `(${p.source} − ${q.source}) / ${q.source} = (${show(p.value)} − ${show(q.value)}) / ${show(q.value)}`
      });
    }
  }
  return out;
}

function arrayCandidates(arrays: ArtifactArray[]): { means: Candidate[]; stds: Candidate[] } {
  const means: Candidate[] = [];
  const stds: Candidate[] = [];
  for (const { values, source } of arrays) {
    const n = values.length;
    const mean = values.reduce((s, v) => s + v, 0) / n;
    const squares = values.reduce((s, v) => s + (v - mean) ** 2, 0);
    means.push({ value: mean, kind: 'mean', sources: [source], expression: `mean(${source}), n=${n}` });
    stds.push({ value: Math.sqrt(squares / (n - 1)), kind: 'std', sources: [source], expression: `std(${source}), sample (n−1), n=${n}` });
    stds.push({ value: Math.sqrt(squares / n), kind: 'std', sources: [source], expression: `std(${source}), population (n), n=${n}` });
  }
  return { means, stds };
}

/** Significant digits as written: "0.052" → 2, "12" → 2, "5" → 1. */
function significantDigits(digits: string): number {
  return digits.replace(/[,.]/g, '').replace(/^0+/, '').length;
}

/** Text spans that are never claims: citations, cross-references, LaTeX labels. Replaced by blanks of equal length. */
const NON_CLAIM_SPANS: { pattern: RegExp; reason: IgnoredNumber['reason'] }[] = [
  { pattern: /\[@[^\]]*\]|\\cite[pt]?\{[^}]*\}|@[A-Za-z][\w:.-]*/g, reason: 'citation' },
  { pattern: /\\(?:label|ref|eqref|autoref|cref)\{[^}]*\}/g, reason: 'label' },
  {
    pattern: /\b(?:Section|Sec\.|§|Table|Tab\.|Figure|Fig\.|Equation|Eq\.|Eqs\.|Appendix|Algorithm|Alg\.|Step|Hypothesis|H)\s*\(?\d+(?:\.\d+)*\)?/gi,
    reason: 'label'
  },
  { pattern: /\barXiv:\s*\d{4}\.\d{4,5}(?:v\d+)?|\b10\.\d{4,9}\/\S+/gi, reason: 'identifier' }
];

/** A number: thousands-separated or plain, optional decimals, optional exponent, optional ×10^k, optional percent/points suffix. */
const NUMBER =
  /(?<![\w.,])([-−+]?)(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?:[eE]([-+]?\d+)|\s*(?:×|\\times|x)\s*10\^\{?([-−+]?\d+)\}?)?(\s*(?:%|\\%|percent\b|pp\b|p\.p\.|percentage points?\b|points?\b))?(?![\w])/g;

function decimalsOf(digits: string): number {
  const dot = digits.indexOf('.');
  return dot < 0 ? 0 : digits.length - dot - 1;
}

/** Whether the shown value equals the artifact value rounded to the shown precision (scaled by 10^scale). */
function matchesAtPrecision(shown: number, decimals: number, actual: number, scale: number): boolean {
  const scaled = Math.abs(actual) * 10 ** scale;
  const tolerance = 0.5 * 10 ** -decimals + 1e-9 * Math.max(1, scaled);
  return Math.abs(scaled - Math.abs(shown)) <= tolerance;
}

/** A number as the draft writes it. */
interface Claim {
  value: number;
  /** The digits as written ("1,050", "0.052"). */
  digits: string;
  decimals: number;
  /** Written as a percentage: a %/pp/points suffix, or one side of a split such as "70/30". */
  percent: boolean;
  percentSuffix: boolean;
  /** The other number of an "a/b" split pair, when there is one. */
  splitPair: boolean;
  /** The second part of "mean ± std". */
  afterPlusMinus: boolean;
  /** Said as a comparison ("gains", "higher", "ratio", "pp" …): only then may it be a derived value. */
  comparative: boolean;
}

/**
 * Words that state a comparison. A derived value in prose is always said as one ("gains 9.5
 * points", "1.12 times", "12.5% better"); requiring the cue keeps the many combinations of two
 * values from grounding a plain invented number such as "accuracy is 0.732".
 */
const COMPARISON_CUE =
  /\b(?:differ\w*|gaps?|gain\w*|improv\w*|increas\w*|decreas\w*|drops?|dropp\w*|reduc\w*|higher|lower|better|worse|more|less|fewer|faster|slower|ahead|behind|relative\w*|ratios?|times|vs|versus|outperform\w*|exceed\w*|margin|delta|chang\w*|beats?|up|down)\b|×|\bpp\b|\bpoints?\b/i;

function scaled(value: number, scale: Derivation['scale']): string {
  return scale === 1 ? '' : ` ${scale === 100 ? '× 100' : '÷ 100'} = ${show(value * scale)}`;
}

function derivation(c: Candidate, scale: Derivation['scale']): Derivation {
  return { kind: c.kind, sources: c.sources, scale, value: c.value, formula: `${c.expression} = ${show(c.value)}${scaled(c.value, scale)}` };
}

/** The scale at which `c` grounds `claim`, if any (1 first: a value as is beats a rescaled one). */
function scaleOf(claim: Claim, c: Candidate): Derivation['scale'] | undefined {
  const { value, decimals } = claim;
  const bareInteger = decimals === 0 && !claim.percent;
  const derived = c.kind === 'difference' || c.kind === 'ratio' || c.kind === 'relative-change';
  // A short number matches some combination of two values by chance; a derived match must say more.
  if (derived && (!claim.comparative || significantDigits(claim.digits) < 2)) return undefined;
  // A bare integer ("1 baseline") is not grounded by rounding a fraction such as an accuracy of 0.857.
  const integerOk = Number.isInteger(c.value) || (!derived && Math.abs(c.value) >= 10);
  if (matchesAtPrecision(value, decimals, c.value, 0) && (!bareInteger || integerOk)) return 1;
  // ×100: a percentage or points, or a fraction written as a percentage without the sign ("85.7").
  if ((claim.percent || (decimals > 0 && Math.abs(c.value) <= 1)) && matchesAtPrecision(value, decimals, c.value, 2)) return 100;
  // ÷100: a percentage stored as such (85.7) grounds the fraction 0.857; a combination of values is never stored so.
  if (!derived && !claim.percent && Math.abs(value) <= 1 && Math.abs(c.value) > 1 && matchesAtPrecision(value, decimals, c.value, -2)) return 0.01;
  return undefined;
}

/** The candidate pools, simplest first: a value beats a statistic, which beats a combination of two values. */
function candidatePools(artifacts: GroundingArtifacts): { direct: Candidate[]; means: Candidate[]; stds: Candidate[]; derived: Candidate[] } {
  const { values, arrays } = collect(artifacts);
  const direct = values.map(v => ({ value: v.value, kind: v.cell ? ('table-cell' as const) : ('value' as const), sources: [v.source], expression: v.source }));
  const { means, stds } = arrayCandidates(arrays);
  return { direct, means, stds, derived: derivedCandidates(values.filter(v => !v.cell)) };
}

function ground(claim: Claim, pools: ReturnType<typeof candidatePools>): Derivation | undefined {
  const ordered = [...pools.direct, ...pools.means, ...(claim.afterPlusMinus ? pools.stds : [])];
  for (const c of ordered) {
    const scale = scaleOf(claim, c);
    if (scale !== undefined) return derivation(c, scale);
  }
  // The other side of a split ratio is implied: a train fraction of 0.7 grounds the "30" of "70/30".
  if (claim.splitPair && claim.percent && !claim.percentSuffix) {
    for (const c of pools.direct) {
      if (matchesAtPrecision(100 - claim.value, claim.decimals, c.value, 2)) {
        return {
          kind: 'split-complement',
          sources: c.sources,
          scale: 100,
          value: 1 - c.value,
          formula: `1 − ${c.expression} = ${show(1 - c.value)} × 100 = ${show((1 - c.value) * 100)}`
        };
      }
    }
  }
  for (const c of pools.derived) {
    const scale = scaleOf(claim, c);
    if (scale !== undefined) return derivation(c, scale);
  }
  return undefined;
}

/**
 * Checks every number in `text` against the artifacts. Values compare by magnitude: prose
 * carries the sign in words ("drops by 0.05").
 */
export function checkGrounding(text: string, artifacts: GroundingArtifacts): GroundingReport {
  const pools = candidatePools(artifacts);
  const numbers: GroundedNumber[] = [];
  const ignored: IgnoredNumber[] = [];
  const lines = text.split(/\r?\n/);
  let inCodeFence = false;
  let inReferences = false;

  lines.forEach((raw, index) => {
    const lineNo = index + 1;
    if (/^\s*```/.test(raw)) inCodeFence = !inCodeFence;
    if (inCodeFence) return;
    const heading = /^\s*(#{1,6}\s|\\(?:sub)*section\*?\{|\\title\{)/.test(raw);
    if (heading) inReferences = /references|bibliography/i.test(raw);
    if (inReferences) return;

    let line = raw;
    const blank = (reason: IgnoredNumber['reason']) => (span: string) => {
      for (const m of span.matchAll(/\d+(?:\.\d+)*/g)) ignored.push({ text: m[0], line: lineNo, reason });
      return ' '.repeat(span.length);
    };
    if (heading)
      line = line.replace(/^(\s*#{1,6}\s+|\\(?:sub)*section\*?\{)(\d+(?:\.\d+)*\.?)/, (_, lead: string, num: string) => lead + blank('heading')(num));
    line = line.replace(/^(\s*)(\d+)([.)]\s)/, (_, lead: string, num: string, tail: string) => lead + blank('list-marker')(num) + tail);
    for (const { pattern, reason } of NON_CLAIM_SPANS) line = line.replace(pattern, blank(reason));

    for (const m of line.matchAll(NUMBER)) {
      const [whole, sign, digits, exponent, timesExponent, percentSuffix] = m;
      const before = line.slice(0, m.index);
      // Identifiers such as F1, L2, R2, v3, ResNet50 are attached to letters; NUMBER's look-behind skips them,
      // but "F1-score" style hyphenation puts a letter right before a sign-less number too.
      if (/[A-Za-z_]$/.test(before)) {
        ignored.push({ text: whole.trim(), line: lineNo, reason: 'identifier' });
        continue;
      }
      const plain = digits.replace(/,/g, '');
      let value = Number(plain) * (sign === '-' || sign === '−' ? -1 : 1);
      const exp = exponent ?? timesExponent?.replace('−', '-');
      if (exp) value *= 10 ** Number(exp);
      const decimals = decimalsOf(plain) - (exp ? Number(exp) : 0);
      if (!percentSuffix && !exp && !digits.includes(',') && !digits.includes('.') && value >= 1900 && value <= 2100) {
        ignored.push({ text: whole.trim(), line: lineNo, reason: 'year' });
        continue;
      }
      // "70/30 split": a pair summing to 100 is a pair of percentages.
      const ratio = /^\s*\/\s*(\d+)/.exec(line.slice(m.index! + whole.length)) ?? /(\d+)\s*\/\s*$/.exec(before);
      const splitPair = ratio !== null && decimals === 0 && value + Number(ratio[1]) === 100;
      const claim: Claim = {
        value,
        digits: plain,
        decimals,
        percent: Boolean(percentSuffix) || splitPair,
        percentSuffix: Boolean(percentSuffix),
        splitPair,
        afterPlusMinus: /(±|\+\/-|\\pm)\s*$/.test(before),
        comparative: COMPARISON_CUE.test(line.slice(Math.max(0, m.index! - 80), m.index! + whole.length + 40))
      };
      const found = ground(claim, pools);
      numbers.push({ text: whole.trim(), value, line: lineNo, grounded: Boolean(found), ...(found ? { source: found.sources[0], derivation: found } : {}) });
    }
  });
  return {
    numbers,
    ungrounded: numbers.filter(n => !n.grounded),
    ignored,
    derivations: numbers.filter(n => n.derivation).map(n => ({ text: n.text, line: n.line, ...n.derivation! }))
  };
}
