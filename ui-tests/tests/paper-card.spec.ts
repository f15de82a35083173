/**
 * The paper card of a real quickstart run: the writing and review cells as the embedded models
 * left them (notebooks/fixtures/quickstart-paper.ipynb, saved from `npm run bench:quickstart`),
 * shown without a kernel. The card carries the title, the abstract, the paper's files and the
 * grounding verdict; the review card its scores on their scale. Screenshots in both themes.
 */
import { expect, IJupyterLabPageFixture, test } from '@jupyterlab/galata';
import * as path from 'path';

test.use({ autoGoto: false, viewport: { width: 1400, height: 1600 } });

const ARTIFACTS = path.join(__dirname, '..', 'artifacts');

async function shoot(page: IJupyterLabPageFixture, theme: 'light' | 'dark'): Promise<void> {
  const name = theme === 'light' ? 'JupyterLab Light' : 'JupyterLab Dark';
  await page.evaluate(t => (window as any).jupyterapp.commands.execute('apputils:change-theme', { theme: t }), name);
  await expect(page.locator('body')).toHaveAttribute('data-jp-theme-name', name);
  await page.locator('.jp-nr-card[data-stage="writing"]').screenshot({ path: path.join(ARTIFACTS, `paper-card-${theme}.png`) });
  await page.locator('.jp-nr-card[data-stage="review"]').screenshot({ path: path.join(ARTIFACTS, `review-card-${theme}.png`) });
}

test('the paper card of a quickstart run shows the title, the abstract, its files and that every number is grounded', async ({ page, tmpPath }) => {
  await page.goto();
  await page.contents.uploadFile(path.resolve(__dirname, '../../notebooks/fixtures/quickstart-paper.ipynb'), `${tmpPath}/quickstart-paper.ipynb`);
  await page.notebook.openByPath(`${tmpPath}/quickstart-paper.ipynb`);
  await page.notebook.activate('quickstart-paper.ipynb');

  const paper = page.locator('.jp-nr-card[data-stage="writing"][data-status="done"]');
  await expect(paper).toBeVisible();
  await expect(paper.locator('.jp-nr-summary')).toContainText('every number grounded');
  await expect(paper.locator('.jp-nr-abstract')).not.toBeEmpty();
  // The paper's own files are listed by kind; none of its numbers is flagged.
  await expect(paper.locator('.jp-nr-artifact[data-kind="paper"]')).toHaveCount(1);
  await expect(paper.locator('.jp-nr-artifact[data-kind="latex"]')).toHaveCount(1);
  await expect(paper.locator('.jp-nr-artifact[data-kind="bibtex"]')).toHaveCount(1);
  await expect(paper.locator('.jp-nr-warning')).toHaveCount(0);

  const review = page.locator('.jp-nr-card[data-stage="review"][data-status="done"]');
  await expect(review).toBeVisible();
  await expect(review).toContainText(/overall [\d.]+\/10/);

  await shoot(page, 'light');
  await shoot(page, 'dark');
  await page.evaluate(() => (window as any).jupyterapp.commands.execute('apputils:change-theme', { theme: 'JupyterLab Light' }));
});
