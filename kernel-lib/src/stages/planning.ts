/**
 * Planning: an ExperimentBlueprint for the selected hypothesis, within the profile's
 * resources, then a critique loop: the 'judge' role lists issues by severity; fatal ones
 * (and any budget violation, checked here in code) trigger a re-plan, at most twice. The
 * output keeps the last critique and the revision count. A failed critique call fails the
 * stage (fail-closed: an unreviewed plan is not passed as reviewed).
 */
import { ExperimentBlueprintSchema } from '@nanoresearch/schema';
import type { ExperimentBlueprint, IdeationOutput, Profile } from '@nanoresearch/schema';
import type { StageContext, StageResult } from '../stage-contract';
import { schemaErrors } from '../validate';
import { askJson, bounded, describeDataFiles, previousOutput } from './common';

type Issue = NonNullable<ExperimentBlueprint['critique']>[number];

const MAX_REPLANS = 2;

const CRITIQUE_SCHEMA = {
  type: 'object',
  properties: {
    issues: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          severity: { type: 'string', enum: ['fatal', 'major', 'minor'] },
          issue: { type: 'string', minLength: 1, maxLength: 160 },
          fix: { type: 'string', maxLength: 160 }
        },
        required: ['severity', 'issue', 'fix']
      },
      maxItems: 3
    }
  },
  required: ['issues']
};

/**
 * The blueprint schema without the fields this stage fills in itself, bounded: a plan small
 * enough to run in minutes has one or two datasets and baselines, a few metrics and runs.
 */
function blueprintRequestSchema(hypothesisId: string): Record<string, unknown> {
  const schema = JSON.parse(JSON.stringify(ExperimentBlueprintSchema)) as { properties: Record<string, unknown>; $id?: string; $schema?: string };
  delete schema.properties.critique;
  delete schema.properties.revisions;
  delete schema.$id;
  schema.properties.hypothesis_id = { type: 'string', const: hypothesisId };
  return bounded(schema, {
    text: 160,
    items: 3,
    by: {
      datasets: 1,
      baselines: 2,
      components: 3,
      metrics: 2,
      ablations: 1,
      experiment_matrix: 4,
      required_artifacts: 2,
      success_criteria: 2,
      name: 60,
      run_id: 40
    }
  });
}

function resourceText(profile: Profile): string {
  const r = profile.resources;
  const parts = [
    r.max_experiment_minutes !== undefined ? `at most ${r.max_experiment_minutes} minutes of experiment time` : '',
    r.cpu_only ? 'CPU only (no GPU)' : r.gpu_hours !== undefined ? `${r.gpu_hours} GPU hours` : '',
    r.memory_gb !== undefined ? `${r.memory_gb} GB memory` : ''
  ].filter(Boolean);
  return parts.length ? parts.join(', ') : 'no explicit limits (keep it small: minutes on a laptop CPU)';
}

/**
 * The plan with a usable run id on every row of its matrix: the id names the run in metrics.json
 * and the paper, so one that is empty, repeated or not an identifier (a small model wrote ".csv"
 * three times) is replaced by one made from the row's method, and the change is logged.
 */
export function withRunIds(blueprint: ExperimentBlueprint, log: string[]): ExperimentBlueprint {
  const seen = new Set<string>();
  const slug = (text: string) =>
    text
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, '_')
      .replace(/^_+|_+$/g, '')
      .slice(0, 40) || 'run';
  const experiment_matrix = blueprint.experiment_matrix.map(row => {
    let id = /^[A-Za-z][\w-]{0,39}$/.test(row.run_id) && !seen.has(row.run_id) ? row.run_id : slug(row.method);
    for (let n = 2; seen.has(id); n++) id = `${slug(row.method)}_${n}`;
    seen.add(id);
    if (id !== row.run_id) log.push(`Run id "${row.run_id}" (${row.method}) renamed to "${id}": run ids must be unique identifiers.`);
    return { ...row, run_id: id };
  });
  return { ...blueprint, experiment_matrix };
}

/** Words that name no particular method: "Majority-class baseline" is covered by a run of "majority class". */
const GENERIC_WORDS = new Set(['baseline', 'classifier', 'model', 'method', 'the', 'and', 'with', 'simple']);

/**
 * The plan with a run for every baseline it names: a baseline without a run is never measured,
 * and the comparison the paper is about cannot be made (a small model listed the baseline and
 * then planned three seeds of the method only). The added run is logged.
 */
export function withBaselineRuns(blueprint: ExperimentBlueprint, log: string[]): ExperimentBlueprint {
  const words = (text: string) =>
    text
      .toLowerCase()
      .split(/[^a-z0-9]+/)
      .filter(w => w.length >= 3 && !GENERIC_WORDS.has(w));
  const first = blueprint.experiment_matrix[0];
  const dataset = first?.dataset ?? blueprint.datasets[0]?.name;
  if (!dataset) return blueprint;
  const added = blueprint.baselines
    .filter(b => {
      const key = words(b.name);
      return !blueprint.experiment_matrix.some(r => (key.length ? key.every(w => r.method.toLowerCase().includes(w)) : /baseline/i.test(r.method)));
    })
    .map(b => ({ run_id: b.name, method: b.name, dataset, ...(first?.seed !== undefined ? { seed: first.seed } : {}) }));
  for (const run of added) log.push(`Baseline "${run.method}" had no run in the matrix: added one on ${dataset}.`);
  return added.length ? { ...blueprint, experiment_matrix: [...blueprint.experiment_matrix, ...added] } : blueprint;
}

/** Budget violations found in code: they are fatal whatever the judge says. */
export function budgetIssues(blueprint: ExperimentBlueprint, profile: Profile): Issue[] {
  const issues: Issue[] = [];
  const max = profile.resources.max_experiment_minutes;
  if (max !== undefined && blueprint.compute.estimated_minutes > max) {
    issues.push({
      severity: 'fatal',
      issue: `estimated ${blueprint.compute.estimated_minutes} minutes exceeds the profile's limit of ${max} minutes`,
      fix: `cut runs or data so the estimate is at most ${max} minutes`
    });
  }
  if (profile.resources.cpu_only && /gpu|cuda/i.test(blueprint.compute.device ?? '')) {
    issues.push({ severity: 'fatal', issue: `the plan needs device '${blueprint.compute.device}' but the profile is CPU only`, fix: 'plan for CPU' });
  }
  if (!blueprint.experiment_matrix.length)
    issues.push({ severity: 'fatal', issue: 'the experiment matrix is empty', fix: 'list at least the method and one baseline run' });
  return issues;
}

export async function planning(ctx: StageContext): Promise<StageResult> {
  const ideation = previousOutput<IdeationOutput>(ctx, 'ideation');
  const hypothesis = ideation.hypotheses.find(h => h.id === ideation.selected_hypothesis_id) ?? ideation.hypotheses[0];
  const request = blueprintRequestSchema(hypothesis.id);
  const log: string[] = [];
  const base = [
    `Topic: ${ideation.topic}`,
    `Hypothesis ${hypothesis.id}: ${hypothesis.statement}`,
    hypothesis.rationale ? `Rationale: ${hypothesis.rationale}` : '',
    `Resources: ${resourceText(ctx.profile)}`,
    `Known gaps: ${ideation.gaps.join('; ')}`,
    describeDataFiles(ctx.workspace) ? `Data files in the project (plan with these):\n${describeDataFiles(ctx.workspace)}` : ''
  ]
    .filter(Boolean)
    .join('\n');

  let critique: Issue[] = [];
  let blueprint: ExperimentBlueprint | undefined;
  for (let revision = 0; revision <= MAX_REPLANS; revision++) {
    ctx.progress(revision ? `re-planning (revision ${revision})` : 'drafting the experiment blueprint', revision * 2, (MAX_REPLANS + 1) * 2);
    const fatal = critique.filter(i => i.severity === 'fatal');
    const draft = await askJson<ExperimentBlueprint>(
      ctx,
      'planning',
      'experiment-blueprint',
      [
        'You design a small, runnable experiment plan (ExperimentBlueprint JSON) that tests the hypothesis within the resources.',
        'Include at least one baseline, the metrics with their goal, ablations where the profile asks for them, an experiment matrix (one row per run),',
        'required artifacts (results/metrics.json and results/manifest.json at least) and success criteria.'
      ].join(' '),
      `${base}\nhypothesis_id must be "${hypothesis.id}".${fatal.length ? `\n\nThe previous plan had fatal problems; fix each:\n${fatal.map(i => `- ${i.issue}${i.fix ? ` (fix: ${i.fix})` : ''}`).join('\n')}\n\nPrevious plan:\n${JSON.stringify(blueprint)}` : ''}`,
      request
    );
    blueprint = withRunIds(withBaselineRuns({ ...draft, hypothesis_id: hypothesis.id }, log), log);

    ctx.progress('critiquing the plan', revision * 2 + 1, (MAX_REPLANS + 1) * 2);
    const judged = await askJson<{ issues: Issue[] }>(
      ctx,
      'judge',
      'plan-critique',
      [
        'You review an experiment plan for problems that would block execution or invalidate the evaluation',
        '(leakage, no baseline, wrong metric, infeasible compute, missing artifacts). Severity "fatal" only for those; "major"/"minor" otherwise.',
        'Answer JSON {"issues": [{"severity", "issue", "fix"}]} (an empty list when the plan is sound).'
      ].join(' '),
      `${base}\n\nPlan:\n${JSON.stringify(blueprint, null, 2)}`,
      CRITIQUE_SCHEMA
    );
    critique = [...budgetIssues(blueprint, ctx.profile), ...judged.issues];
    const fatalNow = critique.filter(i => i.severity === 'fatal');
    log.push(
      `Plan ${revision}: ${critique.length} issues (${fatalNow.length} fatal)${critique.length ? ': ' + critique.map(i => `[${i.severity}] ${i.issue}`).join('; ') : ''}`
    );
    blueprint.critique = critique;
    blueprint.revisions = revision;
    if (!fatalNow.length) break;
  }
  const final = blueprint!;
  const errors = schemaErrors('experiment-blueprint', final);
  if (errors.length) throw new Error(`the blueprint does not match experiment-blueprint.schema.json: ${errors.join('; ')}`);
  const markdown = [
    `### Blueprint for ${final.hypothesis_id}: ${final.objective}`,
    `Method: **${final.method.name}** — baselines: ${final.baselines.map(b => b.name).join(', ')}`,
    `Metrics: ${final.metrics.map(m => `${m.name} (${m.goal})`).join(', ')}; runs: ${final.experiment_matrix.map(r => r.run_id).join(', ')}`,
    `Estimated ${final.compute.estimated_minutes} min; revisions: ${final.revisions}`,
    critique.length ? `Critique:\n${critique.map(i => `- [${i.severity}] ${i.issue}`).join('\n')}` : 'Critique: no issues.'
  ].join('\n');
  const stillFatal = critique.filter(i => i.severity === 'fatal');
  if (stillFatal.length) {
    const error = `the plan still has fatal issues after ${MAX_REPLANS} re-plans: ${stillFatal.map(i => i.issue).join('; ')}`;
    return {
      status: 'failed',
      output: final,
      summary: `Planning failed: ${error}`,
      error,
      bundleOutputs: { blueprint: final },
      trajectory: log.join('\n'),
      markdown
    };
  }
  return {
    status: 'done',
    output: final,
    summary: `Blueprint: ${final.method.name} vs ${final.baselines.map(b => b.name).join(', ')} on ${final.datasets.map(d => d.name).join(', ')} (${final.experiment_matrix.length} runs, ~${final.compute.estimated_minutes} min, ${final.revisions} revisions)`,
    bundleOutputs: { blueprint: final },
    trajectory: log.join('\n'),
    markdown,
    memories: [
      {
        kind: 'decision_history',
        content: `Planned ${final.method.name} against ${final.baselines.map(b => b.name).join(', ')} measuring ${final.metrics.map(m => m.name).join(', ')}`,
        tags: ['plan'],
        importance: 0.6
      }
    ]
  };
}
