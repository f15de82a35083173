/**
 * The kernel side of the extension's bridge: methods run against a real Lab (temporary store,
 * scripted LLM server) and their replies are displayed through an injected writer.
 */
import { promises as fs } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { BRIDGE_METHOD_NAMES, BRIDGE_MIME_TYPE, BridgeMethodsSchema, type BridgeReply } from '@nanoresearch/schema';
import { resolveAuthor } from '../src/author';
import { Bridge } from '../src/bridge';
import type { DisplayMessage } from '../src/display';
import { schemaErrors, schemaErrorsAt } from '../src/validate';
import type { ScriptRequest } from '../src/testing';
import { emptyJudge, openTestLab, requestText, type TestLab } from './lab-fixture';

let t: TestLab;
let replies: DisplayMessage[];
let bridge: Bridge;
let stageRunId: string;

const lastPayload = (): BridgeReply => replies[replies.length - 1].data[BRIDGE_MIME_TYPE] as BridgeReply;
/** Every successful reply, checked against its method's result in schema/bridge-methods.schema.json. */
const answered = new Set<string>();

/** Learning from feedback that says so fails while this is set (for feedback.retry). */
let failLearning = true;

beforeAll(async () => {
  const judge = (req: ScriptRequest) =>
    failLearning && requestText(req).includes('Learning fails once.')
      ? { status: 400, body: { error: { message: 'context length exceeded', type: 'invalid_request_error' } } }
      : emptyJudge(req);
  t = await openTestLab({ scripts: { judge } });
  const project = await t.lab.project('Small MLPs on tabular data');
  stageRunId = (await project.ideate()).id;
  replies = [];
  let opened = 0;
  bridge = new Bridge({
    openLab: async () => {
      opened += 1;
      if (opened > 1) throw new Error('the bridge opened the lab twice');
      return t.lab;
    },
    writer: message => replies.push(message),
    env: { NANORESEARCH_HOME: t.home }
  });
});

afterEach(() => {
  for (const reply of replies.map(r => r.data[BRIDGE_MIME_TYPE] as BridgeReply)) {
    expect(schemaErrors('bridge-reply', reply)).toEqual([]);
    if (reply.error !== undefined) continue;
    expect([reply.method, schemaErrorsAt('bridge-methods', `/properties/${reply.method}/properties/result`, reply.result)]).toEqual([reply.method, []]);
    answered.add(reply.method);
  }
  replies.length = 0;
});

afterAll(async () => {
  await t.close();
  // Each method of the schema answered at least once in this file, in the schema's shape.
  expect([...answered].sort()).toEqual([...BRIDGE_METHOD_NAMES].sort());
});

describe('the method table', () => {
  it("is the schema's: every method is answered and no other", async () => {
    expect(Object.keys(BridgeMethodsSchema.properties as object)).toEqual([...BRIDGE_METHOD_NAMES]);
    // A method name the schema lacks is refused before any Lab is opened.
    await bridge.respond('skills.delete', { id: 'x' }, 'br_unknown');
    expect(lastPayload()).toMatchObject({
      request_id: 'br_unknown',
      error: `unknown bridge method 'skills.delete': known are ${BRIDGE_METHOD_NAMES.join(', ')}`
    });
  });
});

describe('bridge.respond', () => {
  it('adds feedback idempotently by id, with author and origin', async () => {
    const params = {
      stage_run_id: stageRunId,
      id: 'fb_sidebar_1',
      text: 'Always add a linear baseline.',
      author: 'ana',
      origin: 'notebook:study.ipynb',
      created_at: '2026-11-20T10:00:00.000Z'
    };
    await bridge.respond('feedback.add', params, 'br_1');
    expect(lastPayload()).toMatchObject({ request_id: 'br_1', method: 'feedback.add', result: { id: 'fb_sidebar_1', created: true } });
    await bridge.respond('feedback.add', params, 'br_2');
    expect(lastPayload()).toMatchObject({ request_id: 'br_2', result: { id: 'fb_sidebar_1', created: false } });
    const rows = await t.lab.store.read(q =>
      q.all<Record<string, unknown>>('select id, author, origin, created_at from feedback where stage_run_id = $1', [stageRunId])
    );
    expect(rows).toEqual([{ id: 'fb_sidebar_1', author: 'ana', origin: 'notebook:study.ipynb', created_at: expect.stringMatching(/^2026-11-20T10:00:00/) }]);
  });

  it('answers stage.get with the stage run and its planner call, valid against the cell metadata schema', async () => {
    await bridge.respond('stage.get', { stage_run_id: stageRunId }, 'br_3');
    const result = lastPayload().result as { stage_run: Record<string, unknown>; planner_call: Record<string, unknown> };
    expect(result.stage_run).toMatchObject({ id: stageRunId, stage: 'ideation', status: 'done' });
    expect(result.planner_call).toMatchObject({ stage_run_id: stageRunId, stage: 'ideation' });
    expect(typeof result.planner_call.x).toBe('string');
    const metadata = {
      stage: 'ideation',
      status: 'done',
      stage_run_id: stageRunId,
      feedback: [],
      trajectory: result.stage_run,
      planner_call: result.planner_call
    };
    expect(schemaErrors('cell-metadata', metadata)).toEqual([]);
  });

  it('runs read-only SQL and refuses writes with the store error', async () => {
    await bridge.respond('sql', { query: 'select count(*) as n from feedback' });
    expect(lastPayload().result).toEqual({ columns: ['n'], rows: [{ n: 1 }] });
    await bridge.respond('sql', { query: 'delete from feedback' });
    expect(lastPayload().error).toMatch(/read/i);
    expect(await t.lab.store.read(q => q.get<{ n: number }>('select count(*) as n from feedback'))).toEqual({ n: 1 });
  });

  it('lists, updates and retires memories and skills', async () => {
    await bridge.respond('skills.list');
    const skills = lastPayload().result as Array<{ id: string; status: string }>;
    // The built-in skills (skills/*/SKILL.md) are in every new store.
    expect(skills.length).toBeGreaterThan(0);
    const id = skills[0].id;
    await bridge.respond('skills.update', { id, patch: { description: 'Edited in the lab panel.' } });
    expect(lastPayload().error).toBeUndefined();
    expect((await t.lab.skills.get(id))?.description).toBe('Edited in the lab panel.');
    await bridge.respond('skills.retire', { id });
    expect(lastPayload().error).toBeUndefined();
    expect((await t.lab.skills.get(id))?.status).toBe('retired');
    const memory = await t.lab.memory.remember({ kind: 'user_constraint', content: 'CPU only, 15 minutes per experiment.' });
    await bridge.respond('memories.list');
    expect((lastPayload().result as Array<{ id: string }>).map(m => m.id)).toContain(memory.id);
    await bridge.respond('memories.update', { id: memory.id, patch: { importance: 0.9 } });
    expect((lastPayload().result as { importance: number }).importance).toBe(0.9);
    await bridge.respond('memories.retire', { id: memory.id });
    expect((await t.lab.memory.get(memory.id))?.status).toBe('retired');
  });

  it('lists planner adapters (none in a new store)', async () => {
    await bridge.respond('adapters.list');
    expect(lastPayload()).toEqual({ method: 'adapters.list', result: [] });
  });

  it('reports bad requests as errors instead of throwing', async () => {
    await expect(bridge.respond('nope.method', {}, 'br_x')).resolves.toBeUndefined();
    expect(lastPayload()).toMatchObject({ request_id: 'br_x', error: expect.stringMatching(/unknown bridge method 'nope.method'/) });
    await bridge.respond('feedback.add', { stage_run_id: stageRunId, id: 'fb_2', text: '', author: 'ana' });
    expect(lastPayload().error).toBe('bad parameters for feedback.add: /text must NOT have fewer than 1 characters');
    await bridge.respond('feedback.add', { stage_run_id: stageRunId, id: 'fb_2', text: 'x', author: 'ana', created_at: 'yesterday' });
    expect(lastPayload().error).toMatch(/\/created_at must match format "date-time"/);
    await bridge.respond('skills.update', { id: 'x', patch: { usage_count: 3 } });
    expect(lastPayload().error).toMatch(/^bad parameters for skills.update: \/patch must NOT have additional properties/);
    await bridge.respond('stage.get', { stage_run_id: 'sr_missing' });
    expect(lastPayload().error).toMatch(/no stage run 'sr_missing'/);
    expect(replies[replies.length - 1].data['text/plain']).toMatch(/^bridge stage.get: no stage run/);
  });

  it('answers feedback.add at once and reports the learning state (queued → learned) and which ids the store holds', async () => {
    const params = { stage_run_id: stageRunId, id: 'fb_sidebar_learn', text: 'Prefer CPU-only methods.', author: 'ana', origin: 'notebook:study.ipynb' };
    const started = Date.now();
    await bridge.respond('feedback.add', params, 'br_l1');
    expect(Date.now() - started).toBeLessThan(1000);
    expect(lastPayload().result).toMatchObject({ id: 'fb_sidebar_learn', created: true, learning: { status: expect.stringMatching(/^(queued|learning)$/) } });
    await t.lab.learningIdle();
    await bridge.respond('feedback.learning', { ids: ['fb_sidebar_learn', 'fb_not_sent_yet'] }, 'br_l2');
    expect(lastPayload().result).toEqual({
      stored: ['fb_sidebar_learn'],
      states: { fb_sidebar_learn: expect.objectContaining({ status: 'learned', error: null, memories: [], skills: [] }), fb_not_sent_yet: null }
    });
    // Retry is only for a failed job.
    await bridge.respond('feedback.retry', { id: 'fb_sidebar_learn' });
    expect(lastPayload().error).toMatch(/is learned, not failed/);
    await bridge.respond('feedback.add', { ...params, id: 'fb_sidebar_fails', text: 'Learning fails once.' });
    await t.lab.learningIdle();
    expect((await t.lab.learningStates(['fb_sidebar_fails'])).fb_sidebar_fails).toMatchObject({ status: 'failed' });
    failLearning = false;
    await bridge.respond('feedback.retry', { id: 'fb_sidebar_fails' });
    expect(lastPayload().result).toMatchObject({ feedback_id: 'fb_sidebar_fails', status: 'queued' });
    await t.lab.learningIdle();
    await bridge.respond('feedback.learning', { ids: 'fb_sidebar_learn' });
    expect(lastPayload().error).toBe('bad parameters for feedback.learning: /ids must be array');
  });

  it('answers with the Lab the notebook opened (its LLM limits), not one of its own', async () => {
    const own = new Bridge({ writer: message => replies.push(message), env: { NANORESEARCH_HOME: '/nonexistent-home' } });
    // t.lab is the Lab this process opened last, as a notebook's set-up cell would have.
    expect(await own.lab()).toBe(t.lab);
  });

  it('resolves the author: the JupyterLab setting, then NANORESEARCH_AUTHOR, then git, then the OS user', async () => {
    const withEnv = new Bridge({ openLab: async () => t.lab, writer: message => replies.push(message), env: { NANORESEARCH_AUTHOR: 'grace' } });
    await withEnv.respond('author.resolve', { setting: '' });
    expect(lastPayload().result).toEqual({ author: 'grace', source: 'NANORESEARCH_AUTHOR' });
    await withEnv.respond('author.resolve', { setting: ' Ada Lovelace ' });
    expect(lastPayload().result).toEqual({ author: 'Ada Lovelace', source: 'setting' });
    // Feedback given in code now signs with the same name as the sidebar's.
    const result = await t.lab.feedback(stageRunId, 'Cite the benchmark.');
    expect(result.feedback.author).toBe('Ada Lovelace');
    await withEnv.respond('author.resolve', { setting: '' });
    expect(lastPayload().result).toEqual({ author: 'grace', source: 'NANORESEARCH_AUTHOR' });
    await withEnv.respond('author.resolve', { setting: 3 });
    expect(lastPayload().error).toBe('bad parameters for author.resolve: /setting must be string');
  });

  it('orders the author sources: setting, NANORESEARCH_AUTHOR, git user.name, OS user', () => {
    const git = () => 'Grace Hopper';
    expect(resolveAuthor({ setting: 'Ada', env: { NANORESEARCH_AUTHOR: 'grace' }, git })).toEqual({ author: 'Ada', source: 'setting' });
    expect(resolveAuthor({ setting: ' ', env: { NANORESEARCH_AUTHOR: ' grace ' }, git })).toEqual({ author: 'grace', source: 'NANORESEARCH_AUTHOR' });
    expect(resolveAuthor({ setting: '', env: {}, git })).toEqual({ author: 'Grace Hopper', source: 'git' });
    expect(resolveAuthor({ setting: '', env: {}, git: () => null })).toEqual({ author: os.userInfo().username, source: 'os' });
  });

  it('reports the model of each role and imports a shared notebook', async () => {
    await bridge.respond('models.list');
    expect(lastPayload().result).toMatchObject({ provider: 'openai', roles: expect.arrayContaining([expect.objectContaining({ role: 'planner' })]) });
    const notebook = path.join(t.home, 'shared.ipynb');
    const cell = { cell_type: 'code', source: 'x', metadata: { nanoresearch: { stage: 'dreaming' } }, outputs: [], execution_count: null };
    await fs.writeFile(notebook, JSON.stringify({ nbformat: 4, nbformat_minor: 5, metadata: {}, cells: [cell] }));
    await bridge.respond('notebook.import', { path: notebook });
    expect(lastPayload().result).toMatchObject({ stageRuns: 0, plannerCalls: 0, feedback: 0, skipped: 1 });
  });

  it('fails loudly outside a kernel when no writer is given', async () => {
    const outside = new Bridge({ openLab: async () => t.lab, writer: null, env: { NANORESEARCH_HOME: t.home } });
    await expect(outside.respond('sql', { query: 'select 1 as one' })).rejects.toThrow(/needs a notebook kernel/);
  });
});
