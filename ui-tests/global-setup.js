/**
 * Checks what the UI tests need before any browser starts, and prepares the screenshot folder.
 * Fails with what to do instead of letting a test time out.
 */
const fs = require('fs');
const path = require('path');

module.exports = async function globalSetup() {
  const repo = path.resolve(__dirname, '..');
  const need = [
    [process.env.CHROMIUM_PATH || '/usr/bin/chromium', 'apt-get install -y chromium (or set CHROMIUM_PATH)'],
    [path.join(repo, 'kernel-lib/dist/index.js'), 'npm run build -w schema && npm run build -w kernel-lib'],
    [path.join(repo, 'kernel-lib/dist/testing/scripted-llm-server-cli.js'), 'npm run build -w kernel-lib'],
    [path.join(repo, 'extension/nanoresearch_jupyterlab/labextension/package.json'), 'npm run build -w extension && .venv/bin/jupyter-builder develop --overwrite extension']
  ];
  const missing = need.filter(([file]) => !fs.existsSync(file));
  if (missing.length > 0) {
    throw new Error(`UI tests cannot run: ${missing.map(([file, fix]) => `${file} is missing (${fix})`).join('; ')}`);
  }
  fs.mkdirSync(path.join(__dirname, 'artifacts'), { recursive: true });
};
