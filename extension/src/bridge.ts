/**
 * The extension's side of the kernel bridge: BridgeClient carries one request to a notebook's
 * kernel and back; NanoBridge, on top of it, has one typed function per method of
 * schema/bridge-methods.schema.json, the only place a method is named.
 *
 * tslab has no comms and ignores `silent`, so a request is an execute request (sent straight to
 * the kernel, never through a cell, so nothing lands in the notebook) whose code calls
 * kernel-lib's `bridge.respond`; the reply is the display_data of BRIDGE_MIME_TYPE that the
 * request produces on iopub. After an error tslab aborts requests that arrive within 200 ms,
 * so requests are serialised and an aborted one is retried once after 250 ms.
 */
import type { Kernel, KernelMessage } from '@jupyterlab/services';
import type { BridgeMethodName, BridgeParams, BridgeReply, BridgeResult } from '@nanoresearch/schema';
import { BRIDGE_MIME_TYPE } from '@nanoresearch/schema/dist/constants';
import type { INanoBridgeMethods } from './tokens';

/** A bridge request that failed; `kind` says where. */
export class BridgeError extends Error {
  constructor(
    readonly method: string,
    readonly kind: 'no-kernel' | 'kernel' | 'method',
    message: string
  ) {
    super(message);
    this.name = 'BridgeError';
  }
}

/** The part of a kernel connection the bridge uses. */
export type BridgeKernel = Pick<Kernel.IKernelConnection, 'requestExecute'>;

/** The TypeScript that a bridge request runs in the kernel. */
export function bridgeCode(method: string, params: unknown, requestId: string): string {
  return (
    'await require("@nanoresearch/kernel/internals").bridge.respond(' +
    `${JSON.stringify(method)}, ${JSON.stringify(params ?? {})}, ${JSON.stringify(requestId)});`
  );
}

/** The bridge payload carried by an iopub message, if it carries one. */
export function parseBridgeMessage(msg: KernelMessage.IIOPubMessage): BridgeReply | undefined {
  const type = msg.header.msg_type;
  if (type !== 'display_data' && type !== 'execute_result' && type !== 'update_display_data') {
    return undefined;
  }
  const data = (msg.content as { data?: Record<string, unknown> }).data;
  let value = data?.[BRIDGE_MIME_TYPE];
  if (typeof value === 'string') {
    try {
      value = JSON.parse(value);
    } catch {
      return undefined;
    }
  }
  if (!value || typeof value !== 'object' || typeof (value as BridgeReply).method !== 'string') {
    return undefined;
  }
  return value as BridgeReply;
}

/** Text a failed request left on iopub (stderr and error messages), for the error report. */
export function failureText(msg: KernelMessage.IIOPubMessage): string | undefined {
  const type = msg.header.msg_type;
  if (type === 'stream') {
    const content = msg.content as KernelMessage.IStreamMsg['content'];
    return content.name === 'stderr' ? content.text : undefined;
  }
  if (type === 'error') {
    const content = msg.content as KernelMessage.IErrorMsg['content'];
    return `${content.ename}: ${content.evalue}`;
  }
  return undefined;
}

/** Outcome of one execute request: the payload if one arrived, the reply status, and stderr. */
interface IAttempt {
  payload?: BridgeReply;
  status: string;
  errorText: string;
}

let requestCounter = 0;

/**
 * Sends bridge requests to one notebook's kernel, one at a time.
 */
export class BridgeClient {
  /**
   * @param getKernel the notebook's current kernel (it changes on restart), or null when none runs
   * @param retryDelayMs wait before the one retry of an aborted request
   */
  constructor(
    private readonly getKernel: () => BridgeKernel | null | undefined,
    private readonly retryDelayMs = 250
  ) {}

  /**
   * Calls `method` in the kernel and resolves with its result; rejects with a BridgeError.
   * Untyped: NanoBridge is the typed way to call a method.
   */
  call(method: string, params: unknown = {}): Promise<unknown> {
    const run = this.queue.then(() => this.callNow(method, params));
    // The queue waits for each request to settle, whatever its outcome.
    this.queue = run.then(
      () => undefined,
      () => undefined
    );
    return run;
  }

  private async callNow(method: string, params: unknown): Promise<unknown> {
    let attempt = await this.attempt(method, params);
    if (!attempt.payload && attempt.status !== 'ok') {
      // tslab aborts requests that arrive within 200 ms of an error: wait, then try once more.
      await new Promise(resolve => setTimeout(resolve, this.retryDelayMs));
      attempt = await this.attempt(method, params);
    }
    const payload = attempt.payload;
    if (!payload) {
      const detail = attempt.errorText.trim() || `the kernel answered '${attempt.status}' without a reply`;
      throw new BridgeError(
        method,
        'kernel',
        `The kernel could not run the NanoResearch bridge (${method}): ${firstLines(detail)}. ` +
          'Check that the notebook uses the TypeScript (tslab) kernel and that @nanoresearch/kernel is installed.'
      );
    }
    if (payload.error !== undefined) {
      throw new BridgeError(method, 'method', `${method} failed in the kernel: ${payload.error}`);
    }
    return payload.result;
  }

  private async attempt(method: string, params: unknown): Promise<IAttempt> {
    const kernel = this.getKernel();
    if (!kernel) {
      throw new BridgeError(method, 'no-kernel', `No kernel is running for this notebook, so ${method} cannot run yet.`);
    }
    const requestId = `br_${Date.now().toString(36)}_${(requestCounter++).toString(36)}`;
    let future: ReturnType<BridgeKernel['requestExecute']>;
    try {
      future = kernel.requestExecute({ code: bridgeCode(method, params, requestId), silent: false, store_history: false }, true);
    } catch (reason) {
      // requestExecute throws when the kernel is dead or disposed.
      const why = reason instanceof Error ? reason.message : String(reason);
      throw new BridgeError(method, 'no-kernel', `The notebook's kernel cannot take requests (${why}), so ${method} cannot run yet.`);
    }
    const result: IAttempt = { status: 'unknown', errorText: '' };
    future.onIOPub = msg => {
      const payload = parseBridgeMessage(msg);
      if (payload && (payload.request_id === undefined || payload.request_id === requestId)) {
        result.payload = payload;
        return;
      }
      const text = failureText(msg);
      if (text) {
        result.errorText += text;
      }
    };
    try {
      const reply = await future.done;
      result.status = (reply.content as { status: string }).status;
    } catch (reason) {
      // A future is rejected when the kernel dies or restarts under it.
      result.status = 'dead';
      result.errorText += reason instanceof Error ? reason.message : String(reason);
    }
    return result;
  }

  private queue: Promise<void> = Promise.resolve();
}

function firstLines(text: string, count = 4): string {
  return text.split('\n').filter(Boolean).slice(0, count).join(' | ');
}

/**
 * The kernel bridge of one notebook, one function per method (as Jupyter AI's AiService): the
 * params and result of each are the schema's (schema/bridge-methods.schema.json), so a method
 * the schema has and this class lacks fails tsc, and the kernel's table is typed by the same schema.
 */
export class NanoBridge implements INanoBridgeMethods {
  constructor(private readonly client: BridgeClient) {}

  authorResolve(params: BridgeParams<'author.resolve'>): Promise<BridgeResult<'author.resolve'>> {
    return this.call('author.resolve', params);
  }

  feedbackAdd(params: BridgeParams<'feedback.add'>): Promise<BridgeResult<'feedback.add'>> {
    return this.call('feedback.add', params);
  }

  feedbackLearning(params: BridgeParams<'feedback.learning'>): Promise<BridgeResult<'feedback.learning'>> {
    return this.call('feedback.learning', params);
  }

  feedbackRetry(params: BridgeParams<'feedback.retry'>): Promise<BridgeResult<'feedback.retry'>> {
    return this.call('feedback.retry', params);
  }

  stageGet(params: BridgeParams<'stage.get'>): Promise<BridgeResult<'stage.get'>> {
    return this.call('stage.get', params);
  }

  skillsList(): Promise<BridgeResult<'skills.list'>> {
    return this.call('skills.list', {});
  }

  skillsUpdate(params: BridgeParams<'skills.update'>): Promise<BridgeResult<'skills.update'>> {
    return this.call('skills.update', params);
  }

  skillsRetire(params: BridgeParams<'skills.retire'>): Promise<BridgeResult<'skills.retire'>> {
    return this.call('skills.retire', params);
  }

  memoriesList(): Promise<BridgeResult<'memories.list'>> {
    return this.call('memories.list', {});
  }

  memoriesUpdate(params: BridgeParams<'memories.update'>): Promise<BridgeResult<'memories.update'>> {
    return this.call('memories.update', params);
  }

  memoriesRetire(params: BridgeParams<'memories.retire'>): Promise<BridgeResult<'memories.retire'>> {
    return this.call('memories.retire', params);
  }

  adaptersList(): Promise<BridgeResult<'adapters.list'>> {
    return this.call('adapters.list', {});
  }

  modelsList(): Promise<BridgeResult<'models.list'>> {
    return this.call('models.list', {});
  }

  sql(params: BridgeParams<'sql'>): Promise<BridgeResult<'sql'>> {
    return this.call('sql', params);
  }

  notebookImport(params: BridgeParams<'notebook.import'>): Promise<BridgeResult<'notebook.import'>> {
    return this.call('notebook.import', params);
  }

  /** The kernel checks `params` against the schema and answers in its shape (kernel-lib bridge.ts). */
  private call<M extends BridgeMethodName>(method: M, params: BridgeParams<M>): Promise<BridgeResult<M>> {
    return this.client.call(method, params) as Promise<BridgeResult<M>>;
  }
}
