/**
 * Ideation: queries → literature search → evidence → gaps → 2–4 hypotheses → a novelty
 * check per hypothesis (closest work searched, judged by the 'judge' role, closest papers
 * kept as citations) → the selected hypothesis.
 *
 * Fail-closed novelty: a judge call that fails is an error for that hypothesis, never
 * "novel"; such a hypothesis is not selected. With no literature source reachable the
 * stage goes on, with literature_status and every verdict 'unverified'.
 */
import type { IdeationOutput, Paper } from '@nanoresearch/schema';
import { Literature, LiteratureStatus } from '../literature';
import type { StageContext, StageResult } from '../stage-contract';
import { schemaErrors } from '../validate';
import { quoteUntrusted, UNTRUSTED_SYSTEM_RULE } from '../llm/untrusted';
import { askJson, errorMessage, isFatal } from './common';

type Hypothesis = IdeationOutput['hypotheses'][number];
type Verdict = Hypothesis['novelty']['verdict'];

const QUERIES_SCHEMA = {
  type: 'object',
  properties: { queries: { type: 'array', items: { type: 'string', minLength: 3, maxLength: 80 }, minItems: 1, maxItems: 3 } },
  required: ['queries']
};

/** At most this many papers go into a prompt: their abstracts are most of its tokens. */
const PAPERS_IN_PROMPT = 8;

/** Evidence may cite only retrieved papers: the key is an enum of their keys. */
function ideasSchema(keys: string[]): Record<string, unknown> {
  const paperKey = keys.length ? { type: 'string', enum: keys } : { type: 'string', maxLength: 40 };
  return {
    type: 'object',
    properties: {
      evidence: {
        type: 'array',
        maxItems: keys.length ? 3 : 0,
        items: {
          type: 'object',
          properties: { paper_key: paperKey, finding: { type: 'string', minLength: 1, maxLength: 160 } },
          required: ['paper_key', 'finding']
        }
      },
      gaps: { type: 'array', items: { type: 'string', minLength: 1, maxLength: 160 }, minItems: 1, maxItems: 2 },
      hypotheses: {
        type: 'array',
        minItems: 2,
        maxItems: 3,
        items: {
          type: 'object',
          properties: { statement: { type: 'string', minLength: 10, maxLength: 200 }, rationale: { type: 'string', maxLength: 200 } },
          required: ['statement', 'rationale']
        }
      }
    },
    required: ['evidence', 'gaps', 'hypotheses']
  };
}

/** The judge names closest papers only among those shown, and scores on a bounded integer scale. */
function noveltySchema(keys: string[]): Record<string, unknown> {
  return {
    type: 'object',
    properties: {
      verdict: { type: 'string', enum: ['novel', 'incremental', 'not-novel'] },
      score: { type: 'integer', minimum: 0, maximum: 10 },
      reason: { type: 'string', minLength: 1, maxLength: 200 },
      closest_keys: keys.length ? { type: 'array', items: { type: 'string', enum: keys }, maxItems: 2 } : { type: 'array', maxItems: 0 }
    },
    required: ['verdict', 'score', 'reason', 'closest_keys']
  };
}

/** Papers for the prompt: key, title, year and a trimmed abstract, quoted as data (a paper's text is not an instruction). */
function paperDigest(papers: Paper[]): string {
  if (!papers.length) return '(no papers could be retrieved)';
  return quoteUntrusted(
    'papers',
    papers.map(p => `- [${p.key}] ${p.title} (${p.year ?? 'n.d.'})${p.abstract ? `: ${p.abstract.slice(0, 300)}` : ''}`).join('\n')
  );
}

const RANK: Record<Verdict, number> = { novel: 3, incremental: 2, unverified: 1, 'not-novel': 0 };

export async function ideation(ctx: StageContext): Promise<StageResult> {
  const topic = ctx.project.topic;
  const literature = new Literature({ store: ctx.store });
  const log: string[] = [];

  ctx.progress('writing search queries', 0, 4);
  const { queries } = await askJson<{ queries: string[] }>(
    ctx,
    'ideation',
    'search-queries',
    'You plan a literature search. Give 2 or 3 short search queries (a few words each) covering the topic itself and the related methods. Answer JSON {"queries": [...]}.',
    `Research topic: ${topic}`,
    QUERIES_SCHEMA
  );
  log.push(`Queries: ${queries.join(' | ')}`);

  ctx.progress('searching the literature', 1, 4);
  let papers: Paper[] = [];
  const statuses: LiteratureStatus[] = [];
  for (const query of queries) {
    const r = await literature.search(query, { limit: 6 });
    statuses.push(r.status);
    papers = [...papers, ...r.papers.filter(p => !papers.some(q => q.key === p.key))];
    log.push(
      `Search "${query}": ${r.status}, ${r.papers.length} papers (${r.sources.map(s => `${s.provider}${s.ok ? (s.cached ? ' cached' : '') : ` failed: ${s.error}`}`).join('; ')})`
    );
  }
  const literatureStatus: LiteratureStatus = statuses.includes('searched') ? 'searched' : statuses.includes('offline-corpus') ? 'offline-corpus' : 'unverified';

  ctx.progress('reading evidence, finding gaps, proposing hypotheses', 2, 4);
  const shown = papers.slice(0, PAPERS_IN_PROMPT);
  const ideas = await askJson<{ evidence: { paper_key: string; finding: string }[]; gaps: string[]; hypotheses: { statement: string; rationale?: string }[] }>(
    ctx,
    'ideation',
    'gaps-and-hypotheses',
    [
      'You are a careful research scientist. From the retrieved papers only, extract evidence (paper_key must be one of the keys shown),',
      "name the gaps they leave, and propose 2 or 3 testable hypotheses that fit the researcher's resources, each one sentence",
      'naming the method, what it is compared with, the data and the measure, e.g. "On <data>, <method> reaches a higher <metric> than <baseline>."',
      UNTRUSTED_SYSTEM_RULE,
      'Answer JSON {"evidence": [{"paper_key", "finding"}], "gaps": [...], "hypotheses": [{"statement", "rationale"}]}.'
    ].join(' '),
    `Research topic: ${topic}\n\nRetrieved papers:\n${paperDigest(shown)}`,
    ideasSchema(shown.map(p => p.key))
  );
  const known = new Set(papers.map(p => p.key));
  const evidence = ideas.evidence.filter(e => known.has(e.paper_key));
  if (evidence.length < ideas.evidence.length)
    log.push(`Dropped ${ideas.evidence.length - evidence.length} evidence items citing papers that were not retrieved.`);

  ctx.progress('checking novelty', 3, 4);
  const hypotheses: Hypothesis[] = [];
  const judgeErrors = new Map<string, string>();
  for (const [i, h] of ideas.hypotheses.slice(0, 3).entries()) {
    const id = `H${i + 1}`;
    const base = { id, statement: h.statement, ...(h.rationale ? { rationale: h.rationale } : {}) };
    const closest = await literature.search(h.statement, { limit: 5 });
    if (closest.status === 'unverified' || closest.papers.length === 0) {
      const reason =
        closest.status === 'unverified'
          ? 'no literature source could be reached; novelty not checked'
          : 'the search found no related work to compare against; novelty not checked';
      hypotheses.push({ ...base, novelty: { verdict: 'unverified', score: null, reason, closest_work: [] } });
      log.push(`${id}: novelty unverified (${reason}).`);
      continue;
    }
    try {
      const verdict = await askJson<{ verdict: Exclude<Verdict, 'unverified'>; score: number; reason: string; closest_keys?: string[] }>(
        ctx,
        'judge',
        'novelty-check',
        [
          'You judge the novelty of a research hypothesis against the closest published work found by a search.',
          '"novel": no listed paper tests this; "incremental": a listed paper is close but differs in a way that matters; "not-novel": a listed paper already does it.',
          'Score 0-10 (10 = clearly new). Name the closest papers by key. Answer JSON {"verdict", "score", "reason", "closest_keys"}.',
          UNTRUSTED_SYSTEM_RULE
        ].join(' '),
        `Hypothesis: ${h.statement}\n\nClosest work found:\n${paperDigest(closest.papers)}`,
        noveltySchema(closest.papers.map(p => p.key))
      );
      const keys = new Set(verdict.closest_keys?.length ? verdict.closest_keys : closest.papers.map(p => p.key));
      const closestWork = closest.papers.filter(p => keys.has(p.key));
      hypotheses.push({
        ...base,
        novelty: {
          verdict: verdict.verdict,
          score: verdict.score,
          reason: verdict.reason,
          closest_work: closestWork.length ? closestWork : closest.papers.slice(0, 3)
        }
      });
      for (const p of closest.papers) if (!papers.some(q => q.key === p.key)) papers.push(p);
      log.push(`${id}: ${verdict.verdict} (${verdict.score}/10) — ${verdict.reason}`);
    } catch (error) {
      if (isFatal(error)) throw error;
      judgeErrors.set(id, errorMessage(error));
      hypotheses.push({
        ...base,
        novelty: { verdict: 'unverified', score: null, reason: `novelty judge failed: ${errorMessage(error)}`, closest_work: closest.papers.slice(0, 3) }
      });
      log.push(`${id}: novelty judge failed (${errorMessage(error)}); not eligible for selection.`);
    }
  }

  const eligible = hypotheses
    .map((h, order) => ({ h, order }))
    .filter(({ h }) => !judgeErrors.has(h.id) && h.novelty.verdict !== 'not-novel')
    .sort((a, b) => RANK[b.h.novelty.verdict] - RANK[a.h.novelty.verdict] || (b.h.novelty.score ?? 0) - (a.h.novelty.score ?? 0) || a.order - b.order);

  const output: IdeationOutput = {
    topic,
    queries,
    evidence,
    gaps: ideas.gaps,
    hypotheses: hypotheses as IdeationOutput['hypotheses'],
    selected_hypothesis_id: eligible[0]?.h.id ?? hypotheses[0].id,
    literature_status: literatureStatus,
    papers
  };
  const errors = schemaErrors('ideation-output', output);
  if (errors.length) throw new Error(`ideation produced an output that does not match ideation-output.schema.json: ${errors.join('; ')}`);

  const markdown = [
    `### Ideation: ${topic}`,
    `Literature: **${literatureStatus}** (${papers.length} papers)`,
    '',
    ...hypotheses.map(
      h =>
        `- **${h.id}**${h.id === output.selected_hypothesis_id && eligible.length ? ' (selected)' : ''}: ${h.statement} — novelty *${h.novelty.verdict}*${h.novelty.score != null ? ` ${h.novelty.score}/10` : ''}${h.novelty.closest_work.length ? `; closest: ${h.novelty.closest_work.map(p => `[@${p.key}]`).join(', ')}` : ''}`
    ),
    '',
    `Gaps: ${ideas.gaps.map(g => `\n- ${g}`).join('')}`
  ].join('\n');
  const trajectory = log.join('\n');

  if (!eligible.length) {
    const why = judgeErrors.size
      ? `no hypothesis passed the novelty check: ${[...judgeErrors].map(([id, e]) => `${id}: judge failed (${e})`).join('; ')}${hypotheses.some(h => h.novelty.verdict === 'not-novel') ? '; the others are not novel' : ''}`
      : 'every hypothesis was judged not novel against the literature found';
    return { status: 'failed', output, summary: `Ideation failed: ${why}`, error: why, bundleOutputs: { ideation: output }, trajectory, markdown };
  }
  const selected = eligible[0].h;
  return {
    status: 'done',
    output,
    summary: `Selected ${selected.id}: ${selected.statement} (novelty ${selected.novelty.verdict}; literature ${literatureStatus}, ${papers.length} papers)`,
    bundleOutputs: { ideation: output },
    trajectory,
    markdown,
    memories: [
      {
        kind: 'project_context',
        content: `Selected hypothesis: ${selected.statement}${selected.rationale ? ` — ${selected.rationale}` : ''}`,
        tags: ['hypothesis'],
        importance: 0.74
      },
      { kind: 'decision_history', content: `Top gaps found for "${topic}": ${ideas.gaps.slice(0, 3).join('; ')}`, tags: ['gaps'], importance: 0.8 }
    ]
  };
}
