import * as path from 'path';
import {
  BRIDGE_MIME_TYPE,
  BRIDGE_METHOD_NAMES,
  type BridgeMethodName,
  type BridgeParams,
  type BridgeReply,
  type BridgeResult,
  type PlannerCall,
  type StageRun
} from '@nanoresearch/schema';
import { resolveAuthor, setAuthorSetting } from './author';
import { resolveDisplayWriter, type DisplayWriter } from './display';
import { Lab } from './lab';
import { plannerCallOfStageRun, stageRunById, withoutNulls } from './records';
import { importNotebook } from './sharing';
import { schemaErrorsAt } from './validate';

/** The methods answered without a store (no Lab is opened for them). */
type LabFreeMethodName = 'author.resolve';
type LabMethodName = Exclude<BridgeMethodName, LabFreeMethodName>;

/**
 * The method table, typed by schema/bridge-methods.schema.json: a method the schema has and this
 * table lacks, or one the schema lacks, fails tsc. Params arrive checked against the schema.
 */
type LabMethods = { [M in LabMethodName]: (lab: Lab, params: BridgeParams<M>) => Promise<BridgeResult<M>> };
type LabFreeMethods = { [M in LabFreeMethodName]: (params: BridgeParams<M>, env: NodeJS.ProcessEnv) => Promise<BridgeResult<M>> };
type LabMethod = (lab: Lab, params: unknown) => Promise<unknown>;
type LabFreeMethod = (params: unknown, env: NodeJS.ProcessEnv) => Promise<unknown>;

/**
 * What the JupyterLab extension calls through execute requests (tslab has no comms):
 * `await require("@nanoresearch/kernel/internals").bridge.respond(method, params, requestId)`.
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

  /** Runs `method` and displays its reply (schema/bridge-reply.schema.json) as BRIDGE_MIME_TYPE. */
  async respond(method: string, params: unknown = {}, requestId?: string): Promise<void> {
    const payload: BridgeReply = { method };
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
  async call(method: string, params: unknown = {}): Promise<unknown> {
    if (!isMethodName(method)) {
      throw new Error(`unknown bridge method '${method}': known are ${BRIDGE_METHOD_NAMES.join(', ')}`);
    }
    const checked = checkedParams(method, params ?? {});
    // The casts only forget which method: `checked` matches that method's params in the schema.
    if (isLabFree(method)) return (LAB_FREE_METHODS[method] as LabFreeMethod)(checked, this.options.env ?? process.env);
    return (LAB_METHODS[method] as LabMethod)(await this.lab(), checked);
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

function isMethodName(method: string): method is BridgeMethodName {
  return (BRIDGE_METHOD_NAMES as readonly string[]).includes(method);
}

function isLabFree(method: BridgeMethodName): method is LabFreeMethodName {
  return Object.prototype.hasOwnProperty.call(LAB_FREE_METHODS, method);
}

/** `params` if it matches the method's params in the schema; else an error naming each mismatch. */
function checkedParams(method: BridgeMethodName, params: unknown): unknown {
  const errors = schemaErrorsAt('bridge-methods', `/properties/${method}/properties/params`, params);
  if (errors.length) throw new Error(`bad parameters for ${method}: ${errors.join('; ')}`);
  return params;
}

const LAB_FREE_METHODS: LabFreeMethods = {
  /**
   * The author of feedback and shared notebooks. `setting` is the JupyterLab `author` setting
   * ('' when unset): kept for this kernel process, so feedback given in code signs the same way.
   */
  'author.resolve': async (params, env) => {
    if (params.setting !== undefined) setAuthorSetting(params.setting);
    return resolveAuthor({ env });
  }
};

const LAB_METHODS: LabMethods = {
  // Stores the feedback and its learning job, then answers: learning runs in the background.
  'feedback.add': async (lab, params) => {
    const result = await lab.feedback(params.stage_run_id, params.text, {
      id: params.id,
      author: params.author,
      origin: params.origin ?? 'sidebar',
      createdAt: params.created_at
    });
    return { id: result.feedback.id, created: result.created, learning: result.learning };
  },

  // Which of these feedback ids the store holds, and the learning state of each.
  'feedback.learning': async (lab, { ids }) => {
    const stored = ids.length
      ? await lab.store.read(q => q.all<{ id: string }>(`select id from feedback where id in (${ids.map((_, i) => `$${i + 1}`).join(', ')})`, ids))
      : [];
    return { stored: stored.map(r => r.id), states: await lab.learningStates(ids) };
  },

  'feedback.retry': async (lab, { id }) => lab.retryLearning(id),

  'stage.get': async (lab, { stage_run_id: id }) =>
    lab.store.read(async q => {
      const run = await stageRunById(q, id);
      if (!run) throw new Error(`no stage run '${id}' in this store`);
      const call = await plannerCallOfStageRun(q, run);
      return {
        stage_run: withoutNulls<StageRun>(run, ['error', 'planner_call_id', 'finished_at']),
        planner_call: call ? withoutNulls<PlannerCall>(call, ['adapter_version', 'fallback', 'parsed']) : null
      };
    }),

  'skills.list': async lab => lab.skills.list(),
  'skills.update': async (lab, { id, patch }) => lab.skills.update(id, patch),
  'skills.retire': async (lab, { id }) => lab.skills.retire(id),

  'memories.list': async lab => lab.memory.list(),
  'memories.update': async (lab, { id, patch }) => lab.memory.update(id, patch),
  'memories.retire': async (lab, { id }) => lab.memory.retire(id),

  'adapters.list': async lab => lab.adapters(),
  'models.list': async lab => lab.models(),

  sql: async (lab, { query }) => lab.store.sql(query),

  'notebook.import': async (lab, { path: notebookPath }) => importNotebook(lab, notebookPath)
};

/** The bridge of this kernel process. */
export const bridge = new Bridge();
