import * as path from 'path';
import type { PlannerCall, StageRun } from '@nanoresearch/schema';
import { resolveAuthor, setAuthorSetting } from './author';
import { resolveDisplayWriter, type DisplayWriter } from './display';
import { recordFeedback } from './feedback';
import { Lab } from './lab';
import { importNotebook } from './sharing';

/** MIME type of the bridge's replies; the JupyterLab extension reads it from iopub. */
export const BRIDGE_MIME_TYPE = 'application/vnd.nanoresearch.bridge+json';

/** One bridge reply: the method's JSON result, or the error that stopped it. */
export interface BridgePayload {
  request_id?: string;
  method: string;
  result?: unknown;
  error?: string;
}

/** What `feedback.add` receives from the extension (the entry it wrote into the cell metadata). */
export interface FeedbackAddParams {
  stage_run_id: string;
  id: string;
  text: string;
  author: string;
  origin?: string;
  created_at?: string;
}

type Params = Record<string, unknown>;
type Method = (lab: Lab, params: Params) => Promise<unknown>;
/** A method that needs no store: answered without opening a Lab. */
type LabFreeMethod = (params: Params, env: NodeJS.ProcessEnv) => Promise<unknown>;

/**
 * What the JupyterLab extension calls through execute requests (tslab has no comms):
 * `await require("@nanoresearch/kernel").bridge.respond(method, params, requestId)`.
 * `respond` never throws: a failure is displayed as `{ error }`, because a thrown error would
 * make tslab drop the requests that follow it.
 */
export class Bridge {
  private readonly labs = new Map<string, Promise<Lab>>();

  constructor(
    private readonly options: {
      /** The Lab the notebook opened, if any (default Lab.lastOpened): the bridge answers with it. */
      findLab?: () => Lab | undefined;
      /** Opens the bridge's own lab of a home folder when the notebook has none (default Lab.open); once per home. */
      openLab?: (home: string) => Promise<Lab>;
      /** Where replies go (default: the tslab kernel's display). */
      writer?: DisplayWriter | null;
      env?: NodeJS.ProcessEnv;
    } = {}
  ) {}

  /** Runs `method` and displays its reply as BRIDGE_MIME_TYPE. */
  async respond(method: string, params: Params = {}, requestId?: string): Promise<void> {
    const payload: BridgePayload = { method };
    if (requestId !== undefined) payload.request_id = requestId;
    try {
      payload.result = await this.call(method, params);
    } catch (error) {
      payload.error = error instanceof Error ? error.message : String(error);
    }
    const writer = resolveDisplayWriter(this.options.writer);
    if (!writer) {
      throw new Error('bridge.respond needs a notebook kernel (tslab) or an injected writer to answer to');
    }
    writer(
      {
        data: {
          [BRIDGE_MIME_TYPE]: JSON.parse(JSON.stringify(payload, (_k, v) => (typeof v === 'bigint' ? Number(v) : v))),
          'text/plain': payload.error ? `bridge ${method}: ${payload.error}` : `bridge ${method}: ok`
        },
        metadata: {},
        transient: { display_id: `nanoresearch-bridge-${requestId ?? method}` }
      },
      false
    );
  }

  /** Runs `method` against the process-wide lab and resolves with its JSON result. */
  async call(method: string, params: Params = {}): Promise<unknown> {
    const labFree = LAB_FREE_METHODS[method];
    if (labFree) return labFree(params ?? {}, this.options.env ?? process.env);
    const run = METHODS[method];
    if (!run) {
      throw new Error(`unknown bridge method '${method}': known are ${[...Object.keys(LAB_FREE_METHODS), ...Object.keys(METHODS)].join(', ')}`);
    }
    return run(await this.lab(), params ?? {});
  }

  /**
   * The Lab the notebook opened (its set-up cell's `Lab.open`, with the notebook's LLM limits),
   * else one of the bridge's own at this process's home ($NANORESEARCH_HOME, else
   * .nanoresearch/), opened once. The bridge's own Lab stores feedback and its learning jobs but
   * does not run them: they wait for the notebook's Lab, which resumes them when it opens.
   */
  lab(): Promise<Lab> {
    const notebookLab = (this.options.findLab ?? Lab.lastOpened)();
    if (notebookLab) return Promise.resolve(notebookLab);
    const env = this.options.env ?? process.env;
    const home = path.resolve(env.NANORESEARCH_HOME ?? '.nanoresearch');
    let lab = this.labs.get(home);
    if (!lab) {
      const open = this.options.openLab ?? ((h: string) => Lab.open({ home: h, learnInBackground: false }));
      lab = open(home);
      // A failed open is not cached: the next request tries again.
      lab.catch(() => this.labs.delete(home));
      this.labs.set(home, lab);
    }
    return lab;
  }

  /** Closes the labs this bridge opened (tests; a kernel just exits). */
  async close(): Promise<void> {
    const labs = [...this.labs.values()];
    this.labs.clear();
    for (const lab of labs) await (await lab.catch(() => null))?.close();
  }
}

function requireString(params: Params, key: string): string {
  const value = params[key];
  if (typeof value !== 'string' || !value.trim()) {
    throw new Error(`parameter '${key}' must be a non-empty string`);
  }
  return value;
}

function requireObject(params: Params, key: string): Record<string, unknown> {
  const value = params[key];
  if (!value || typeof value !== 'object' || Array.isArray(value)) {
    throw new Error(`parameter '${key}' must be an object of the fields to change`);
  }
  return value as Record<string, unknown>;
}

/** A stored row without SQL NULLs, except the columns whose schema allows null where required. */
function withoutNulls<T>(row: Record<string, unknown>, keepNull: string[] = []): T {
  return Object.fromEntries(Object.entries(row).filter(([k, v]) => v !== null || keepNull.includes(k))) as T;
}

function requireStrings(params: Params, key: string): string[] {
  const value = params[key];
  if (!Array.isArray(value) || value.some(v => typeof v !== 'string')) {
    throw new Error(`parameter '${key}' must be an array of strings`);
  }
  return value as string[];
}

const LAB_FREE_METHODS: Record<string, LabFreeMethod> = {
  /**
   * The author of feedback and shared notebooks. `setting` is the JupyterLab `author` setting
   * ('' when unset): kept for this kernel process, so feedback given in code signs the same way.
   */
  'author.resolve': async (params, env) => {
    if (params.setting !== undefined) {
      if (typeof params.setting !== 'string') throw new Error("parameter 'setting' must be a string ('' when the setting is empty)");
      setAuthorSetting(params.setting);
    }
    return resolveAuthor({ env });
  }
};

const METHODS: Record<string, Method> = {
  // Stores the feedback and its learning job, then answers: learning runs in the background.
  'feedback.add': async (lab, params) => {
    const p = params as unknown as FeedbackAddParams;
    const result = await recordFeedback(
      lab.store,
      {
        stageRunId: requireString(params, 'stage_run_id'),
        id: requireString(params, 'id'),
        text: requireString(params, 'text'),
        author: requireString(params, 'author'),
        origin: p.origin ?? 'sidebar',
        createdAt: p.created_at
      },
      { queue: lab.learning }
    );
    return { id: result.feedback.id, created: result.created, learning: result.learning };
  },

  // Which of these feedback ids the store holds, and the learning state of each.
  'feedback.learning': async (lab, params) => {
    const ids = requireStrings(params, 'ids');
    const stored = ids.length
      ? await lab.store.read(q =>
          q.all<{ id: string }>(`select id from feedback where id in (${ids.map((_, i) => `$${i + 1}`).join(', ')})`, ids)
        )
      : [];
    return { stored: stored.map(r => r.id), states: await lab.learningStates(ids) };
  },

  'feedback.retry': async (lab, params) => lab.retryLearning(requireString(params, 'id')),

  'stage.get': async (lab, params) => {
    const id = requireString(params, 'stage_run_id');
    return lab.store.read(async q => {
      const run = await q.get<Record<string, unknown>>('select * from stage_runs where id = $1', [id]);
      if (!run) throw new Error(`no stage run '${id}' in this store`);
      const call = run.planner_call_id
        ? await q.get<Record<string, unknown>>('select * from planner_calls where id = $1', [run.planner_call_id])
        : await q.get<Record<string, unknown>>(
            'select * from planner_calls where stage_run_id = $1 order by created_at desc limit 1',
            [id]
          );
      return {
        stage_run: withoutNulls<StageRun>(run, ['error', 'planner_call_id', 'finished_at']),
        planner_call: call ? withoutNulls<PlannerCall>(call, ['adapter_version', 'fallback', 'parsed']) : null
      };
    });
  },

  'skills.list': async lab => lab.skills.list(),
  'skills.update': async (lab, params) => lab.skills.update(requireString(params, 'id'), requireObject(params, 'patch')),
  'skills.retire': async (lab, params) => lab.skills.retire(requireString(params, 'id')),

  'memories.list': async lab => lab.memory.list(),
  'memories.update': async (lab, params) => lab.memory.update(requireString(params, 'id'), requireObject(params, 'patch')),
  'memories.retire': async (lab, params) => lab.memory.retire(requireString(params, 'id')),

  'adapters.list': async lab => lab.adapters(),
  'models.list': async lab => lab.models(),

  sql: async (lab, params) => lab.store.sql(requireString(params, 'query')),

  'notebook.import': async (lab, params) => importNotebook(lab, requireString(params, 'path'))
};

/** The bridge of this kernel process. */
export const bridge = new Bridge();
