/**
 * The UI tests' web server: starts the scripted LLM server (kernel-lib's CLI), waits for its
 * READY line, then runs JupyterLab with the environment that points the notebook kernels at it
 * and at a fresh NANORESEARCH_HOME. Stops both on exit.
 */
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const repo = path.resolve(__dirname, '..');
const runRoot = path.join(__dirname, '.jupyter-root');
fs.rmSync(runRoot, { recursive: true, force: true });
fs.mkdirSync(runRoot, { recursive: true });
const home = fs.mkdtempSync(path.join(os.tmpdir(), 'nr-ui-home-'));

const children = [];
function stopAll(code) {
  for (const child of children) {
    if (child.exitCode === null) child.kill('SIGTERM');
  }
  fs.rmSync(home, { recursive: true, force: true });
  process.exit(code);
}
process.on('SIGINT', () => stopAll(0));
process.on('SIGTERM', () => stopAll(0));

const llm = spawn(
  process.execPath,
  [path.join(repo, 'kernel-lib/dist/testing/scripted-llm-server-cli.js'), '--port', '0', '--script', path.join(__dirname, 'llm-script.js')],
  { stdio: ['ignore', 'pipe', 'inherit'] }
);
children.push(llm);
llm.on('exit', code => {
  console.error(`scripted LLM server exited (${code})`);
  stopAll(1);
});

let buffered = '';
llm.stdout.on('data', chunk => {
  buffered += chunk.toString();
  const ready = /READY (\S+)/.exec(buffered);
  if (!ready || children.length > 1) return;
  const env = {
    ...process.env,
    PATH: [path.join(repo, '.venv/bin'), path.join(repo, 'node_modules/.bin'), process.env.PATH].join(path.delimiter),
    NANORESEARCH_UI_ROOT: runRoot,
    NANORESEARCH_HOME: home,
    NANORESEARCH_AUTHOR: 'ui-tester',
    NANORESEARCH_LLM_BASE_URL: ready[1],
    NANORESEARCH_LLM_API_KEY: 'ui-test-key',
    NANORESEARCH_LITERATURE_SOURCES: 'none',
    NANORESEARCH_LLM_MAX_RETRIES: '1'
  };
  const prices = {};
  for (const role of ['planner', 'ideation', 'planning', 'coding', 'writing', 'review', 'judge']) {
    env[`NANORESEARCH_MODEL_${role.toUpperCase()}`] = `ui-${role}`;
    prices[`ui-${role}`] = { inputPerMTok: 0, outputPerMTok: 0 };
  }
  // The profiles cap the cost of a run, so every remote model needs a price: the scripted ones are free.
  env.NANORESEARCH_LLM_PRICES = JSON.stringify(prices);
  // Workspaces in their default place, beside the notebook under the served root: the cards' links must open.
  delete env.NANORESEARCH_WORKSPACES;
  const lab = spawn('jupyter', ['lab', '--config', path.join(__dirname, 'jupyter_server_test_config.py')], {
    cwd: __dirname,
    env,
    stdio: 'inherit'
  });
  children.push(lab);
  lab.on('exit', code => stopAll(code ?? 0));
});
