/**
 * The lab panel: the researcher's skill bank, memories, planner adapters with their training
 * history, and a read-only SQL box. Everything goes through the bridge of the current
 * notebook's kernel, the one process that holds the store.
 */
import type { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, MainAreaWidget } from '@jupyterlab/apputils';
import { ITranslator, nullTranslator, type TranslationBundle } from '@jupyterlab/translation';
import type { AdapterRecord, Memory, ModelsReport, Skill, SqlResult } from '@nanoresearch/schema';
import { Widget } from '@lumino/widgets';
import { CommandIDs, PALETTE_CATEGORY, TRANSLATION_DOMAIN } from './constants';
import { formatValue, h, table } from './dom';
import { INanoBridge, type INanoBridgeMethods } from './tokens';

type Tab = 'skills' | 'memories' | 'adapters' | 'models' | 'sql';
/** The tabs and their labels (translated when drawn). */
const TABS: Array<[Tab, string]> = [
  ['skills', 'Skills'],
  ['memories', 'Memories'],
  ['adapters', 'Adapters'],
  ['models', 'Models'],
  ['sql', 'SQL']
];

/** The result rows as a table (columns in the order the query gave them); JSON values fold open. */
export function sqlTable(result: SqlResult): HTMLTableElement {
  return table(
    result.columns,
    result.rows.map(row =>
      result.columns.map(column => {
        const value = row[column];
        return value !== null && typeof value === 'object' ? jsonTree(value as object) : formatValue(value);
      })
    )
  );
}

/** Characters of a folded JSON value's one-line preview. */
const JSON_PREVIEW_CHARS = 80;

/**
 * A JSON value (a JSON column: a trajectory, a planner's output, usage) as a tree that folds:
 * closed it is one line (its size and the start of its text), open it lists each key or item,
 * nested objects folding the same way.
 */
export function jsonTree(value: object): HTMLElement {
  const entries: Array<[string, unknown]> = Array.isArray(value) ? value.map((v, i) => [String(i), v]) : Object.entries(value);
  const size = Array.isArray(value)
    ? `[${entries.length} item${entries.length === 1 ? '' : 's'}]`
    : `{${entries.length} key${entries.length === 1 ? '' : 's'}}`;
  const text = JSON.stringify(value);
  const preview = text.length > JSON_PREVIEW_CHARS ? `${text.slice(0, JSON_PREVIEW_CHARS - 1)}…` : text;
  return h(
    'details',
    { class: 'jp-nr-json' },
    h('summary', {}, h('span', { class: 'jp-nr-json-size' }, size), ' ', h('span', { class: 'jp-nr-json-preview' }, preview)),
    h(
      'ul',
      { class: 'jp-nr-json-entries' },
      entries.map(([key, v]) =>
        h(
          'li',
          {},
          h('span', { class: 'jp-nr-json-key' }, key),
          ': ',
          v !== null && typeof v === 'object' ? jsonTree(v as object) : h('span', { class: `jp-nr-json-${v === null ? 'null' : typeof v}` }, JSON.stringify(v))
        )
      )
    )
  );
}

/** Thrown (and caught) when a tab's data arrives after another tab was asked for. */
const STALE = Symbol('stale tab request');

export class LabPanel extends Widget {
  constructor(
    private readonly bridge: INanoBridge,
    private readonly trans: TranslationBundle = nullTranslator.load(TRANSLATION_DOMAIN)
  ) {
    super();
    this.id = 'nanoresearch-lab';
    this.title.label = trans.__('NanoResearch Lab');
    this.title.closable = true;
    this.addClass('jp-nr-lab');
    this.tabBar = h('nav', { class: 'jp-nr-tabs' });
    this.status = h('div', { class: 'jp-nr-lab-status' });
    this.content = h('div', { class: 'jp-nr-lab-content' });
    for (const [tab, label] of TABS) {
      const button = h('button', { class: 'jp-nr-tab', type: 'button', 'data-tab': tab }, trans.__(label));
      button.addEventListener('click', () => {
        this.setStatus('');
        void this.showTab(tab);
      });
      this.tabBar.appendChild(button);
    }
    this.node.append(this.tabBar, this.status, this.content);
    void this.showTab('skills');
  }

  /** Shows a tab, loading its data through the bridge. */
  async showTab(tab: Tab): Promise<void> {
    for (const button of Array.from(this.tabBar.children) as HTMLElement[]) {
      button.classList.toggle('jp-mod-current', button.dataset.tab === tab);
    }
    this.content.textContent = '';
    // Only the last tab asked for is drawn: an earlier one's answer arriving later is dropped.
    const request = ++this.requests;
    const current = <T>(value: T): T | never => {
      if (request !== this.requests) {
        throw STALE;
      }
      return value;
    };
    if (tab === 'sql') {
      this.renderSql();
      return;
    }
    try {
      if (tab === 'skills') {
        this.renderSkills(current(await this.kernel().then(k => k.skillsList())));
      } else if (tab === 'memories') {
        this.renderMemories(current(await this.kernel().then(k => k.memoriesList())));
      } else if (tab === 'models') {
        this.renderModels(current(await this.kernel().then(k => k.modelsList())));
      } else {
        this.renderAdapters(current(await this.kernel().then(k => k.adaptersList())));
      }
    } catch (reason) {
      if (reason === STALE) {
        return;
      }
      this.setStatus(reason instanceof Error ? reason.message : String(reason), true);
    }
  }

  private requests = 0;

  /** The bridge of the current notebook's kernel, the one process that holds the store. */
  private async kernel(): Promise<INanoBridgeMethods> {
    const panel = this.bridge.currentPanel();
    if (!panel) {
      throw new Error(this.trans.__('Open a notebook that runs the TypeScript (tslab) kernel: the lab panel reads the store through it.'));
    }
    return this.bridge.clientFor(panel);
  }

  private setStatus(text: string, error = false): void {
    this.status.textContent = text;
    this.status.classList.toggle('jp-nr-error', error);
  }

  private searchBox(onSearch: (query: string) => void): HTMLInputElement {
    const input = h('input', { class: 'jp-nr-search', type: 'search', placeholder: this.trans.__('Search…') });
    input.addEventListener('input', () => onSearch(input.value.trim().toLowerCase()));
    return input;
  }

  private renderSkills(skills: Skill[]): void {
    const list = h('div', { class: 'jp-nr-records' });
    const draw = (query: string): void => {
      list.textContent = '';
      const shown = skills.filter(s => !query || `${s.name} ${s.description} ${(s.tags ?? []).join(' ')}`.toLowerCase().includes(query));
      if (shown.length === 0) {
        list.appendChild(h('div', { class: 'jp-nr-muted' }, this.trans.__('No skills match.')));
      }
      for (const skill of shown) {
        list.appendChild(this.skillRecord(skill));
      }
    };
    this.content.append(this.searchBox(draw), list);
    draw('');
  }

  private skillRecord(skill: Skill): HTMLElement {
    const description = h('textarea', { class: 'jp-nr-edit', rows: '2' });
    description.value = skill.description;
    const instructions = h('textarea', { class: 'jp-nr-edit', rows: String(Math.max(3, skill.instructions.length)) });
    instructions.value = skill.instructions.join('\n');
    const editor = h('div', { class: 'jp-nr-editor', hidden: '' }, description, instructions);
    const save = this.actionButton(this.trans.__('Save'), async () => {
      const patch = {
        description: description.value.trim(),
        instructions: instructions.value
          .split('\n')
          .map(line => line.trim())
          .filter(Boolean)
      };
      await (await this.kernel()).skillsUpdate({ id: skill.id, patch });
      this.setStatus(this.trans.__('Saved skill %1.', skill.name));
      await this.showTab('skills');
    });
    save.hidden = true;
    const edit = this.actionButton(this.trans.__('Edit'), async () => {
      editor.hidden = !editor.hidden;
      save.hidden = editor.hidden;
    });
    const retire = this.actionButton(this.trans.__('Retire'), async () => {
      await (await this.kernel()).skillsRetire({ id: skill.id });
      this.setStatus(this.trans.__('Retired skill %1.', skill.name));
      await this.showTab('skills');
    });
    retire.disabled = skill.status === 'retired';
    return h(
      'article',
      { class: `jp-nr-record jp-nr-${skill.status}`, 'data-id': skill.id },
      h(
        'div',
        { class: 'jp-nr-record-head' },
        h('strong', {}, skill.name),
        h('span', { class: 'jp-nr-chip' }, skill.source),
        h('span', { class: 'jp-nr-chip' }, `v${skill.version}`),
        skill.status === 'retired' ? h('span', { class: 'jp-nr-chip jp-nr-retired-chip' }, this.trans.__('retired')) : null,
        h('span', { class: 'jp-nr-muted' }, this.trans.__('used %1×', skill.usage_count ?? 0)),
        h('span', { class: 'jp-nr-actions' }, edit, save, retire)
      ),
      h('div', { class: 'jp-nr-record-body' }, skill.description),
      editor
    );
  }

  private renderMemories(memories: Memory[]): void {
    const list = h('div', { class: 'jp-nr-records' });
    const draw = (query: string): void => {
      list.textContent = '';
      const shown = memories.filter(m => !query || `${m.kind} ${m.key} ${m.content} ${(m.tags ?? []).join(' ')}`.toLowerCase().includes(query));
      if (shown.length === 0) {
        list.appendChild(h('div', { class: 'jp-nr-muted' }, this.trans.__('No memories match.')));
      }
      for (const memory of shown) {
        list.appendChild(this.memoryRecord(memory));
      }
    };
    this.content.append(this.searchBox(draw), list);
    draw('');
  }

  private memoryRecord(memory: Memory): HTMLElement {
    const content = h('textarea', { class: 'jp-nr-edit', rows: '3' });
    content.value = memory.content;
    const importance = h('input', { class: 'jp-nr-number', type: 'number', min: '0', max: '1', step: '0.05' });
    importance.value = String(memory.importance);
    const editor = h('div', { class: 'jp-nr-editor', hidden: '' }, content, h('label', {}, 'Importance ', importance));
    const save = this.actionButton(this.trans.__('Save'), async () => {
      await (
        await this.kernel()
      ).memoriesUpdate({
        id: memory.id,
        patch: { content: content.value.trim(), importance: Number(importance.value) }
      });
      this.setStatus(this.trans.__('Saved memory.'));
      await this.showTab('memories');
    });
    save.hidden = true;
    const edit = this.actionButton(this.trans.__('Edit'), async () => {
      editor.hidden = !editor.hidden;
      save.hidden = editor.hidden;
    });
    const retire = this.actionButton(this.trans.__('Retire'), async () => {
      await (await this.kernel()).memoriesRetire({ id: memory.id });
      this.setStatus(this.trans.__('Retired memory.'));
      await this.showTab('memories');
    });
    retire.disabled = memory.status === 'retired';
    const conditions = memory.conditions
      ? Object.entries(memory.conditions)
          .map(([k, v]) => `${k}: ${v}`)
          .join(' · ')
      : '';
    return h(
      'article',
      { class: `jp-nr-record jp-nr-${memory.status}`, 'data-id': memory.id },
      h(
        'div',
        { class: 'jp-nr-record-head' },
        h('span', { class: 'jp-nr-chip' }, memory.kind.replace(/_/g, ' ')),
        h('span', { class: 'jp-nr-muted' }, memory.scope === 'global' ? this.trans.__('global') : this.trans.__('project')),
        h('span', { class: 'jp-nr-muted' }, this.trans.__('importance %1 · confidence %2', formatValue(memory.importance), formatValue(memory.confidence))),
        memory.status === 'retired' ? h('span', { class: 'jp-nr-chip jp-nr-retired-chip' }, this.trans.__('retired')) : null,
        h('span', { class: 'jp-nr-actions' }, edit, save, retire)
      ),
      h('div', { class: 'jp-nr-record-body' }, memory.content),
      conditions ? h('div', { class: 'jp-nr-muted' }, conditions) : null,
      editor
    );
  }

  private renderModels(report: ModelsReport): void {
    const source =
      report.provider === 'local'
        ? this.trans.__("Embedded models, run in the kernel on this machine's CPU")
        : this.trans.__('OpenAI-compatible endpoint %1', report.endpoint ?? '');
    this.content.append(
      h('div', { class: 'jp-nr-models-source' }, source),
      table(
        [this.trans.__('role'), this.trans.__('model'), this.trans.__('licence')],
        report.roles.map(r => [r.role, r.model, r.license ?? ''])
      ),
      h('p', { class: 'jp-nr-muted' }, this.trans.__('To switch: %1', report.howToSwitch))
    );
  }

  private renderAdapters(records: AdapterRecord[]): void {
    // One row per adapter: its manifest (how it was trained) with the registry's fields.
    const adapters: Array<Record<string, unknown>> = records.map(r => ({ ...r.manifest, version: r.version, active: r.active, created_at: r.created_at }));
    if (adapters.length === 0) {
      this.content.appendChild(h('div', { class: 'jp-nr-muted' }, this.trans.__('No planner adapters yet: run lab.train() after giving feedback.')));
      return;
    }
    const columns = ['version', 'active', 'created_at', 'examples', 'steps', 'loss_type', 'final_loss', 'mean_advantage', 'parent_version'];
    const present = columns.filter(c => adapters.some(a => a[c] !== undefined));
    this.content.append(
      h('h3', { class: 'jp-nr-lab-heading' }, this.trans.__('Planner adapters and training history')),
      table(
        present,
        adapters.map(a => present.map(c => formatValue(a[c])))
      )
    );
  }

  private renderSql(): void {
    const query = h('textarea', { class: 'jp-nr-sql', rows: '4', spellcheck: 'false' });
    query.value = this.lastSql;
    const result = h('div', { class: 'jp-nr-sql-result' });
    const run = this.actionButton(this.trans.__('Run (read-only)'), async () => {
      this.lastSql = query.value;
      result.textContent = '';
      const answer = await (await this.kernel()).sql({ query: query.value });
      result.append(h('div', { class: 'jp-nr-muted' }, this.trans._n('%1 row', '%1 rows', answer.rows.length)), sqlTable(answer));
    });
    this.content.append(query, h('div', { class: 'jp-nr-sql-actions' }, run), result);
  }

  private actionButton(label: string, action: () => Promise<void>): HTMLButtonElement {
    const button = h('button', { class: 'jp-nr-button', type: 'button' }, label);
    button.addEventListener('click', () => {
      this.setStatus('');
      action().catch(reason => this.setStatus(reason instanceof Error ? reason.message : String(reason), true));
    });
    return button;
  }

  private lastSql = 'select stage, status, summary from stage_runs order by started_at desc limit 20';
  private readonly tabBar: HTMLElement;
  private readonly status: HTMLElement;
  private readonly content: HTMLElement;
}

export const labPanelPlugin: JupyterFrontEndPlugin<void> = {
  id: '@nanoresearch/jupyterlab:lab-panel',
  description: 'Main-area panel: skills, memories, planner adapters and read-only SQL.',
  autoStart: true,
  requires: [INanoBridge],
  optional: [ICommandPalette, ITranslator],
  activate: (app: JupyterFrontEnd, bridge: INanoBridge, palette: ICommandPalette | null, translator: ITranslator | null) => {
    const trans = (translator ?? nullTranslator).load(TRANSLATION_DOMAIN);
    let widget: MainAreaWidget<LabPanel> | null = null;
    app.commands.addCommand(CommandIDs.openLabPanel, {
      label: trans.__('Open NanoResearch Lab'),
      caption: trans.__('Browse and edit skills and memories, see planner adapters, query the store'),
      execute: async args => {
        if (!widget || widget.isDisposed) {
          const created = new MainAreaWidget<LabPanel>({ content: new LabPanel(bridge, trans) });
          created.id = 'nanoresearch-lab-panel';
          created.title.label = trans.__('NanoResearch Lab');
          created.title.closable = true;
          widget = created;
        }
        if (!widget.isAttached) {
          app.shell.add(widget, 'main');
        }
        app.shell.activateById(widget.id);
        // From a learned feedback item: its tab, searched for the memory or skill.
        const tab = args.tab as 'memories' | 'skills' | undefined;
        if (tab === 'memories' || tab === 'skills') {
          await widget.content.showTab(tab);
          const search = widget.content.node.querySelector<HTMLInputElement>('.jp-nr-search');
          if (search && typeof args.query === 'string') {
            search.value = args.query;
            search.dispatchEvent(new Event('input'));
          }
        }
      }
    });
    palette?.addItem({ command: CommandIDs.openLabPanel, category: PALETTE_CATEGORY });
  }
};
