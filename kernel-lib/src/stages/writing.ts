/**
 * Writing: title, then each section in order (abstract, introduction, related work, method,
 * experiments, conclusion), each given summaries of the sections before it, the measured
 * results and the bibliography of papers actually retrieved. Every number must come from
 * an artifact: the grounding checker runs on each section; the sentences stating an ungrounded
 * number are rewritten (two bounded passes), and a sentence still stating one is left out of the
 * paper and listed in the card. Only a number that no sentence edit can remove fails the stage
 * ("failed: ungrounded numbers"), with the files written so the researcher can see them.
 */
import type { ExperimentBlueprint, IdeationOutput, Paper } from '@nanoresearch/schema';
import { checkGrounding, GroundingArtifacts } from '../grounding';
import type { StageContext, StageResult } from '../stage-contract';
import type { AnalysisOutput } from './analysis';
import { renderFacts } from './analysis';
import { askText, previousOutput } from './common';
import { citedKeys, PaperDraft, SECTION_HEADINGS, SECTIONS, SectionName, withKnownCitations, writePaperFiles } from './paper';
import { quoteUntrusted, UNTRUSTED_SYSTEM_RULE } from '../llm/untrusted';

export interface UngroundedNumber {
  section: string;
  text: string;
  line: number;
}

export interface WritingOutput extends PaperDraft {
  paper_path: string;
  tex_path: string;
  bib_path: string;
  citations: string[];
  /** Sections rewritten because they stated ungrounded numbers. */
  rewritten: string[];
  /** Sentences left out because their numbers stayed ungrounded after the rewrites. */
  dropped_sentences: { section: string; text: string }[];
  ungrounded: UngroundedNumber[];
  /** What numbers are checked against: kept so review can re-ground revisions. */
  grounding_artifacts: GroundingArtifacts;
}

const SECTION_BRIEFS: Record<SectionName, string> = {
  abstract: 'One paragraph: problem, approach, the main measured result, conclusion.',
  introduction: 'Motivation, the gap in prior work, the hypothesis, contributions.',
  related_work: 'Prior work from the bibliography, grouped by theme, each cited.',
  method: 'The method and baselines as planned; no results.',
  experiments:
    'The setup only: the data, the split and the runs, in prose. Do not restate any result: the measured results table and the computed comparisons are inserted below your text automatically.',
  conclusion: 'What the measured results support, limitations, next steps.'
};

/** The first sentences of a section, as context for the next ones. */
function summarize(text: string): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  const sentences = flat.match(/[^.!?]+[.!?]+/g) ?? [flat];
  return sentences.slice(0, 2).join(' ').slice(0, 400);
}

export function bibliographyOf(ideation: IdeationOutput | undefined): Paper[] {
  if (!ideation) return [];
  const all = [...(ideation.papers ?? []), ...ideation.hypotheses.flatMap(h => h.novelty.closest_work)];
  return all.filter((p, i) => all.findIndex(q => q.key === p.key) === i);
}

export function groundingArtifactsOf(analysisOut: AnalysisOutput): GroundingArtifacts {
  return { metrics: analysisOut.metrics, comparisons: analysisOut.comparisons, manifest: analysisOut.manifest, data: analysisOut.data_facts ?? {} };
}

export function sectionContext(ctx: StageContext, draft: PaperDraft, analysisOut: AnalysisOutput): string {
  const ideation = ctx.previous.ideation as IdeationOutput | undefined;
  const blueprint = ctx.previous.planning as ExperimentBlueprint | undefined;
  const hypothesis = ideation?.hypotheses.find(h => h.id === ideation.selected_hypothesis_id);
  return [
    `Topic: ${ctx.project.topic}`,
    draft.title ? `Title: ${draft.title}` : '',
    hypothesis ? `Hypothesis: ${hypothesis.statement}` : '',
    blueprint
      ? `Method: ${blueprint.method.name}: ${blueprint.method.description}\nBaselines: ${blueprint.baselines.map(b => b.name).join(', ')}\nDatasets: ${blueprint.datasets.map(d => d.name).join(', ')}`
      : '',
    `Measured results table:\n${analysisOut.table}`,
    `Computed comparisons:\n${renderFacts(analysisOut)}`,
    // The manifest is written by generated code: quoted as data.
    `Run manifest (config values you may quote): ${quoteUntrusted('run manifest', JSON.stringify(analysisOut.manifest))}`,
    Object.keys(analysisOut.data_facts ?? {}).length ? `Data files (counted; you may quote): ${renderDataFacts(analysisOut.data_facts)}` : '',
    `Bibliography (cite as [@key], only these keys):\n${draft.bibliography.map(p => `- ${p.key}: ${p.title} (${p.year ?? 'n.d.'})`).join('\n') || '(none retrieved: cite nothing)'}`
  ]
    .filter(Boolean)
    .join('\n\n');
}

/** Length of each section in words: short enough for a small model to stay on topic and grounded. */
const SECTION_WORDS: Record<SectionName, number> = {
  abstract: 100,
  introduction: 150,
  related_work: 120,
  method: 150,
  experiments: 150,
  conclusion: 100
};
/**
 * A section is cut at the last whole sentence within this multiple of its length: a greedy small
 * model that starts repeating itself ("… has also been shown to …") runs on to the token cap.
 */
const SECTION_WORDS_SLACK = 1.3;
const TITLE_MAX_TOKENS = 40;
/** Room for the longest section asked for (150 words) with a margin: a section is never cut mid-sentence by the cap in practice. */
const SECTION_MAX_TOKENS = 450;
const SENTENCE_MAX_TOKENS = 90;
const SENTENCE_FIX_PASSES = 2;

export const NUMBER_RULES =
  `${UNTRUSTED_SYSTEM_RULE} ` +
  'Every number you write must appear in the measured results table, the computed comparisons or the run manifest (rounding allowed). Write no other number: spell out small counts in words, give no years, no estimates, no numbers from memory. Cite only with [@key] using keys from the bibliography. Write Markdown paragraphs without headings.';

function renderDataFacts(facts: AnalysisOutput['data_facts']): string {
  return Object.entries(facts)
    .map(
      ([file, f]) =>
        `${file}: ${f.rows} rows, ${f.columns} columns (${f.numeric_columns} numeric)${f.classes !== undefined ? `, ${f.classes} classes in column ${f.label_column}` : ''}`
    )
    .join('; ');
}

/** The sentences of `text` that contain any of `numbers` (as written in the draft). */
function sentencesStating(text: string, numbers: string[]): string[] {
  // A sentence ends at . ! or ? followed by space and a capital: "0.8571" and "e.g. the" stay whole.
  const sentences = text.split(/(?<=[.!?])\s+(?=[A-Z([])|\n+/);
  return [...new Set(sentences.map(s => s.trim()).filter(s => s && numbers.some(n => s.includes(n))))];
}

/** A heading the model wrote itself, as a line of its own or run into the first sentence ("Method The data …"). */
const HEADING_FORMS = Object.values(SECTION_HEADINGS).flatMap(h => [h, h.charAt(0) + h.slice(1).toLowerCase()]);
const LEADING_HEADING = new RegExp(`^\\s*(?:#{1,6}\\s*)?(?:${[...new Set(HEADING_FORMS)].join('|')})s?\\s*:?(?:\\s*\\n|\\s+(?=[A-Z]))`);

/**
 * A section as the paper takes it: headings the model added dropped (the paper has its own),
 * a sentence it repeated kept once (greedy decoding loops), at most `maxWords` words of whole
 * sentences, and text cut by the token cap ended at its last complete sentence.
 */
export function wholeSentences(text: string, maxWords = Infinity): string {
  const seen = new Set<string>();
  let words = 0;
  const kept = text
    .replace(LEADING_HEADING, '')
    .split('\n')
    .filter(line => !/^\s*#{1,6}\s/.test(line))
    .join('\n')
    .split(/(?<=[.!?])(?=\s+[A-Z([])/)
    .filter(sentence => {
      const key = sentence.trim().toLowerCase();
      if (key.length > 20 && seen.has(key)) return false;
      seen.add(key);
      words += sentence.split(/\s+/).filter(Boolean).length;
      // The first sentence is kept whatever its length: a section is never emptied by the cap.
      return words <= maxWords || seen.size === 1;
    });
  const trimmed = kept
    .join('')
    .replace(/\n{3,}/g, '\n\n')
    .trim();
  if (/[.!?)\]"]$/.test(trimmed)) return trimmed;
  const last = Math.max(trimmed.lastIndexOf('. '), trimmed.lastIndexOf('.\n'), trimmed.lastIndexOf('! '), trimmed.lastIndexOf('? '));
  return last > 0 ? trimmed.slice(0, last + 1) : trimmed;
}

/**
 * The experiments section: the model's account of the setup, then the measured results table and
 * the computed comparisons, written by code (a small model restating results invents numbers).
 */
export function experimentsText(text: string, analysisOut: AnalysisOutput): string {
  return `${text.trim()}\n\n${analysisOut.table}\n\n${renderFacts(analysisOut)}`;
}

/** Takes citations of keys outside the bibliography out of every section; returns the keys removed. */
function dropUnknownCitations(draft: PaperDraft): string[] {
  const known = new Set(draft.bibliography.map(p => p.key));
  const removed = new Set<string>();
  for (const section of draft.sections) {
    const cleaned = withKnownCitations(section.text, known);
    section.text = cleaned.text;
    cleaned.removed.forEach(k => removed.add(k));
  }
  return [...removed];
}

function groundSections(draft: PaperDraft, artifacts: GroundingArtifacts): UngroundedNumber[] {
  return draft.sections.flatMap(s => checkGrounding(s.text, artifacts).ungrounded.map(n => ({ section: s.name, text: n.text, line: n.line })));
}

export async function writing(ctx: StageContext): Promise<StageResult> {
  const analysisOut = previousOutput<AnalysisOutput>(ctx, 'analysis');
  const ideation = ctx.previous.ideation as IdeationOutput | undefined;
  const artifacts = groundingArtifactsOf(analysisOut);
  const draft: PaperDraft = { title: '', sections: [], bibliography: bibliographyOf(ideation) };
  const total = SECTIONS.length + 2;

  ctx.progress('writing the title', 0, total);
  draft.title = (
    await askText(
      ctx,
      'writing',
      'write-title',
      'Write the title of the paper: one line, no quotes, no numbers.',
      sectionContext(ctx, draft, analysisOut),
      TITLE_MAX_TOKENS
    )
  )
    .split('\n')[0]
    .replace(/^#+\s*|^["']|["']$/g, '')
    .trim();
  // The title states no number either: one no artifact holds is taken out of it.
  for (const n of checkGrounding(draft.title, artifacts).ungrounded)
    draft.title = draft.title
      .replace(n.text, '')
      .replace(/\s{2,}/g, ' ')
      .trim();

  // One system prompt for every section (the material and the rules), so an embedded model reads it once.
  const material = sectionContext(ctx, draft, analysisOut);
  for (const [i, name] of SECTIONS.entries()) {
    ctx.progress(`writing ${SECTION_HEADINGS[name]}`, i + 1, total);
    const before = draft.sections.map(s => `${SECTION_HEADINGS[s.name]}: ${summarize(s.text)}`).join('\n');
    const text = await askText(
      ctx,
      'writing',
      `write-section:${name}`,
      `You write a research paper one section at a time, from the material below. ${NUMBER_RULES}\n\n${material}`,
      `Write the ${SECTION_HEADINGS[name]} section (one paragraph of at most ${SECTION_WORDS[name]} words). ${SECTION_BRIEFS[name]}\n\nPreviously written sections (keep consistent):\n${before || '(none yet)'}`,
      SECTION_MAX_TOKENS
    );
    const prose = wholeSentences(text, Math.round(SECTION_WORDS[name] * SECTION_WORDS_SLACK));
    draft.sections.push({ name, text: name === 'experiments' ? experimentsText(prose, analysisOut) : prose });
  }

  ctx.progress('checking that every number is grounded', SECTIONS.length + 1, total);
  const log: string[] = [];
  const uncited = dropUnknownCitations(draft);
  if (uncited.length) log.push(`Citations of keys outside the bibliography taken out: ${uncited.join(', ')}`);
  let ungrounded = groundSections(draft, artifacts);
  const rewritten: string[] = [];
  if (ungrounded.length) {
    log.push(`Ungrounded numbers in the first draft: ${ungrounded.map(u => `${u.text} (${u.section})`).join(', ')}`);
    // Only the sentences that state the numbers are rewritten: a small model asked to rewrite a
    // whole section brings new numbers in as often as it takes the old ones out.
    // Two passes at most: the second sees what the first still left ungrounded.
    for (let pass = 0; pass < SENTENCE_FIX_PASSES && ungrounded.length; pass++) {
      for (const name of [...new Set(ungrounded.map(u => u.section))] as SectionName[]) {
        const section = draft.sections.find(s => s.name === name)!;
        const bad = ungrounded.filter(u => u.section === name).map(u => u.text);
        const prose = name === 'experiments' ? section.text.replace(`${analysisOut.table}\n\n${renderFacts(analysisOut)}`, '').trim() : section.text;
        let revised = prose;
        for (const sentence of sentencesStating(prose, bad)) {
          const numbers = bad.filter(b => sentence.includes(b));
          const replacement = await askText(
            ctx,
            'writing',
            `revise-section:${name}`,
            `You correct sentences of a research paper so that every number in them is measured. ${NUMBER_RULES}\n\n${material}`,
            `This sentence of the ${SECTION_HEADINGS[name]} section states ${numbers.join(', ')}, which no artifact holds:\n\n${sentence}\n\nRewrite it with each such number replaced by the measured value from the material, or left out. Answer with the sentence only.`,
            SENTENCE_MAX_TOKENS
          );
          revised = revised.replace(sentence, wholeSentences(replacement.split('\n')[0]));
        }
        section.text = name === 'experiments' ? experimentsText(revised, analysisOut) : revised;
        if (!rewritten.includes(name)) rewritten.push(name);
      }
      ungrounded = groundSections(draft, artifacts);
    }
    log.push(
      ungrounded.length
        ? `Still ungrounded after rewriting their sentences: ${ungrounded.map(u => `${u.text} (${u.section})`).join(', ')}`
        : 'Rewriting their sentences grounded every number.'
    );
  } else log.push('Every number in the first draft is grounded in the artifacts.');
  const uncitedInFixes = dropUnknownCitations(draft);
  if (uncitedInFixes.length) log.push(`Citations of keys outside the bibliography taken out of the rewritten sentences: ${uncitedInFixes.join(', ')}`);
  // A paper never states a number no artifact holds: what the rewrites could not ground is left out.
  const dropped: WritingOutput['dropped_sentences'] = [];
  for (const name of [...new Set(ungrounded.map(u => u.section))] as SectionName[]) {
    const section = draft.sections.find(s => s.name === name)!;
    const prose = name === 'experiments' ? section.text.replace(`${analysisOut.table}\n\n${renderFacts(analysisOut)}`, '').trim() : section.text;
    const bad = sentencesStating(
      prose,
      ungrounded.filter(u => u.section === name).map(u => u.text)
    );
    const kept = bad
      .reduce((text, sentence) => text.replace(sentence, ''), prose)
      .replace(/[ \t]{2,}/g, ' ')
      .replace(/\n{3,}/g, '\n\n')
      .trim();
    // A section left empty is no section: the stage fails instead, naming the numbers.
    if (!kept && name !== 'experiments') continue;
    dropped.push(...bad.map(text => ({ section: name, text })));
    section.text = name === 'experiments' ? experimentsText(kept, analysisOut) : kept;
  }
  if (dropped.length) {
    ungrounded = groundSections(draft, artifacts);
    log.push(`Left out ${dropped.length} sentence(s) whose numbers no artifact holds: ${dropped.map(d => `"${d.text}" (${d.section})`).join('; ')}`);
  }

  const files = writePaperFiles(ctx, draft);
  const citations = [...new Set(draft.sections.flatMap(s => citedKeys(s.text)))];
  const output: WritingOutput = { ...draft, ...files, citations, rewritten, dropped_sentences: dropped, ungrounded, grounding_artifacts: artifacts };
  const bundleOutputs = {
    abstract: draft.sections.find(s => s.name === 'abstract')?.text ?? '',
    paper_path: files.paper_path,
    ungrounded_numbers: ungrounded.map(u => `${u.text} (${u.section}, line ${u.line})`),
    left_out_sentences: dropped.map(d => `${d.text} (${d.section})`)
  };
  const markdown = `### ${draft.title}\n\nPaper: \`${files.paper_path}\` (+ \`${files.tex_path}\`, \`${files.bib_path}\`); ${citations.length} citations; rewritten: ${rewritten.join(', ') || 'none'}.${dropped.length ? ` Left out ${dropped.length} sentence(s) whose numbers no artifact holds (listed in the trajectory).` : ''}${ungrounded.length ? `\n\n**Ungrounded numbers:** ${bundleOutputs.ungrounded_numbers.join(', ')}` : ''}`;
  if (ungrounded.length) {
    const error = `failed: ungrounded numbers: ${bundleOutputs.ungrounded_numbers.join(', ')} — every number in the paper must come from an experiment artifact; edit ${files.paper_path} or re-run writing`;
    return { status: 'failed', output, summary: error, error, bundleOutputs, trajectory: log.join('\n'), markdown };
  }
  return {
    status: 'done',
    output,
    summary: `Wrote "${draft.title}": ${SECTIONS.length} sections, ${citations.length} citations, every number grounded${rewritten.length ? ` (after rewriting ${rewritten.join(', ')})` : ''}${dropped.length ? `; ${dropped.length} ungroundable sentence(s) left out` : ''}`,
    bundleOutputs,
    trajectory: log.join('\n'),
    markdown
  };
}
