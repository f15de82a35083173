/**
 * Review: each section scored 1–10 with issues as problem / impact / fix
 * (schema/section-review.schema.json) by the 'judge' role; the overall score is the mean; a
 * bounded revision loop rewrites weak sections (score below the threshold, at most two rounds),
 * keeping a revision only when its numbers are still grounded; a citation check (each cited key
 * is in the bibliography and resolves: in the papers table, and against Crossref by DOI when
 * reachable). Judges fail closed: a failed judge call fails the stage, it never passes.
 */
import { SectionReviewSchema } from '@nanoresearch/schema';
import type { SectionReview } from '@nanoresearch/schema';
import { checkGrounding } from '../grounding';
import { CrossrefProvider, Literature, normalizeTitle } from '../literature';
import type { StageContext, StageResult } from '../stage-contract';
import { askJson, askText, bounded, errorMessage, isFatal, previousOutput } from './common';
import { citedKeys, SECTION_HEADINGS, SectionName, withKnownCitations, writePaperFiles } from './paper';
import type { AnalysisOutput } from './analysis';
import { experimentsText, NUMBER_RULES, sectionContext, WritingOutput } from './writing';

export const REVIEW_THRESHOLD = 7;
export const MAX_REVISION_ROUNDS = 2;
/** Each round revises the weakest sections first, at most this many: the loop stays bounded in calls. */
export const MAX_SECTIONS_PER_ROUND = 2;

/** The review schema as the judge answers it: a bounded list of short issues. */
const REVIEW_SCHEMA = bounded(SectionReviewSchema as unknown as Record<string, unknown>, { text: 200, items: 2, by: { section: 40 } });

export interface CitationCheck {
  cited: string[];
  /** Cited keys that are not in the bibliography (invented citations). */
  missing: string[];
  /** Keys whose DOI Crossref confirmed with a matching title. */
  verified: string[];
  /** Keys whose DOI Crossref resolves to another title. */
  mismatched: string[];
  /** Keys not confirmed (no DOI, Crossref unreachable, or a DOI Crossref does not hold, e.g. arXiv's). */
  unverifiable: string[];
}

export interface ReviewOutput {
  section_reviews: SectionReview[];
  overall_score: number;
  rounds: number;
  citation_check: CitationCheck;
  paper_path: string;
}

const RUBRIC = [
  'You review one section of a research paper. Score 1-10: 9-10 publication-ready, 7-8 solid, 5-6 significant problems, 3-4 major rewrite, 1-2 fundamentally flawed.',
  'If you find zero issues the score must be at least 7. Give every issue as problem, impact and fix.',
  'Claims must be supported by the measured results given; a number not in them is a serious issue.',
  'Answer JSON {"section", "score", "issues": [{"problem", "impact", "fix"}]}.'
].join(' ');

/** The paper's material goes into the (shared) system prompt, the section into the user turn. */
async function reviewSection(ctx: StageContext, context: string, name: SectionName, text: string): Promise<SectionReview> {
  const review = await askJson<SectionReview>(
    ctx,
    'judge',
    `section-review:${name}`,
    `${RUBRIC}\n\nThe paper's material:\n${context}`,
    `Section: ${SECTION_HEADINGS[name]}\n\n${text}`,
    REVIEW_SCHEMA
  );
  return { ...review, section: name };
}

async function checkCitations(ctx: StageContext, writingOut: WritingOutput): Promise<CitationCheck> {
  const cited = [...new Set(writingOut.sections.flatMap(s => citedKeys(s.text)))];
  const bib = new Map(writingOut.bibliography.map(p => [p.key, p]));
  const literature = new Literature({ store: ctx.store, providers: [new CrossrefProvider()] });
  const stored = await literature.byKeys(cited);
  const check: CitationCheck = { cited, missing: [], verified: [], mismatched: [], unverifiable: [] };
  for (const key of cited) {
    const paper = bib.get(key) ?? stored.get(key);
    if (!paper || !bib.has(key)) {
      check.missing.push(key);
      continue;
    }
    if (!paper.doi) {
      check.unverifiable.push(key);
      continue;
    }
    const found = await literature.lookupDoi(paper.doi);
    // Not found in Crossref is not proof of absence: arXiv and other DataCite DOIs live elsewhere.
    if (found.status !== 'found') check.unverifiable.push(key);
    else if (titlesMatch(found.paper!.title, paper.title)) check.verified.push(key);
    else check.mismatched.push(key);
  }
  return check;
}

function titlesMatch(a: string, b: string): boolean {
  const x = normalizeTitle(a);
  const y = normalizeTitle(b);
  return x === y || x.startsWith(y) || y.startsWith(x);
}

export async function review(ctx: StageContext): Promise<StageResult> {
  const writingOut = previousOutput<WritingOutput>(ctx, 'writing');
  const analysisOut = previousOutput<AnalysisOutput>(ctx, 'analysis');
  const draft = { title: writingOut.title, sections: writingOut.sections.map(s => ({ ...s })), bibliography: writingOut.bibliography };
  const context = sectionContext(ctx, draft, analysisOut);
  const known = new Set(draft.bibliography.map(p => p.key));
  const log: string[] = [];
  const total = draft.sections.length + 2;

  let reviews: SectionReview[] = [];
  try {
    for (const [i, s] of draft.sections.entries()) {
      ctx.progress(`reviewing ${SECTION_HEADINGS[s.name]}`, i, total);
      reviews.push(await reviewSection(ctx, context, s.name, s.text));
    }
    let rounds = 0;
    const stalled = new Set<string>();
    for (; rounds < MAX_REVISION_ROUNDS; rounds++) {
      const weak = reviews
        .filter(r => r.score < REVIEW_THRESHOLD && !stalled.has(r.section))
        // Sections not yet revised first, then the weakest: each round spends its revisions where none was tried.
        .sort((a, b) => Number(Boolean(a.revised)) - Number(Boolean(b.revised)) || a.score - b.score)
        .slice(0, MAX_SECTIONS_PER_ROUND);
      if (!weak.length) break;
      ctx.progress(`revising ${weak.length} weak section(s), round ${rounds + 1}`, draft.sections.length, total);
      for (const r of weak) {
        const section = draft.sections.find(s => s.name === r.section)!;
        const revised = await askText(
          ctx,
          'writing',
          `revise-section:${section.name}`,
          `You revise sections of a research paper to fix a reviewer's issues. ${NUMBER_RULES}\n\nThe paper's material:\n${context}`,
          `Revise the ${SECTION_HEADINGS[section.name]} section.\n\nReviewer issues:\n${r.issues.map(i => `- ${i.problem} (impact: ${i.impact}; fix: ${i.fix})`).join('\n')}\n\nSection:\n${section.text}`
        );
        const cited = withKnownCitations(
          section.name === 'experiments' && !revised.includes(analysisOut.table) ? experimentsText(revised, analysisOut) : revised,
          known
        );
        if (cited.removed.length)
          log.push(
            `Round ${rounds + 1}: citations of keys outside the bibliography taken out of the revision of ${section.name}: ${cited.removed.join(', ')}.`
          );
        const text = cited.text;
        if (text.trim() === section.text.trim()) {
          stalled.add(section.name);
          log.push(`Round ${rounds + 1}: the revision of ${section.name} came back unchanged; no further rounds for it.`);
          continue;
        }
        const ungrounded = checkGrounding(text, writingOut.grounding_artifacts).ungrounded;
        if (ungrounded.length) {
          log.push(`Round ${rounds + 1}: revision of ${section.name} discarded, it stated ungrounded numbers ${ungrounded.map(n => n.text).join(', ')}.`);
          continue;
        }
        section.text = text;
        const again = await reviewSection(ctx, context, section.name, text);
        log.push(`Round ${rounds + 1}: ${section.name} revised, score ${r.score} → ${again.score}.`);
        reviews = reviews.map(x => (x.section === section.name ? { ...again, revised: true } : x));
      }
    }

    ctx.progress('checking citations', draft.sections.length + 1, total);
    // The paper as it now stands: revisions included.
    const citations = await checkCitations(ctx, { ...writingOut, sections: draft.sections });
    const files = writePaperFiles(ctx, draft);
    const overall = Math.round((reviews.reduce((a, r) => a + r.score, 0) / reviews.length) * 10) / 10;
    const output: ReviewOutput = { section_reviews: reviews, overall_score: overall, rounds, citation_check: citations, paper_path: files.paper_path };
    const markdown = [
      `### Review: overall ${overall}/10 after ${rounds} revision round(s)`,
      ...reviews.map(
        r =>
          `- **${SECTION_HEADINGS[r.section as SectionName] ?? r.section}** ${r.score}/10${r.revised ? ' (revised)' : ''}${r.issues.length ? `: ${r.issues.map(i => i.problem).join('; ')}` : ''}`
      ),
      `Citations: ${citations.cited.length} cited, ${citations.verified.length} verified by DOI, ${citations.unverifiable.length} unverifiable, ${citations.missing.length} missing, ${citations.mismatched.length} mismatched.`
    ].join('\n');
    const bundleOutputs = { section_reviews: reviews, overall_score: overall, paper_path: files.paper_path };
    log.push(`Citations: ${JSON.stringify(citations)}`);
    const bad = [
      ...citations.missing.map(k => `${k} (not in the bibliography)`),
      ...citations.mismatched.map(k => `${k} (DOI does not resolve to this title)`)
    ];
    if (bad.length) {
      const error = `citation check failed: ${bad.join(', ')}; cite only retrieved papers`;
      return { status: 'failed', output, summary: error, error, bundleOutputs, trajectory: log.join('\n'), markdown };
    }
    const memories = reviews
      .filter(r => r.score < REVIEW_THRESHOLD)
      .map(r => ({
        kind: 'decision_history' as const,
        content: `Review: the ${r.section} section stayed weak (${r.score}/10): ${r.issues.map(i => i.problem).join('; ')}`,
        tags: ['review', r.section],
        importance: 0.5
      }));
    return {
      status: 'done',
      output,
      summary: `Overall ${overall}/10 over ${reviews.length} sections after ${rounds} revision round(s); ${citations.cited.length} citations checked`,
      bundleOutputs,
      trajectory: log.join('\n'),
      markdown,
      memories
    };
  } catch (error) {
    if (isFatal(error)) throw error;
    const message = `review judge failed: ${errorMessage(error)} — a failed review is not a pass; re-run the review`;
    return {
      status: 'failed',
      output: { section_reviews: reviews },
      summary: message,
      error: message,
      bundleOutputs: { section_reviews: reviews },
      trajectory: log.join('\n'),
      markdown: `### Review failed\n\n${message}`
    };
  }
}
