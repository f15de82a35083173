import { BRIDGE_METHOD_NAMES, BRIDGE_MIME_TYPE } from '@nanoresearch/schema/dist/constants';
import bridgeMethodsSchema from '@nanoresearch/schema/bridge-methods.schema.json';
import { BridgeClient, BridgeError, NanoBridge, bridgeCode, parseBridgeMessage } from '../bridge';

type Msg = { header: { msg_type: string }; content: Record<string, unknown> };
const display = (data: Record<string, unknown>): Msg => ({ header: { msg_type: 'display_data' }, content: { data, metadata: {} } });
const stderr = (text: string): Msg => ({ header: { msg_type: 'stream' }, content: { name: 'stderr', text } });

/**
 * A fake kernel that answers each request with the messages a script gives for it. It records
 * the code it got and the times, and checks that requests never overlap.
 */
class FakeKernel {
  requests: Array<{ code: string; at: number; silent?: boolean; store_history?: boolean }> = [];
  busy = false;
  overlapped = false;
  constructor(private readonly script: (code: string, n: number) => { messages: Msg[]; status: string; delay?: number }) {}

  requestExecute(content: { code: string; silent?: boolean; store_history?: boolean }) {
    if (this.busy) {
      this.overlapped = true;
    }
    this.busy = true;
    this.requests.push({ ...content, at: Date.now() });
    const answer = this.script(content.code, this.requests.length);
    const requestId = /"(br_[^"]+)"\);$/.exec(content.code)?.[1];
    const future: any = { onIOPub: (_: unknown) => undefined };
    future.done = new Promise(resolve => {
      setTimeout(() => {
        for (const m of answer.messages) {
          const data = (m.content as any).data;
          if (data?.[BRIDGE_MIME_TYPE] && typeof data[BRIDGE_MIME_TYPE] === 'object') {
            data[BRIDGE_MIME_TYPE] = { request_id: requestId, ...data[BRIDGE_MIME_TYPE] };
          }
          future.onIOPub(m);
        }
        this.busy = false;
        resolve({ content: { status: answer.status } });
      }, answer.delay ?? 2);
    });
    return future;
  }
}

/** The BridgeError a call rejects with (the test fails if it resolves). */
async function failure(call: Promise<unknown>): Promise<BridgeError> {
  try {
    await call;
  } catch (error) {
    expect(error).toBeInstanceOf(BridgeError);
    return error as BridgeError;
  }
  throw new Error('the bridge call was expected to fail');
}

describe('bridge message parsing', () => {
  it('reads the payload from display_data given as an object or as a JSON string', () => {
    const payload = { method: 'sql', result: { columns: ['n'], rows: [{ n: 1 }] } };
    expect(parseBridgeMessage(display({ [BRIDGE_MIME_TYPE]: payload }) as any)).toEqual(payload);
    expect(parseBridgeMessage(display({ [BRIDGE_MIME_TYPE]: JSON.stringify(payload) }) as any)).toEqual(payload);
    expect(parseBridgeMessage({ header: { msg_type: 'execute_result' }, content: { data: { [BRIDGE_MIME_TYPE]: payload } } } as any)).toEqual(payload);
  });

  it('ignores other MIME types, other message types and malformed payloads', () => {
    expect(parseBridgeMessage(display({ 'text/plain': '{}' }) as any)).toBeUndefined();
    expect(parseBridgeMessage(display({ [BRIDGE_MIME_TYPE]: '{broken' }) as any)).toBeUndefined();
    expect(parseBridgeMessage(display({ [BRIDGE_MIME_TYPE]: { result: 1 } }) as any)).toBeUndefined();
    expect(parseBridgeMessage(stderr('x') as any)).toBeUndefined();
  });

  it('builds kernel code that calls the bridge with JSON parameters', () => {
    const code = bridgeCode('feedback.add', { text: 'say "why"\nplease' }, 'br_1');
    expect(code).toBe('await require("@nanoresearch/kernel/internals").bridge.respond("feedback.add", {"text":"say \\"why\\"\\nplease"}, "br_1");');
  });
});

describe('BridgeClient', () => {
  it('sends an execute request (not silent, no history) and resolves with the result', async () => {
    const kernel = new FakeKernel(() => ({ messages: [display({ [BRIDGE_MIME_TYPE]: { method: 'skills.list', result: [{ id: 's1' }] } })], status: 'ok' }));
    const client = new BridgeClient(() => kernel as any);
    await expect(client.call('skills.list')).resolves.toEqual([{ id: 's1' }]);
    expect(kernel.requests[0]).toMatchObject({ silent: false, store_history: false });
    expect(kernel.requests[0].code).toContain('.bridge.respond("skills.list", {}');
  });

  it('rejects with the method error the kernel reported', async () => {
    const kernel = new FakeKernel(() => ({
      messages: [display({ [BRIDGE_MIME_TYPE]: { method: 'sql', error: 'The store is read-only here: insert refused' } })],
      status: 'ok'
    }));
    const error = await failure(new BridgeClient(() => kernel as any).call('sql', { query: 'insert' }));
    expect(error).toBeInstanceOf(BridgeError);
    expect(error.kind).toBe('method');
    expect(error.message).toBe('sql failed in the kernel: The store is read-only here: insert refused');
  });

  it('retries an aborted request once after 250 ms', async () => {
    const kernel = new FakeKernel((_code, n) =>
      n === 1 ? { messages: [], status: 'abort' } : { messages: [display({ [BRIDGE_MIME_TYPE]: { method: 'adapters.list', result: [] } })], status: 'ok' }
    );
    await expect(new BridgeClient(() => kernel as any).call('adapters.list')).resolves.toEqual([]);
    expect(kernel.requests).toHaveLength(2);
    expect(kernel.requests[1].at - kernel.requests[0].at).toBeGreaterThanOrEqual(245);
  });

  it('reports what the kernel wrote on stderr when no reply came, after one retry', async () => {
    const kernel = new FakeKernel(() => ({ messages: [stderr("Cannot find module '@nanoresearch/kernel'\n")], status: 'error' }));
    const error = await failure(new BridgeClient(() => kernel as any, 5).call('stage.get', {}));
    expect(kernel.requests).toHaveLength(2);
    expect(error.kind).toBe('kernel');
    expect(error.message).toMatch(/Cannot find module '@nanoresearch\/kernel'.*TypeScript \(tslab\) kernel/);
  });

  it('serialises requests: the next one waits until the previous one settled', async () => {
    const kernel = new FakeKernel((code, n) => ({
      messages: n === 1 ? [] : [display({ [BRIDGE_MIME_TYPE]: { method: 'm', result: n } })],
      status: n === 1 ? 'error' : 'ok',
      delay: 15
    }));
    const client = new BridgeClient(() => kernel as any, 5);
    const results = await Promise.all([client.call('m'), client.call('m'), client.call('m')]);
    expect(results).toEqual([2, 3, 4]);
    expect(kernel.overlapped).toBe(false);
  });

  it('ignores a bridge payload of another request', async () => {
    const kernel = new FakeKernel(() => ({
      messages: [
        {
          header: { msg_type: 'display_data' },
          content: { data: { [BRIDGE_MIME_TYPE]: JSON.stringify({ request_id: 'br_other', method: 'm', result: 'wrong' }) } }
        },
        display({ [BRIDGE_MIME_TYPE]: { method: 'm', result: 'right' } })
      ],
      status: 'ok'
    }));
    await expect(new BridgeClient(() => kernel as any).call('m')).resolves.toBe('right');
  });

  it('fails clearly when no kernel runs or the kernel is dead', async () => {
    const none = await failure(new BridgeClient(() => null).call('feedback.add'));
    expect(none.kind).toBe('no-kernel');
    const dead = {
      requestExecute: () => {
        throw new Error('Kernel is dead');
      }
    };
    const error = await failure(new BridgeClient(() => dead as any).call('feedback.add'));
    expect(error.kind).toBe('no-kernel');
    expect(error.message).toMatch(/Kernel is dead/);
  });
});

describe('NanoBridge', () => {
  /** 'skills.list' → 'skillsList', as tokens.ts's BridgeFunctionName spells it. */
  const functionName = (method: string) => method.replace(/\.(\w)/g, (_, first: string) => first.toUpperCase());

  it('has one function per method of schema/bridge-methods.schema.json and no other', () => {
    expect([...BRIDGE_METHOD_NAMES]).toEqual(Object.keys(bridgeMethodsSchema.properties));
    const functions = Object.getOwnPropertyNames(NanoBridge.prototype).filter(name => name !== 'constructor' && name !== 'call');
    expect(functions.sort()).toEqual(BRIDGE_METHOD_NAMES.map(functionName).sort());
  });

  it('sends each function as its method, with its params, through one kernel request each', async () => {
    const kernel = new FakeKernel(code => {
      const method = /respond\("([^"]+)"/.exec(code)![1];
      return { messages: [display({ [BRIDGE_MIME_TYPE]: { method, result: { answered: method } } })], status: 'ok' };
    });
    const nano = new NanoBridge(new BridgeClient(() => kernel as any)) as unknown as Record<string, (params?: unknown) => Promise<unknown>>;
    for (const method of BRIDGE_METHOD_NAMES) {
      await expect(nano[functionName(method)]({ id: 'x' })).resolves.toEqual({ answered: method });
    }
    expect(kernel.requests.map(r => /respond\("([^"]+)"/.exec(r.code)![1])).toEqual([...BRIDGE_METHOD_NAMES]);
    // A function with params sends them as given; one without sends none.
    expect(kernel.requests[BRIDGE_METHOD_NAMES.indexOf('stage.get')].code).toContain('{"id":"x"}');
    expect(kernel.requests[BRIDGE_METHOD_NAMES.indexOf('skills.list')].code).toContain('"skills.list", {}');
  });
});
