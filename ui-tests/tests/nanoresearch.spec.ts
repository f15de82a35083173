/**
 * End to end in a real JupyterLab with the tslab kernel and the scripted LLM server: insert a
 * stage cell, run it, see the stage card, give feedback in the sidebar, check the cell metadata
 * and the store, reload, import a colleague's notebook, and take screenshots in both themes.
 */
import { expect, IJupyterLabPageFixture, test } from '@jupyterlab/galata';
import * as path from 'path';

test.use({ autoGoto: false });
test.describe.configure({ mode: 'serial' });

const ARTIFACTS = path.join(__dirname, '..', 'artifacts');
const TOPIC = 'Small MLPs on tabular data';
const STAGE_CELL = 1;

/** The `nanoresearch` metadata of a cell of the current notebook. */
function cellMetadata(page: IJupyterLabPageFixture, index: number): Promise<any> {
  return page.evaluate(i => {
    const panel = (window as any).jupyterapp.shell.currentWidget;
    return panel.content.model.cells.get(i).getMetadata('nanoresearch') ?? null;
  }, index);
}

/** Runs code in a new cell at the end of the notebook and returns its output text. */
async function runInNewCell(page: IJupyterLabPageFixture, code: string): Promise<string> {
  const index = await page.notebook.getCellCount();
  await page.notebook.addCell('code', code);
  await page.notebook.runCell(index, true);
  const output = page.locator('.jp-Cell').nth(index).locator('.jp-OutputArea-output');
  await expect(output.first()).toBeVisible();
  return (await output.allInnerTexts()).join('\n');
}

async function setTheme(page: IJupyterLabPageFixture, theme: 'JupyterLab Light' | 'JupyterLab Dark'): Promise<void> {
  await page.evaluate(t => (window as any).jupyterapp.commands.execute('apputils:change-theme', { theme: t }), theme);
  await expect(page.locator('body')).toHaveAttribute('data-jp-theme-name', theme);
}

async function screenshots(page: IJupyterLabPageFixture, theme: 'light' | 'dark'): Promise<void> {
  await page
    .locator('.jp-nr-card')
    .first()
    .screenshot({ path: path.join(ARTIFACTS, `stage-card-${theme}.png`) });
  await page.locator('#nanoresearch-feedback').screenshot({ path: path.join(ARTIFACTS, `feedback-sidebar-${theme}.png`) });
  await page.screenshot({ path: path.join(ARTIFACTS, `notebook-${theme}.png`) });
}

test('a stage cell runs, shows its card, keeps feedback in the notebook and the store, and imports a shared notebook', async ({ page, tmpPath }) => {
  const logs: string[] = [];
  page.on('console', message => logs.push(message.text()));
  await page.goto();
  expect(logs.filter(line => line === 'JupyterLab extension @nanoresearch/jupyterlab is activated!')).toHaveLength(1);

  // Insert the stage cell through the command: the set-up cell comes with it.
  await page.notebook.createNew('study.ipynb', { kernel: 'tslab' });
  await page.evaluate(topic => (window as any).jupyterapp.commands.execute('nanoresearch:insert-stage', { stage: 'ideation', topic }), TOPIC);
  expect(await page.notebook.getCellCount()).toBe(2);
  expect(await page.notebook.getCellTextInput(0)).toContain(`lab.project("${TOPIC}")`);
  expect(await page.notebook.getCellTextInput(STAGE_CELL)).toContain('await project.ideate()');
  await expect(page.locator('.jp-Cell[data-nanoresearch-stage="ideation"][data-nanoresearch-status="new"] .jp-nr-badge')).toHaveText('Ideation · new');

  // Run both cells against the scripted LLM server.
  await page.notebook.runCell(0, true);
  await page.notebook.runCell(STAGE_CELL, true);
  const card = page.locator('.jp-nr-card[data-status="done"]');
  await expect(card).toBeVisible({ timeout: 120000 });
  await expect(card.locator('.jp-nr-stage-chip')).toHaveText('Ideation');
  await expect(card.locator('.jp-nr-hypothesis')).toHaveCount(2);
  await expect(page.locator('.jp-Cell[data-nanoresearch-status="done"] .jp-nr-badge')).toHaveText('Ideation · done');

  // Metadata: status and ids at once, then the trajectory and planner call through the bridge.
  await expect.poll(async () => (await cellMetadata(page, STAGE_CELL))?.trajectory?.status ?? null, { timeout: 60000 }).toBe('done');
  const metadata = await cellMetadata(page, STAGE_CELL);
  expect(metadata).toMatchObject({ stage: 'ideation', status: 'done', feedback: [] });
  expect(metadata.stage_run_id).toMatch(/^sr_/);
  expect(metadata.trajectory.id).toBe(metadata.stage_run_id);
  expect(metadata.planner_call.stage_run_id).toBe(metadata.stage_run_id);

  // Feedback in the sidebar: in the cell metadata at once, then synced to the store.
  await page.sidebar.openTab('nanoresearch-feedback');
  const sidebarCell = page.locator(`#nanoresearch-feedback .jp-nr-sidebar-cell[data-stage="ideation"]`);
  await expect(sidebarCell).toBeVisible();
  await sidebarCell.locator('textarea').fill('Keep two hypotheses and always include a linear baseline.');
  await sidebarCell.locator('button', { hasText: 'Add' }).click();
  await expect(sidebarCell.locator('.jp-nr-entry[data-synced="true"]')).toHaveCount(1, { timeout: 60000 });
  const feedback = (await cellMetadata(page, STAGE_CELL)).feedback;
  expect(feedback).toEqual([
    expect.objectContaining({ text: 'Keep two hypotheses and always include a linear baseline.', author: expect.any(String), synced: true })
  ]);
  const stored = await runInNewCell(page, 'await lab.sql("select id, text, origin from feedback")');
  expect(stored).toContain(feedback[0].id);
  expect(stored).toContain('notebook:');

  // Screenshots of the card and the sidebar, light then dark.
  await setTheme(page, 'JupyterLab Light');
  await screenshots(page, 'light');
  await setTheme(page, 'JupyterLab Dark');
  await screenshots(page, 'dark');
  await setTheme(page, 'JupyterLab Light');

  // Saved, on disk and reopened, the notebook still carries the feedback and the trajectory.
  const notebookPath: string = await page.evaluate(() => (window as any).jupyterapp.shell.currentWidget.context.path);
  await test.step('save', async () => {
    await page.evaluate(() => (window as any).jupyterapp.commands.execute('docmanager:save'));
    await expect.poll(() => page.evaluate(() => (window as any).jupyterapp.shell.currentWidget.context.model.dirty)).toBe(false);
  });
  const onDisk = await page.evaluate(async p => {
    const response = await fetch(`/api/contents/${p}?type=notebook&content=1`);
    return (await response.json()).content.cells[1].metadata.nanoresearch;
  }, notebookPath);
  expect(onDisk.feedback).toEqual(feedback);
  expect(onDisk.trajectory.id).toBe(metadata.stage_run_id);
  await test.step('close and reopen', async () => {
    await page.notebook.close();
    await page.notebook.openByPath(notebookPath);
    await expect(page.locator('.jp-Cell[data-nanoresearch-stage="ideation"][data-nanoresearch-status="done"]')).toBeVisible();
  });
  const reloaded = await cellMetadata(page, STAGE_CELL);
  expect(reloaded.feedback).toEqual(feedback);
  expect(reloaded.trajectory.id).toBe(metadata.stage_run_id);
  await page.evaluate(() => (window as any).jupyterapp.commands.execute('nanoresearch:open-feedback'));
  await expect(page.locator('#nanoresearch-feedback .jp-nr-entry-text')).toHaveText(['Keep two hypotheses and always include a linear baseline.']);

  // Import a colleague's notebook through the sharing command; its feedback reaches the store.
  await page.contents.uploadFile(path.resolve(__dirname, '../../notebooks/fixtures/shared-colleague.ipynb'), `${tmpPath}/shared-colleague.ipynb`);
  await expect
    .poll(() => page.evaluate(() => (window as any).jupyterapp.shell.currentWidget?.sessionContext?.session?.kernel?.status), { timeout: 60000 })
    .toBe('idle');
  const counts = await page.evaluate(
    p => (window as any).jupyterapp.commands.execute('nanoresearch:import-notebook', { path: p }),
    `${tmpPath}/shared-colleague.ipynb`
  );
  expect(counts).toMatchObject({ stageRuns: 1, plannerCalls: 1, feedback: 2, skipped: 1 });
  // The reopened notebook may run a new kernel: run the set-up cell before querying through `lab`.
  await page.notebook.runCell(0, true);
  const imported = await runInNewCell(page, `await lab.sql("select author, text from feedback where origin like 'import:%' order by created_at")`);
  expect(imported).toContain('Drop the third hypothesis');
  expect(imported).toContain('ben');
});

test('feedback given while the kernel is down is synced when a kernel starts', async ({ page }) => {
  const started = Date.now();
  await page.goto();
  await page.notebook.createNew('offline.ipynb', { kernel: 'tslab' });
  await page.evaluate(topic => (window as any).jupyterapp.commands.execute('nanoresearch:insert-stage', { stage: 'ideation', topic }), TOPIC);
  await page.notebook.runCell(0, true);
  await page.notebook.runCell(STAGE_CELL, true);
  await expect(page.locator('.jp-nr-card[data-status="done"]')).toBeVisible({ timeout: 120000 });
  await expect.poll(async () => (await cellMetadata(page, STAGE_CELL))?.trajectory?.status ?? null, { timeout: 60000 }).toBe('done');

  console.log(`stage ran ${Date.now() - started} ms after the test started`);
  // Shut the kernel down, then give feedback in the card: it is kept in the cell, unsynced.
  await page.evaluate(() => (window as any).jupyterapp.shell.currentWidget.sessionContext.shutdown());
  await expect.poll(() => page.evaluate(() => (window as any).jupyterapp.shell.currentWidget.sessionContext.session?.kernel ?? null)).toBeNull();
  const box = page.locator('.jp-nr-card .jp-nr-feedback-form');
  await box.locator('textarea').fill('Budget: CPU only.');
  await box.locator('button').click();
  await expect.poll(async () => (await cellMetadata(page, STAGE_CELL)).feedback.map((f: any) => [f.text, f.synced])).toEqual([['Budget: CPU only.', false]]);
  await expect(page.locator('.jp-nr-card .jp-nr-feedback-list li.jp-nr-pending')).toHaveText([/Budget: CPU only\.$/]);
  const t0 = Date.now();

  // A new kernel starts: the pending feedback is sent and marked synced.
  await page.evaluate(() => (window as any).jupyterapp.shell.currentWidget.sessionContext.changeKernel({ name: 'tslab' }));
  await expect.poll(async () => (await cellMetadata(page, STAGE_CELL)).feedback[0].synced, { timeout: 90000 }).toBe(true);
  console.log(`offline feedback synced ${Date.now() - t0} ms after the kernel was asked to start`);
});
