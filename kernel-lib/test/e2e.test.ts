/**
 * End to end: every stage through the Lab API (project.run()) against the scripted
 * OpenAI-compatible server and the literature fixture server, with the experiment's code
 * really running in the sandbox. The scripted writer takes its numbers from the prompts, so a
 * grounded paper proves the measured results flow from the artifacts into the writing.
 */
import { mkdtempSync, readFileSync } from 'fs';
import { tmpdir } from 'os';
import * as path from 'path';
import { Lab } from '../src/lab';
import type { ExperimentOutput, ReviewOutput, WritingOutput } from '../src/stages';
import { checkGrounding } from '../src/grounding';
import { LiteratureFixtureServer, routeByModel, startLiteratureFixtureServer, startScriptedLlmServer } from '../src/testing';
import { selectFirstPlanner } from './lab-fixture';
import { placeDataset, researchScript, ResearchScriptOptions, ROLE_MODELS } from './fixtures/e2e/research-script';

/** The scripted models cost nothing; under the profiles' cost caps they need a price all the same. */
const FREE_SCRIPTED_MODELS = Object.fromEntries(Object.values(ROLE_MODELS).map(model => [model, { inputPerMTok: 0, outputPerMTok: 0 }]));

const TOPIC = 'Nearest-centroid classification of a small flower CSV against a majority baseline';
let lit: LiteratureFixtureServer;
const savedEnv = { ...process.env };

beforeAll(async () => {
  lit = await startLiteratureFixtureServer();
  Object.assign(process.env, lit.env, { NANORESEARCH_LITERATURE_SOURCES: 'openalex,crossref', OPENAI_API_KEY: 'sk-parent-secret' });
});
afterAll(async () => {
  process.env = savedEnv;
  await lit.close();
});

async function runProject(options: ResearchScriptOptions) {
  const llmServer = await startScriptedLlmServer(routeByModel(researchScript(options, selectFirstPlanner)));
  const home = mkdtempSync(path.join(tmpdir(), 'nr-e2e-'));
  const lab = await Lab.open({
    home,
    workspaces: path.join(home, 'projects'),
    llm: { provider: 'openai', baseURL: llmServer.url, apiKey: 'test-key', models: ROLE_MODELS, prices: FREE_SCRIPTED_MODELS, maxRetries: 0 },
    display: null
  });
  const project = await lab.project(TOPIC, { profile: 'resource-constrained' });
  placeDataset(project.workspace);
  const progress: string[] = [];
  const stages = await project.run({ onProgress: b => b.progress && progress.push(`${b.stage}: ${b.progress.step}`) });
  return {
    lab,
    project,
    stages,
    progress,
    close: async () => {
      await lab.close();
      await llmServer.close();
    }
  };
}

test('project.run(): ideation → review with measured, grounded results', async () => {
  const { lab, project, stages, progress, close } = await runProject({});
  try {
    expect(stages.map(s => [s.stage, s.status])).toEqual([
      ['ideation', 'done'],
      ['planning', 'done'],
      ['experiment', 'done'],
      ['analysis', 'done'],
      ['writing', 'done'],
      ['review', 'done']
    ]);
    const experiment = stages[2].output as ExperimentOutput;
    // Measured by really running the fixture program in the sandbox.
    const metricsFile = path.join(project.workspace, experiment.metrics_path);
    const measured = JSON.parse(readFileSync(metricsFile, 'utf8'));
    expect(measured).toEqual({ centroid: { accuracy: 0.8571, macro_f1: 0.8493 }, majority: { accuracy: 0.3214, macro_f1: 0.1622 } });
    expect(experiment.isolation.limits).toContain('env=scrubbed');

    const writing = stages[4].output as WritingOutput;
    const paper = readFileSync(path.join(project.workspace, writing.paper_path), 'utf8');
    expect(paper).toContain('0.8571');
    expect(paper).toContain('0.5357');
    // Every number in the final paper is grounded in the artifacts.
    const check = checkGrounding(paper, writing.grounding_artifacts);
    expect(check.ungrounded).toEqual([]);
    expect(check.numbers.length).toBeGreaterThanOrEqual(8);

    const review = stages[5].output as ReviewOutput;
    expect(review.overall_score).toBe(8);
    expect(review.citation_check.missing).toEqual([]);
    expect(review.citation_check.verified).toContain('cover1967nearest');

    const artifacts = await lab.sql('select kind, count(*) as n from artifacts group by kind order by kind');
    expect(JSON.stringify(artifacts)).toMatch(/metrics/);
    expect(progress.some(p => p.startsWith('experiment: running the experiment'))).toBe(true);
  } finally {
    await close();
  }
}, 120_000);

test('project.run(): an invented number is left out of the paper and listed on its card; the run goes on to review', async () => {
  const { stages, project, close } = await runProject({ inventNumber: true });
  try {
    const writing = stages.find(s => s.stage === 'writing')!;
    expect(writing.status).toBe('done');
    expect(writing.bundle.outputs.ungrounded_numbers).toEqual([]);
    expect(writing.bundle.outputs.left_out_sentences).toEqual([expect.stringContaining('12.5% faster')]);
    const out = writing.output as WritingOutput;
    expect(readFileSync(path.join(project.workspace, out.paper_path), 'utf8')).not.toContain('12.5');
    expect(stages.find(s => s.stage === 'review')?.status).toBe('done');
  } finally {
    await close();
  }
}, 120_000);
