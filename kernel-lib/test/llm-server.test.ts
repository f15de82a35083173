import { spawn } from 'child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'fs';
import { tmpdir } from 'os';
import * as path from 'path';
import * as ts from 'typescript';
import { routeByModel, sequence, startScriptedLlmServer, type ScriptedLlmServer } from '../src/testing';

let server: ScriptedLlmServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

/** The parts of the server's OpenAI-shaped answers (a completion, or an error) these tests read; the assertions check them. */
interface ServerBody {
  choices: { message: { content: string } }[];
  error: { message: string };
}
const bodyOf = (res: Response): Promise<ServerBody> => res.json() as Promise<ServerBody>;
const chat = (url: string, body: unknown) =>
  fetch(`${url}/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

describe('scripted OpenAI-compatible server', () => {
  test('answers with an OpenAI chat.completion object and records the request', async () => {
    server = await startScriptedLlmServer(req => ({ content: `echo ${req.messages[0].content}`, usage: { prompt_tokens: 7 } }));
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/v1$/);
    const res = await chat(server.url, { model: 'm1', messages: [{ role: 'user', content: 'hi' }], temperature: 0.2, max_completion_tokens: 9 });
    expect(res.status).toBe(200);
    const body = await res.json();
    expect(body).toEqual({
      id: 'chatcmpl-scripted-1',
      object: 'chat.completion',
      created: expect.any(Number),
      model: 'm1',
      choices: [{ index: 0, message: { role: 'assistant', content: 'echo hi', refusal: null }, logprobs: null, finish_reason: 'stop' }],
      usage: { prompt_tokens: 7, completion_tokens: 2, total_tokens: 9 }
    });
    expect(server.chatRequests[0]).toMatchObject({ model: 'm1', temperature: 0.2, max_tokens: 9 });
    expect(server.requests[0]).toMatchObject({ method: 'POST', path: '/v1/chat/completions', reply: { content: 'echo hi' } });
  });

  test('GET /v1/models lists the routed models; unknown routes and models get OpenAI error bodies', async () => {
    server = await startScriptedLlmServer(routeByModel({ a: () => 'A', b: () => 'B' }));
    const models = await bodyOf(await fetch(`${server.url}/models`));
    expect(models).toMatchObject({
      object: 'list',
      data: [
        { id: 'a', object: 'model' },
        { id: 'b', object: 'model' }
      ]
    });

    const unknownModel = await chat(server.url, { model: 'zzz', messages: [] });
    expect(unknownModel.status).toBe(400);
    expect(await unknownModel.json()).toMatchObject({ error: { type: 'invalid_request_error', code: 'model_not_found', param: 'model' } });

    const unknownRoute = await fetch(`${server.url}/embeddings`, { method: 'POST', body: '{}' });
    expect(unknownRoute.status).toBe(404);
    expect(await unknownRoute.json()).toMatchObject({ error: { message: expect.stringContaining('/v1/embeddings') } });

    const notJson = await fetch(`${server.url}/chat/completions`, { method: 'POST', body: 'nope' });
    expect(notJson.status).toBe(400);
  });

  test('sequence repeats its last reply, or errors when told to; errors carry headers', async () => {
    const repeat = sequence(['one', 'two']);
    const strict = sequence([{ status: 429, headers: { 'retry-after': '3' } }], { exhausted: 'error' });
    server = await startScriptedLlmServer(routeByModel({ repeat, strict }));
    const texts: string[] = [];
    for (let i = 0; i < 3; i++) {
      const body = await bodyOf(await chat(server.url, { model: 'repeat', messages: [] }));
      texts.push(body.choices[0].message.content);
    }
    expect(texts).toEqual(['one', 'two', 'two']);
    const limited = await chat(server.url, { model: 'strict', messages: [] });
    expect(limited.status).toBe(429);
    expect(limited.headers.get('retry-after')).toBe('3');
    expect(await limited.json()).toMatchObject({ error: { type: 'rate_limit_exceeded' } });
    const exhausted = await chat(server.url, { model: 'strict', messages: [] });
    expect(exhausted.status).toBe(400);
    expect((await bodyOf(exhausted)).error.message).toMatch(/exhausted after 1 replies/);
  });

  test('a throwing script is answered 500 with its message', async () => {
    server = await startScriptedLlmServer(() => {
      throw new Error('no reply for this prompt');
    });
    const res = await chat(server.url, { model: 'm', messages: [] });
    expect(res.status).toBe(500);
    expect((await bodyOf(res)).error.message).toContain('no reply for this prompt');
  });

  test('the CLI serves a script module in its own process and prints READY <url>', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'nr-scripted-cli-'));
    try {
      // The CLI as the build emits it, compiled here so the test does not depend on dist/.
      for (const name of ['scripted-llm-server', 'scripted-llm-server-cli']) {
        const source = readFileSync(path.join(__dirname, '..', 'src', 'testing', `${name}.ts`), 'utf8');
        const js = ts.transpileModule(source, { compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022 } });
        writeFileSync(path.join(dir, `${name}.js`), js.outputText);
      }
      const script = path.join(dir, 'script.js');
      writeFileSync(script, "module.exports = req => 'cli says hi to ' + req.model;\n");
      const child = spawn(process.execPath, [path.join(dir, 'scripted-llm-server-cli.js'), '--port', '0', '--script', script]);
      try {
        const url = await new Promise<string>((resolve, reject) => {
          let out = '';
          child.stdout.on('data', (chunk: Buffer) => {
            out += chunk.toString();
            const ready = /READY (\S+)\n/.exec(out);
            if (ready) resolve(ready[1]);
          });
          child.stderr.on('data', (chunk: Buffer) => reject(new Error(chunk.toString())));
          child.on('exit', code => reject(new Error(`CLI exited with ${code}`)));
        });
        const body = await bodyOf(await chat(url, { model: 'ui', messages: [{ role: 'user', content: 'x' }] }));
        expect(body.choices[0].message.content).toBe('cli says hi to ui');
      } finally {
        child.kill('SIGTERM');
      }
      const exitCode = await new Promise(resolve => (child.exitCode !== null ? resolve(child.exitCode) : child.on('exit', resolve)));
      expect(exitCode).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
