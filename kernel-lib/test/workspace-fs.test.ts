/**
 * The stages read and write a workspace that generated code has had its hands on, with the lab's
 * privileges (root in CI): every link it left must be refused, and nothing outside touched.
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'fs';
import { tmpdir } from 'os';
import * as path from 'path';
import { runInSandbox } from '../src/sandbox';
import { copyInside, listInside, readInside, resolveInside, WorkspacePathError, writeInside } from '../src/sandbox/workspace-fs';

function folder(prefix: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  chmodSync(dir, 0o755);
  return dir;
}

describe('workspace-fs', () => {
  let ws: string;
  let outsideDir: string;
  let outsideFile: string;
  const passwd = readFileSync('/etc/passwd', 'utf8');

  beforeAll(async () => {
    outsideDir = folder('nr-outside-');
    outsideFile = path.join(outsideDir, 'secret.txt');
    writeFileSync(outsideFile, 'outside secret');
    ws = path.join(folder('nr-wsfs-'), 'ws');
    mkdirSync(ws);
    // Generated code, run for real, leaves links behind in its results.
    writeFileSync(
      path.join(ws, 'main.py'),
      [
        'import os',
        'os.makedirs("results/figures", exist_ok=True)',
        'open("results/metrics.json", "w").write("{\\"accuracy\\": 0.9}")',
        'open("results/figures/a.txt", "w").write("figure")',
        'os.symlink("/etc/passwd", "results/passwd.json")',
        `os.symlink(${JSON.stringify(outsideFile)}, "results/outside.txt")`,
        `os.symlink(${JSON.stringify(outsideDir)}, "results/outside-dir")`,
        'os.symlink("../..", "results/up")',
        'open("results/hard-a.txt", "w").write("x"); os.link("results/hard-a.txt", "results/hard-b.txt")',
        'os.mkfifo("results/pipe")'
      ].join('\n')
    );
    const r = await runInSandbox({ cwd: ws, command: ['python3', 'main.py'], timeoutMs: 20_000 });
    expect(r.stderr).toBe('');
  });

  afterAll(() => {
    // Whatever was refused, nothing outside changed.
    expect(readFileSync(outsideFile, 'utf8')).toBe('outside secret');
    expect(readdirSync(outsideDir)).toEqual(['secret.txt']);
    expect(readFileSync('/etc/passwd', 'utf8')).toBe(passwd);
  });

  const refused = (fn: () => unknown, pattern: RegExp) => {
    let error: unknown;
    try {
      fn();
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(WorkspacePathError);
    expect((error as Error).message).toMatch(pattern);
    return error as WorkspacePathError;
  };

  test('reads and writes real files, making folders', () => {
    expect(readInside(ws, 'results/metrics.json')).toBe('{"accuracy": 0.9}');
    writeInside(ws, 'report/tables/t1.md', '| a |');
    expect(readInside(ws, 'report/tables/t1.md')).toBe('| a |');
    writeInside(ws, 'report/tables/t1.md', 'shorter');
    expect(readInside(ws, 'report/tables/t1.md')).toBe('shorter');
    expect(() => readInside(ws, 'results/metrics.json', { maxBytes: 4 })).toThrow(/over the 4-byte limit/);
  });

  test('a symlink to /etc/passwd or to a file outside is refused, for reading and writing, naming the path', () => {
    const e = refused(() => readInside(ws, 'results/passwd.json'), /results\/passwd\.json is a symbolic link/);
    expect(e.path).toBe(path.join(ws, 'results/passwd.json'));
    refused(() => writeInside(ws, 'results/passwd.json', 'root::0:0::/:/bin/sh'), /is a symbolic link/);
    refused(() => readInside(ws, 'results/outside.txt'), /is a symbolic link/);
    refused(() => writeInside(ws, 'results/outside.txt', 'overwritten'), /is a symbolic link/);
  });

  test('a folder symlink is refused anywhere on the path, and no folder is made through it', () => {
    refused(() => readInside(ws, 'results/outside-dir/secret.txt'), /results\/outside-dir is a symbolic link/);
    refused(() => writeInside(ws, 'results/outside-dir/new.txt', 'x'), /is a symbolic link/);
    refused(() => writeInside(ws, 'results/up/escaped/new.txt', 'x'), /results\/up is a symbolic link/);
    refused(() => resolveInside(ws, 'results/outside-dir/secret.txt'), /is a symbolic link/);
    expect(existsSync(path.join(path.dirname(ws), 'escaped'))).toBe(false);
  });

  test('paths that leave the workspace by name are refused', () => {
    refused(() => readInside(ws, '../ws/results/metrics.json/../../..'), /leads outside the workspace/);
    refused(() => readInside(ws, '/etc/passwd'), /is absolute/);
    refused(() => writeInside(ws, 'a\0b', 'x'), /NUL byte/);
  });

  test('hard links and special files are refused without blocking', () => {
    refused(() => readInside(ws, 'results/hard-b.txt'), /other hard links/);
    refused(() => writeInside(ws, 'results/hard-a.txt', 'x'), /other hard links/);
    refused(() => readInside(ws, 'results/pipe'), /not a regular file/);
    refused(() => writeInside(ws, 'results/pipe', 'x'), /not a regular file/);
  });

  test('listing shows links as links and never follows them', () => {
    const entries = listInside(ws, 'results');
    const kinds = Object.fromEntries(entries.map(e => [e.path, e.kind]));
    expect(kinds).toMatchObject({
      'metrics.json': 'file',
      figures: 'directory',
      'figures/a.txt': 'file',
      'passwd.json': 'symlink',
      'outside.txt': 'symlink',
      'outside-dir': 'symlink',
      up: 'symlink',
      pipe: 'other'
    });
    expect(entries.some(e => e.path.startsWith('outside-dir/') || e.path.startsWith('up/'))).toBe(false);
  });

  test('copying a tree refuses it whole when it holds a link, and copies a clean one', () => {
    const dest = folder('nr-wsfs-dest-');
    refused(() => copyInside(ws, 'results', dest, 'copy'), /is a symbolic link|not a regular file/);
    expect(readdirSync(dest)).toEqual([]);
    copyInside(ws, 'results/figures', dest, 'copy/figures');
    expect(readInside(dest, 'copy/figures/a.txt')).toBe('figure');
    copyInside(ws, 'results/metrics.json', dest, 'metrics.json');
    expect(readInside(dest, 'metrics.json')).toBe('{"accuracy": 0.9}');
  });
});
