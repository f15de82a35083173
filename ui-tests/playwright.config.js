/**
 * Galata UI tests in Debian's Chromium (never `playwright install`: there is no network).
 * With CI=1 Playwright starts JupyterLab itself (start-lab.js, which also starts the scripted
 * LLM server) and stops it at the end.
 */
const baseConfig = require('@jupyterlab/galata/lib/playwright-config');

module.exports = {
  ...baseConfig,
  globalSetup: require.resolve('./global-setup.js'),
  timeout: 180 * 1000,
  expect: { timeout: 30 * 1000 },
  retries: 0,
  workers: 1,
  use: {
    ...baseConfig.use,
    video: 'off',
    trace: 'off',
    viewport: { width: 1400, height: 900 },
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-dev-shm-usage',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run'
      ]
    }
  },
  reporter: [['list']],
  webServer: {
    command: 'node start-lab.js',
    url: 'http://localhost:8888/lab',
    timeout: 120 * 1000,
    reuseExistingServer: !process.env.CI,
    stdout: 'pipe',
    stderr: 'pipe'
  }
};
