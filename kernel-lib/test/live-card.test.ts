/**
 * The stage card from the first moment (phases, live usage, the call in flight), the files a
 * stage wrote as links, and the LLM layer's activity events the live card is built from.
 */
import { createHash } from 'crypto';
import { promises as fs, writeFileSync } from 'fs';
import * as path from 'path';
import type { StageBundle } from '@nanoresearch/schema';
import { StageDisplay } from '../src/display';
import { createLlm, type LlmActivity } from '../src/llm';
import { LiveStageCard, artifactKind, artifactLinks, previewOf, type StageContext, type StageFn } from '../src/orchestrator';
import { startScriptedLlmServer } from '../src/testing';
import { schemaErrors } from '../src/validate';
import { Stage } from '../src/stage';
import { openTestLab, requestText, shownBundles, type TestLab } from './lab-fixture';

const TOPIC = 'Live cards for small MLPs';

describe('live stage card', () => {
  let t: TestLab | undefined;
  afterEach(async () => {
    await t?.close();
    t = undefined;
  });

  test('is shown before retrieval and the planner, then follows the phases with live usage and the call in flight', async () => {
    let plannerAsked = -1;
    let displaysWhenStageCalled = -1;
    t = await openTestLab({
      scripts: {
        planner: req => {
          plannerAsked = t!.displays.length;
          return {
            content: JSON.stringify({ selected_skill_ids: [], selected_memory_ids: [], prompt_plan: 'plan', update_memory: [], update_skill: [] }),
            usage: { prompt_tokens: 30, completion_tokens: 7 }
          };
        },
        // The stage's own call is slow, so the card shows it in flight.
        default: req => {
          displaysWhenStageCalled = t!.displays.length;
          return { content: `answer to ${requestText(req).length} chars`, usage: { prompt_tokens: 100, completion_tokens: 20 }, delayMs: 400 };
        }
      }
    });
    const project = await t.lab.project(TOPIC);
    const idea = await project.ideate();
    const bundles = shownBundles(t.displays);
    for (const bundle of bundles) expect(schemaErrors('stage-bundle', bundle)).toEqual([]);

    // The first card came before the planner was asked, under the stage run's final id.
    expect(plannerAsked).toBeGreaterThanOrEqual(1);
    expect(bundles[0]).toMatchObject({ status: 'running', stage_run_id: idea.id, progress: { phase: 'retrieving' } });
    expect(bundles[0].started_at).toBe(idea.run.started_at);
    const phases = bundles.map(b => b.progress?.phase ?? b.status).filter((p, i, all) => p !== all[i - 1]);
    expect(phases).toEqual(['retrieving', 'planning', 'running', 'learning', 'done']);

    // While the stage's call was out: the call on the card, the planner's tokens already counted.
    const inFlight = bundles.slice(displaysWhenStageCalled).find(b => b.progress?.llm);
    expect(inFlight?.progress?.llm).toMatchObject({ role: 'ideation', model: 'default' });
    expect(inFlight!.usage).toMatchObject({ prompt_tokens: 30, completion_tokens: 7, calls: 1 });
    // After it: its tokens counted, no call in flight, the clock moving.
    const after = bundles.find(b => b.status === 'running' && b.usage.calls === 2 && !b.progress?.llm);
    expect(after?.usage).toMatchObject({ prompt_tokens: 130, completion_tokens: 27 });
    expect(after!.usage.wall_ms).toBeGreaterThanOrEqual(400);
    // The final card has the stored usage (the Update step's skill review call included), no progress.
    const final = bundles[bundles.length - 1];
    expect(final).toMatchObject({ status: 'done', progress: null });
    expect(final.usage).toEqual(idea.run.usage);
    expect(final.usage.calls).toBe(3);
  });

  test('onProgress hears each phase and step change, even those closer together than a display update', async () => {
    const steps: string[] = [];
    const quick: StageFn = async (ctx: StageContext) => {
      ctx.progress('one');
      ctx.progress('two');
      ctx.progress('three', 2, 3);
      return { status: 'done', output: {}, summary: 'ok', bundleOutputs: {}, trajectory: 'quick', markdown: 'quick' };
    };
    t = await openTestLab({ stages: () => ({ ideation: quick }) });
    await (await t.lab.project(TOPIC)).ideate({ onProgress: b => b.progress && steps.push(b.progress.step) });
    const unique = steps.filter((s, i) => s !== steps[i - 1]);
    expect(unique).toEqual(expect.arrayContaining(['retrieving skills and memories', 'started', 'one', 'two', 'three']));
    expect(unique.indexOf('one')).toBeLessThan(unique.indexOf('three'));
    // The notebook did not get one update per step: the three came in one tick, and the learning
    // phase (shown at once) was already the latest state when the merged update was due.
    const running = shownBundles(t.displays).filter(b => b.status === 'running' && b.progress?.phase === 'running');
    expect(running.map(b => b.progress?.step)).toEqual(['started']);
  });

  test('a stage that cannot start because its inputs cannot be read leaves a failed card, not a spinning one', async () => {
    t = await openTestLab();
    const project = await t.lab.project(TOPIC);
    await t.lab.store.write(q => q.run('delete from profiles'));
    await expect(project.ideate()).rejects.toThrow(/profile/);
    const last = shownBundles(t.displays).pop()!;
    expect(last).toMatchObject({ status: 'failed', progress: null, error: expect.stringMatching(/profile/) });
  });
});

describe('files a stage wrote', () => {
  let t: TestLab | undefined;
  const cwd = process.cwd();
  afterEach(async () => {
    process.chdir(cwd);
    await t?.close();
    t = undefined;
  });

  /** A writing-like stage: the paper, its LaTeX and BibTeX under paper/, named in the output by *_path fields. */
  const writer: StageFn = async ctx => {
    await fs.mkdir(path.join(ctx.workspace, 'paper'), { recursive: true });
    for (const [file, text] of [
      ['paper.md', '# A paper\n\nIt works.\n'],
      ['paper.tex', '\\section{A}'],
      ['references.bib', '@article{a,}']
    ]) {
      writeFileSync(path.join(ctx.workspace, 'paper', file), text);
    }
    await fs.mkdir(path.join(ctx.workspace, 'results'), { recursive: true });
    const metrics = '{"r1": {"accuracy": 0.9}}';
    writeFileSync(path.join(ctx.workspace, 'results', 'metrics.json'), metrics);
    return {
      // A file the stage produced that its output does not name: the orchestrator records it in `artifacts`.
      artifacts: [{ path: 'results/metrics.json', kind: 'metrics', sha256: createHash('sha256').update(metrics).digest('hex'), bytes: metrics.length }],
      status: 'done',
      output: { paper_path: 'paper/paper.md', tex_path: 'paper/paper.tex', bib_path: 'paper/references.bib', missing_path: 'paper/never-written.pdf' },
      summary: 'a paper',
      bundleOutputs: { paper_path: 'paper/paper.md' },
      trajectory: 'Wrote the paper in three formats.',
      markdown: '### A paper'
    };
  };

  test('are links on the card relative to the notebook folder, with the stage log, and survive a reload from the store', async () => {
    t = await openTestLab({ stages: () => ({ writing: writer }) });
    process.chdir(t.home);
    const project = await t.lab.project(TOPIC);
    const stage = await project.write();
    const folder = path
      .relative(await fs.realpath(t.home), await fs.realpath(project.workspace))
      .split(path.sep)
      .join('/');
    expect(stage.bundle.artifacts).toEqual([
      { path: 'paper/paper.md', kind: 'paper', href: `${folder}/paper/paper.md` },
      { path: 'paper/paper.tex', kind: 'latex', href: `${folder}/paper/paper.tex` },
      { path: 'paper/references.bib', kind: 'bibtex', href: `${folder}/paper/references.bib` },
      { path: 'results/metrics.json', kind: 'result', href: `${folder}/results/metrics.json` },
      { path: 'logs/writing-1.log', kind: 'log', href: `${folder}/logs/writing-1.log` }
    ]);
    expect(schemaErrors('stage-bundle', stage.bundle)).toEqual([]);
    const log = await fs.readFile(path.join(project.workspace, 'logs', 'writing-1.log'), 'utf8');
    expect(log).toMatch(/^writing attempt 1 \(stage run sr_\w+\): done\n/);
    expect(log).toContain('Wrote the paper in three formats.');
    expect(log).toMatch(/Update:\n- /);
    // The Markdown fallback links them too, for nbconvert and GitHub.
    expect(String(t.displays[t.displays.length - 1].data['text/markdown'])).toContain(`[paper/paper.md](${folder}/paper/paper.md)`);
    // Rebuilt from the store (a card refreshed after feedback, Stage.load in another kernel).
    expect((await Stage.load(t.lab, stage.id)).bundle.artifacts).toEqual(stage.bundle.artifacts);
    // What the stage returned as produced files is in the artifacts table, with its checksum.
    const recorded = await t.lab.store.read(q =>
      q.all<{ path: string; kind: string; bytes: number }>('select path, kind, bytes from artifacts where stage_run_id = $1', [stage.id])
    );
    expect(recorded).toEqual([{ path: 'results/metrics.json', kind: 'metrics', bytes: 25 }]);
  });

  test('in a hidden folder have no link (JupyterLab does not open hidden paths), but are still listed', () => {
    const links = artifactLinks([{ path: 'paper/paper.md', kind: 'paper' }], '/srv/lab/.nanoresearch/projects/p1', '/srv/lab/notebooks');
    expect(links).toEqual([{ path: 'paper/paper.md', kind: 'paper', href: null }]);
    const above = artifactLinks([{ path: 'run 1/code.py', kind: 'code' }], '/srv/lab/nanoresearch/p1', '/srv/lab/notebooks');
    expect(above).toEqual([{ path: 'run 1/code.py', kind: 'code', href: '../nanoresearch/p1/run 1/code.py' }]);
  });

  test('are classified by what a researcher opens them for', () => {
    expect(
      [
        'paper/paper.md',
        'paper/paper.tex',
        'paper/references.bib',
        'experiments/x/main.py',
        'experiments/x/results/metrics.json',
        'logs/writing-1.log',
        'experiments/x/data/iris.csv',
        'experiments/x/plot.png',
        'experiments/x/run.log'
      ].map(artifactKind)
    ).toEqual(['paper', 'latex', 'bibtex', 'code', 'result', 'log', 'data', 'file', 'log']);
  });
});

describe('LiveStageCard', () => {
  test('merges updates closer together than the interval, always showing the latest, and never updates after close', async () => {
    const shown: StageBundle[] = [];
    let now = 1_000;
    const display = new StageDisplay({ writer: message => shown.push(message.data['application/vnd.nanoresearch.stage+json'] as StageBundle) });
    const live = new LiveStageCard({
      display,
      bundle: (progress, usage) => ({
        version: 1,
        stage: 'ideation',
        project_id: 'p',
        stage_run_id: 's',
        status: 'running',
        title: 'T',
        summary: '',
        outputs: {},
        skills_used: [],
        memories_used: [],
        progress,
        usage
      }),
      startedAt: 1_000,
      intervalMs: 50,
      now: () => now
    });
    live.phase('retrieving', 'retrieving');
    live.step('a');
    live.step('b');
    expect(shown.map(b => b.progress?.step)).toEqual(['retrieving']);
    await new Promise(resolve => setTimeout(resolve, 120));
    now = 1_200;
    expect(shown.map(b => b.progress?.step)).toEqual(['retrieving', 'b']);
    live.activity({ type: 'start', callId: 'c1', role: 'coding', model: 'm', startedAt: 1_100 });
    live.activity({ type: 'text', callId: 'c1', role: 'coding', model: 'm', startedAt: 1_100, tokens: 3, text: 'def main():\n    print(1)' });
    await new Promise(resolve => setTimeout(resolve, 120));
    expect(shown[shown.length - 1].progress?.llm).toEqual({
      role: 'coding',
      model: 'm',
      started_at: new Date(1_100).toISOString(),
      tokens: 3,
      preview: 'def main(): print(1)'
    });
    expect(shown[shown.length - 1].usage.wall_ms).toBe(200);
    live.activity({ type: 'end', callId: 'c1', role: 'coding', model: 'm', usage: { promptTokens: 5, completionTokens: 3 }, costUsd: 0, cached: false });
    live.close();
    const count = shown.length;
    await new Promise(resolve => setTimeout(resolve, 120));
    expect(shown).toHaveLength(count);
    expect(live.spent()).toMatchObject({ prompt_tokens: 5, completion_tokens: 3, calls: 1 });
  });

  test('a preview is the end of the text on one line, starting at a word', () => {
    expect(previewOf('short  answer\n')).toBe('short answer');
    const long = `${'word '.repeat(40)}the end`;
    const preview = previewOf(long);
    expect(preview.startsWith('…word')).toBe(true);
    expect(preview.endsWith('the end')).toBe(true);
    expect(preview.length).toBeLessThanOrEqual(81);
  });
});

describe('LLM activity', () => {
  test('a scope reports each call as start and end (tokens, errors, cache hits), to its own listeners and those of the scopes above it', async () => {
    const server = await startScriptedLlmServer(req =>
      requestText(req).includes('fail')
        ? { status: 400, body: { error: { message: 'bad request' } } }
        : { content: 'ok', usage: { prompt_tokens: 11, completion_tokens: 2 } }
    );
    try {
      const llm = createLlm({ provider: 'openai', baseURL: server.url, apiKey: 'k', models: { default: 'm' }, maxRetries: 0 });
      const outer: LlmActivity[] = [];
      const inner: LlmActivity[] = [];
      const scope = llm.scoped({ onActivity: a => outer.push(a) }).scoped({ onActivity: a => inner.push(a) });
      await scope.complete({ role: 'ideation', messages: [{ role: 'user', content: 'hello' }] });
      await scope.complete({ role: 'ideation', messages: [{ role: 'user', content: 'hello' }] });
      await expect(scope.complete({ role: 'judge', messages: [{ role: 'user', content: 'please fail' }] })).rejects.toThrow(/400/);
      expect(inner).toEqual(outer);
      expect(inner.map(a => [a.type, a.role, a.type === 'end' ? a.cached : null])).toEqual([
        ['start', 'ideation', null],
        ['end', 'ideation', false],
        ['start', 'ideation', null],
        ['end', 'ideation', true],
        ['start', 'judge', null],
        ['end', 'judge', false]
      ]);
      expect(inner[1]).toMatchObject({ usage: { promptTokens: 11, completionTokens: 2 }, model: 'm' });
      expect(inner[5]).toMatchObject({ error: expect.stringMatching(/400/) });
      expect(new Set(inner.map(a => a.callId)).size).toBe(3);
      // A listener that throws never fails the call.
      const throwing = llm.scoped({
        onActivity: () => {
          throw new Error('display broke');
        }
      });
      await expect(throwing.complete({ role: 'ideation', messages: [{ role: 'user', content: 'again' }] })).resolves.toMatchObject({ text: 'ok' });
    } finally {
      await server.close();
    }
  });
});
