/**
 * The feedback sidebar: every stage cell of the current notebook with its feedback thread and
 * a box to add more. Each entry says whether the store has it and what was learned from it
 * (queued, learning, learned with links, failed with Retry). What is typed survives re-renders
 * (drafts are kept per cell).
 */
import { ILayoutRestorer, type JupyterFrontEnd, type JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { INotebookTracker, type NotebookPanel } from '@jupyterlab/notebook';
import { ITranslator, nullTranslator, type TranslationBundle } from '@jupyterlab/translation';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';
import { CommandIDs, FEEDBACK_SIDEBAR_ID, PALETTE_CATEGORY, STAGE_LABELS, TRANSLATION_DOMAIN } from './constants';
import { h } from './dom';
import { learningActions, renderLearning } from './learning';
import { IFeedbackService, type FeedbackEntry, type IStageCellInfo } from './tokens';

export const feedbackIcon = new LabIcon({
  name: 'nanoresearch:feedback',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16"><path class="jp-icon3" fill="#616161" ' +
    'd="M4 3h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4H4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2zm3 5v2h10V8H7zm0 4v2h7v-2H7z"/></svg>'
});

export class FeedbackSidebar extends Widget {
  constructor(
    private readonly service: IFeedbackService,
    private readonly tracker: INotebookTracker,
    private readonly trans: TranslationBundle = nullTranslator.load(TRANSLATION_DOMAIN)
  ) {
    super();
    this.id = FEEDBACK_SIDEBAR_ID;
    this.title.icon = feedbackIcon;
    this.title.caption = trans.__('NanoResearch feedback');
    this.addClass('jp-nr-sidebar');
    service.changed.connect((_, panel) => {
      if (panel === this.tracker.currentWidget) {
        this.render();
      }
    });
    tracker.currentChanged.connect(() => this.render());
    this.render();
  }

  /** Redraws the sidebar for the current notebook. */
  render(): void {
    const panel = this.tracker.currentWidget;
    const focused = document.activeElement as HTMLElement | null;
    const focusedCell = focused?.dataset?.cellId;
    this.node.textContent = '';
    if (!panel) {
      this.node.appendChild(this.empty(this.trans.__('Open a notebook to see its stage cells and their feedback.')));
      return;
    }
    const cells = this.service.stageCells(panel);
    const pending = cells.reduce((n, c) => n + c.metadata.feedback.filter(f => !f.synced).length, 0);
    const syncButton = h(
      'button',
      { class: 'jp-nr-button', type: 'button', title: this.trans.__('Send unsynced feedback to the store now') },
      this.trans.__('Sync now')
    );
    syncButton.addEventListener('click', () => void this.service.syncNow(panel));
    this.node.appendChild(
      h(
        'header',
        { class: 'jp-nr-sidebar-header' },
        h('div', { class: 'jp-nr-sidebar-title' }, this.trans.__('Feedback')),
        h('div', { class: 'jp-nr-sidebar-notebook', title: panel.context.path }, panel.context.path.split('/').pop() ?? ''),
        h(
          'div',
          { class: 'jp-nr-sync-line' },
          pending === 0
            ? h('span', { class: 'jp-nr-synced-all' }, this.trans.__('All feedback is in the store'))
            : h('span', { class: 'jp-nr-unsynced' }, this.trans.__('%1 not yet in the store', pending)),
          pending > 0 ? syncButton : null
        )
      )
    );
    if (cells.length === 0) {
      this.node.appendChild(this.empty(this.trans.__('No stage cells yet. Insert one from the NanoResearch menu or the notebook toolbar.')));
      return;
    }
    const list = h('div', { class: 'jp-nr-sidebar-cells' });
    for (const info of cells) {
      list.appendChild(this.renderCell(panel, info));
    }
    this.node.appendChild(list);
    if (focusedCell) {
      const again = this.node.querySelector<HTMLTextAreaElement>(`textarea[data-cell-id="${CSS.escape(focusedCell)}"]`);
      again?.focus();
    }
  }

  private renderCell(panel: NotebookPanel, info: IStageCellInfo): HTMLElement {
    const { metadata, model } = info;
    const cellId = model.id;
    const title = h(
      'button',
      { class: 'jp-nr-cell-link', type: 'button', title: this.trans.__('Go to this cell') },
      h('span', { class: 'jp-nr-stage-chip' }, this.trans.__(STAGE_LABELS[metadata.stage])),
      h('span', { class: `jp-nr-status-pill jp-nr-pill-${metadata.status}` }, metadata.status),
      h('span', { class: 'jp-nr-cell-index' }, this.trans.__('cell %1', info.index + 1))
    );
    title.addEventListener('click', () => {
      panel.content.activeCellIndex = info.index;
      panel.content.scrollToItem(info.index).catch(() => undefined);
    });
    const input = h('textarea', {
      class: 'jp-nr-feedback-input',
      rows: '2',
      'data-cell-id': cellId,
      placeholder: metadata.stage_run_id ? this.trans.__('What should change next time?') : this.trans.__('Feedback (sent once the stage has run)')
    });
    input.value = this.drafts.get(cellId) ?? '';
    input.addEventListener('input', () => this.drafts.set(cellId, input.value));
    const add = h('button', { class: 'jp-nr-button jp-mod-accept', type: 'button' }, this.trans.__('Add'));
    const submit = (): void => {
      const text = input.value.trim();
      if (!text) {
        return;
      }
      this.drafts.delete(cellId);
      input.value = '';
      this.service.addToCell(panel, model, text);
    };
    add.addEventListener('click', submit);
    input.addEventListener('keydown', event => {
      if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        submit();
      }
    });
    return h(
      'section',
      { class: 'jp-nr-sidebar-cell', 'data-stage': metadata.stage, 'data-cell-id': cellId },
      title,
      metadata.stage_run_id ? h('div', { class: 'jp-nr-run-id', title: this.trans.__('Stage run id') }, metadata.stage_run_id) : null,
      h(
        'ul',
        { class: 'jp-nr-thread' },
        metadata.feedback.length > 0
          ? metadata.feedback.map(entry => this.renderEntry(entry))
          : h('li', { class: 'jp-nr-muted' }, this.trans.__('No feedback yet.'))
      ),
      h('div', { class: 'jp-nr-feedback-form' }, input, add)
    );
  }

  private renderEntry(entry: FeedbackEntry): HTMLElement {
    const learning = this.service.learningOf(entry.id);
    return h(
      'li',
      {
        class: `jp-nr-entry${entry.synced ? '' : ' jp-nr-pending'}`,
        'data-feedback-id': entry.id,
        'data-synced': String(entry.synced),
        'data-learning': learning?.status
      },
      h(
        'div',
        { class: 'jp-nr-entry-meta' },
        h('span', { class: 'jp-nr-feedback-author' }, entry.author),
        h('span', { class: 'jp-nr-entry-time', title: entry.created_at }, shortTime(entry.created_at)),
        h(
          'span',
          {
            class: 'jp-nr-entry-sync',
            title: entry.synced
              ? this.trans.__("In the store (and an SDPO example where the plan was the planner's)")
              : this.trans.__('Kept in the notebook; sent when the kernel runs')
          },
          entry.synced ? this.trans.__('✓ stored') : this.trans.__('● pending')
        )
      ),
      h('div', { class: 'jp-nr-entry-text' }, entry.text),
      renderLearning(learning, learningActions(this.service))
    );
  }

  private empty(text: string): HTMLElement {
    return h('div', { class: 'jp-nr-empty' }, text);
  }

  private readonly drafts = new Map<string, string>();
}

/** A compact local date and time for a feedback entry. */
function shortTime(iso: string): string {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString([], { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}

export const sidebarPlugin: JupyterFrontEndPlugin<void> = {
  id: '@nanoresearch/jupyterlab:feedback-sidebar',
  description: 'Right-hand panel with every stage cell of the notebook and its feedback thread.',
  autoStart: true,
  requires: [IFeedbackService, INotebookTracker],
  optional: [ILayoutRestorer, ICommandPalette, ITranslator],
  activate: (
    app: JupyterFrontEnd,
    feedback: IFeedbackService,
    tracker: INotebookTracker,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null,
    translator: ITranslator | null
  ) => {
    const trans = (translator ?? nullTranslator).load(TRANSLATION_DOMAIN);
    const sidebar = new FeedbackSidebar(feedback, tracker, trans);
    app.shell.add(sidebar, 'right', { rank: 700 });
    if (restorer) {
      restorer.add(sidebar, sidebar.id);
    }
    app.commands.addCommand(CommandIDs.openFeedback, {
      label: trans.__('Show Stage Feedback'),
      caption: trans.__('Open the NanoResearch feedback sidebar'),
      execute: () => app.shell.activateById(sidebar.id)
    });
    palette?.addItem({ command: CommandIDs.openFeedback, category: PALETTE_CATEGORY });
  }
};
