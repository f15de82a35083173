import { mkdtempSync, writeFileSync, existsSync, mkdirSync, readFileSync } from 'fs';
import { createServer } from 'net';
import { tmpdir } from 'os';
import * as path from 'path';
import { probeBubblewrap, runInSandbox } from '../src/sandbox';

function workspace(files: Record<string, string>): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'nr-sandbox-'));
  const ws = path.join(dir, 'ws');
  mkdirSync(ws);
  for (const [name, content] of Object.entries(files)) writeFileSync(path.join(ws, name), content);
  return ws;
}

const bwrapUsable = probeBubblewrap().usable;

describe('runInSandbox', () => {
  const saved = process.env.OPENAI_API_KEY;
  beforeAll(() => {
    process.env.OPENAI_API_KEY = 'sk-test-secret-do-not-leak';
  });
  afterAll(() => {
    if (saved === undefined) delete process.env.OPENAI_API_KEY;
    else process.env.OPENAI_API_KEY = saved;
  });

  test('runs python, captures output, and hides the parent environment', async () => {
    const ws = workspace({
      'main.py': 'import os, json\nprint(json.dumps({"key": os.environ.get("OPENAI_API_KEY"), "home": os.environ["HOME"], "n": len(os.environ)}))\n'
    });
    const r = await runInSandbox({ cwd: ws, command: ['python3', 'main.py'], timeoutMs: 20_000, env: { SEED: '1', HF_TOKEN: 'hf_x' } });
    expect(r.exitCode).toBe(0);
    const seen = JSON.parse(r.stdout.trim());
    expect(seen.key).toBeNull();
    expect(seen.home).toBe(ws);
    expect(r.isolation.limits).toEqual(expect.arrayContaining(['env=scrubbed', 'fsize=256MiB']));
    expect(r.isolation.missing.join('\n')).toContain('env HF_TOKEN refused');
  });

  test('cannot write outside the workspace, or says that it could', async () => {
    const ws = workspace({});
    const outside = path.join(path.dirname(ws), 'escaped.txt');
    writeFileSync(
      path.join(ws, 'main.py'),
      [
        'out = []',
        `for target in [${JSON.stringify(outside)}, "/usr/escaped.txt"]:`,
        '    try:',
        '        open(target, "w").write("x"); out.append("wrote")',
        '    except OSError: out.append("refused")',
        'open("inside.txt", "w").write("ok")',
        'print(",".join(out))'
      ].join('\n')
    );
    const r = await runInSandbox({ cwd: ws, command: ['python3', 'main.py'], timeoutMs: 20_000 });
    expect(readFileSync(path.join(ws, 'inside.txt'), 'utf8')).toBe('ok');
    if (bwrapUsable) {
      expect(r.isolation.filesystem).toBe('workspace-only');
      // The sibling path lands in the sandbox's private /tmp (or is refused), never on the host.
      expect(existsSync(outside)).toBe(false);
      expect(r.stdout.trim().split(',')[1]).toBe('refused');
      expect(existsSync('/usr/escaped.txt')).toBe(false);
    } else {
      expect(r.isolation.filesystem).toBe('unrestricted');
      expect(r.isolation.missing.join('\n')).toMatch(/filesystem isolation/);
    }
  });

  test('a file outside the workspace cannot be read (bwrap) and the network is cut', async () => {
    if (!bwrapUsable) {
      const ws = workspace({ 'main.py': 'print(1)\n' });
      const r = await runInSandbox({ cwd: ws, command: ['python3', 'main.py'], timeoutMs: 20_000 });
      expect(r.isolation.network).toBe('unrestricted');
      expect(r.isolation.missing.join('\n')).toMatch(/network isolation/);
      return;
    }
    const server = createServer(s => s.end('hello'));
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    const secretDir = mkdtempSync(path.join(tmpdir(), 'nr-secret-'));
    const secret = path.join(secretDir, 'secret.txt');
    writeFileSync(secret, 'top secret');
    const ws = workspace({
      'main.py': [
        'import socket',
        'out = []',
        'try:',
        `    open(${JSON.stringify(secret)}).read(); out.append("read")`,
        'except OSError: out.append("noread")',
        'try:',
        `    socket.create_connection(("127.0.0.1", ${port}), timeout=2); out.append("net")`,
        'except OSError: out.append("nonet")',
        'print(",".join(out))'
      ].join('\n')
    });
    try {
      const r = await runInSandbox({ cwd: ws, command: ['python3', 'main.py'], timeoutMs: 20_000 });
      expect(r.stdout.trim()).toBe('noread,nonet');
      expect(r.isolation.network).toBe('none');
      expect(r.isolation.missing).toEqual([]);
    } finally {
      server.close();
    }
  });

  test('the limits-only fallback runs and names what is missing', async () => {
    const ws = workspace({ 'main.py': 'print("hi")\n' });
    const r = await runInSandbox({ cwd: ws, command: ['python3', 'main.py'], timeoutMs: 20_000, isolation: 'limits-only' });
    expect(r.stdout.trim()).toBe('hi');
    expect(r.isolation.network).toBe('unrestricted');
    expect(r.isolation.missing.some(m => m.startsWith('network isolation'))).toBe(true);
  });

  test('is killed at its time-out, children included', async () => {
    const ws = workspace({
      'main.py': 'import subprocess, time\nsubprocess.Popen(["python3", "-c", "import time; time.sleep(30); open(\'late.txt\',\'w\').write(\'x\')"])\ntime.sleep(30)\n'
    });
    const r = await runInSandbox({ cwd: ws, command: ['python3', 'main.py'], timeoutMs: 1500 });
    expect(r.timedOut).toBe(true);
    expect(r.wallMs).toBeLessThan(10_000);
    expect(r.signal === 'SIGKILL' || r.exitCode !== 0).toBe(true);
    await new Promise(res => setTimeout(res, 200));
    expect(existsSync(path.join(ws, 'late.txt'))).toBe(false);
  });

  test('the file-size limit stops a runaway writer', async () => {
    const ws = workspace({
      'main.py': 'f = open("big.bin", "wb")\nfor _ in range(8):\n    f.write(b"0" * (1024 * 1024))\n    f.flush()\nprint("wrote all")\n'
    });
    const r = await runInSandbox({ cwd: ws, command: ['python3', 'main.py'], timeoutMs: 20_000, fileSizeMb: 2 });
    expect(r.exitCode).not.toBe(0);
    expect(r.stdout).not.toContain('wrote all');
    expect(readFileSync(path.join(ws, 'big.bin')).length).toBeLessThanOrEqual(2 * 1024 * 1024);
  });

  test('keeps only the tail of a long output', async () => {
    const ws = workspace({ 'main.py': 'for i in range(20000):\n    print("line", i)\n' });
    const r = await runInSandbox({ cwd: ws, command: ['python3', 'main.py'], timeoutMs: 20_000, maxOutputBytes: 1024 });
    expect(r.stdout.length).toBeLessThan(1200);
    expect(r.stdout).toContain('bytes cut');
    expect(r.stdout).toContain('line 19999');
  });
});
