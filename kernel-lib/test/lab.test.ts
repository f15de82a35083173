/**
 * The notebook API: Lab.open, profiles, projects, sql, author defaults, and the kernel display
 * detection (tslab's writer is used only when the kernel loaded it).
 */
import { promises as fs } from 'fs';
import * as path from 'path';
import { STAGE_MIME_TYPE, type StageBundle } from '@nanoresearch/schema';
import { Lab, defaultAuthor, workspaceName } from '../src/lab';
import { resolveAuthor } from '../src/author';
import { DisplaySendQueue, StageDisplay, kernelDisplayWriter, type DisplayMessage } from '../src/display';
import { openTestLab, type TestLab } from './lab-fixture';

describe('Lab', () => {
  let t: TestLab | undefined;
  afterEach(async () => {
    await t?.close();
    t = undefined;
  });

  test('the default profile is evidence-first; useProfile persists across sessions', async () => {
    t = await openTestLab();
    expect((await t.lab.profile()).archetype).toBe('evidence-first');
    await t.lab.useProfile('ablation-focused');
    const llm = t.lab.llm;
    await t.lab.close();

    const reopened = await Lab.open({ home: t.home, llm, display: null });
    try {
      expect((await reopened.profile()).archetype).toBe('ablation-focused');
      const profiles = await reopened.store.read(q => q.all<{ id: string }>('select id from profiles order by id'));
      expect(profiles).toHaveLength(2);
    } finally {
      await reopened.close();
    }
    t.lab = await Lab.open({ home: t.home, llm, display: null });
  });

  test('useProfile refuses an unknown archetype and an invalid profile, naming what is wrong', async () => {
    t = await openTestLab();
    await expect(t.lab.useProfile('cautious')).rejects.toThrow(/evidence-first/);
    await expect(t.lab.useProfile({ id: 'p', name: 'P' } as never)).rejects.toThrow(/research/);
  });

  test('project() gets or creates by topic and profile, with a readable workspace in the workspaces folder', async () => {
    t = await openTestLab();
    const a = await t.lab.project('Tabular  classification with small MLPs', { title: 'MLPs' });
    const b = await t.lab.project('Tabular classification with small MLPs');
    expect(b.id).toBe(a.id);
    expect(b.title).toBe('MLPs');
    // openTestLab puts the workspaces under <home>/projects; the name is the topic, then the id's tail.
    expect(a.workspace).toBe(path.join(t.home, 'projects', `tabular-classification-with-small-mlps-${a.id.slice(-6)}`));
    const other = await t.lab.project('Tabular classification with small MLPs', { profile: 'exploratory' });
    expect(other.id).not.toBe(a.id);
    expect(other.record.profile_id).not.toBe(a.record.profile_id);
    const custom = await t.lab.project('Graph neural networks', { workspace: path.join(t.home, 'gnn') });
    expect(custom.workspace).toBe(path.join(t.home, 'gnn'));
    const count = await t.lab.store.read(q => q.get<{ n: number }>('select count(*) as n from projects'));
    expect(count!.n).toBe(3);
  });

  test('by default workspaces go to a visible nanoresearch/ folder in the current folder (beside the notebook in a kernel)', async () => {
    t = await openTestLab();
    const cwd = process.cwd();
    // The default, not the folder `npm test` points every other test at.
    const configured = process.env.NANORESEARCH_WORKSPACES;
    delete process.env.NANORESEARCH_WORKSPACES;
    process.chdir(t.home);
    let lab: Lab | undefined;
    try {
      lab = await Lab.open({ home: path.join(t.home, '.hidden-home'), llm: t.lab.llm, display: null });
      const project = await lab.project('Graph neural networks on molecules!');
      expect(project.workspace).toBe(path.join(await fs.realpath(t.home), 'nanoresearch', `graph-neural-networks-on-molecules-${project.id.slice(-6)}`));
      expect((await fs.stat(project.workspace)).isDirectory()).toBe(true);
      expect(workspaceName('   ', 'prj_0123456789')).toBe('project-456789');
    } finally {
      await lab?.close();
      process.chdir(cwd);
      if (configured !== undefined) process.env.NANORESEARCH_WORKSPACES = configured;
    }
  });

  test('sql() returns rows and shows them as a table in a notebook', async () => {
    t = await openTestLab();
    await t.lab.project('Topic one');
    const rows = await t.lab.sql('select topic, status from projects');
    expect(rows).toEqual([{ topic: 'Topic one', status: 'active' }]);
    const table = t.displays[t.displays.length - 1];
    expect(Object.keys(table.data).sort()).toEqual(['text/html', 'text/markdown']);
    expect(String(table.data['text/markdown'])).toContain('Topic one');
    await expect(t.lab.sql('delete from projects')).rejects.toThrow();
  });

  test('the author defaults to NANORESEARCH_AUTHOR, then the OS user', () => {
    expect(defaultAuthor({ NANORESEARCH_AUTHOR: ' grace ' })).toBe('grace');
    // Without the variable: git's user.name where git has one, else the OS user.
    expect(defaultAuthor({})).toBe(resolveAuthor({ env: {} }).author);
    expect(['git', 'os']).toContain(resolveAuthor({ env: {} }).source);
  });
});

describe('display', () => {
  const bundle: StageBundle = {
    version: 1,
    stage: 'ideation',
    project_id: 'prj_1',
    stage_run_id: 'sr_1',
    status: 'running',
    title: 'Ideation · Test',
    summary: '',
    progress: { step: 'searching', done: 1, total: 3 },
    outputs: {},
    skills_used: [],
    memories_used: [],
    usage: { prompt_tokens: 0, completion_tokens: 0, calls: 0, cost_usd: 0, wall_ms: 0 }
  };

  test('outside a kernel nothing is displayed; with NANORESEARCH_PROGRESS=stderr a progress line is printed', () => {
    expect(kernelDisplayWriter()).toBeNull();
    const write = jest.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      new StageDisplay({ env: {} }).show(bundle, 'md');
      expect(write).not.toHaveBeenCalled();
      new StageDisplay({ env: { NANORESEARCH_PROGRESS: 'stderr' } }).show(bundle, 'md');
      expect(write).toHaveBeenCalledWith('[ideation] running: searching (1/3)\n');
    } finally {
      write.mockRestore();
    }
  });

  test('inside a tslab kernel the stage goes through the kernel writer as one message, then updates', () => {
    // What the kernel does: load tslab's jupyter module and set the writer of the executing cell.
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- the kernel's own module object: the test sets its writer property, which an ES import binding cannot
    const jupyter = require('tslab/dist/jupyter') as { lastWriteDisplayData: ((m: DisplayMessage, u: boolean) => void) | null };
    const sent: Array<[DisplayMessage, boolean]> = [];
    jupyter.lastWriteDisplayData = (message, update) => sent.push([message, update]);
    try {
      expect(kernelDisplayWriter()).not.toBeNull();
      const display = new StageDisplay();
      display.show(bundle, '**Ideation** running');
      display.show({ ...bundle, status: 'done', progress: null }, '**Ideation** done');
      expect(sent.map(([, update]) => update)).toEqual([false, true]);
      expect(sent[0][0].transient.display_id).toBe(display.displayId);
      expect(sent[1][0].transient.display_id).toBe(display.displayId);
      expect(sent[1][0].data).toEqual({
        [STAGE_MIME_TYPE]: { ...bundle, status: 'done', progress: null },
        'text/markdown': '**Ideation** done'
      });
    } finally {
      jupyter.lastWriteDisplayData = null;
    }
  });

  /** zeromq's error for a send made while the iopub socket's previous send is still being written. */
  const busy = () => Object.assign(new Error('Socket is busy writing; only one send operation may be in progress at any time'), { code: 'EBUSY' });
  const message = (id: string, text: string): DisplayMessage => ({ data: { 'text/plain': text }, metadata: {}, transient: { display_id: id } });

  test('a busy kernel socket never throws into a stage card: the card is sent once the socket is free, in order', async () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- the kernel's own module object, as above
    const jupyter = require('tslab/dist/jupyter') as { lastWriteDisplayData: ((m: DisplayMessage, u: boolean) => void) | null };
    const sent: Array<[string, boolean]> = [];
    let busyFor = 2;
    jupyter.lastWriteDisplayData = (m, update) => {
      if (busyFor-- > 0) throw busy();
      sent.push([(m.data['text/markdown'] as string) ?? '', update]);
    };
    try {
      const display = new StageDisplay();
      expect(() => display.show(bundle, 'running')).not.toThrow();
      expect(() => display.show({ ...bundle, status: 'done', progress: null }, 'done')).not.toThrow();
      expect(sent).toEqual([]);
      await new Promise(resolve => setTimeout(resolve, 50));
      // The first show, carrying the latest state (the queued update was merged into it).
      expect(sent).toEqual([['done', false]]);
      display.show(bundle, 'again');
      expect(sent).toEqual([
        ['done', false],
        ['again', true]
      ]);
    } finally {
      jupyter.lastWriteDisplayData = null;
    }
  });

  test('the send queue keeps the order of different displays, merges updates of one, and gives up on a socket that stays busy', async () => {
    const queue = new DisplaySendQueue({ retryMs: 1, giveUpMs: 30 });
    const sent: string[] = [];
    let busyFor = 1;
    const send = (m: DisplayMessage, update: boolean) => {
      if (busyFor-- > 0) throw busy();
      sent.push(`${m.transient.display_id}:${m.data['text/plain']}:${update ? 'update' : 'show'}`);
    };
    queue.write(send, message('a', '1'), false);
    queue.write(send, message('b', '1'), false);
    queue.write(send, message('a', '2'), true);
    queue.write(send, message('b', '2'), true);
    expect(queue.pending).toBe(2);
    await new Promise(resolve => setTimeout(resolve, 20));
    expect(sent).toEqual(['a:2:show', 'b:2:show']);
    expect(queue.pending).toBe(0);

    // Another failure than EBUSY drops that message only.
    queue.write(
      () => {
        throw new Error('Socket is closed');
      },
      message('c', '1'),
      false
    );
    expect(queue.pending).toBe(0);

    const never = () => {
      throw busy();
    };
    queue.write(never, message('d', '1'), false);
    await new Promise(resolve => setTimeout(resolve, 80));
    expect(queue.pending).toBe(0);
    queue.write(send, message('e', '1'), false);
    expect(sent.at(-1)).toBe('e:1:show');
  });
});
