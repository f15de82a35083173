/** The six research stages as StageFns, in the order project.run() takes them. */
import type { StageFn, StageName } from '../stage-contract';
import { analysis } from './analysis';
import { experiment } from './experiment';
import { ideation } from './ideation';
import { planning } from './planning';
import { review } from './review';
import { writing } from './writing';

/** What each stage reads through previousOutput(): checked by the orchestrator before it plans. */
const prerequisites: Record<StageName, readonly StageName[]> = {
  ideation: [],
  planning: ['ideation'],
  experiment: ['planning'],
  analysis: ['experiment'],
  writing: ['analysis'],
  review: ['writing', 'analysis']
};

export const stageFunctions: Record<StageName, StageFn> = Object.fromEntries(
  Object.entries({ ideation, planning, experiment, analysis, writing, review }).map(([name, fn]) => [
    name,
    Object.assign((ctx: Parameters<StageFn>[0]) => fn(ctx), { requires: prerequisites[name as StageName] })
  ])
) as Record<StageName, StageFn>;

export { ideation, planning, experiment, analysis, writing, review };
export { readArtifacts, MAX_EXPERIMENT_ATTEMPTS } from './experiment';
export type { ExperimentOutput, ExperimentAttempt, ArtifactRecord, Metrics } from './experiment';
export { analyzeMetrics, metricGoal } from './analysis';
export type { AnalysisOutput, Comparison } from './analysis';
export type { WritingOutput, UngroundedNumber } from './writing';
export type { ReviewOutput, CitationCheck } from './review';
export { REVIEW_THRESHOLD, MAX_REVISION_ROUNDS } from './review';
export { budgetIssues } from './planning';
export { citedKeys, renderMarkdown, renderLatex, renderBibtex, SECTIONS } from './paper';
