/**
 * Child `node` processes running the store, for the cross-process store tests: the store is
 * compiled from src/ (by the TypeScript compiler API, into a temp folder) and the fixtures in
 * test/fixtures/ require it from there.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ChildProcess, spawn } from 'child_process';
import * as ts from 'typescript';

const fixtures = path.join(__dirname, 'fixtures');
/** Children resolve @duckdb/node-api from the compiled store in a temp folder through NODE_PATH. */
const nodePath = path.resolve(path.dirname(require.resolve('@duckdb/node-api/package.json')), '..', '..');

/**
 * Compiles src/store (or these modules of src/) and what they import into a new temp folder;
 * returns the folder.
 */
export function compileStore(roots: readonly string[] = ['store/index.ts']): string {
  const buildDir = fs.mkdtempSync(path.join(os.tmpdir(), 'nr-store-build-'));
  const program = ts.createProgram(
    roots.map(root => path.resolve(__dirname, '../src', root)),
    {
      outDir: buildDir,
      rootDir: path.resolve(__dirname, '../src'),
      module: ts.ModuleKind.Node16,
      moduleResolution: ts.ModuleResolutionKind.Node16,
      target: ts.ScriptTarget.ES2022,
      strict: true,
      esModuleInterop: true,
      skipLibCheck: true,
      types: ['node']
    }
  );
  const emitted = program.emit();
  const errors = ts.getPreEmitDiagnostics(program).concat(emitted.diagnostics);
  if (errors.length > 0) {
    throw new Error(ts.formatDiagnostics(errors, { getCanonicalFileName: f => f, getCurrentDirectory: () => __dirname, getNewLine: () => '\n' }));
  }
  return buildDir;
}

export interface Child {
  process: ChildProcess;
  lines: string[];
  stderr: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves when a stdout line satisfies the predicate. */
  waitForLine(predicate: (line: string) => boolean): Promise<string>;
}

/** Starts `test/fixtures/<script>` with `args`, collecting its stdout lines and stderr. */
export function startChild(script: string, args: string[]): Child {
  const child = spawn(process.execPath, [path.join(fixtures, script), ...args], {
    env: { ...process.env, NODE_PATH: nodePath },
    stdio: ['ignore', 'pipe', 'pipe']
  });
  const lines: string[] = [];
  const listeners: Array<() => void> = [];
  let buffered = '';
  let stderr = '';
  child.stdout!.on('data', chunk => {
    buffered += chunk;
    const parts = buffered.split('\n');
    buffered = parts.pop()!;
    lines.push(...parts);
    listeners.forEach(listener => listener());
  });
  child.stderr!.on('data', chunk => (stderr += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>(resolve => child.on('exit', (code, signal) => resolve({ code, signal })));
  return {
    process: child,
    lines,
    get stderr() {
      return stderr;
    },
    exited,
    waitForLine: predicate =>
      new Promise((resolve, reject) => {
        const check = () => {
          const found = lines.find(predicate);
          if (found !== undefined) resolve(found);
        };
        listeners.push(check);
        check();
        exited.then(() => setImmediate(() => reject(new Error(`child ${script} exited before the expected line; stderr: ${stderr}`))));
      })
  };
}
