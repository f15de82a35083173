/**
 * A saved notebook (as a colleague shares it) shows its stage card and its feedback thread
 * without running anything; unsynced feedback is marked as pending.
 */
import { expect, IJupyterLabPageFixture, test } from '@jupyterlab/galata';
import * as path from 'path';

test.use({ autoGoto: false, viewport: { width: 1400, height: 1400 } });

const ARTIFACTS = path.join(__dirname, '..', 'artifacts');

async function shoot(page: IJupyterLabPageFixture, theme: 'light' | 'dark'): Promise<void> {
  const name = theme === 'light' ? 'JupyterLab Light' : 'JupyterLab Dark';
  await page.evaluate(t => (window as any).jupyterapp.commands.execute('apputils:change-theme', { theme: t }), name);
  await expect(page.locator('body')).toHaveAttribute('data-jp-theme-name', name);
  await page.locator('.jp-nr-card').screenshot({ path: path.join(ARTIFACTS, `saved-stage-card-${theme}.png`) });
  await page.locator('#nanoresearch-feedback').screenshot({ path: path.join(ARTIFACTS, `saved-feedback-sidebar-${theme}.png`) });
}

test('a saved notebook shows its stage card and feedback thread without a kernel', async ({ page, tmpPath }) => {
  await page.goto();
  await page.contents.uploadFile(path.resolve(__dirname, '../../notebooks/fixtures/saved-stage-card.ipynb'), `${tmpPath}/saved.ipynb`);
  await page.notebook.openByPath(`${tmpPath}/saved.ipynb`);
  await page.notebook.activate('saved.ipynb');

  const card = page.locator('.jp-nr-card[data-status="done"]');
  await expect(card).toBeVisible();
  await expect(card.locator('.jp-nr-hypothesis')).toHaveCount(2);
  await expect(card.locator('.jp-nr-section-title')).toHaveText(['Hypotheses', 'Experiment blueprint', 'Metrics', 'Section scores · overall 6.8/10']);
  await expect(page.locator('.jp-Cell[data-nanoresearch-status="done"] .jp-nr-badge')).toHaveText('Ideation · done');

  await page.sidebar.openTab('nanoresearch-feedback');
  const entries = page.locator('#nanoresearch-feedback .jp-nr-entry');
  await expect(entries).toHaveCount(2);
  await expect(entries.nth(0)).toHaveAttribute('data-synced', 'true');
  await expect(entries.nth(1)).toHaveAttribute('data-synced', 'false');
  await expect(page.locator('#nanoresearch-feedback .jp-nr-unsynced')).toHaveText('1 not yet in the store');

  await shoot(page, 'light');
  await shoot(page, 'dark');
  await page.evaluate(() => (window as any).jupyterapp.commands.execute('apputils:change-theme', { theme: 'JupyterLab Light' }));
});
