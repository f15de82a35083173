/**
 * Feedback never blocks and learning is visible: feedback given in the sidebar is stored within
 * 2 s while what is learned from it goes queued → learning → learned (the scripted server takes
 * 3 s per learning call), the next cell runs at once meanwhile, a failed learning job shows its
 * reason and Retry works, and the author is the same on UI and code feedback. Screenshots of
 * each state in the light and dark themes go to artifacts/ (git-ignored).
 */
import { expect, IJupyterLabPageFixture, test } from '@jupyterlab/galata';
import * as path from 'path';

test.use({ autoGoto: false });
test.describe.configure({ mode: 'serial' });

const ARTIFACTS = path.join(__dirname, '..', 'artifacts');
const TOPIC = 'Small MLPs on tabular data';
const STAGE_CELL = 1;
const SETTINGS_ID = '@nanoresearch/jupyterlab:plugin';
const AUTHOR = 'Ada Example';

async function setTheme(page: IJupyterLabPageFixture, theme: 'light' | 'dark'): Promise<void> {
  const name = theme === 'light' ? 'JupyterLab Light' : 'JupyterLab Dark';
  await page.evaluate(t => (window as any).jupyterapp.commands.execute('apputils:change-theme', { theme: t }), name);
  await expect(page.locator('body')).toHaveAttribute('data-jp-theme-name', name);
}

/** The sidebar in both themes (light last, so the test goes on in the usual theme). */
async function sidebarShots(page: IJupyterLabPageFixture, state: string): Promise<void> {
  for (const theme of ['dark', 'light'] as const) {
    await setTheme(page, theme);
    await page.locator('#nanoresearch-feedback').screenshot({ path: path.join(ARTIFACTS, `feedback-${state}-${theme}.png`) });
  }
}

/** Runs code in a new cell and returns its output text and how long the run took. */
async function runInNewCell(page: IJupyterLabPageFixture, code: string): Promise<{ text: string; ms: number }> {
  const index = await page.notebook.getCellCount();
  await page.notebook.addCell('code', code);
  const started = Date.now();
  await page.notebook.runCell(index, true);
  const output = page.locator('.jp-Cell').nth(index).locator('.jp-OutputArea-output');
  await expect(output.first()).toBeVisible();
  return { text: (await output.allInnerTexts()).join('\n'), ms: Date.now() - started };
}

/** A new notebook with a set-up cell and an ideation cell, both run against the scripted server. */
async function ranIdeation(page: IJupyterLabPageFixture, name: string): Promise<void> {
  await page.notebook.createNew(name, { kernel: 'tslab' });
  await page.evaluate(topic => (window as any).jupyterapp.commands.execute('nanoresearch:insert-stage', { stage: 'ideation', topic }), TOPIC);
  await page.notebook.runCell(0, true);
  await page.notebook.runCell(STAGE_CELL, true);
  await expect(page.locator('.jp-nr-card[data-status="done"]')).toBeVisible({ timeout: 120000 });
  await page.sidebar.openTab('nanoresearch-feedback');
}

/** Records every learning state an entry shows, in order, as the sidebar redraws. */
async function recordStates(page: IJupyterLabPageFixture): Promise<void> {
  await page.evaluate(() => {
    const seen: Record<string, string[]> = {};
    (window as any).nrLearningSeen = seen;
    const sample = (): void => {
      document.querySelectorAll<HTMLElement>('#nanoresearch-feedback .jp-nr-entry[data-learning]').forEach(li => {
        const list = (seen[li.dataset.feedbackId!] ??= []);
        if (list[list.length - 1] !== li.dataset.learning) list.push(li.dataset.learning!);
      });
    };
    new MutationObserver(sample).observe(document.getElementById('nanoresearch-feedback')!, { subtree: true, childList: true, attributes: true });
  });
}

test('sidebar feedback is stored within 2 s, learns queued → learning → learned in the background, and signs like code feedback', async ({ page }) => {
  await page.goto();
  // Galata keeps settings in memory per test: this setting is this test's own.
  await page.evaluate(([id, author]) => (window as any).jupyterapp.serviceManager.settings.save(id, JSON.stringify({ author })), [SETTINGS_ID, AUTHOR]);
  await page.reload();
  await ranIdeation(page, 'learning.ipynb');
  await recordStates(page);

  const cell = page.locator('#nanoresearch-feedback .jp-nr-sidebar-cell[data-stage="ideation"]');
  await cell.locator('textarea').fill('Always include a linear baseline.');
  const t0 = Date.now();
  await cell.locator('button', { hasText: 'Add' }).click();
  const first = cell.locator('.jp-nr-entry').nth(0);
  await expect(first).toHaveAttribute('data-synced', 'true', { timeout: 2000 });
  const storedMs = Date.now() - t0;
  console.log(`sidebar feedback stored in ${storedMs} ms`);
  expect(storedMs).toBeLessThan(2000);
  await expect(first.locator('.jp-nr-entry-sync')).toHaveText('✓ stored');

  // A second item while the first learns: it waits its turn.
  await cell.locator('textarea').fill('Keep every experiment under 15 CPU minutes.');
  await cell.locator('button', { hasText: 'Add' }).click();
  const second = cell.locator('.jp-nr-entry').nth(1);
  await expect(second).toHaveAttribute('data-synced', 'true', { timeout: 2000 });
  await expect(first).toHaveAttribute('data-learning', 'learning', { timeout: 5000 });
  await expect(second).toHaveAttribute('data-learning', 'queued');
  await expect(second.locator('.jp-nr-learning')).toHaveText(/^Queued to learn/);

  // The next cell runs at once while learning goes on in the kernel.
  const next = await runInNewCell(page, '6 * 7');
  console.log(`a cell ran in ${next.ms} ms while feedback was learning`);
  expect(next.text).toContain('42');
  expect(next.ms).toBeLessThan(3000);
  await sidebarShots(page, 'learning');

  // Learned: the memory it produced is a link into the lab panel.
  await expect(first).toHaveAttribute('data-learning', 'learned', { timeout: 30000 });
  await expect(first.locator('.jp-nr-learned-memory')).toHaveText('memory: Always include a linear baseline.');
  await expect(second).toHaveAttribute('data-learning', 'learned', { timeout: 30000 });
  const seen = await page.evaluate(() => (window as any).nrLearningSeen);
  const ids = await cell.locator('.jp-nr-entry').evaluateAll(lis => lis.map(li => (li as HTMLElement).dataset.feedbackId!));
  // The first may be seen queued for an instant before its job is claimed.
  expect(seen[ids[0]].filter((s: string) => s !== 'queued')).toEqual(['learning', 'learned']);
  expect(seen[ids[1]]).toEqual(['queued', 'learning', 'learned']);
  // The card lists the same states.
  await expect(page.locator('.jp-nr-card .jp-nr-feedback-list li[data-learning="learned"]')).toHaveCount(2);
  await sidebarShots(page, 'learned');
  await page
    .locator('.jp-nr-card')
    .first()
    .screenshot({ path: path.join(ARTIFACTS, 'card-feedback-learned-light.png') });

  await first.locator('.jp-nr-learned-memory').click();
  const labPanel = page.locator('#nanoresearch-lab-panel');
  await expect(labPanel.locator('.jp-nr-tab.jp-mod-current')).toHaveText('Memories');
  await expect(labPanel.locator('.jp-nr-search')).toHaveValue('Always include a linear baseline.');
  await expect(labPanel.locator('.jp-nr-records')).toContainText('Always include a linear baseline.');

  // One author: the sidebar's and code's feedback are signed with the setting.
  await expect(first.locator('.jp-nr-feedback-author')).toHaveText(AUTHOR);
  await page.notebook.activate('learning.ipynb');
  const code = await runInNewCell(page, 'const fromCode = await ideation.feedback("Report the variance over seeds."); fromCode.feedback.author');
  expect(code.text).toContain(AUTHOR);
  const metadataAuthors = await page.evaluate(i => {
    const panel = (window as any).jupyterapp.shell.currentWidget;
    return panel.content.model.cells
      .get(i)
      .getMetadata('nanoresearch')
      .feedback.map((f: any) => f.author);
  }, STAGE_CELL);
  expect(metadataAuthors.slice(0, 2)).toEqual([AUTHOR, AUTHOR]);
});

test('a failed learning job shows its reason, and Retry learns it', async ({ page }) => {
  await page.goto();
  await ranIdeation(page, 'retry.ipynb');
  const cell = page.locator('#nanoresearch-feedback .jp-nr-sidebar-cell[data-stage="ideation"]');
  // The scripted server fails the first memory extraction of feedback carrying FAIL-ONCE.
  await cell.locator('textarea').fill('FAIL-ONCE: prefer CPU-only methods.');
  await cell.locator('button', { hasText: 'Add' }).click();
  const entry = cell.locator('.jp-nr-entry').first();
  await expect(entry).toHaveAttribute('data-synced', 'true', { timeout: 2000 });
  await expect(entry).toHaveAttribute('data-learning', 'failed', { timeout: 30000 });
  const error = entry.locator('.jp-nr-learning-error');
  await expect(error).toContainText('memory extraction failed');
  await expect(error).toContainText('HTTP 400');
  await expect(error).toContainText('scripted failure: the prompt is too long for this model');
  // Stored all the same: the entry is not shown as unsynced, and the card shows the failure too.
  await expect(entry.locator('.jp-nr-entry-sync')).toHaveText('✓ stored');
  await expect(page.locator('.jp-nr-card .jp-nr-feedback-list li[data-learning="failed"] .jp-nr-retry')).toBeVisible();
  await sidebarShots(page, 'failed');

  await entry.locator('button.jp-nr-retry').click();
  await expect(entry).toHaveAttribute('data-learning', /^(queued|learning)$/, { timeout: 5000 });
  await expect(entry).toHaveAttribute('data-learning', 'learned', { timeout: 30000 });
  await expect(entry.locator('.jp-nr-learned-memory')).toBeVisible();
  await sidebarShots(page, 'retried');
});
