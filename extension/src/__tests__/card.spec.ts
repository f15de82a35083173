import Ajv2020 from 'ajv/dist/2020';
import * as schema from '@nanoresearch/schema';
import { readStageBundle } from '../bundleCheck';
import { renderFeedbackBox, renderStageCard, StageCardRenderer } from '../card';
import { STAGE_MIME_TYPE } from '../constants';
import { bundleFixture } from './helpers';

const text = (el: Element | null) => (el?.textContent ?? '').replace(/\s+/g, ' ').trim();

describe('stage card', () => {
  it('is rendered from a bundle that the stage-bundle schema accepts', () => {
    const ajv = new Ajv2020({ strict: false, validateFormats: false });
    for (const [name, s] of Object.entries(schema.schemas)) {
      ajv.addSchema(s as object, name);
    }
    const validate = ajv.getSchema('stage-bundle.schema.json')!;
    const valid = validate(bundleFixture());
    expect(validate.errors ?? []).toEqual([]);
    expect(valid).toBe(true);
  });

  it('shows status, summary, hypotheses with closest work, blueprint, metrics, scores, context and usage', () => {
    const card = renderStageCard(bundleFixture());
    expect(card.dataset.status).toBe('done');
    expect(text(card.querySelector('.jp-nr-stage-chip'))).toBe('Ideation');
    expect(text(card.querySelector('.jp-nr-status-pill'))).toBe('done');
    expect(text(card.querySelector('.jp-nr-summary'))).toMatch(/^Three hypotheses/);

    const hypotheses = card.querySelectorAll('.jp-nr-hypothesis');
    expect(hypotheses).toHaveLength(2);
    expect(hypotheses[0].classList.contains('jp-nr-selected')).toBe(true);
    expect(text(hypotheses[0].querySelector('.jp-nr-verdict'))).toBe('novel 8/10');
    expect(text(hypotheses[0].querySelector('.jp-nr-closest'))).toBe(
      'Closest work: Revisiting Deep Learning Models for Tabular Data (2021); Well-tuned Simple Nets Excel on Tabular Datasets (2021)'
    );
    expect(hypotheses[1].querySelector('.jp-nr-closest')).toBeNull();

    const tables = Array.from(card.querySelectorAll('table'));
    const rows = (t: HTMLTableElement) => Array.from(t.querySelectorAll('tr')).map(r => Array.from(r.children).map(c => text(c)));
    expect(rows(tables[0])).toEqual([
      ['Run', 'Method', 'Dataset', 'Seed'],
      ['r1', 'MLP + feature dropout', 'adult', '0'],
      ['r2', 'MLP + weight decay', 'adult', '0']
    ]);
    // Metrics pivot: one row per run, one column per metric, blanks where a run lacks one.
    expect(rows(tables[1])).toEqual([
      ['Run', 'accuracy', 'nll'],
      ['r1', '0.8512', '0.3301'],
      ['r2', '0.8437', '']
    ]);
    // Section names as words, scores on their scale.
    expect(rows(tables[2])[1]).toEqual(['Related work', '7/10', '1', 'yes']);
    expect(text(card)).toContain('Section scores · overall 6.8/10');

    expect(text(card.querySelector('.jp-nr-skill'))).toBe('Always include a linear baseline');
    expect(card.querySelector('.jp-nr-memory')!.getAttribute('title')).toBe('user_constraint: CPU only, at most 15 minutes per experiment.');
    expect(Array.from(card.querySelectorAll('.jp-nr-usage span')).map(text)).toEqual(['12.7k tokens', '$0.01', '41.3 s', '7 calls (2 cached)']);
  });

  it('shows progress while running and the error when failed', () => {
    const running = renderStageCard({ ...bundleFixture(), status: 'running', progress: { step: 'novelty check', done: 1, total: 4 }, outputs: {} });
    expect(text(running.querySelector('.jp-nr-progress-label'))).toBe('novelty check (1/4)');
    expect((running.querySelector('.jp-nr-progress-bar') as HTMLElement).style.width).toBe('25%');
    const failed = renderStageCard({ ...bundleFixture(), status: 'failed', error: 'Budget exceeded: 20000 tokens', outputs: {} });
    expect(text(failed.querySelector('.jp-nr-error'))).toBe('Budget exceeded: 20000 tokens');
    expect(failed.querySelector('.jp-nr-hypothesis')).toBeNull();
  });

  it("shows a failed stage's error once, not again as its summary", () => {
    const error = 'the ideation stage threw: the model answered nothing';
    const card = renderStageCard({ ...bundleFixture(), status: 'failed', error, summary: error });
    expect(Array.from(card.querySelectorAll('.jp-nr-error, .jp-nr-summary')).map(e => e.textContent)).toEqual([error]);
  });

  it('never interprets bundle text as HTML', () => {
    const card = renderStageCard({ ...bundleFixture(), summary: '<img src=x onerror="alert(1)">' });
    expect(card.querySelector('img')).toBeNull();
    expect(text(card.querySelector('.jp-nr-summary'))).toBe('<img src=x onerror="alert(1)">');
  });

  it('sends feedback typed in the card through the feedback service, by stage run id', async () => {
    const added: Array<[string, string]> = [];
    const cellFeedback: any[] = [];
    const service = {
      add: (id: string, t: string) => {
        added.push([id, t]);
        cellFeedback.push({ id: `fb_${added.length}`, text: t, author: 'ana', synced: false });
        return {} as any;
      },
      feedbackFor: (id: string) => (id === 'sr_fixture0001' ? cellFeedback : null),
      learningOf: () => undefined,
      retryLearning: async () => undefined,
      openLearned: () => undefined,
      changed: { connect: () => undefined, disconnect: () => undefined }
    } as any;
    const renderer = new StageCardRenderer(STAGE_MIME_TYPE, service);
    await renderer.renderModel({ data: { [STAGE_MIME_TYPE]: bundleFixture() } } as any);
    const input = renderer.node.querySelector('textarea')!;
    input.value = 'Prefer fewer, stronger hypotheses.';
    (renderer.node.querySelector('.jp-nr-feedback-form button') as HTMLButtonElement).click();
    expect(added).toEqual([['sr_fixture0001', 'Prefer fewer, stronger hypotheses.']]);
    expect(input.value).toBe('');
    // The list shows what the cell holds now, pending entries marked.
    expect(Array.from(renderer.node.querySelectorAll('.jp-nr-feedback-list li')).map(li => [text(li), li.className])).toEqual([
      ['anaPrefer fewer, stronger hypotheses.', 'jp-nr-pending']
    ]);
    // A running stage has no feedback box yet.
    await renderer.renderModel({ data: { [STAGE_MIME_TYPE]: { ...bundleFixture(), status: 'running' } } } as any);
    expect(renderer.node.querySelector('textarea')).toBeNull();
  });

  it('ignores an empty submission', () => {
    const submit = jest.fn();
    const box = renderFeedbackBox(bundleFixture(), submit);
    box.node.querySelector('button')!.click();
    expect(submit).not.toHaveBeenCalled();
    // Without a cell to read from, the list shows the feedback stored with the bundle.
    expect(text(box.node.querySelector('.jp-nr-feedback-list'))).toBe('anaGood gap analysis.');
  });

  describe('an output that fails the stage-bundle schema', () => {
    const render = async (data: unknown) => {
      const renderer = new StageCardRenderer(STAGE_MIME_TYPE, null);
      await renderer.renderModel({ data: { [STAGE_MIME_TYPE]: data } } as any);
      return renderer.node;
    };

    it.each([
      ['an unknown status', { ...bundleFixture(), status: 'exploded' }, /\/status must be equal to one of the allowed values \(running, done, failed\)/],
      ['a missing field', (({ stage, ...rest }) => rest)(bundleFixture()), /must have required property 'stage'/],
      ['an unknown field', { ...bundleFixture(), injected: '<script>' }, /must NOT have additional properties: 'injected'/],
      ['a wrongly typed output', { ...bundleFixture(), outputs: { metrics: 'lots' } }, /\/outputs\/metrics must be array/],
      ['text that is not JSON', '{"version": 1, "stage": ', /it is not JSON/],
      ['null', null, /the bundle must be object/]
    ])('%s shows a "not a valid stage card" box with the reason, not an error', async (_, data, reason) => {
      const node = await render(data);
      expect(text(node.querySelector('.jp-nr-invalid-title'))).toBe('This output is not a valid stage card');
      expect(text(node.querySelector('.jp-nr-error'))).toMatch(reason);
      expect(node.querySelector('.jp-nr-card-header')).toBeNull();
      expect(node.querySelector('script')).toBeNull();
    });

    it('a valid bundle, also as JSON text, still renders as a card', async () => {
      expect(readStageBundle(bundleFixture())).toEqual({ bundle: bundleFixture() });
      const node = await render(JSON.stringify(bundleFixture()));
      expect(node.querySelector('.jp-nr-invalid-title')).toBeNull();
      expect(text(node.querySelector('.jp-nr-card-title'))).toBe(bundleFixture().title);
    });
  });
});
