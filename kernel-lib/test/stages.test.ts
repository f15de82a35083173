/**
 * Each stage function with a hand-built StageContext, a real store, the scripted LLM server,
 * the literature fixture server and the real sandbox.
 */
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'fs';
import { tmpdir } from 'os';
import * as path from 'path';
import type { ExperimentBlueprint, IdeationOutput, Profile, Project } from '@nanoresearch/schema';
import { newId } from '../src/ids';
import { createLlm } from '../src/llm';
import type { StageContext, StageName, StageResult } from '../src/stage-contract';
import { analysis, experiment, ideation, planning, review, stageFunctions, writing } from '../src/stages';
import { MAX_SECTIONS_PER_ROUND } from '../src/stages/review';
import { withKnownCitations } from '../src/stages/paper';
import { wholeSentences } from '../src/stages/writing';
import { analyzeMetrics } from '../src/stages/analysis';
import { withBaselineRuns, withRunIds } from '../src/stages/planning';
import { UNTRUSTED_SYSTEM_RULE } from '../src/llm/untrusted';
import type { AnalysisOutput, ExperimentOutput, ReviewOutput, WritingOutput } from '../src/stages';
import { Store } from '../src/store';
import { LiteratureFixtureServer, routeByModel, startLiteratureFixtureServer, startScriptedLlmServer, ScriptedLlmServer, type LlmScript } from '../src/testing';
import { schemaErrors } from '../src/validate';
import { EXPERIMENT_PROGRAM, fenced, placeDataset, researchScript, ResearchScriptOptions, ROLE_MODELS, task } from './fixtures/e2e/research-script';

const PROFILE: Profile = {
  id: 'prof_test',
  name: 'test',
  research: { methodology: 'simple baselines first' },
  resources: { cpu_only: true, max_experiment_minutes: 2, memory_gb: 1 },
  writing: {},
  publication: {},
  interaction: {}
};

let lit: LiteratureFixtureServer;
let store: Store;
const servers: ScriptedLlmServer[] = [];
const savedEnv = { ...process.env };

beforeAll(async () => {
  lit = await startLiteratureFixtureServer();
  Object.assign(process.env, lit.env, { NANORESEARCH_LITERATURE_SOURCES: 'openalex,crossref' });
  store = await Store.open({ path: path.join(mkdtempSync(path.join(tmpdir(), 'nr-stages-')), 'store.duckdb') });
});
afterAll(async () => {
  process.env = savedEnv;
  await Promise.all(servers.map(s => s.close()));
  await lit.close();
  await store.close();
});

/** A fresh scripted team and Llm (its own response cache) per test; `coding` replaces the coder, `judge` the judge. */
async function team(options: ResearchScriptOptions = {}, coding?: LlmScript, judge?: LlmScript) {
  const script = researchScript(options);
  if (coding) script.coding = coding;
  if (judge) script.judge = judge;
  const server = await startScriptedLlmServer(routeByModel(script));
  servers.push(server);
  const llm = createLlm({ provider: 'openai', baseURL: server.url, apiKey: 'test-key', models: ROLE_MODELS, maxRetries: 0 });
  return { server, llm };
}

const workspace = mkdtempSync(path.join(tmpdir(), 'nr-stage-ws-'));
placeDataset(workspace);
const project = {
  id: 'prj_test',
  title: 'Centroids',
  topic: 'nearest-centroid classification of small tabular data',
  profile_id: PROFILE.id,
  status: 'active',
  workspace
} as Project;

function context(
  stage: StageName,
  llm: StageContext['llm'],
  previous: StageContext['previous'] = {},
  profile: Profile = PROFILE
): StageContext & { steps: string[] } {
  const steps: string[] = [];
  return {
    stage,
    stageRunId: newId('sr'),
    runId: 'run_test',
    project,
    profile,
    llm,
    store,
    plan: { selected_skill_ids: [], selected_memory_ids: [], prompt_plan: 'Prefer the simplest baseline.', update_memory: [], update_skill: [] },
    skills: [],
    memories: [],
    guidance: '## Researcher profile\nPrefers simple baselines and CPU-only experiments.',
    previous,
    workspace,
    progress: step => steps.push(step),
    steps
  };
}

/** Outputs of a full successful chain, built once and reused by the later stages' tests. */
const chain: Partial<Record<StageName, unknown>> = {};

describe('stage functions', () => {
  test('stageFunctions has the six stages', () => {
    expect(Object.keys(stageFunctions)).toEqual(['ideation', 'planning', 'experiment', 'analysis', 'writing', 'review']);
  });

  test('ideation: searches, admits only retrieved papers as evidence, checks novelty, selects; guidance is in the prompts', async () => {
    const { server, llm } = await team();
    const ctx = context('ideation', llm);
    const r = await ideation(ctx);
    expect(r.status).toBe('done');
    const out = r.output as IdeationOutput;
    expect(schemaErrors('ideation-output', out)).toEqual([]);
    expect(out.literature_status).toBe('searched');
    expect(out.evidence.map(e => e.paper_key)).not.toContain('invented2099ghost');
    // The evidence keys are an enum of the retrieved papers: the invented one was refused and re-asked.
    const ideas = server.chatRequests.filter(q => task(q) === 'gaps-and-hypotheses');
    expect(ideas).toHaveLength(2);
    const schema = ideas[0].response_format as {
      json_schema: { schema: { properties: { evidence: { items: { properties: { paper_key: { enum: string[] } } } } } } };
    };
    expect(schema.json_schema.schema.properties.evidence.items.properties.paper_key.enum).toEqual(out.papers!.slice(0, 8).map(p => p.key));
    expect(out.hypotheses.map(h => h.novelty.verdict)).toEqual(['novel', 'incremental']);
    expect(out.hypotheses[0].novelty.closest_work.length).toBeGreaterThan(0);
    expect(out.selected_hypothesis_id).toBe('H1');
    expect(r.memories?.map(m => m.kind)).toEqual(['project_context', 'decision_history']);
    expect(ctx.steps.length).toBeGreaterThanOrEqual(4);
    expect(server.chatRequests.every(req => JSON.stringify(req.messages).includes('Prefers simple baselines'))).toBe(true);
    // Abstracts reach the model only inside the quoted-data delimiters, under the system rule.
    for (const req of server.chatRequests.filter(q => ['gaps-and-hypotheses', 'novelty-check'].includes(task(q)))) {
      const [system, user] = req.messages.map(m => String(m.content));
      expect(system).toContain(UNTRUSTED_SYSTEM_RULE);
      const quoted = /<<<UNTRUSTED papers #(\w+)>>>\n([\s\S]*?)\n<<<END papers #\1>>>/.exec(user)![0];
      const outside = user.replace(quoted, '');
      for (const paper of out.papers!.filter(p => p.abstract)) expect(outside).not.toContain(paper.abstract!.slice(0, 40));
      expect(quoted).toContain(out.papers![0].title);
    }
    chain.ideation = out;
  });

  test('ideation without any reachable source goes on, unverified', async () => {
    const { llm } = await team();
    const env = { ...process.env };
    Object.assign(process.env, { NANORESEARCH_OPENALEX_URL: 'http://127.0.0.1:9/a', NANORESEARCH_CROSSREF_URL: 'http://127.0.0.1:9/b' });
    // A fresh store: the shared one has these searches cached from the first test.
    const fresh = await Store.open({ path: path.join(mkdtempSync(path.join(tmpdir(), 'nr-stages-')), 'store.duckdb') });
    try {
      const r = await ideation({ ...context('ideation', llm), store: fresh });
      const out = r.output as IdeationOutput;
      expect(r.status).toBe('done');
      expect(out.literature_status).toBe('unverified');
      expect(out.hypotheses.every(h => h.novelty.verdict === 'unverified')).toBe(true);
    } finally {
      process.env = env;
      await fresh.close();
    }
  });

  test('ideation fails closed when the novelty judge fails: never "novel"', async () => {
    const { llm } = await team({ judgeDown: true });
    const r = await ideation(context('ideation', llm));
    expect(r.status).toBe('failed');
    expect(r.error).toMatch(/judge failed/);
    expect((r.output as IdeationOutput).hypotheses.some(h => h.novelty.verdict === 'novel')).toBe(false);
  });

  test('ideation: a novelty score outside its scale is an error, never a verdict', async () => {
    const outOfScale: LlmScript = req =>
      task(req) === 'novelty-check'
        ? JSON.stringify({ verdict: 'novel', score: 14, reason: 'Best idea ever.', closest_keys: [] })
        : JSON.stringify({ skills: [] });
    const { llm } = await team({}, undefined, outOfScale);
    const r = await ideation(context('ideation', llm));
    const out = r.output as IdeationOutput;
    expect(r.status).toBe('failed');
    for (const h of out.hypotheses) {
      expect(h.novelty.verdict).toBe('unverified');
      expect(h.novelty.reason).toMatch(/novelty judge failed: .*\/score: must be <= 10/);
    }
  });

  test("planning: run ids that are empty, repeated or not identifiers are made from the run's method", () => {
    const log: string[] = [];
    const plan = {
      experiment_matrix: [
        { run_id: '.csv', method: 'Nearest centroid', dataset: 'iris' },
        { run_id: '.csv', method: 'Majority class', dataset: 'iris' },
        { run_id: 'majority_class', method: 'Majority class', dataset: 'iris', seed: 1 },
        { run_id: 'ok-run', method: 'x', dataset: 'iris' }
      ]
    } as unknown as ExperimentBlueprint;
    expect(withRunIds(plan, log).experiment_matrix.map(r => r.run_id)).toEqual(['nearest_centroid', 'majority_class', 'majority_class_2', 'ok-run']);
    expect(log).toHaveLength(3);
  });

  test('planning: a baseline the plan names but never runs gets a run; one already run does not', () => {
    const log: string[] = [];
    const plan = {
      datasets: [{ name: 'iris' }],
      baselines: [{ name: 'Majority-class baseline' }, { name: 'Logistic regression' }],
      experiment_matrix: [
        { run_id: 'nsc_0', method: 'nearest shrunken centroid', dataset: 'iris', seed: 0 },
        { run_id: 'nsc_1', method: 'nearest shrunken centroid', dataset: 'iris', seed: 1 },
        { run_id: 'maj', method: 'majority class', dataset: 'iris', seed: 0 }
      ]
    } as unknown as ExperimentBlueprint;
    const planned = withRunIds(withBaselineRuns(plan, log), log);
    expect(planned.experiment_matrix.slice(3)).toEqual([{ run_id: 'logistic_regression', method: 'Logistic regression', dataset: 'iris', seed: 0 }]);
    expect(log[0]).toBe('Baseline "Logistic regression" had no run in the matrix: added one on iris.');
  });

  test('planning: blueprint within budget, critique kept, no re-plan for minor issues', async () => {
    const { server, llm } = await team();
    const r = await planning(context('planning', llm, { ideation: chain.ideation }));
    expect(r.status).toBe('done');
    const bp = r.output as ExperimentBlueprint;
    expect(schemaErrors('experiment-blueprint', bp)).toEqual([]);
    expect(bp.revisions).toBe(0);
    expect(bp.critique).toEqual([{ severity: 'minor', issue: 'Only one dataset', fix: 'add a second dataset later' }]);
    expect(server.chatRequests.filter(q => task(q) === 'experiment-blueprint')).toHaveLength(1);
    chain.planning = bp;
  });

  test('planning: a plan over the profile budget is fatal, re-planned at most twice, then fails', async () => {
    const { server, llm } = await team();
    const tight = { ...PROFILE, resources: { ...PROFILE.resources, max_experiment_minutes: 0.5 } };
    const r = await planning(context('planning', llm, { ideation: chain.ideation }, tight));
    expect(r.status).toBe('failed');
    expect(r.error).toMatch(/exceeds the profile's limit of 0.5 minutes/);
    expect((r.output as ExperimentBlueprint).revisions).toBe(2);
    const plans = server.chatRequests.filter(q => task(q) === 'experiment-blueprint');
    expect(plans).toHaveLength(3);
    expect(JSON.stringify(plans[1].messages)).toContain('fatal problems');
  });

  test('experiment: the generated code runs in the sandbox; a failure is fixed, remembered and recorded', async () => {
    const { server, llm } = await team({ buggyFirstProgram: true });
    const ctx = context('experiment', llm, { ideation: chain.ideation, planning: chain.planning });
    const r = await experiment(ctx);
    expect(r.status).toBe('done');
    const out = r.output as ExperimentOutput;
    expect(out.attempts.map(a => Boolean(a.error))).toEqual([true, false]);
    expect(out.metrics.centroid.accuracy).toBe(0.8571);
    expect(out.metrics.majority.accuracy).toBe(0.3214);
    // The code was asked for as plain text, with the data file's real columns and what is importable.
    const first = server.chatRequests.find(q => task(q) === 'experiment-code')!;
    expect(first.response_format).toBeUndefined();
    expect(JSON.stringify(first.messages)).toContain('data/flowers.csv');
    expect(JSON.stringify(first.messages)).toMatch(/importable besides the standard library: .*numpy/);
    // The fix request carried the traceback and the failing program, quoted as data.
    const fix = server.chatRequests.find(q => task(q) === 'experiment-fix')!;
    const fixText = fix.messages.map(m => String(m.content)).join('\n');
    expect(fixText).toMatch(/<<<UNTRUSTED traceback #\w+>>>[\s\S]*FileNotFoundError[\s\S]*<<<END traceback #\w+>>>/);
    expect(fixText).toMatch(/<<<UNTRUSTED previous program #\w+>>>\nopen\("data\/missing.csv"\)/);
    const failed = r.memories!.find(m => m.kind === 'failed_direction')!;
    expect(failed.conditions).toMatchObject({ dataset: 'flowers', method: 'nearest centroid', failure_mode: 'exception FileNotFoundError' });
    expect(failed.conditions!.budget).toMatch(/2 min/);
    expect(r.trajectory).toMatch(/Fix that worked/);
    // The stage returns its files with checksums (the orchestrator records them in `artifacts`), the same list as its output's.
    const rows = r.artifacts!;
    expect(rows).toEqual(out.artifacts);
    expect(rows.map(a => a.kind).sort()).toEqual(['code', 'data', 'log', 'log', 'manifest', 'metrics']);
    // Each attempt's whole output is kept for the researcher: the failed one's traceback included.
    expect(readFileSync(path.join(workspace, out.experiment_dir, 'logs', 'attempt-1.log'), 'utf8')).toMatch(
      /^# attempt 1: python3 main.py — exit code 1[\s\S]*FileNotFoundError/
    );
    const metricsRow = rows.find(a => a.kind === 'metrics')!;
    expect(metricsRow.bytes).toBe(readFileSync(path.join(workspace, metricsRow.path)).length);
    expect(r.bundleOutputs.isolation!.some(line => line.startsWith('network:'))).toBe(true);
    chain.experiment = out;
  });

  test('experiment: a project that never meets the artifact contract fails after the bounded attempts', async () => {
    let version = 0;
    const { llm } = await team({}, req =>
      // The last attempt's scaffold asks for estimators: this coder names one that does not exist.
      task(req) === 'experiment-estimators'
        ? JSON.stringify({ centroid: 'neighbors.NoSuchClassifier()' })
        : fenced(`print("no results written, version ${++version}")\n`)
    );
    const r = await experiment(context('experiment', llm, { ideation: chain.ideation, planning: chain.planning }));
    expect(r.status).toBe('failed');
    expect(r.error).toMatch(/after 3 attempts: exited with 1: AttributeError: module 'sklearn.neighbors' has no attribute 'NoSuchClassifier'/);
    const out = r.output as ExperimentOutput;
    expect(out.attempts.map(a => a.error)).toEqual([
      'results/metrics.json was not written',
      'results/metrics.json was not written',
      expect.stringMatching(/NoSuchClassifier/)
    ]);
    expect(r.memories!.filter(m => m.kind === 'failed_direction')).toHaveLength(3);
  });

  test("experiment: after two failed programs the model only names each run's estimator, and the built-in program around them runs", async () => {
    const { server, llm } = await team({}, req =>
      task(req) === 'experiment-estimators' ? JSON.stringify({ centroid: 'neighbors.NearestCentroid()' }) : fenced('import missing_module\n')
    );
    const r = await experiment(context('experiment', llm, { ideation: chain.ideation, planning: chain.planning }));
    expect(r.status).toBe('done');
    const out = r.output as ExperimentOutput;
    expect(out.attempts.map(a => a.exitCode)).toEqual([1, null, 0]);
    expect(out.attempts[2].notes).toMatch(/^the model chose the estimators; the program is the built-in scikit-learn pattern/);
    // Measured by the program in the sandbox, for every run of the plan under the plan's metric names.
    expect(Object.keys(out.metrics).sort()).toEqual(['centroid', 'majority']);
    expect(out.metrics.centroid.accuracy).toBeGreaterThan(out.metrics.majority.accuracy);
    expect(out.manifest).toMatchObject({ dataset: 'data/flowers.csv', config: { test_size: 0.3 } });
    // Only the non-baseline run was asked for, under a schema the grammar bounds.
    const asked = server.chatRequests.find(q => task(q) === 'experiment-estimators')!;
    const schema = (asked.response_format as { json_schema: { schema: { required: string[]; properties: Record<string, { maxLength: number }> } } }).json_schema
      .schema;
    expect(schema.required).toEqual(['centroid']);
    expect(schema.properties.centroid.maxLength).toBeLessThanOrEqual(120);
    const code = readFileSync(path.join(workspace, out.experiment_dir, 'main.py'), 'utf8');
    expect(code).toContain('"centroid": (0, neighbors.NearestCentroid()),');
    expect(code).toContain('"majority": (0, dummy.DummyClassifier(strategy="most_frequent")),');
  });

  test('experiment: links the code leaves to paths outside the workspace are refused, never followed', async () => {
    const outside = path.join(mkdtempSync(path.join(tmpdir(), 'nr-outside-')), 'secret.json');
    writeFileSync(outside, '{"leaked": {"accuracy": 1}}');
    const linkMetrics = `import os, json\nos.makedirs("results", exist_ok=True)\nos.symlink(${JSON.stringify(outside)}, "results/metrics.json")\njson.dump({"dataset": "x", "config": {}, "runs": []}, open("results/manifest.json", "w"))\n`;
    const linkExtra = `${EXPERIMENT_PROGRAM}\nos.symlink("/etc/passwd", "results/passwd.txt")\n`;
    let calls = 0;
    const { llm } = await team({}, () => fenced(++calls === 1 ? linkMetrics : linkExtra));
    const ctx = context('experiment', llm, { ideation: chain.ideation, planning: chain.planning });
    const r = await experiment(ctx);
    const out = r.output as ExperimentOutput;
    // The first run's metrics were a link to a host file: refused with the reason, its content never read.
    expect(out.attempts[0].error).toMatch(/results\/metrics.json is a symbolic link/);
    expect(r.status).toBe('done');
    expect(out.metrics).not.toHaveProperty('leaked');
    // The second run left a link to /etc/passwd: not recorded, not read, and said so.
    expect(out.artifacts.map(a => a.path)).not.toContainEqual(expect.stringMatching(/passwd/));
    expect(r.trajectory).toMatch(/Not recorded \(links or special files the code left, never followed\): results\/passwd.txt/);
    expect(readFileSync(outside, 'utf8')).toBe('{"leaked": {"accuracy": 1}}');
  });

  test('experiment: a run of the plan that metrics.json does not measure fails the attempt, and the fix is asked for it', async () => {
    const oneRun =
      'import json, os\nos.makedirs("results", exist_ok=True)\njson.dump({"centroid": {"accuracy": 0.5}}, open("results/metrics.json", "w"))\njson.dump({"dataset": "flowers", "config": {}, "runs": ["centroid"]}, open("results/manifest.json", "w"))\n';
    let calls = 0;
    const { server, llm } = await team({}, () => fenced(++calls === 1 ? oneRun : EXPERIMENT_PROGRAM));
    const r = await experiment(context('experiment', llm, { ideation: chain.ideation, planning: chain.planning }));
    const out = r.output as ExperimentOutput;
    expect(out.attempts[0].error).toBe(
      'results/metrics.json has no entry for run(s) majority of the plan (it has centroid): measure every run of the plan under its run_id'
    );
    expect(JSON.stringify(server.chatRequests.find(q => task(q) === 'experiment-fix')!.messages)).toContain('no entry for run(s) majority');
    expect(r.status).toBe('done');
    expect(Object.keys(out.metrics).sort()).toEqual(['centroid', 'majority']);
  });

  test('experiment: a fix that returns the failing program unchanged is refused without running it', async () => {
    const { llm } = await team({}, () => fenced('open("data/missing.csv").read()\n'));
    const r = await experiment(context('experiment', llm, { ideation: chain.ideation, planning: chain.planning }));
    const out = r.output as ExperimentOutput;
    expect(r.status).toBe('failed');
    expect(out.attempts.map(a => a.exitCode)).toEqual([1, null, null]);
    expect(out.attempts[1].error).toMatch(/^the fix returned the same program unchanged \(still failing: exited with 1/);
    expect(r.memories!.filter(m => m.kind === 'failed_direction')).toHaveLength(1);
  });

  test('analysis: the method is compared with the runs of other methods, never with its own other seeds', () => {
    const plan = {
      method: { name: 'nearest centroid' },
      metrics: [{ name: 'accuracy', goal: 'maximize' }],
      experiment_matrix: [
        { run_id: 'nc_0', method: 'nearest centroid', dataset: 'iris', seed: 0 },
        { run_id: 'nc_1', method: 'nearest centroid', dataset: 'iris', seed: 1 },
        { run_id: 'maj', method: 'majority class', dataset: 'iris', seed: 0 }
      ]
    } as unknown as ExperimentBlueprint;
    const computed = analyzeMetrics({ nc_0: { accuracy: 0.9 }, nc_1: { accuracy: 0.92 }, maj: { accuracy: 0.33 } }, plan);
    expect(computed.method_run).toBe('nc_0');
    expect(computed.comparisons.map(c => c.baseline_run)).toEqual(['maj']);
  });

  test('analysis: comparisons computed in code from the artifact; the phrasing is grounded', async () => {
    const { llm } = await team();
    const r = await analysis(context('analysis', llm, { ...chain }));
    const out = r.output as AnalysisOutput;
    expect(out.method_run).toBe('centroid');
    expect(out.comparisons.find(c => c.metric === 'accuracy')).toMatchObject({ baseline_run: 'majority', difference: 0.5357, method_better: true });
    expect(out.phrased_by_model).toBe(true);
    expect(out.table).toContain('| centroid | 0.8571 | 0.8493 |');
    chain.analysis = out;
  });

  test('writing: a grounded paper in Markdown, LaTeX and BibTeX with retrieved references only', async () => {
    const { server, llm } = await team();
    const r = await writing(context('writing', llm, { ...chain }));
    expect(r.error).toBeUndefined();
    expect(r.status).toBe('done');
    const out = r.output as WritingOutput;
    expect(out.ungrounded).toEqual([]);
    const md = readFileSync(path.join(workspace, out.paper_path), 'utf8');
    expect(md).toMatch(/^# Nearest Centroids/);
    expect(md).toContain('0.8571');
    expect(readFileSync(path.join(workspace, out.tex_path), 'utf8')).toMatch(/\\cite\{tibshirani2002diagnosis\}/);
    expect(readFileSync(path.join(workspace, out.bib_path), 'utf8')).toContain('@article{cover1967nearest,');
    // Each section after the first got the summaries of those before it.
    const conclusion = server.chatRequests.find(q => task(q) === 'write-section:conclusion')!;
    expect(JSON.stringify(conclusion.messages)).toContain('Experiments: We use a 70/30 split');
    chain.writing = out;
  });

  test('writing: an invented number is rewritten twice at most, then its sentence is left out and listed; the paper states only grounded numbers', async () => {
    const { server, llm } = await team({ inventNumber: true });
    const r = await writing(context('writing', llm, { ...chain }));
    // The second pass asks about the same sentence again: answered from the response cache, not paid twice.
    expect(server.chatRequests.filter(q => task(q) === 'revise-section:abstract')).toHaveLength(1);
    const out = r.output as WritingOutput;
    expect(out.rewritten).toEqual(['abstract']);
    expect(out.dropped_sentences).toEqual([{ section: 'abstract', text: expect.stringContaining('12.5% faster') }]);
    expect(r.bundleOutputs.left_out_sentences).toEqual([expect.stringContaining('12.5% faster')]);
    expect(r.trajectory).toMatch(/Left out 1 sentence\(s\) whose numbers no artifact holds/);
    expect(r.status).toBe('done');
    expect(out.ungrounded).toEqual([]);
    const md = readFileSync(path.join(workspace, out.paper_path), 'utf8');
    expect(md).not.toContain('12.5');
    // The rest of the abstract stays, with its measured numbers.
    expect(out.sections.find(s => s.name === 'abstract')!.text).toContain('0.8571');
  });

  test('writing: a section that would be left empty by removing its ungroundable sentences fails the stage, naming the numbers', async () => {
    const script = researchScript();
    const boastful: LlmScript = req => (/^(write|revise)-section:conclusion$/.test(task(req)) ? 'It is 42% better than everything.' : script.writing(req));
    const server = await startScriptedLlmServer(routeByModel({ ...script, writing: boastful }));
    servers.push(server);
    const llm = createLlm({ provider: 'openai', baseURL: server.url, apiKey: 'test-key', models: ROLE_MODELS, maxRetries: 0 });
    const r = await writing(context('writing', llm, { ...chain }));
    expect(r.status).toBe('failed');
    expect(r.error).toMatch(/^failed: ungrounded numbers: 42% \(conclusion/);
    expect((r.output as WritingOutput).dropped_sentences).toEqual([]);
  });

  test('writing: a section keeps whole sentences only, without the heading the model repeated, within its length', () => {
    expect(wholeSentences('Introduction\n\nClass means are strong baselines. They are cheap.')).toBe('Class means are strong baselines. They are cheap.');
    expect(wholeSentences('Method The baseline predicts the majority class.')).toBe('The baseline predicts the majority class.');
    // Not a heading: a sentence that starts with the word.
    expect(wholeSentences('Methods are compared on one split.')).toBe('Methods are compared on one split.');
    const looping = 'The method is simple. ' + Array.from({ length: 30 }, (_, i) => `It has also been shown to work on case ${'x'.repeat(i + 1)}.`).join(' ');
    const cut = wholeSentences(looping, 40);
    expect(cut.split(/\s+/).length).toBeLessThanOrEqual(40);
    expect(cut).toMatch(/^The method is simple\. It has also been shown to work on case x\..*\.$/);
    // The cap never empties a section: its first sentence stays.
    expect(wholeSentences('One very long first sentence with many words in it.', 3)).toBe('One very long first sentence with many words in it.');
  });

  test('writing: citations of keys outside the bibliography are taken out, known ones in the same group kept', () => {
    const known = new Set(['cover1967nearest', 'tibshirani2002diagnosis']);
    expect(withKnownCitations('Prior rules [@cover1967nearest; @smith2020deep] and centroids [@jones2019].', known)).toEqual({
      text: 'Prior rules [@cover1967nearest] and centroids.',
      removed: ['smith2020deep', 'jones2019']
    });
    expect(withKnownCitations('Shrunken centroids [@tibshirani2002diagnosis].', known)).toEqual({
      text: 'Shrunken centroids [@tibshirani2002diagnosis].',
      removed: []
    });
  });

  test('review: per-section scores, overall mean, citations checked against Crossref', async () => {
    const { llm } = await team();
    const r = await review(context('review', llm, { ...chain }));
    expect(r.status).toBe('done');
    const out = r.output as ReviewOutput;
    expect(out.section_reviews).toHaveLength(6);
    out.section_reviews.forEach(s => expect(schemaErrors('section-review', s)).toEqual([]));
    expect(out.overall_score).toBe(8);
    expect(out.citation_check).toMatchObject({ missing: [], mismatched: [] });
    expect(out.citation_check.verified).toContain('cover1967nearest');
    // Tibshirani's DOI is not in the Crossref fixture: unverifiable, not a failure.
    expect(out.citation_check.unverifiable).toContain('tibshirani2002diagnosis');
  });

  test('review: weak sections are revised within the bound and re-reviewed', async () => {
    const { server, llm } = await team({ reviewScore: 5 });
    const r: StageResult = await review(context('review', llm, { ...chain }));
    const out = r.output as ReviewOutput;
    // Each round revises at most two weak sections, those not yet revised first, and re-reviews them
    // (still 5/10): two rounds revise four sections in all; the calls stay bounded.
    expect(out.rounds).toBe(2);
    expect(server.chatRequests.filter(q => task(q).startsWith('revise-section:'))).toHaveLength(2 * MAX_SECTIONS_PER_ROUND);
    expect(server.chatRequests.filter(q => task(q).startsWith('section-review:'))).toHaveLength(6 + 2 * MAX_SECTIONS_PER_ROUND);
    expect(out.section_reviews.filter(s => s.revised).map(s => s.section)).toEqual(['abstract', 'introduction', 'related_work', 'method']);
    expect(out.overall_score).toBe(5);
  });

  test('review: a citation that is not in the bibliography fails the stage', async () => {
    const { llm } = await team();
    const bad = { ...(chain.writing as WritingOutput) };
    bad.sections = bad.sections.map(s => (s.name === 'introduction' ? { ...s, text: `${s.text} See [@ghost2024paper].` } : s));
    const r = await review(context('review', llm, { ...chain, writing: bad }));
    expect(r.status).toBe('failed');
    expect(r.error).toMatch(/ghost2024paper \(not in the bibliography\)/);
  });

  test('review: a failed judge fails the stage, it never passes', async () => {
    const { llm } = await team({ judgeDown: true });
    const r = await review(context('review', llm, { ...chain }));
    expect(r.status).toBe('failed');
    expect(r.error).toMatch(/review judge failed/);
    expect(existsSync(path.join(workspace, 'paper', 'paper.md'))).toBe(true);
  });
});
