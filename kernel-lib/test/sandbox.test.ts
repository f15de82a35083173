/**
 * The sandbox as CI runs it: as root, where a mistake gives generated code the whole machine.
 * Each test checks what the code could (not) do and that the isolation report says so.
 */
import { spawnSync } from 'child_process';
import { createHash } from 'crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, statSync, writeFileSync } from 'fs';
import { createServer } from 'net';
import { tmpdir } from 'os';
import * as path from 'path';
import { probeBubblewrap, runInSandbox, SandboxResult } from '../src/sandbox';
import { experimentPython, workspacesRoot } from '../src/sandbox/python-env';

function workspace(files: Record<string, string> = {}, reachable = true): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'nr-sandbox-'));
  // mkdtemp makes 0700 folders; without a mount namespace the run's uid must be able to reach its workspace.
  if (reachable) chmodSync(dir, 0o755);
  const ws = path.join(dir, 'ws');
  mkdirSync(ws);
  for (const [name, content] of Object.entries(files)) writeFileSync(path.join(ws, name), content);
  return ws;
}

const bwrapUsable = probeBubblewrap().usable;
const asRoot = process.getuid?.() === 0;
/** A python every uid can reach, for runs without a mount namespace (the venv's base may sit under /root). */
const systemPython = ['/usr/bin/python3', '/usr/local/bin/python3'].find(p => existsSync(p));
const modes = ['auto', 'limits-only'] as const;
const pythonFor = (mode: (typeof modes)[number]) => (mode === 'auto' ? 'python3' : (systemPython ?? 'python3'));

/** Host processes whose command line contains `token`: a run's leftovers, wherever they detached to. */
function processesWith(token: string): number[] {
  return readdirSync('/proc')
    .filter(n => /^\d+$/.test(n))
    .filter(pid => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(token);
      } catch {
        return false;
      }
    })
    .map(Number);
}

const sha = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

function expectUnprivileged(r: SandboxResult): void {
  if (asRoot || bwrapUsable) {
    expect(r.isolation.layers).toEqual(expect.arrayContaining(['capabilities=none', 'no_new_privs']));
    expect(r.isolation.layers!.some(l => /^uid=\d+/.test(l))).toBe(true);
  }
}

describe('runInSandbox', () => {
  const saved = process.env.OPENAI_API_KEY;
  beforeAll(() => {
    process.env.OPENAI_API_KEY = 'sk-test-secret-do-not-leak';
  });
  afterAll(() => {
    if (saved === undefined) delete process.env.OPENAI_API_KEY;
    else process.env.OPENAI_API_KEY = saved;
  });

  test('runs python unprivileged, captures output, and hides the parent environment', async () => {
    const ws = workspace({
      'main.py': [
        'import os, json',
        'status = open("/proc/self/status").read()',
        'field = lambda name: status.split(name + ":")[1].split()[0]',
        'print(json.dumps({"key": os.environ.get("OPENAI_API_KEY"), "secret_in_env": any("sk-test" in v for v in os.environ.values()),',
        '  "home": os.environ["HOME"], "uid": os.getuid(), "euid": os.geteuid(), "groups": os.getgroups(),',
        '  "caps": [field(c) for c in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")], "nnp": field("NoNewPrivs")}))'
      ].join('\n')
    });
    const r = await runInSandbox({ cwd: ws, command: ['python3', 'main.py'], timeoutMs: 20_000, env: { SEED: '1', HF_TOKEN: 'hf_x' } });
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    const seen = JSON.parse(r.stdout.trim());
    expect(seen.key).toBeNull();
    expect(seen.secret_in_env).toBe(false);
    expect(seen.home).toBe(ws);
    expect(seen.uid).not.toBe(0);
    expect(seen.euid).not.toBe(0);
    expect(seen.groups).not.toContain(0);
    expect(seen.nnp).toBe('1');
    if (asRoot || bwrapUsable) expect(seen.caps).toEqual(Array(5).fill('0000000000000000'));
    expectUnprivileged(r);
    expect(r.isolation.limits).toEqual(expect.arrayContaining(['env=scrubbed', 'fsize=256MiB']));
    expect(r.isolation.missing.join('\n')).toContain('env HF_TOKEN refused');
    // The workspace is handed back as it was found.
    expect(statSync(path.join(ws, 'main.py')).uid).toBe(process.getuid!());
  });

  test('the experiment interpreter imports numpy, pandas, sklearn and matplotlib under the default limits', async () => {
    const python = experimentPython();
    const root = workspacesRoot(__dirname)!;
    if (!process.env.NANORESEARCH_EXPERIMENT_PYTHON && existsSync(path.join(root, '.venv-experiment/bin/python'))) {
      // The venv's own bin/python, not the interpreter it links to: that one has no site-packages.
      expect(python.executable).toBe(path.join(root, '.venv-experiment/bin/python'));
      expect(Object.keys(python.packages).sort()).toEqual(['matplotlib', 'numpy', 'pandas', 'scipy', 'sklearn']);
    }
    const ws = workspace({
      'main.py': [
        'import sys, json, importlib',
        `names = ${JSON.stringify(Object.keys(python.packages))}`,
        'mods = {n: importlib.import_module(n) for n in names}',
        'if "matplotlib" in mods:',
        '    import matplotlib.pyplot as plt',
        '    plt.plot([0, 1], [1, 0]); plt.savefig("figure.png")',
        'if "numpy" in mods:',
        '    a = mods["numpy"].random.default_rng(0).random((300, 300)); (a @ a).sum()',
        'print(json.dumps({"executable": sys.executable, "versions": {n: m.__version__ for n, m in mods.items()}}))'
      ].join('\n')
    });
    const r = await runInSandbox({ cwd: ws, command: ['python3', 'main.py'], timeoutMs: 60_000 });
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    const seen = JSON.parse(r.stdout.trim());
    expect(seen.executable).toBe(python.executable);
    expect(seen.versions).toEqual(python.packages);
    if (python.packages.matplotlib) expect(existsSync(path.join(ws, 'figure.png'))).toBe(true);
    expect(r.isolation.limits).toContain('as=2048MiB');
  }, 90_000);

  test('cannot write outside the workspace: not by path, symlink, /proc/*/root, mount, mknod or a user namespace', async () => {
    const outsideDir = mkdtempSync(path.join(tmpdir(), 'nr-outside-'));
    const outsideFile = path.join(outsideDir, 'keep.txt');
    writeFileSync(outsideFile, 'original');
    const before = { keep: sha(outsideFile), passwd: sha('/etc/passwd') };
    const ws = workspace();
    const sibling = path.join(path.dirname(ws), 'escaped.txt');
    writeFileSync(
      path.join(ws, 'main.py'),
      [
        'import os, json, stat, subprocess',
        'out = {}',
        'def attempt(name, fn):',
        '    try:',
        '        fn(); out[name] = "done"',
        '    except Exception as e:',
        '        out[name] = type(e).__name__',
        'def write(p, mode="w"):',
        '    with open(p, mode) as f: f.write("pwned")',
        `attempt("sibling", lambda: write(${JSON.stringify(sibling)}))`,
        'attempt("usr", lambda: write("/usr/escaped.txt"))',
        'attempt("passwd", lambda: write("/etc/passwd", "a"))',
        `os.symlink(${JSON.stringify(outsideFile)}, "link-file")`,
        'os.symlink("/etc/passwd", "link-passwd")',
        `os.symlink(${JSON.stringify(outsideDir)}, "link-dir")`,
        'attempt("via_link_file", lambda: write("link-file"))',
        'attempt("via_link_passwd", lambda: write("link-passwd", "a"))',
        'attempt("via_link_dir", lambda: write("link-dir/new.txt"))',
        'out["proc_root"] = {}',
        'for p in [p for p in os.listdir("/proc") if p.isdigit()]:',
        '    try:',
        `        write("/proc/" + p + "/root" + ${JSON.stringify(outsideFile)}); out["proc_root"][p] = "done"`,
        '    except Exception as e:',
        '        out["proc_root"][p] = type(e).__name__',
        'def run(*argv):',
        '    try:',
        '        return subprocess.run(argv, capture_output=True).returncode',
        '    except OSError as e:',
        '        return type(e).__name__',
        'os.mkdir("mnt")',
        'out["mount_tmpfs"] = run("mount", "-t", "tmpfs", "none", "mnt")',
        'out["mount_bind"] = run("mount", "--bind", "/", "mnt")',
        'out["remount_usr"] = run("mount", "-o", "remount,rw", "/usr")',
        'attempt("mknod", lambda: os.mknod("disk", stat.S_IFBLK | 0o600, os.makedev(8, 0)))',
        'out["userns"] = run("unshare", "--user", "--map-root-user", "true")',
        'out["dev"] = sorted(os.listdir("/dev"))',
        'print(json.dumps(out))'
      ].join('\n')
    );
    const r = await runInSandbox({ cwd: ws, command: ['python3', 'main.py'], timeoutMs: 30_000 });
    expect(r.stderr).toBe('');
    const seen = JSON.parse(r.stdout.trim());
    // Nothing outside changed, whatever the code reported.
    expect(sha(outsideFile)).toBe(before.keep);
    expect(sha('/etc/passwd')).toBe(before.passwd);
    expect(existsSync(sibling)).toBe(false);
    expect(existsSync('/usr/escaped.txt')).toBe(false);
    expect(readdirSync(outsideDir)).toEqual(['keep.txt']);
    for (const key of ['usr', 'passwd', 'via_link_passwd', 'mknod']) expect(seen[key]).not.toBe('done');
    for (const key of ['mount_tmpfs', 'mount_bind', 'remount_usr']) expect(seen[key]).not.toBe(0);
    expectUnprivileged(r);
    if (!bwrapUsable) {
      expect(r.isolation.filesystem).toBe('unrestricted');
      expect(r.isolation.missing.join('\n')).toMatch(/filesystem isolation/);
      return;
    }
    expect(r.isolation.filesystem).toBe('workspace-only');
    expect(r.isolation.layers).toEqual(expect.arrayContaining(['pid-namespace (own /proc)', 'dev=minimal (null zero full random urandom tty pts shm)']));
    // The only devices are the harmless ones; no disk, no host device.
    expect(seen.dev).toEqual(['core', 'fd', 'full', 'null', 'ptmx', 'pts', 'random', 'shm', 'stderr', 'stdin', 'stdout', 'tty', 'urandom', 'zero']);
    // /proc lists only the sandbox's own pid namespace (a handful of processes, not the host's).
    expect(Object.keys(seen.proc_root).length).toBeLessThan(10);
    if (r.isolation.layers!.includes('user-namespaces=disabled')) expect(seen.userns).not.toBe(0);
  });

  test('cannot read a file outside the workspace or open any connection', async () => {
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
        `    socket.create_connection(("127.0.0.1", ${port}), timeout=2).recv(5); out.append("net")`,
        'except OSError: out.append("nonet")',
        'print(",".join(out))'
      ].join('\n')
    });
    try {
      const r = await runInSandbox({ cwd: ws, command: ['python3', 'main.py'], timeoutMs: 20_000 });
      expectUnprivileged(r);
      if (!bwrapUsable) {
        expect(r.isolation.network).toBe('unrestricted');
        expect(r.isolation.missing.join('\n')).toMatch(/network isolation/);
        return;
      }
      expect(r.stdout.trim()).toBe('noread,nonet');
      expect(r.isolation.network).toBe('none');
      expect(r.isolation.layers).toContain('network-namespace (no network)');
      if (asRoot) expect(r.isolation.missing).toEqual([]);
    } finally {
      server.close();
    }
  });

  test('the limits-only fallback runs and names what is missing', async () => {
    const ws = workspace({ 'main.py': 'print("hi")\n' });
    const r = await runInSandbox({ cwd: ws, command: [pythonFor('limits-only'), 'main.py'], timeoutMs: 20_000, isolation: 'limits-only' });
    expect(r.stdout.trim()).toBe('hi');
    expect(r.isolation.network).toBe('unrestricted');
    expect(r.isolation.filesystem).toBe('unrestricted');
    expect(r.isolation.missing.some(m => m.startsWith('network isolation'))).toBe(true);
    expectUnprivileged(r);
  });

  test.each(modes)(
    '%s: stopped at the wall-clock limit with no process of its tree left, a setsid grandchild holding the pipe included',
    async mode => {
      const token = `nr-token-${process.pid}-${mode}-${Date.now()}`;
      const ws = workspace();
      // The grandchild leaves the session (setsid), keeps stdout open and would write a file late.
      const script = `setsid sh -c 'sleep 2; echo late > late.txt # ${token}' & setsid sh -c 'while :; do sleep 1; done # ${token}' & sleep 30`;
      const r = await runInSandbox({ cwd: ws, command: ['sh', '-c', script], timeoutMs: 1500, isolation: mode });
      expect(r.timedOut).toBe(true);
      expect(r.stoppedBy).toBe('wall-clock');
      expect(r.wallMs).toBeLessThan(1500 + 2500);
      expect(processesWith(token)).toEqual([]);
      await new Promise(res => setTimeout(res, 2500 - r.wallMs + 200));
      expect(existsSync(path.join(ws, 'late.txt'))).toBe(false);
      expect(processesWith(token)).toEqual([]);
      if (asRoot) expect(r.isolation.layers).toContain('kill=every process of the run uid');
      else if (mode === 'auto' && bwrapUsable) expect(r.isolation.layers!.some(l => l.startsWith('kill='))).toBe(true);
    },
    15_000
  );

  test.each(modes)('%s: a program that exits leaving a detached daemon on its pipe returns at once, daemon killed', async mode => {
    const token = `nr-daemon-${process.pid}-${mode}-${Date.now()}`;
    const ws = workspace();
    const r = await runInSandbox({ cwd: ws, command: ['sh', '-c', `setsid sh -c 'sleep 60 # ${token}' & echo started`], timeoutMs: 20_000, isolation: mode });
    expect(r.stoppedBy).toBe('exit');
    expect(r.exitCode).toBe(0);
    expect(r.stdout.trim()).toBe('started');
    expect(r.wallMs).toBeLessThan(3000);
    expect(processesWith(token)).toEqual([]);
    if (asRoot) expect(r.isolation.layers).toContain('kill=every process of the run uid');
    expect(r.isolation.missing.filter(m => m.includes('outlived'))).toEqual([]);
  });

  test.each(modes)(
    '%s: a fork storm is capped at the process limit within a second, and the lab stays responsive',
    async mode => {
      const token = `nr-storm-${process.pid}-${mode}-${Date.now()}`;
      const maxProcesses = 24;
      const ws = workspace({
        'main.py': [
          'import os, time, json, sys',
          `sys.argv.append(${JSON.stringify(token)})`,
          't = time.time(); n = 0; err = None',
          'while time.time() - t < 5:',
          '    try:',
          '        pid = os.fork()',
          '    except OSError as e:',
          '        err = e.errno; break',
          '    if pid == 0:',
          '        time.sleep(30); os._exit(0)',
          '    n += 1',
          'print(json.dumps({"forked": n, "errno": err, "seconds": time.time() - t}), flush=True)',
          'time.sleep(30)'
        ].join('\n')
      });
      const running = runInSandbox({ cwd: ws, command: [pythonFor(mode), 'main.py', token], timeoutMs: 2500, maxProcesses, isolation: mode });
      await new Promise(res => setTimeout(res, 1500));
      const probeStart = Date.now();
      expect(spawnSync('/bin/true').status).toBe(0);
      expect(Date.now() - probeStart).toBeLessThan(1000);
      const r = await running;
      const capped = r.isolation.limits.includes(`nproc=${maxProcesses}`) || r.isolation.limits.some(l => l.startsWith('pids='));
      if (!capped) {
        expect(r.isolation.missing.join('\n')).toMatch(/process cap/);
        return;
      }
      const storm = JSON.parse(r.stdout.trim());
      expect(storm.errno).toBe(11); // EAGAIN: the cap, not the 5 s loop bound, stopped it.
      expect(storm.forked).toBeLessThan(maxProcesses);
      expect(storm.seconds).toBeLessThan(1);
      expect(r.timedOut).toBe(true);
      expect(processesWith(token)).toEqual([]);
    },
    15_000
  );

  test.each(modes)('%s: a disk-filling loop stops at the workspace quota', async mode => {
    const ws = workspace();
    const quotaMb = 8;
    const script = 'i=0; while :; do head -c 1048576 /dev/zero > fill$i || exit 3; i=$((i+1)); done';
    const r = await runInSandbox({ cwd: ws, command: ['sh', '-c', script], timeoutMs: 20_000, diskQuotaMb: quotaMb, isolation: mode });
    expect(r.stoppedBy).toBe('disk-quota');
    expect(r.wallMs).toBeLessThan(10_000);
    const written = readdirSync(ws).reduce((sum, f) => sum + statSync(path.join(ws, f)).size, 0);
    expect(written).toBeGreaterThan(quotaMb * 2 ** 20);
    // Polled: the overshoot is what the loop writes in one poll interval, far from filling a disk.
    expect(written).toBeLessThan((quotaMb + 64) * 2 ** 20);
    expect(r.isolation.limits).toContain(`disk=${quotaMb}MiB (workspace, polled every 50ms)`);
  });

  test('the private /tmp is a tmpfs with a hard size limit', async () => {
    if (!bwrapUsable) return;
    const ws = workspace();
    const r = await runInSandbox({
      cwd: ws,
      command: ['sh', '-c', 'head -c 20971520 /dev/zero > /tmp/big; echo rc=$?; wc -c < /tmp/big'],
      timeoutMs: 20_000,
      diskQuotaMb: 4
    });
    expect(r.stdout).toMatch(/rc=[1-9]/);
    expect(Number(r.stdout.trim().split('\n').pop())).toBeLessThanOrEqual(4 * 2 ** 20);
    expect(r.isolation.layers).toContain('private /tmp and /dev/shm (tmpfs, 4MiB each)');
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

  test('as root without bubblewrap, an interpreter the unprivileged uid cannot reach is refused with the fix', async () => {
    const python = realpathSync(experimentPython().executable);
    const blocked =
      asRoot &&
      python
        .split('/')
        .slice(0, -1)
        .some((_, i, parts) => (statSync(parts.slice(0, i + 1).join('/') || '/').mode & 0o001) === 0);
    if (!blocked) return;
    const ws = workspace({ 'main.py': 'print(1)\n' });
    await expect(runInSandbox({ cwd: ws, command: ['python3', 'main.py'], timeoutMs: 5000, isolation: 'limits-only' })).rejects.toThrow(
      /NANORESEARCH_EXPERIMENT_PYTHON/
    );
  });

  test('as root without bubblewrap, a workspace the unprivileged uid cannot reach is refused with the fix', async () => {
    if (!asRoot) return;
    const ws = workspace({}, false);
    await expect(runInSandbox({ cwd: ws, command: ['sh', '-c', 'true'], timeoutMs: 5000, isolation: 'limits-only' })).rejects.toThrow(
      /is not searchable by other users: keep workspaces where every user can reach them/
    );
    // bubblewrap builds the path inside its own mount namespace: the same workspace works there.
    if (bwrapUsable)
      expect((await runInSandbox({ cwd: ws, command: ['sh', '-c', 'echo ok > done.txt; cat done.txt'], timeoutMs: 5000 })).stdout.trim()).toBe('ok');
  });
});
