/**
 * Number grounding: every number a draft states must come from an artifact.
 *
 * Deterministic. Numbers are extracted from the text (decimals, percentages, thousands
 * separators, scientific notation, ± values, ranges), non-claims are set aside (section
 * numbers, years, citation keys, figure/table/equation labels, list markers, identifiers
 * such as F1 or arXiv ids), and each claim is matched against every numeric value found
 * anywhere in the artifacts, at the precision the draft shows (0.8571 in an artifact
 * grounds "0.857", "0.86" and "85.7%"). Small counts ("3 seeds") are claims too: they are
 * grounded when a config value in the artifacts (e.g. the run manifest) matches.
 */

export interface GroundedNumber {
  /** The number as written, e.g. "85.7%" or "1,024". */
  text: string;
  value: number;
  /** 1-based line of the draft. */
  line: number;
  grounded: boolean;
  /** Artifact path of the value that grounds it, e.g. "metrics.centroid.accuracy". */
  source?: string;
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
}

/** Any JSON-like artifacts: metrics, tables, comparisons, the manifest. Numbers are found at any depth. */
export type GroundingArtifacts = Record<string, unknown>;

interface ArtifactValue {
  value: number;
  source: string;
}

/** Every finite number in the artifacts with its dotted path (numeric strings in tables count too). */
export function artifactValues(artifacts: GroundingArtifacts): ArtifactValue[] {
  const out: ArtifactValue[] = [];
  const walk = (node: unknown, at: string) => {
    if (typeof node === 'number' && Number.isFinite(node)) out.push({ value: node, source: at });
    else if (typeof node === 'string' && /^\s*-?\d+(\.\d+)?([eE][-+]?\d+)?\s*$/.test(node)) out.push({ value: Number(node), source: at });
    else if (Array.isArray(node)) node.forEach((v, i) => walk(v, `${at}[${i}]`));
    else if (node && typeof node === 'object') for (const [k, v] of Object.entries(node)) walk(v, at ? `${at}.${k}` : k);
  };
  walk(artifacts, '');
  return out;
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

/** A number: thousands-separated or plain, optional decimals, optional exponent, optional ×10^k. */
const NUMBER = /(?<![\w.,])([-−+]?)(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?:[eE]([-+]?\d+)|\s*(?:×|\\times|x)\s*10\^\{?([-−+]?\d+)\}?)?(\s*(?:%|\\%|percent\b|pp\b|percentage points?\b))?(?![\w])/g;

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

/**
 * Checks every number in `text` against the artifacts. Values compare by magnitude: prose
 * carries the sign in words ("drops by 0.05").
 */
export function checkGrounding(text: string, artifacts: GroundingArtifacts): GroundingReport {
  const values = artifactValues(artifacts);
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
    if (heading) line = line.replace(/^(\s*#{1,6}\s+|\\(?:sub)*section\*?\{)(\d+(?:\.\d+)*\.?)/, (_, lead: string, num: string) => lead + blank('heading')(num));
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
      const percent = Boolean(percentSuffix) || (ratio !== null && decimals === 0 && value + Number(ratio[1]) === 100);
      // A bare integer ("1 baseline") is not grounded by rounding a fraction such as an accuracy of 0.857.
      const bareInteger = decimals === 0 && !percent && !exp;
      const match = values.find(
        v =>
          (matchesAtPrecision(value, decimals, v.value, 0) && (!bareInteger || Number.isInteger(v.value) || Math.abs(v.value) >= 10)) ||
          (percent && matchesAtPrecision(value, decimals, v.value, 2)) ||
          // The other side of a split ratio is implied: a train fraction of 0.7 grounds "70/30".
          (ratio !== null && percent && !percentSuffix && matchesAtPrecision(100 - value, decimals, v.value, 2)) ||
          (!percent && Math.abs(value) <= 1 && Math.abs(v.value) > 1 && matchesAtPrecision(value, decimals, v.value, -2))
      );
      numbers.push({ text: whole.trim(), value, line: lineNo, grounded: Boolean(match), ...(match ? { source: match.source } : {}) });
    }
  });
  return { numbers, ungrounded: numbers.filter(n => !n.grounded), ignored };
}
