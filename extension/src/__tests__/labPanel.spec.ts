import { NanoBridge } from '../bridge';
import { LabPanel, sqlTable } from '../labPanel';
import { kernelRelativePath } from '../sharing';
import { nextStage } from '../stageCells';
import { hasSetup, setupCode, stageCode } from '../templates';

const text = (el: Element | null) => (el?.textContent ?? '').replace(/\s+/g, ' ').trim();
const flush = () => new Promise(resolve => setTimeout(resolve, 0));

/** A bridge whose kernel answers from in-memory skills, memories and a SQL table. */
function fakeBridge() {
  const calls: Array<[string, any]> = [];
  const skills = [
    {
      id: 'baselines',
      name: 'Linear baseline first',
      description: 'Always run a linear baseline.',
      instructions: ['Fit logistic regression'],
      source: 'builtin',
      version: 1,
      status: 'active',
      usage_count: 3
    },
    {
      id: 'seeds',
      name: 'Three seeds',
      description: 'Report variance over seeds.',
      instructions: ['Use 3 seeds'],
      source: 'distilled',
      version: 2,
      status: 'active'
    }
  ];
  const client = {
    call: async (method: string, params: any) => {
      calls.push([method, params]);
      switch (method) {
        case 'skills.list':
          return skills.map(s => ({ ...s }));
        case 'skills.retire':
          skills.find(s => s.id === params.id)!.status = 'retired';
          return {};
        case 'models.list':
          return {
            provider: 'local',
            endpoint: null,
            roles: [
              { role: 'planner', model: 'SmolLM2-135M-Instruct.Q4_1', license: 'Apache-2.0' },
              { role: 'coding', model: 'qwen2.5-coder-1.5b-instruct-q4_k_m', license: 'Apache-2.0' }
            ],
            howToSwitch: 'Set NANORESEARCH_LLM_BASE_URL before starting JupyterLab.'
          };
        case 'sql':
          return {
            columns: ['stage', 'n'],
            rows: [
              { stage: 'ideation', n: 2 },
              { stage: 'planning', n: 1.23456 }
            ]
          };
        default:
          throw new Error(`unexpected ${method}`);
      }
    }
  };
  const bridge = { clientFor: () => new NanoBridge(client as any), currentPanel: () => ({}) as any, author: () => 'ana', defaultTopic: () => '' };
  return { bridge: bridge as any, calls };
}

describe('lab panel', () => {
  it('lists skills, filters them by search, and retires one through the bridge', async () => {
    const { bridge, calls } = fakeBridge();
    const panel = new LabPanel(bridge);
    await flush();
    expect(Array.from(panel.node.querySelectorAll('.jp-nr-record strong')).map(text)).toEqual(['Linear baseline first', 'Three seeds']);
    const search = panel.node.querySelector<HTMLInputElement>('.jp-nr-search')!;
    search.value = 'variance';
    search.dispatchEvent(new Event('input'));
    expect(Array.from(panel.node.querySelectorAll('.jp-nr-record strong')).map(text)).toEqual(['Three seeds']);
    const retire = Array.from(panel.node.querySelectorAll<HTMLButtonElement>('.jp-nr-record button')).find(b => b.textContent === 'Retire')!;
    retire.click();
    await flush();
    await flush();
    expect(calls.map(c => c[0])).toEqual(['skills.list', 'skills.retire', 'skills.list']);
    expect(calls[1][1]).toEqual({ id: 'seeds' });
    expect(text(panel.node.querySelector('.jp-nr-lab-status'))).toBe('Retired skill Three seeds.');
    expect(panel.node.querySelector('.jp-nr-record[data-id="seeds"]')!.classList.contains('jp-nr-retired')).toBe(true);
  });

  it('runs SQL through the bridge and shows the rows as a table', async () => {
    const { bridge, calls } = fakeBridge();
    const panel = new LabPanel(bridge);
    await panel.showTab('sql');
    panel.node.querySelector<HTMLTextAreaElement>('.jp-nr-sql')!.value = 'select stage, count(*) n from stage_runs group by 1';
    panel.node.querySelector<HTMLButtonElement>('.jp-nr-sql-actions button')!.click();
    await flush();
    expect(calls[calls.length - 1]).toEqual(['sql', { query: 'select stage, count(*) n from stage_runs group by 1' }]);
    const rows = Array.from(panel.node.querySelectorAll('.jp-nr-sql-result tr')).map(r => Array.from(r.children).map(text));
    expect(rows).toEqual([
      ['stage', 'n'],
      ['ideation', '2'],
      ['planning', '1.235']
    ]);
  });

  it('shows which model serves each role and how to switch', async () => {
    const { bridge } = fakeBridge();
    const panel = new LabPanel(bridge);
    await panel.showTab('models');
    expect(text(panel.node.querySelector('.jp-nr-models-source'))).toMatch(/Embedded models/);
    const rows = Array.from(panel.node.querySelectorAll('.jp-nr-lab-content tr')).map(r => Array.from(r.children).map(text));
    expect(rows).toEqual([
      ['role', 'model', 'licence'],
      ['planner', 'SmolLM2-135M-Instruct.Q4_1', 'Apache-2.0'],
      ['coding', 'qwen2.5-coder-1.5b-instruct-q4_k_m', 'Apache-2.0']
    ]);
    expect(text(panel.node.querySelector('.jp-nr-lab-content p'))).toBe('To switch: Set NANORESEARCH_LLM_BASE_URL before starting JupyterLab.');
  });

  it('says a kernel is needed when no notebook is open', async () => {
    const panel = new LabPanel({ clientFor: () => null, currentPanel: () => null } as any);
    await flush();
    expect(text(panel.node.querySelector('.jp-nr-lab-status'))).toMatch(/TypeScript \(tslab\) kernel/);
  });

  it('renders SQL results in the column order of the query', () => {
    const t = sqlTable({ columns: ['b', 'a'], rows: [{ a: 1, b: 'x' }] });
    expect(Array.from(t.querySelectorAll('td')).map(text)).toEqual(['x', '1']);
  });

  it('shows JSON columns as trees that fold, closed to one line, every value there when opened', () => {
    const usage = { calls: 3, tokens: { prompt: 120, completion: 40 }, notes: ['a', null] };
    const t = sqlTable({ columns: ['stage', 'usage'], rows: [{ stage: 'ideation', usage }] });
    const cell = t.querySelectorAll('td')[1];
    const tree = cell.querySelector(':scope > details.jp-nr-json') as HTMLDetailsElement;
    expect(tree.open).toBe(false);
    expect(text(tree.querySelector(':scope > summary'))).toBe(`{3 keys} ${JSON.stringify(usage)}`);
    const entries = Array.from(tree.querySelectorAll(':scope > ul > li'));
    expect(entries.map(li => text(li.querySelector('.jp-nr-json-key')))).toEqual(['calls', 'tokens', 'notes']);
    expect(text(entries[0])).toBe('calls: 3');
    // Nested values fold the same way.
    expect(text(entries[1].querySelector(':scope > details > summary'))).toBe('{2 keys} {"prompt":120,"completion":40}');
    expect(text(entries[2].querySelector(':scope > details > summary'))).toBe('[2 items] ["a",null]');
    expect(Array.from(entries[2].querySelectorAll('li')).map(text)).toEqual(['0: "a"', '1: null']);
    // A long value's summary is cut, the tree keeps all of it.
    const long = sqlTable({ columns: ['x'], rows: [{ x: { text: 'y'.repeat(500) } }] });
    expect(text(long.querySelector('summary')).length).toBeLessThan(100);
    expect(long.querySelector('li')!.textContent).toContain('y'.repeat(500));
  });
});

describe('stage cell templates and sharing helpers', () => {
  it('builds set-up and stage code that tslab runs', () => {
    expect(setupCode('MLPs "on" tables')).toBe(
      'import { Lab, llmConfigFromEnv } from "@nanoresearch/kernel";\n\nconst llm = llmConfigFromEnv();\nconst lab = await Lab.open({ llm });\nconst project = await lab.project("MLPs \\"on\\" tables");'
    );
    expect(hasSetup([setupCode('x')])).toBe(true);
    // With the settings' defaults: the quickstart's offline literature and the embedded model's per-call limit.
    const withDefaults = setupCode('x', { literatureSources: 'none', embeddedCallTimeoutMs: 600000 });
    expect(withDefaults).toContain('process.env.NANORESEARCH_LITERATURE_SOURCES ??= "none";');
    expect(withDefaults).toContain('const lab = await Lab.open({ llm: llm.provider === "local" ? { ...llm, timeoutMs: llm.timeoutMs ?? 600000 } : llm });');
    expect(hasSetup([withDefaults])).toBe(true);
    // Empty settings leave both to the environment.
    expect(setupCode('x', { literatureSources: ' ', embeddedCallTimeoutMs: 0 })).toBe(setupCode('x'));
    expect(hasSetup(['const lab = 1'])).toBe(false);
    // The lab and the project opened in cells of their own are a set-up too; either alone is not.
    const openLab = 'const lab = await Lab.open();';
    const openProject = 'const project = await lab.project("Split");';
    expect(hasSetup([openLab, '', openProject])).toBe(true);
    expect(hasSetup([openLab])).toBe(false);
    expect(hasSetup([openProject])).toBe(false);
    expect(stageCode('analysis')).toContain('const analysis = await project.analyze();');
    expect(stageCode('writing')).toContain('const writing = await project.write();');
  });

  it('picks the stage after the last stage cell', () => {
    expect(nextStage([])).toBe('ideation');
    expect(nextStage(['ideation', 'planning'])).toBe('experiment');
    expect(nextStage(['review'])).toBe('review');
  });

  it('makes server paths relative to the notebook folder, where the kernel runs', () => {
    expect(kernelRelativePath('work/study.ipynb', 'shared/ben.ipynb')).toBe('../shared/ben.ipynb');
    expect(kernelRelativePath('study.ipynb', 'shared/ben.ipynb')).toBe('shared/ben.ipynb');
    expect(kernelRelativePath('work/study.ipynb', 'work/ben.ipynb')).toBe('ben.ipynb');
  });
});
