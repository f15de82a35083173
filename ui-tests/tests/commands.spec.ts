/**
 * The extension's surface without running a kernel: activation, the NanoResearch menu, the
 * notebook toolbar button, the keyboard shortcut, the badge, and the lab panel's no-kernel message.
 */
import { expect, test } from '@jupyterlab/galata';

test.use({ autoGoto: false });

test('stage cells are inserted from the toolbar and the keyboard, with set-up cell and badges', async ({ page }) => {
  const logs: string[] = [];
  page.on('console', message => logs.push(message.text()));
  await page.goto();
  expect(logs).toContain('JupyterLab extension @nanoresearch/jupyterlab is activated!');

  await page.menu.open('NanoResearch');
  for (const label of ['Insert Next Stage Cell', 'Insert Ideation Stage Cell', 'Insert Review Stage Cell', 'Open NanoResearch Lab', 'Import Shared Notebook into the Store']) {
    await expect(page.locator('.lm-Menu-itemLabel', { hasText: label }).first()).toBeVisible();
  }
  await page.keyboard.press('Escape');

  await page.notebook.createNew('commands.ipynb', { kernel: null } as any);
  await page.evaluate(() => (window as any).jupyterapp.commands.execute('nanoresearch:insert-stage', { stage: 'ideation', topic: 'Toolbar topic' }));
  await expect(page.locator('.jp-Cell[data-nanoresearch-stage="ideation"] .jp-nr-badge')).toHaveText('Ideation · new');
  expect(await page.notebook.getCellTextInput(0)).toContain('lab.project("Toolbar topic")');

  // The toolbar button inserts the next stage after the last one.
  await page.locator('.jp-NotebookPanel-toolbar [data-jp-item-name="nanoresearch-insert-stage"] jp-button, .jp-NotebookPanel-toolbar [data-jp-item-name="nanoresearch-insert-stage"] button').first().click();
  await expect(page.locator('.jp-Cell[data-nanoresearch-stage="planning"] .jp-nr-badge')).toHaveText('Planning · new');

  // Alt+Shift+3 in command mode inserts an experiment stage cell.
  await page.notebook.selectCells(2);
  await page.keyboard.press('Escape');
  await page.keyboard.press('Alt+Shift+3');
  await expect(page.locator('.jp-Cell[data-nanoresearch-stage="experiment"]')).toHaveCount(1);
  expect(await page.notebook.getCellCount()).toBe(4);

  // The sidebar lists the three stage cells.
  await page.sidebar.openTab('nanoresearch-feedback');
  await expect(page.locator('#nanoresearch-feedback .jp-nr-sidebar-cell')).toHaveCount(3);
  // The first stage cell put the notebook on the TypeScript kernel; without a kernel the lab panel explains it needs one.
  const kernel = () => page.evaluate(() => (window as any).jupyterapp.shell.currentWidget.sessionContext.session?.kernel?.name ?? null);
  await expect.poll(kernel, { timeout: 30000 }).toBe('tslab');
  await page.evaluate(() => (window as any).jupyterapp.shell.currentWidget.sessionContext.shutdown());
  await expect.poll(kernel).toBeNull();
  await page.evaluate(() => (window as any).jupyterapp.commands.execute('nanoresearch:open-lab-panel'));
  await expect(page.locator('.jp-nr-lab .jp-nr-lab-status')).toContainText(/kernel/);
});
