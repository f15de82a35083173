/**
 * The Python environment generated experiment code runs in.
 *
 * Resolution: `NANORESEARCH_EXPERIMENT_PYTHON` if set, else `<repo>/.venv-experiment/bin/python`
 * (created by scripts/setup from scripts/requirements-experiment.txt), else the real interpreter
 * behind `python3` on PATH. A venv's interpreter is used by its own `bin/python` path, never
 * realpath'd: Python finds the venv's site-packages from the path it was started by, so the
 * resolved symlink target would run without numpy & co.
 */
import { spawnSync } from 'child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'fs';
import { tmpdir } from 'os';
import * as path from 'path';

export interface ExperimentInterpreter {
  /** Absolute path the interpreter is started by (a venv's `bin/python`, not its target). */
  executable: string;
  /** sys.prefix: the venv (or installation) folder, bound read-only into the sandbox. */
  prefix: string;
  /** sys.base_prefix: the installation a venv was made from (stdlib), bound read-only too. */
  basePrefix: string;
}

export interface ExperimentPython {
  executable: string;
  /** Versions of the scientific packages that import in this interpreter; one that does not import is absent. */
  packages: Record<string, string>;
}

/** Packages the experiment prompt may rely on (import names). */
const PROBED_PACKAGES = ['numpy', 'pandas', 'sklearn', 'scipy', 'matplotlib'];

/**
 * Variables that make the scientific stack behave under the sandbox's limits: one BLAS/OpenMP
 * thread (OpenBLAS otherwise reserves a buffer per core, which the address-space limit and the
 * process cap count), and matplotlib's headless backend with a writable config folder.
 */
export function pythonRuntimeEnv(tmp: string): Record<string, string> {
  return {
    OPENBLAS_NUM_THREADS: '1',
    OMP_NUM_THREADS: '1',
    MKL_NUM_THREADS: '1',
    MPLBACKEND: 'Agg',
    MPLCONFIGDIR: path.posix.join(tmp, 'matplotlib')
  };
}

/** The npm-workspaces root (the nearest package.json with `workspaces`) at or above `from`. */
export function workspacesRoot(from: string): string | undefined {
  for (let dir = path.resolve(from); ; dir = path.dirname(dir)) {
    const manifest = path.join(dir, 'package.json');
    if (existsSync(manifest)) {
      try {
        if ((JSON.parse(readFileSync(manifest, 'utf8')) as { workspaces?: unknown }).workspaces) return dir;
      } catch {
        // An unreadable package.json is not the root; keep walking up.
      }
    }
    if (path.dirname(dir) === dir) return undefined;
  }
}

function runPython(executable: string, code: string, env: Record<string, string> = {}): string {
  const r = spawnSync(executable, ['-c', code], {
    encoding: 'utf8',
    timeout: 120_000,
    env: { PATH: '/usr/local/bin:/usr/bin:/bin', LANG: 'C.UTF-8', PYTHONNOUSERSITE: '1', PYTHONDONTWRITEBYTECODE: '1', ...env }
  });
  if (r.status !== 0 || !r.stdout?.trim()) {
    const why = (r.stderr || r.error?.message || `exit ${r.status}`).trim();
    throw new Error(
      `cannot run the experiment interpreter '${executable}': ${why}; set NANORESEARCH_EXPERIMENT_PYTHON to a working Python 3, or run scripts/setup to create .venv-experiment`
    );
  }
  return r.stdout.trim();
}

function chooseExecutable(env: NodeJS.ProcessEnv): string {
  if (env.NANORESEARCH_EXPERIMENT_PYTHON) {
    const chosen = path.resolve(env.NANORESEARCH_EXPERIMENT_PYTHON);
    if (!existsSync(chosen))
      throw new Error(`NANORESEARCH_EXPERIMENT_PYTHON=${env.NANORESEARCH_EXPERIMENT_PYTHON} does not exist; point it at a Python 3 interpreter`);
    return chosen;
  }
  const root = workspacesRoot(__dirname);
  const venv = root && path.join(root, '.venv-experiment', 'bin', 'python');
  if (venv && existsSync(venv)) return venv;
  // A python3 on PATH may be a version-manager shim (pyenv) that needs the parent's HOME and
  // variables, which the sandbox does not pass: ask it for the real interpreter once.
  return runPython('python3', 'import sys; print(sys.executable)', { PATH: env.PATH ?? '/usr/bin:/bin', HOME: env.HOME ?? '/' });
}

const interpreters = new Map<string, ExperimentInterpreter>();

/** The interpreter with the folders it needs; probed once per executable. */
export function experimentInterpreter(env: NodeJS.ProcessEnv = process.env): ExperimentInterpreter {
  const executable = chooseExecutable(env);
  const cached = interpreters.get(executable);
  if (cached) return cached;
  const [prefix, basePrefix] = JSON.parse(runPython(executable, 'import sys, json; print(json.dumps([sys.prefix, sys.base_prefix]))')) as [string, string];
  const found = { executable, prefix, basePrefix };
  interpreters.set(executable, found);
  return found;
}

const packageProbes = new Map<string, Record<string, string>>();

/** The experiment interpreter and the versions of the scientific packages importable in it (probed once, cached). */
export function experimentPython(): ExperimentPython {
  const { executable } = experimentInterpreter();
  let packages = packageProbes.get(executable);
  if (!packages) {
    const tmp = mkdtempSync(path.join(tmpdir(), 'nr-python-probe-'));
    try {
      const code = [
        'import importlib, json',
        'out = {}',
        `for name in ${JSON.stringify(PROBED_PACKAGES)}:`,
        '    try:',
        '        out[name] = str(importlib.import_module(name).__version__)',
        '    except Exception:',
        '        pass',
        'print(json.dumps(out))'
      ].join('\n');
      packages = JSON.parse(runPython(executable, code, { ...pythonRuntimeEnv(tmp), HOME: tmp })) as Record<string, string>;
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
    packageProbes.set(executable, packages);
  }
  return { executable, packages: { ...packages } };
}
