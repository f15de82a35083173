/**
 * The stage card: what a stage cell's output bundle (application/vnd.nanoresearch.stage+json)
 * looks like. `renderStageCard` is pure DOM so it is unit-tested from a bundle fixture; the
 * renderer adds the inline feedback box, which goes through the feedback service because a
 * renderer does not know which cell it is in.
 */
import type { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';
import type { StageBundle } from '@nanoresearch/schema';
import { readStageBundle } from './bundleCheck';
import { STAGE_LABELS } from './constants';
import { Child, formatCost, formatDuration, formatTokens, formatValue, h, table } from './dom';
import type { IFeedbackService } from './tokens';

type Outputs = StageBundle['outputs'];
type Hypothesis = NonNullable<Outputs['ideation']>['hypotheses'][number];

/** The card's DOM for a bundle (without the feedback box). */
export function renderStageCard(bundle: StageBundle): HTMLElement {
  const usage = bundle.usage;
  const card = h(
    'div',
    { class: `jp-nr-card jp-nr-status-${bundle.status}`, 'data-stage': bundle.stage, 'data-status': bundle.status },
    h(
      'div',
      { class: 'jp-nr-card-header' },
      h('span', { class: 'jp-nr-stage-chip' }, STAGE_LABELS[bundle.stage] ?? bundle.stage),
      h('span', { class: 'jp-nr-card-title' }, bundle.title),
      h('span', { class: `jp-nr-status-pill jp-nr-pill-${bundle.status}` }, bundle.status)
    ),
    h(
      'div',
      { class: 'jp-nr-usage', title: `${usage.calls} LLM calls` },
      h('span', {}, `${formatTokens(usage.prompt_tokens + usage.completion_tokens)} tokens`),
      h('span', {}, formatCost(usage.cost_usd)),
      h('span', {}, formatDuration(usage.wall_ms)),
      h('span', {}, `${usage.calls} calls${usage.cache_hits ? ` (${usage.cache_hits} cached)` : ''}`)
    )
  );
  if (bundle.status === 'running' && bundle.progress) {
    card.appendChild(renderProgress(bundle.progress));
  }
  if (bundle.error) {
    card.appendChild(h('div', { class: 'jp-nr-error' }, bundle.error));
  }
  if (bundle.summary) {
    card.appendChild(h('p', { class: 'jp-nr-summary' }, bundle.summary));
  }
  for (const section of renderOutputs(bundle.outputs)) {
    card.appendChild(section);
  }
  card.appendChild(renderContext(bundle));
  return card;
}

function renderProgress(progress: NonNullable<StageBundle['progress']>): HTMLElement {
  const hasTotal = typeof progress.total === 'number' && progress.total > 0;
  const percent = hasTotal ? Math.min(100, Math.round((100 * (progress.done ?? 0)) / (progress.total as number))) : null;
  const bar = h('div', { class: `jp-nr-progress-bar${percent === null ? ' jp-nr-indeterminate' : ''}` });
  if (percent !== null) {
    bar.style.width = `${percent}%`;
  }
  return h(
    'div',
    { class: 'jp-nr-progress' },
    h('div', { class: 'jp-nr-progress-label' }, progress.step, hasTotal ? ` (${progress.done ?? 0}/${progress.total})` : ''),
    h('div', { class: 'jp-nr-progress-track' }, bar)
  );
}

function section(title: string, ...body: Array<Node | null>): HTMLElement {
  return h('section', { class: 'jp-nr-section' }, h('h4', { class: 'jp-nr-section-title' }, title), ...body);
}

function renderOutputs(outputs: Outputs): HTMLElement[] {
  const sections: HTMLElement[] = [];
  if (outputs.ideation) {
    const ideation = outputs.ideation;
    sections.push(
      section(
        'Hypotheses',
        h(
          'ol',
          { class: 'jp-nr-hypotheses' },
          (ideation.hypotheses as Hypothesis[]).map(hyp => renderHypothesis(hyp, hyp.id === ideation.selected_hypothesis_id))
        ),
        ideation.literature_status !== 'searched'
          ? h('div', { class: 'jp-nr-note' }, `Literature: ${ideation.literature_status}`)
          : null
      )
    );
  }
  if (outputs.blueprint) {
    const bp = outputs.blueprint;
    sections.push(
      section(
        'Experiment blueprint',
        h('p', { class: 'jp-nr-objective' }, bp.objective),
        h(
          'div',
          { class: 'jp-nr-facts' },
          fact('Method', bp.method.name),
          fact('Baselines', bp.baselines.map(b => b.name).join(', ')),
          fact('Metrics', bp.metrics.map(m => `${m.name} (${m.goal === 'maximize' ? '↑' : '↓'})`).join(', ')),
          fact('Compute', `${bp.compute.estimated_minutes} min${bp.compute.device ? ` on ${bp.compute.device}` : ''}`)
        ),
        table(
          ['Run', 'Method', 'Dataset', 'Seed'],
          bp.experiment_matrix.map(r => [r.run_id, r.method, r.dataset, r.seed ?? ''])
        )
      )
    );
  }
  if (outputs.metrics && outputs.metrics.length > 0) {
    sections.push(section('Metrics', metricsTable(outputs.metrics)));
  }
  if (outputs.analysis) {
    sections.push(section('Analysis', h('p', { class: 'jp-nr-analysis' }, outputs.analysis)));
  }
  if (outputs.section_reviews && outputs.section_reviews.length > 0) {
    sections.push(
      section(
        outputs.overall_score !== undefined ? `Section scores · overall ${formatValue(outputs.overall_score)}` : 'Section scores',
        table(
          ['Section', 'Score', 'Issues', 'Revised'],
          outputs.section_reviews.map(r => [r.section, formatValue(r.score), r.issues.length, r.revised ? 'yes' : ''])
        )
      )
    );
  }
  if (outputs.paper_path) {
    sections.push(section('Paper', h('code', {}, outputs.paper_path)));
  }
  if (outputs.ungrounded_numbers && outputs.ungrounded_numbers.length > 0) {
    sections.push(
      section('Ungrounded numbers', h('div', { class: 'jp-nr-warning' }, outputs.ungrounded_numbers.join(', ')))
    );
  }
  return sections;
}

function renderHypothesis(hyp: Hypothesis, selected: boolean): HTMLElement {
  const novelty = hyp.novelty;
  const closest = novelty.closest_work.slice(0, 3);
  return h(
    'li',
    { class: `jp-nr-hypothesis${selected ? ' jp-nr-selected' : ''}` },
    h(
      'div',
      { class: 'jp-nr-hypothesis-head' },
      selected ? h('span', { class: 'jp-nr-selected-mark', title: 'Selected hypothesis' }, '★') : null,
      h('span', { class: 'jp-nr-statement' }, hyp.statement),
      h(
        'span',
        { class: `jp-nr-verdict jp-nr-verdict-${novelty.verdict}`, title: novelty.reason },
        novelty.verdict,
        typeof novelty.score === 'number' ? ` ${formatValue(novelty.score)}` : ''
      )
    ),
    closest.length > 0
      ? h(
          'div',
          { class: 'jp-nr-closest' },
          'Closest work: ',
          closest.flatMap((p, i): Child[] => [
            i > 0 ? '; ' : '',
            h('span', { class: 'jp-nr-paper', title: p.key }, p.title, p.year ? ` (${p.year})` : '')
          ])
        )
      : null
  );
}

function fact(label: string, value: string): HTMLElement {
  return h('div', { class: 'jp-nr-fact' }, h('span', { class: 'jp-nr-fact-label' }, label), h('span', {}, value));
}

/** Metrics pivoted to one row per run and one column per metric. */
export function metricsTable(metrics: NonNullable<Outputs['metrics']>): HTMLTableElement {
  const names = Array.from(new Set(metrics.map(m => m.metric)));
  const runs = Array.from(new Set(metrics.map(m => m.run)));
  const value = new Map(metrics.map(m => [`${m.run}\u0000${m.metric}`, m.value]));
  return table(
    ['Run', ...names],
    runs.map(run => [run, ...names.map(name => formatValue(value.get(`${run}\u0000${name}`)))])
  );
}

function renderContext(bundle: StageBundle): HTMLElement {
  return h(
    'div',
    { class: 'jp-nr-context' },
    h(
      'div',
      { class: 'jp-nr-context-row' },
      h('span', { class: 'jp-nr-context-label' }, 'Skills'),
      bundle.skills_used.length > 0
        ? bundle.skills_used.map(s => h('span', { class: 'jp-nr-chip jp-nr-skill', title: s.id }, s.name))
        : h('span', { class: 'jp-nr-muted' }, 'none')
    ),
    h(
      'div',
      { class: 'jp-nr-context-row' },
      h('span', { class: 'jp-nr-context-label' }, 'Memories'),
      bundle.memories_used.length > 0
        ? bundle.memories_used.map(m =>
            h('span', { class: 'jp-nr-chip jp-nr-memory', title: `${m.kind}: ${m.content}` }, shorten(m.content, 60))
          )
        : h('span', { class: 'jp-nr-muted' }, 'none')
    )
  );
}

function shorten(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** A feedback entry as the card lists it: from the bundle (stored) or the cell (maybe pending). */
export interface ICardFeedback {
  id: string;
  text: string;
  author: string;
  synced?: boolean;
}

/** Fills the card's feedback list. */
export function renderFeedbackList(list: HTMLElement, entries: ICardFeedback[]): void {
  list.textContent = '';
  for (const f of entries) {
    list.appendChild(
      h(
        'li',
        { class: f.synced === false ? 'jp-nr-pending' : undefined, 'data-feedback-id': f.id, title: f.synced === false ? 'Kept in the notebook; sent when the kernel runs' : undefined },
        h('span', { class: 'jp-nr-feedback-author' }, f.author),
        f.text
      )
    );
  }
}

/**
 * The inline feedback box under a finished card. `current` gives the feedback the stage's cell
 * holds now (it includes what the sidebar added); the bundle's feedback is the fallback.
 */
export function renderFeedbackBox(
  bundle: StageBundle,
  submit: (text: string) => void,
  current: () => ICardFeedback[] | null = () => null
): { node: HTMLElement; refresh: () => void } {
  const list = h('ul', { class: 'jp-nr-feedback-list' });
  const refresh = (): void => renderFeedbackList(list, current() ?? bundle.feedback ?? []);
  const input = h('textarea', {
    class: 'jp-nr-feedback-input',
    rows: '2',
    placeholder: 'Feedback on this stage (kept in the notebook, used to train your planner)…'
  });
  const button = h('button', { class: 'jp-nr-button jp-mod-accept', type: 'button' }, 'Add feedback');
  const send = (): void => {
    const text = input.value.trim();
    if (!text) {
      return;
    }
    submit(text);
    input.value = '';
    refresh();
  };
  button.addEventListener('click', send);
  input.addEventListener('keydown', event => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      send();
    }
  });
  refresh();
  return { node: h('div', { class: 'jp-nr-feedback-box' }, list, h('div', { class: 'jp-nr-feedback-form' }, input, button)), refresh };
}

/** What an output that cannot be drawn as a stage card shows instead: what it is, why, what to do. */
export function renderInvalidCard(problem: string): HTMLElement {
  return h(
    'div',
    { class: 'jp-nr-card jp-nr-invalid-card' },
    h('div', { class: 'jp-nr-invalid-title' }, 'This output is not a valid stage card'),
    h('div', { class: 'jp-nr-error' }, problem),
    h('div', { class: 'jp-nr-note' }, 'It may come from another version of NanoResearch or an edited notebook: run the stage cell again to replace it.')
  );
}

/** The MIME renderer of stage bundles. */
export class StageCardRenderer extends Widget implements IRenderMime.IRenderer {
  constructor(
    private readonly mimeType: string,
    private readonly feedback: IFeedbackService | null
  ) {
    super();
    this.addClass('jp-nr-card-host');
  }

  async renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    this.node.textContent = '';
    this.disconnect();
    this.disconnect = () => undefined;
    const read = readStageBundle(model.data[this.mimeType]);
    if ('problem' in read) {
      this.node.appendChild(renderInvalidCard(read.problem));
      return;
    }
    const bundle = read.bundle;
    let card: HTMLElement;
    try {
      card = renderStageCard(bundle);
    } catch (reason) {
      // A schema-valid bundle the card cannot draw is a bug here, but still shown as a box, not a stack trace.
      this.node.appendChild(renderInvalidCard(`the card could not be drawn: ${reason instanceof Error ? reason.message : String(reason)}`));
      return;
    }
    if (bundle.status !== 'running' && this.feedback) {
      const service = this.feedback;
      const box = renderFeedbackBox(
        bundle,
        text => {
          try {
            service.add(bundle.stage_run_id, text);
          } catch (reason) {
            card.appendChild(h('div', { class: 'jp-nr-error' }, reason instanceof Error ? reason.message : String(reason)));
          }
        },
        () => service.feedbackFor(bundle.stage_run_id)
      );
      card.appendChild(box.node);
      // Feedback given in the sidebar (or synced) shows here too.
      const onChanged = (): void => box.refresh();
      service.changed.connect(onChanged);
      this.disconnect = () => service.changed.disconnect(onChanged);
    }
    this.node.appendChild(card);
  }

  dispose(): void {
    this.disconnect();
    super.dispose();
  }

  private disconnect: () => void = () => undefined;
}
