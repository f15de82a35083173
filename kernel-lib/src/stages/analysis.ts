/**
 * Analysis: measured results only. Reads metrics.json from the experiment's artifacts
 * (checking its sha256 against the recorded artifact), computes the comparisons in code
 * (best run per metric, the method against each baseline), and lets the 'writing' role
 * only phrase what was computed: its text is grounding-checked, and replaced by a plain
 * rendering of the computed facts when it states a number that is not in them.
 */
import type { ExperimentBlueprint } from '@nanoresearch/schema';
import { checkGrounding } from '../grounding';
import { readBytesInside } from '../sandbox/workspace-fs';
import type { StageContext, StageResult } from '../stage-contract';
import { askText, markdownTable, previousOutput, sha256 } from './common';
import type { ExperimentOutput, Metrics } from './experiment';

export interface Comparison {
  metric: string;
  goal: 'maximize' | 'minimize';
  method_run: string;
  baseline_run: string;
  method_value: number;
  baseline_value: number;
  /** method − baseline. */
  difference: number;
  /** Whether the method is better on this metric, given its goal. */
  method_better: boolean;
}

export interface AnalysisOutput {
  metrics: Metrics;
  manifest: Record<string, unknown>;
  /** The experiment's data facts (row, column and class counts), passed on for the paper. */
  data_facts: ExperimentOutput['data_facts'];
  runs: string[];
  metric_names: string[];
  primary_metric: string;
  method_run: string;
  best_run: Record<string, string>;
  comparisons: Comparison[];
  /** The results table in Markdown, values as measured (4 decimals). */
  table: string;
  text: string;
  /** Whether `text` is the model's phrasing (true) or the fallback rendering (false). */
  phrased_by_model: boolean;
}

const MINIMIZE_NAME = /loss|error|mse|rmse|mae|perplexity|time|latency|seconds|cost/i;

export function metricGoal(name: string, blueprint?: ExperimentBlueprint): 'maximize' | 'minimize' {
  return blueprint?.metrics.find(m => m.name === name)?.goal ?? (MINIMIZE_NAME.test(name) ? 'minimize' : 'maximize');
}

/** Rounds away floating-point noise (0.8571 − 0.3333 = 0.5238000000000001). */
function clean(x: number): number {
  return Number(x.toPrecision(12));
}

export function fmt(x: number): string {
  return Number.isInteger(x) ? String(x) : x.toFixed(4);
}

/** The computed part of the analysis: no model involved. */
export function analyzeMetrics(
  metrics: Metrics,
  blueprint?: ExperimentBlueprint
): Omit<AnalysisOutput, 'text' | 'phrased_by_model' | 'manifest' | 'data_facts'> {
  const runs = Object.keys(metrics);
  const metricNames = [...new Set(runs.flatMap(r => Object.keys(metrics[r])))];
  const primary =
    blueprint?.metrics.find(m => m.primary && metricNames.includes(m.name))?.name ??
    blueprint?.metrics.find(m => metricNames.includes(m.name))?.name ??
    metricNames[0];
  const bestRun: Record<string, string> = {};
  for (const metric of metricNames) {
    const goal = metricGoal(metric, blueprint);
    const have = runs.filter(r => metrics[r][metric] !== undefined);
    bestRun[metric] = have.reduce(
      (best, r) => ((goal === 'maximize' ? metrics[r][metric] > metrics[best][metric] : metrics[r][metric] < metrics[best][metric]) ? r : best),
      have[0]
    );
  }
  const methodName = blueprint?.method.name.toLowerCase();
  const matrixRun = blueprint?.experiment_matrix.find(row => row.method.toLowerCase() === methodName && runs.includes(row.run_id))?.run_id;
  const methodRun = matrixRun ?? runs.find(r => methodName && r.toLowerCase().includes(methodName)) ?? bestRun[primary];
  // Another seed of the method is not a baseline: compared are the runs of other methods (all others when the plan does not say).
  const methodOf = (run: string) => blueprint?.experiment_matrix.find(row => row.run_id === run)?.method.toLowerCase();
  const others = runs.filter(r => r !== methodRun);
  const otherMethods = others.filter(r => methodOf(r) === undefined || methodOf(r) !== methodOf(methodRun));
  const comparisons: Comparison[] = [];
  for (const baseline of otherMethods.length ? otherMethods : others) {
    for (const metric of metricNames) {
      const m = metrics[methodRun][metric];
      const b = metrics[baseline][metric];
      if (m === undefined || b === undefined) continue;
      const goal = metricGoal(metric, blueprint);
      comparisons.push({
        metric,
        goal,
        method_run: methodRun,
        baseline_run: baseline,
        method_value: m,
        baseline_value: b,
        difference: clean(m - b),
        method_better: goal === 'maximize' ? m > b : m < b
      });
    }
  }
  const table = markdownTable(
    ['run', ...metricNames],
    runs.map(r => [r, ...metricNames.map(m => (metrics[r][m] === undefined ? '—' : fmt(metrics[r][m])))])
  );
  return { metrics, runs, metric_names: metricNames, primary_metric: primary, method_run: methodRun, best_run: bestRun, comparisons, table };
}

/** The computed facts in plain sentences: the fallback when the model's phrasing is not grounded. */
export function renderFacts(a: Omit<AnalysisOutput, 'text' | 'phrased_by_model' | 'manifest' | 'data_facts'>): string {
  const lines = a.metric_names.map(m => `Best ${m}: ${a.best_run[m]} (${fmt(a.metrics[a.best_run[m]][m])}).`);
  for (const c of a.comparisons) {
    lines.push(
      `${c.method_run} vs ${c.baseline_run} on ${c.metric}: ${fmt(c.method_value)} vs ${fmt(c.baseline_value)}, difference ${fmt(c.difference)} (${c.method_better ? 'better' : 'not better'} for a metric to ${c.goal}).`
    );
  }
  return lines.join('\n');
}

export async function analysis(ctx: StageContext): Promise<StageResult> {
  const exp = previousOutput<ExperimentOutput>(ctx, 'experiment');
  const blueprint = ctx.previous.planning as ExperimentBlueprint | undefined;
  ctx.progress('reading measured results', 0, 2);
  const raw = readBytesInside(ctx.workspace, exp.metrics_path);
  const recorded = exp.artifacts.find(a => a.path === exp.metrics_path);
  if (recorded && recorded.sha256 !== sha256(raw)) {
    throw new Error(`${exp.metrics_path} changed after the experiment recorded it (sha256 mismatch); re-run the experiment stage`);
  }
  const metrics = JSON.parse(raw.toString('utf8')) as Metrics;
  const computed = analyzeMetrics(metrics, blueprint);
  const facts = renderFacts(computed);

  ctx.progress('phrasing the analysis', 1, 2);
  const draft = await askText(
    ctx,
    'writing',
    'analysis-text',
    'You phrase an analysis of measured experiment results. Use ONLY the numbers given below, exactly as written; do not compute new numbers, do not add any other number. Two short paragraphs (at most 150 words), plain text.',
    `Results table (measured):\n${computed.table}\n\nComputed facts:\n${facts}${blueprint ? `\n\nObjective: ${blueprint.objective}` : ''}`
  );
  const grounding = checkGrounding(draft, { metrics, comparisons: computed.comparisons, manifest: exp.manifest, data: exp.data_facts ?? {} });
  const phrased = draft.length > 0 && grounding.ungrounded.length === 0;
  const text = phrased ? draft : facts;
  const output: AnalysisOutput = { ...computed, manifest: exp.manifest, data_facts: exp.data_facts ?? {}, text, phrased_by_model: phrased };
  const trajectory = phrased
    ? 'The analysis text was phrased by the model and every number in it is grounded.'
    : `The model's phrasing stated numbers not in the results (${grounding.ungrounded.map(n => n.text).join(', ') || 'empty answer'}); the computed facts are used instead.`;
  const c = computed.comparisons.find(x => x.metric === computed.primary_metric);
  return {
    status: 'done',
    output,
    summary: c
      ? `${computed.method_run} ${c.method_better ? 'beats' : 'does not beat'} ${c.baseline_run} on ${c.metric}: ${fmt(c.method_value)} vs ${fmt(c.baseline_value)}`
      : `Analysed ${computed.runs.length} runs over ${computed.metric_names.length} metrics`,
    bundleOutputs: {
      analysis: text,
      metrics: Object.entries(metrics).flatMap(([run, v]) => Object.entries(v).map(([metric, value]) => ({ run, metric, value })))
    },
    trajectory,
    markdown: `### Analysis\n\n${computed.table}\n\n${text}`
  };
}
