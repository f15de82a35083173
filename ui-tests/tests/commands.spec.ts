/**
 * The extension's surface without running a kernel: activation, the NanoResearch menu, the
 * notebook toolbar button, the keyboard shortcut, the badge, and the lab panel's no-kernel message;
 * "+ Stage" in a notebook whose lab and project are opened in cells of their own.
 */
import { expect, test } from '@jupyterlab/galata';
import * as path from 'path';

test.use({ autoGoto: false });

test('stage cells are inserted from the toolbar and the keyboard, with set-up cell and badges', async ({ page }) => {
  const logs: string[] = [];
  page.on('console', message => logs.push(message.text()));
  await page.goto();
  expect(logs).toContain('JupyterLab extension @nanoresearch/jupyterlab is activated!');

  await page.menu.open('NanoResearch');
  for (const label of [
    'Insert Next Stage Cell',
    'Insert Ideation Stage Cell',
    'Insert Review Stage Cell',
    'Open NanoResearch Lab',
    'Import Shared Notebook into the Store'
  ]) {
    await expect(page.locator('.lm-Menu-itemLabel', { hasText: label }).first()).toBeVisible();
  }
  await page.keyboard.press('Escape');

  await page.notebook.createNew('commands.ipynb', { kernel: null } as any);
  await page.evaluate(() => (window as any).jupyterapp.commands.execute('nanoresearch:insert-stage', { stage: 'ideation', topic: 'Toolbar topic' }));
  await expect(page.locator('.jp-Cell[data-nanoresearch-stage="ideation"] .jp-nr-badge')).toHaveText('Ideation · new');
  expect(await page.notebook.getCellTextInput(0)).toContain('lab.project("Toolbar topic")');

  // The toolbar button inserts the next stage after the last one.
  await page
    .locator(
      '.jp-NotebookPanel-toolbar [data-jp-item-name="nanoresearch-insert-stage"] jp-button, .jp-NotebookPanel-toolbar [data-jp-item-name="nanoresearch-insert-stage"] button'
    )
    .first()
    .click();
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

test('"+ Stage" in a notebook that opens the lab and the project in separate cells adds no second set-up cell', async ({ page, tmpPath }) => {
  await page.goto();
  // notebooks/fixtures/split-setup.ipynb: `Lab.open` in one cell, `lab.project(...)` in the next.
  await page.contents.uploadFile(path.resolve(__dirname, '../../notebooks/fixtures/split-setup.ipynb'), `${tmpPath}/split.ipynb`);
  await page.notebook.openByPath(`${tmpPath}/split.ipynb`);
  await page.notebook.activate('split.ipynb');
  await page.notebook.selectCells(1);
  await page.keyboard.press('Escape');

  await page
    .locator(
      '.jp-NotebookPanel-toolbar [data-jp-item-name="nanoresearch-insert-stage"] jp-button, .jp-NotebookPanel-toolbar [data-jp-item-name="nanoresearch-insert-stage"] button'
    )
    .first()
    .click();
  await expect(page.locator('.jp-Cell[data-nanoresearch-stage="ideation"] .jp-nr-badge')).toHaveText('Ideation · new');
  // No topic was asked for: the notebook has its project.
  await expect(page.locator('.jp-Dialog')).toHaveCount(0);
  const sources = await page.evaluate(() =>
    Array.from((window as any).jupyterapp.shell.currentWidget.content.model.cells).map((cell: any) => cell.sharedModel.getSource() as string)
  );
  expect(sources).toHaveLength(3);
  expect(sources.filter(source => /Lab\.open\s*\(/.test(source))).toHaveLength(1);
  expect(sources.filter(source => /\.project\s*\(/.test(source))).toEqual(['const project = await lab.project("Small MLPs on tabular data");']);
  expect(sources[2]).toBe('// NanoResearch · Ideation stage\nconst ideation = await project.ideate();');
});
