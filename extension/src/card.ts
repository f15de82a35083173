/**
 * The stage card: what a stage cell's output bundle (application/vnd.nanoresearch.stage+json)
 * looks like. `renderStageCard` is pure DOM so it is unit-tested from a bundle fixture; the
 * renderer adds the inline feedback box, which goes through the feedback service because a
 * renderer does not know which cell it is in.
 */
import type { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import type { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';
import type { LearningState, StageBundle } from '@nanoresearch/schema';
import { readStageBundle } from './bundleCheck';
import { STAGE_LABELS, STAGE_MIME_TYPE } from './constants';
import { Child, formatCost, formatDuration, formatTokens, formatValue, h, table } from './dom';
import { ILearningActions, learningActions, renderLearning } from './learning';
import { IFeedbackService } from './tokens';

type Outputs = StageBundle['outputs'];
type Hypothesis = NonNullable<Outputs['ideation']>['hypotheses'][number];
type Artifact = NonNullable<StageBundle['artifacts']>[number];

/**
 * Opens a stage's files in JupyterLab. `resolve` turns a link relative to the notebook's folder
 * (the kernel's working directory, where the kernel made it relative to) into a path from the
 * server root; `open` opens that path, with a document widget factory where one is wanted.
 */
export interface IArtifactOpener {
  resolve(href: string): Promise<string>;
  downloadUrl(path: string): Promise<string>;
  open(path: string, factory?: string): Promise<unknown>;
}

/**
 * The opener of a card in a notebook: links resolve against the notebook's folder (the
 * resolver the notebook gives its outputs) and open through the document manager. Null where
 * the output has no resolver (it is not in a document), so its links cannot be resolved.
 */
export function documentOpener(
  commands: Pick<JupyterFrontEnd['commands'], 'execute'>,
  resolver: IRenderMime.IResolver | null | undefined
): IArtifactOpener | null {
  if (!resolver) {
    return null;
  }
  return {
    resolve: href => resolver.resolveUrl(href),
    downloadUrl: path => resolver.getDownloadUrl(encodeHref(path)),
    open: (path, factory) => commands.execute('docmanager:open', factory ? { path, factory } : { path })
  };
}

/** Words for a running stage's phase, on the status pill and the cell badge. */
export const PHASE_LABELS: Record<NonNullable<NonNullable<StageBundle['progress']>['phase']>, string> = {
  retrieving: 'retrieving',
  planning: 'planning',
  running: 'running',
  learning: 'learning'
};

/** The status a card (and the badge) shows: a running stage's phase, else its status. */
export function statusLabel(bundle: StageBundle): string {
  const phase = bundle.status === 'running' ? bundle.progress?.phase : undefined;
  return phase ? PHASE_LABELS[phase] : bundle.status;
}

/** The card's DOM for a bundle (without the feedback box). `now` is the clock a running card counts from. */
export function renderStageCard(bundle: StageBundle, now: number = Date.now(), opener: IArtifactOpener | null = null): HTMLElement {
  const usage = bundle.usage;
  const running = bundle.status === 'running';
  const card = h(
    'div',
    { class: `jp-nr-card jp-nr-status-${bundle.status}`, 'data-stage': bundle.stage, 'data-status': bundle.status },
    h(
      'div',
      { class: 'jp-nr-card-header' },
      h('span', { class: 'jp-nr-stage-chip' }, STAGE_LABELS[bundle.stage] ?? bundle.stage),
      h('span', { class: 'jp-nr-card-title' }, bundle.title),
      h('span', { class: `jp-nr-status-pill jp-nr-pill-${bundle.status}` }, statusLabel(bundle))
    ),
    h(
      'div',
      { class: 'jp-nr-usage', title: `${usage.calls} LLM calls` },
      h('span', { class: 'jp-nr-tokens' }, `${formatTokens(usage.prompt_tokens + usage.completion_tokens)} tokens${running ? ' so far' : ''}`),
      h('span', {}, formatCost(usage.cost_usd)),
      running && bundle.started_at
        ? clock(bundle.started_at, now, 'jp-nr-elapsed', 'Time since the stage started')
        : h('span', { class: 'jp-nr-elapsed' }, formatDuration(usage.wall_ms)),
      h('span', { class: 'jp-nr-calls' }, `${usage.calls} calls${usage.cache_hits ? ` (${usage.cache_hits} cached)` : ''}`)
    )
  );
  if (running && bundle.progress) {
    card.appendChild(renderProgress(bundle.progress, now));
  }
  if (bundle.error) {
    card.appendChild(h('div', { class: 'jp-nr-error' }, bundle.error));
  }
  // A failed stage's summary is its error: shown once.
  if (bundle.summary && bundle.summary !== bundle.error) {
    card.appendChild(h('p', { class: 'jp-nr-summary' }, bundle.summary));
  }
  // A file the card links is not listed again as a bare path.
  for (const section of renderOutputs(bundle.outputs, new Set((bundle.artifacts ?? []).map(a => a.path)))) {
    card.appendChild(section);
  }
  if (bundle.artifacts && bundle.artifacts.length > 0) {
    card.appendChild(renderArtifacts(bundle.artifacts, opener));
  }
  card.appendChild(renderContext(bundle));
  return card;
}

/**
 * A duration counted from `since`: drawn now, and kept moving by `tickClocks` while the stage
 * runs (the kernel sends nothing just to move a clock).
 */
function clock(since: string, now: number, className: string, title: string): HTMLElement {
  const node = h('span', { class: className, title, 'data-nr-since': since });
  node.textContent = sinceText(since, now);
  return node;
}

function sinceText(since: string, now: number): string {
  const start = Date.parse(since);
  return Number.isNaN(start) ? '' : formatDuration(Math.max(0, now - start));
}

/** Moves every clock in `root` to `now`. */
export function tickClocks(root: HTMLElement, now: number = Date.now()): void {
  for (const node of Array.from(root.querySelectorAll<HTMLElement>('[data-nr-since]'))) {
    node.textContent = sinceText(node.dataset.nrSince ?? '', now);
  }
}

/**
 * What a stage cell shows from the moment it is run until the kernel's first card arrives (the
 * kernel compiles the cell first, which takes a second or two): the stage, "starting" and a clock
 * from the moment it was run. Drawn by the extension beside the outputs, never saved.
 */
export function renderStartingCard(stage: StageBundle['stage'], since: number): HTMLElement {
  const card = h(
    'div',
    { class: 'jp-nr-card jp-nr-status-running jp-nr-starting', 'data-stage': stage, 'data-status': 'starting' },
    h(
      'div',
      { class: 'jp-nr-card-header' },
      h('span', { class: 'jp-nr-stage-chip' }, STAGE_LABELS[stage] ?? stage),
      h('span', { class: 'jp-nr-card-title' }, 'the kernel is starting the stage'),
      h('span', { class: 'jp-nr-status-pill jp-nr-pill-running' }, 'starting')
    ),
    h('div', { class: 'jp-nr-usage' }, clock(new Date(since).toISOString(), since, 'jp-nr-elapsed', 'Time since the cell was run'))
  );
  card.appendChild(renderProgress({ step: 'compiling the cell' }, since));
  return card;
}

/** Labels of the files a stage wrote, by kind. */
const ARTIFACT_LABELS: Record<Artifact['kind'], string> = {
  paper: 'Paper',
  latex: 'LaTeX',
  bibtex: 'BibTeX',
  result: 'Results',
  code: 'Code',
  log: 'Log',
  data: 'Data',
  file: 'File'
};

/** How often a running card's clocks move. */
const CLOCK_TICK_MS = 1000;

/** How many files are listed before the rest fold away under "more". */
const ARTIFACTS_SHOWN = 8;

/**
 * The stage's files as links that open in JupyterLab (a paper's Markdown rendered). A file the
 * kernel could not link (in a hidden folder) is listed with why it does not open.
 */
export function renderArtifacts(artifacts: Artifact[], opener: IArtifactOpener | null): HTMLElement {
  const item = (artifact: Artifact): HTMLElement => {
    const label = h('span', { class: 'jp-nr-artifact-kind' }, ARTIFACT_LABELS[artifact.kind] ?? artifact.kind);
    if (!artifact.href || !opener) {
      const why = !artifact.href
        ? 'In a hidden folder, which JupyterLab does not open: give the project a visible workspace, lab.project(topic, { workspace: "nanoresearch/my-project" })'
        : 'Opens from a notebook';
      return h('li', { class: 'jp-nr-artifact jp-nr-unlinked', 'data-kind': artifact.kind, title: why }, label, h('code', {}, artifact.path));
    }
    const link = h(
      'a',
      { class: 'jp-nr-artifact-link', href: '#', 'data-kind': artifact.kind, 'data-path': artifact.path, title: `Open ${artifact.path}` },
      artifact.path
    );
    const target = opener.resolve(encodeHref(artifact.href)).then(encoded => decodeURIComponent(encoded));
    // A real URL too, so a middle click or "copy link" gets the file.
    void target
      .then(path => opener.downloadUrl(path))
      .then(
        url => link.setAttribute('href', url),
        () => undefined
      );
    link.addEventListener('click', event => {
      event.preventDefault();
      void target.then(path => opener.open(path, artifact.kind === 'paper' ? 'Markdown Preview' : undefined));
    });
    return h('li', { class: 'jp-nr-artifact', 'data-kind': artifact.kind }, label, link);
  };
  const shown = artifacts.slice(0, ARTIFACTS_SHOWN).map(item);
  const rest = artifacts.slice(ARTIFACTS_SHOWN);
  return section(
    'Files',
    h('ul', { class: 'jp-nr-artifacts' }, shown),
    rest.length > 0
      ? h('details', { class: 'jp-nr-more-artifacts' }, h('summary', {}, `${rest.length} more`), h('ul', { class: 'jp-nr-artifacts' }, rest.map(item)))
      : null
  );
}

/** A relative path as a URL path (each segment encoded), as a Markdown link's href would be. */
function encodeHref(href: string): string {
  return href.split('/').map(encodeURIComponent).join('/');
}

function renderProgress(progress: NonNullable<StageBundle['progress']>, now: number): HTMLElement {
  const hasTotal = typeof progress.total === 'number' && progress.total > 0;
  const percent = hasTotal ? Math.min(100, Math.round((100 * (progress.done ?? 0)) / (progress.total as number))) : null;
  const bar = h('div', { class: `jp-nr-progress-bar${percent === null ? ' jp-nr-indeterminate' : ''}` });
  if (percent !== null) {
    bar.style.width = `${percent}%`;
  }
  const call = progress.llm;
  return h(
    'div',
    { class: 'jp-nr-progress' },
    h('div', { class: 'jp-nr-progress-label' }, progress.step, hasTotal ? ` (${progress.done ?? 0}/${progress.total})` : ''),
    h('div', { class: 'jp-nr-progress-track' }, bar),
    call
      ? h(
          'div',
          { class: 'jp-nr-llm-call', title: call.model ? `model ${call.model}` : undefined },
          `waiting for the ${call.role} model · `,
          clock(call.started_at, now, 'jp-nr-call-elapsed', 'Time since this call started'),
          typeof call.tokens === 'number' ? h('span', { class: 'jp-nr-call-tokens' }, ` · ${call.tokens} tokens`) : null,
          call.preview ? h('span', { class: 'jp-nr-call-preview' }, call.preview) : null
        )
      : null
  );
}

function section(title: string, ...body: Array<Node | null>): HTMLElement {
  return h('section', { class: 'jp-nr-section' }, h('h4', { class: 'jp-nr-section-title' }, title), ...body);
}

function renderOutputs(outputs: Outputs, linked: ReadonlySet<string>): HTMLElement[] {
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
        ideation.literature_status !== 'searched' ? h('div', { class: 'jp-nr-note' }, `Literature: ${ideation.literature_status}`) : null
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
        outputs.overall_score !== undefined ? `Section scores · overall ${formatValue(outputs.overall_score)}/10` : 'Section scores',
        table(
          ['Section', 'Score', 'Issues', 'Revised'],
          outputs.section_reviews.map(r => [sectionLabel(r.section), `${formatValue(r.score)}/10`, r.issues.length, r.revised ? 'yes' : ''])
        )
      )
    );
  }
  if (outputs.abstract) {
    sections.push(section('Abstract', h('p', { class: 'jp-nr-abstract' }, outputs.abstract)));
  }
  if (outputs.paper_path && !linked.has(outputs.paper_path)) {
    sections.push(section('Paper', h('code', {}, outputs.paper_path)));
  }
  if (outputs.ungrounded_numbers && outputs.ungrounded_numbers.length > 0) {
    sections.push(section('Ungrounded numbers', h('div', { class: 'jp-nr-warning' }, outputs.ungrounded_numbers.join(', '))));
  }
  if (outputs.left_out_sentences && outputs.left_out_sentences.length > 0) {
    sections.push(section('Left out (numbers no artifact holds)', h('ul', {}, ...outputs.left_out_sentences.map(sentence => h('li', {}, sentence)))));
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
        novelty.verdict.replace(/-/g, ' '),
        typeof novelty.score === 'number' ? ` ${formatValue(novelty.score)}/10` : ''
      )
    ),
    closest.length > 0
      ? h(
          'div',
          { class: 'jp-nr-closest' },
          'Closest work: ',
          closest.flatMap((p, i): Child[] => [i > 0 ? '; ' : '', h('span', { class: 'jp-nr-paper', title: p.key }, p.title, p.year ? ` (${p.year})` : '')])
        )
      : null
  );
}

/** A section name as words: "related_work" → "Related work". */
export function sectionLabel(name: string): string {
  const words = name.replace(/[_-]+/g, ' ').trim();
  return words ? words[0].toUpperCase() + words.slice(1) : name;
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
        ? bundle.memories_used.map(m => h('span', { class: 'jp-nr-chip jp-nr-memory', title: `${m.kind}: ${m.content}` }, shorten(m.content, 60)))
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

/** Fills the card's feedback list; with `learning`, each entry shows what was learned from it. */
export function renderFeedbackList(
  list: HTMLElement,
  entries: ICardFeedback[],
  learning?: { stateOf: (id: string) => LearningState | undefined; actions: ILearningActions }
): void {
  list.textContent = '';
  for (const f of entries) {
    const state = learning?.stateOf(f.id);
    list.appendChild(
      h(
        'li',
        {
          class: f.synced === false ? 'jp-nr-pending' : undefined,
          'data-feedback-id': f.id,
          'data-learning': state?.status,
          title: f.synced === false ? 'Kept in the notebook; sent when the kernel runs' : undefined
        },
        h('span', { class: 'jp-nr-feedback-author' }, f.author),
        f.text,
        learning ? renderLearning(state, learning.actions) : null
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
  current: () => ICardFeedback[] | null = () => null,
  learning?: Parameters<typeof renderFeedbackList>[2]
): { node: HTMLElement; refresh: () => void } {
  const list = h('ul', { class: 'jp-nr-feedback-list' });
  const refresh = (): void => renderFeedbackList(list, current() ?? bundle.feedback ?? [], learning);
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
    private readonly feedback: IFeedbackService | null,
    private readonly opener: IArtifactOpener | null = null
  ) {
    super();
    this.addClass('jp-nr-card-host');
  }

  async renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    this.node.textContent = '';
    this.stopClock();
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
      card = renderStageCard(bundle, Date.now(), this.opener);
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
        () => service.feedbackFor(bundle.stage_run_id),
        { stateOf: id => service.learningOf(id), actions: learningActions(service) }
      );
      card.appendChild(box.node);
      // Feedback given in the sidebar (or synced) shows here too.
      const onChanged = (): void => box.refresh();
      service.changed.connect(onChanged);
      this.disconnect = () => service.changed.disconnect(onChanged);
    }
    this.node.appendChild(card);
    if (bundle.status === 'running') {
      // The elapsed time moves every second between the kernel's updates.
      this.clock = window.setInterval(() => tickClocks(card), CLOCK_TICK_MS);
    }
  }

  dispose(): void {
    this.stopClock();
    this.disconnect();
    super.dispose();
  }

  private stopClock(): void {
    if (this.clock !== undefined) {
      window.clearInterval(this.clock);
      this.clock = undefined;
    }
  }

  private clock: number | undefined;

  private disconnect: () => void = () => undefined;
}

export const stageCardPlugin: JupyterFrontEndPlugin<void> = {
  id: '@nanoresearch/jupyterlab:stage-card',
  description: 'Renders application/vnd.nanoresearch.stage+json as a stage card with inline feedback.',
  autoStart: true,
  requires: [IRenderMimeRegistry],
  optional: [IFeedbackService],
  activate: (app: JupyterFrontEnd, rendermime: IRenderMimeRegistry, feedback: IFeedbackService | null) => {
    rendermime.addFactory(
      {
        safe: true,
        mimeTypes: [STAGE_MIME_TYPE],
        defaultRank: 0,
        createRenderer: options => new StageCardRenderer(options.mimeType, feedback, documentOpener(app.commands, options.resolver))
      },
      0
    );
  }
};
