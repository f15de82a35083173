import Ajv2020 from 'ajv/dist/2020';
import * as schema from '@nanoresearch/schema';
import type { StageBundle } from '@nanoresearch/schema';
import { IArtifactOpener, renderArtifacts, renderStageCard, sectionLabel, StageCardRenderer, statusLabel, tickClocks } from '../card';
import { STAGE_MIME_TYPE } from '../constants';
import { bundleFixture } from './helpers';

const text = (el: Element | null) => (el?.textContent ?? '').replace(/\s+/g, ' ').trim();
const flush = () => new Promise(resolve => setTimeout(resolve, 0));

const STARTED = '2026-11-20T10:00:00.000Z';
const T0 = Date.parse(STARTED);

/** A stage that started at STARTED and is in `phase`, with usage so far. */
function runningBundle(progress: StageBundle['progress']): StageBundle {
  return {
    ...bundleFixture(),
    status: 'running',
    summary: '',
    outputs: {},
    feedback: [],
    started_at: STARTED,
    progress,
    usage: { prompt_tokens: 300, completion_tokens: 40, calls: 2, cost_usd: 0, wall_ms: 1200, cache_hits: 0 }
  };
}

function validator() {
  const ajv = new Ajv2020({ strict: false, validateFormats: false });
  for (const [name, s] of Object.entries(schema.schemas)) {
    ajv.addSchema(s as object, name);
  }
  return ajv.getSchema('stage-bundle.schema.json')!;
}

/** An opener that resolves like a notebook in `work/` and records what it opened. */
function recordingOpener(): IArtifactOpener & { opened: Array<[string, string | undefined]> } {
  const opened: Array<[string, string | undefined]> = [];
  return {
    opened,
    resolve: async href => `work/${href}`,
    downloadUrl: async path => `/files/${path}`,
    open: async (path, factory) => {
      opened.push([path, factory]);
    }
  };
}

describe('a running stage card', () => {
  it('shows the phase on its pill, the time since the stage started, and the tokens and calls so far', () => {
    const bundle = runningBundle({ step: 'retrieving skills and memories', phase: 'retrieving' });
    expect(validator()(bundle)).toBe(true);
    const card = renderStageCard(bundle, T0 + 3400);
    expect(text(card.querySelector('.jp-nr-status-pill'))).toBe('retrieving');
    expect(text(card.querySelector('.jp-nr-elapsed'))).toBe('3.4 s');
    expect(text(card.querySelector('.jp-nr-tokens'))).toBe('340 tokens so far');
    expect(text(card.querySelector('.jp-nr-calls'))).toBe('2 calls');
    expect(text(card.querySelector('.jp-nr-progress-label'))).toBe('retrieving skills and memories');
    // The clock moves without a new bundle.
    tickClocks(card, T0 + 65_000);
    expect(text(card.querySelector('.jp-nr-elapsed'))).toBe('1 min 5 s');
  });

  it('shows the LLM call in flight with its own clock, its live token count and the end of its text', () => {
    const bundle = runningBundle({
      step: 'writing the experiment code',
      phase: 'running',
      done: 0,
      total: 6,
      llm: { role: 'coding', model: 'qwen2.5-coder', started_at: '2026-11-20T10:00:02.000Z', tokens: 85, preview: '…model.fit(X_train, y_train)' }
    });
    expect(validator()(bundle)).toBe(true);
    const card = renderStageCard(bundle, T0 + 12_000);
    expect(text(card.querySelector('.jp-nr-status-pill'))).toBe('running');
    const call = card.querySelector('.jp-nr-llm-call')!;
    expect(text(call)).toBe('waiting for the coding model · 10.0 s · 85 tokens…model.fit(X_train, y_train)');
    expect(call.getAttribute('title')).toBe('model qwen2.5-coder');
    expect(text(call.querySelector('.jp-nr-call-preview'))).toBe('…model.fit(X_train, y_train)');
    // Without a streaming provider: the call and its clock, no token count.
    const quiet = renderStageCard(runningBundle({ step: 'asking', phase: 'planning', llm: { role: 'planner', started_at: STARTED } }), T0 + 2000);
    expect(text(quiet.querySelector('.jp-nr-llm-call'))).toBe('waiting for the planner model · 2.0 s');
  });

  it('a finished card shows the status and the stored time, no clock', () => {
    const card = renderStageCard(bundleFixture(), T0);
    expect(text(card.querySelector('.jp-nr-status-pill'))).toBe('done');
    expect(card.querySelector('[data-nr-since]')).toBeNull();
    expect(text(card.querySelector('.jp-nr-elapsed'))).toBe('41.3 s');
    expect(text(card.querySelector('.jp-nr-tokens'))).toBe('12.7k tokens');
  });

  it('the renderer keeps the clock moving while the stage runs, and stops it when the final card arrives', async () => {
    jest.useFakeTimers({ now: T0 + 1000 });
    try {
      const renderer = new StageCardRenderer(STAGE_MIME_TYPE, null);
      await renderer.renderModel({ data: { [STAGE_MIME_TYPE]: runningBundle({ step: 'planning', phase: 'planning' }) } } as any);
      expect(text(renderer.node.querySelector('.jp-nr-elapsed'))).toBe('1.0 s');
      jest.advanceTimersByTime(3000);
      expect(text(renderer.node.querySelector('.jp-nr-elapsed'))).toBe('4.0 s');
      await renderer.renderModel({ data: { [STAGE_MIME_TYPE]: bundleFixture() } } as any);
      expect(jest.getTimerCount()).toBe(0);
      renderer.dispose();
    } finally {
      jest.useRealTimers();
    }
  });

  it('status labels: the phase while running, else the status', () => {
    expect(statusLabel(runningBundle({ step: 's', phase: 'learning' }))).toBe('learning');
    expect(statusLabel(runningBundle({ step: 's' }))).toBe('running');
    expect(statusLabel({ ...bundleFixture(), status: 'failed' })).toBe('failed');
  });
});

describe('the files a stage wrote', () => {
  const artifacts: NonNullable<StageBundle['artifacts']> = [
    { path: 'paper/paper.md', kind: 'paper', href: 'nanoresearch/mlps-a1b2c3/paper/paper.md' },
    { path: 'paper/paper.tex', kind: 'latex', href: 'nanoresearch/mlps-a1b2c3/paper/paper.tex' },
    { path: 'results/metrics.json', kind: 'result', href: 'nanoresearch/mlps-a1b2c3/results/metrics.json' },
    { path: 'run 1/main.py', kind: 'code', href: 'nanoresearch/mlps-a1b2c3/run 1/main.py' },
    { path: 'logs/writing-1.log', kind: 'log', href: null }
  ];

  it('are links that open in JupyterLab, the paper as rendered Markdown', async () => {
    const opener = recordingOpener();
    const bundle = { ...bundleFixture(), outputs: { paper_path: 'paper/paper.md' }, artifacts };
    expect(validator()(bundle)).toBe(true);
    const card = renderStageCard(bundle, T0, opener);
    const links = Array.from(card.querySelectorAll<HTMLAnchorElement>('a.jp-nr-artifact-link'));
    expect(links.map(text)).toEqual(['paper/paper.md', 'paper/paper.tex', 'results/metrics.json', 'run 1/main.py']);
    expect(Array.from(card.querySelectorAll('.jp-nr-artifact-kind')).map(text)).toEqual(['Paper', 'LaTeX', 'Results', 'Code', 'Log']);
    // The paper is not listed a second time as a bare path.
    expect(Array.from(card.querySelectorAll('.jp-nr-section-title')).map(text)).not.toContain('Paper');
    await flush();
    expect(links[3].getAttribute('href')).toBe('/files/work/nanoresearch/mlps-a1b2c3/run 1/main.py');
    links[0].click();
    links[3].click();
    await flush();
    expect(opener.opened).toEqual([
      ['work/nanoresearch/mlps-a1b2c3/paper/paper.md', 'Markdown Preview'],
      ['work/nanoresearch/mlps-a1b2c3/run 1/main.py', undefined]
    ]);
  });

  it('a file in a hidden folder is listed with why it does not open, and nothing links without an opener', () => {
    const withOpener = renderArtifacts(artifacts, recordingOpener());
    const hidden = withOpener.querySelector('.jp-nr-unlinked')!;
    expect(text(hidden)).toBe('Loglogs/writing-1.log');
    expect(hidden.getAttribute('title')).toMatch(/hidden folder.*workspace/);
    const bare = renderArtifacts(artifacts, null);
    expect(bare.querySelectorAll('a')).toHaveLength(0);
    expect(bare.querySelectorAll('.jp-nr-unlinked')).toHaveLength(5);
  });

  it('many files: the first ones listed, the rest folded under "more"', () => {
    const many = Array.from({ length: 12 }, (_, i) => ({ path: `results/r${i}.json`, kind: 'result' as const, href: `x/results/r${i}.json` }));
    const node = renderArtifacts(many, recordingOpener());
    expect(node.querySelectorAll(':scope > ul > li')).toHaveLength(8);
    expect(text(node.querySelector('details > summary'))).toBe('4 more');
    expect(node.querySelectorAll('details li')).toHaveLength(4);
  });

  it('an old bundle without files still shows the paper path', () => {
    const card = renderStageCard({ ...bundleFixture(), outputs: { paper_path: 'paper/paper.md' } }, T0);
    expect(Array.from(card.querySelectorAll('.jp-nr-section-title')).map(text)).toContain('Paper');
  });
});

describe('words on the card', () => {
  it('section names read as words', () => {
    expect(sectionLabel('related_work')).toBe('Related work');
    expect(sectionLabel('abstract')).toBe('Abstract');
    expect(sectionLabel('Method')).toBe('Method');
  });

  it('novelty is shown on its scale, the verdict in words', () => {
    const bundle = bundleFixture();
    bundle.outputs.ideation!.hypotheses[1]!.novelty = { verdict: 'not-novel', score: 2, closest_work: [] };
    const card = renderStageCard(bundle, T0);
    expect(Array.from(card.querySelectorAll('.jp-nr-verdict')).map(text)).toEqual(['novel 8/10', 'not novel 2/10']);
  });
});
