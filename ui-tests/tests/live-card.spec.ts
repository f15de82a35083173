/**
 * A stage card from the first moment (visible within a second of running the cell, its clock
 * moving, the badge following), the files the stage wrote as links that open in JupyterLab (the
 * paper rendered), JSON columns in the lab panel, and a new notebook's "+ Stage" (TypeScript
 * kernel, the quickstart's defaults). Screenshots of each state in both themes.
 */
import { expect, IJupyterLabPageFixture, test } from '@jupyterlab/galata';
import * as path from 'path';

test.use({ autoGoto: false });
test.describe.configure({ mode: 'serial' });

const ARTIFACTS = path.join(__dirname, '..', 'artifacts');
type Theme = 'light' | 'dark';

async function setTheme(page: IJupyterLabPageFixture, theme: Theme): Promise<void> {
  const name = theme === 'light' ? 'JupyterLab Light' : 'JupyterLab Dark';
  await page.evaluate(t => (window as any).jupyterapp.commands.execute('apputils:change-theme', { theme: t }), name);
  await expect(page.locator('body')).toHaveAttribute('data-jp-theme-name', name);
}

/** Screenshots of `locator` in both themes, ending in the light theme. */
async function inBothThemes(page: IJupyterLabPageFixture, name: string, shoot: (file: string) => Promise<unknown>): Promise<void> {
  for (const theme of ['light', 'dark'] as Theme[]) {
    await setTheme(page, theme);
    await shoot(path.join(ARTIFACTS, `${name}-${theme}.png`));
  }
  await setTheme(page, 'light');
}

/** Seconds in a card's duration text ("3.4 s", "1 min 5 s", "850 ms"). */
function seconds(textValue: string): number {
  const minutes = /(\d+) min (\d+) s/.exec(textValue);
  if (minutes) return Number(minutes[1]) * 60 + Number(minutes[2]);
  const s = /([\d.]+) s/.exec(textValue);
  if (s) return Number(s[1]);
  const ms = /(\d+) ms/.exec(textValue);
  return ms ? Number(ms[1]) / 1000 : NaN;
}

/**
 * A set-up cell whose writing stage is slow on purpose (one LLM call to the scripted server, then
 * a wait) and writes a paper in three formats, as the real writing stage does.
 */
const SETUP = `import { Lab } from "@nanoresearch/kernel";
import * as fs from "fs";
import * as path from "path";
const writeSlowly = async (ctx: any): Promise<any> => {
  ctx.progress("drafting the paper", 0, 2);
  await ctx.llm.complete({ role: "writing", messages: [{ role: "user", content: "One sentence, please." }] });
  await new Promise(resolve => setTimeout(resolve, 9000));
  ctx.progress("writing the files", 1, 2);
  const dir = path.join(ctx.workspace, "paper");
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, "paper.md"), "# A rendered paper\\n\\nThe **result** holds on all three seeds.\\n");
  fs.writeFileSync(path.join(dir, "paper.tex"), "\\\\section{Result}");
  fs.writeFileSync(path.join(dir, "references.bib"), "@article{a, title={A}}");
  return {
    status: "done",
    output: { paper_path: "paper/paper.md", tex_path: "paper/paper.tex", bib_path: "paper/references.bib" },
    summary: "A short paper.",
    bundleOutputs: { paper_path: "paper/paper.md" },
    trajectory: "Drafted, then wrote the files.",
    markdown: "### A rendered paper"
  };
};
const lab = await Lab.open({ stages: { writing: writeSlowly } });
const project = await lab.project("Live cards and one-click papers");
console.log(project.workspace);`;

test('a stage card is there within a second of running the cell, its clock moving; its paper opens rendered', async ({ page }) => {
  await page.goto();
  await page.notebook.createNew('live.ipynb', { kernel: 'tslab' });
  await page.notebook.setCell(0, 'code', SETUP);
  await page.notebook.runCell(0, true);
  const workspace = (await page.locator('.jp-Cell').nth(0).locator('.jp-OutputArea-output').innerText()).trim();
  // The workspace is a visible folder beside the notebook, where JupyterLab opens files.
  expect(workspace).toMatch(/\/nanoresearch\/live-cards-and-one-click-papers-[0-9a-f]{6}$/);

  await page.evaluate(() => (window as any).jupyterapp.commands.execute('nanoresearch:insert-stage', { stage: 'writing' }));
  expect(await page.notebook.getCellTextInput(1)).toContain('const writing = await project.write();');
  await expect.poll(() => page.evaluate(() => (window as any).jupyterapp.shell.currentWidget.sessionContext.session?.kernel?.status)).toBe('idle');
  const started = Date.now();
  await page.notebook.runCell(1, { inplace: true, wait: false });
  const cell = page.locator('.jp-Cell').nth(1);
  // At once: the "starting" card while the kernel compiles the cell, its clock moving, the badge saying so.
  const starting = cell.locator('.jp-nr-card.jp-nr-starting');
  await expect(starting).toBeVisible({ timeout: 5000 });
  const visibleAfter = Date.now() - started;
  console.log(`stage card visible ${visibleAfter} ms after the cell was run`);
  expect(visibleAfter).toBeLessThan(1000);
  await expect(page.locator('.jp-Cell[data-nanoresearch-stage="writing"] .jp-nr-badge')).toHaveText('Writing · starting');
  await inBothThemes(page, 'live-card-starting', file => cell.screenshot({ path: file }));
  // Then the kernel's own card replaces it.
  const card = cell.locator('.jp-OutputArea .jp-nr-card');
  await expect(card).toBeVisible({ timeout: 10000 });
  console.log(`the kernel's stage card came ${Date.now() - started} ms after the cell was run`);
  await expect(starting).toHaveCount(0);
  await expect(card).toHaveAttribute('data-status', 'running');

  // Running: the phase on the pill and the badge, the clock moving between the kernel's updates.
  await expect(card.locator('.jp-nr-status-pill')).toHaveText('running', { timeout: 10000 });
  await expect(page.locator('.jp-Cell[data-nanoresearch-status="running"] .jp-nr-badge')).toHaveText('Writing · running');
  await expect(card.locator('.jp-nr-progress-label')).toHaveText('drafting the paper (0/2)');
  await expect(card.locator('.jp-nr-calls')).toHaveText(/^[1-9]\d* calls/);
  await expect(card.locator('.jp-nr-tokens')).toHaveText(/^[1-9][\d.k]* tokens so far$/);
  const first = seconds(await card.locator('.jp-nr-elapsed').innerText());
  await page.waitForTimeout(2100);
  const later = seconds(await card.locator('.jp-nr-elapsed').innerText());
  expect(later - first).toBeGreaterThanOrEqual(1.5);
  await inBothThemes(page, 'live-card-running', file => card.screenshot({ path: file }));

  // Done: the files as links; the paper opens as rendered Markdown.
  await expect(card).toHaveAttribute('data-status', 'done', { timeout: 60000 });
  await expect(page.locator('.jp-Cell[data-nanoresearch-status="done"] .jp-nr-badge')).toHaveText('Writing · done');
  const links = card.locator('a.jp-nr-artifact-link');
  await expect(links).toHaveText(['paper/paper.md', 'paper/paper.tex', 'paper/references.bib', 'logs/writing-1.log']);
  await inBothThemes(page, 'live-card-files', file => card.screenshot({ path: file }));
  await links.first().click();
  const preview = page.locator('.jp-MainAreaWidget.jp-RenderedMarkdown, .jp-MainAreaWidget .jp-RenderedMarkdown').filter({ hasText: 'A rendered paper' });
  await expect(preview.locator('h1')).toHaveText(/A rendered paper/);
  await expect(preview.locator('strong')).toHaveText('result');
  await expect(page.locator('#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current .lm-TabBar-tabLabel')).toHaveText(/paper\.md/);
  await inBothThemes(page, 'paper-opened', file => page.screenshot({ path: file }));
  // The LaTeX opens in the editor.
  await page.notebook.activate('live.ipynb');
  await links.nth(1).click();
  await expect(page.locator('#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current .lm-TabBar-tabLabel')).toHaveText('paper.tex');
  await expect(page.locator('.jp-FileEditor .cm-content')).toContainText('\\section{Result}');

  // The lab panel's SQL: JSON columns fold.
  await page.notebook.activate('live.ipynb');
  await page.evaluate(() => (window as any).jupyterapp.commands.execute('nanoresearch:open-lab-panel'));
  const lab = page.locator('.jp-nr-lab');
  await lab.locator('.jp-nr-tab[data-tab="sql"]').click();
  await lab.locator('textarea.jp-nr-sql').fill("select stage, usage, input from stage_runs where stage = 'writing'");
  await lab.locator('button', { hasText: 'Run (read-only)' }).click();
  const usage = lab.locator('.jp-nr-sql-result td').nth(1).locator(':scope > details.jp-nr-json');
  await expect(usage.locator(':scope > summary')).toHaveText(/^\{6 keys\} \{"prompt_tokens":/);
  await expect(usage.locator(':scope > ul')).toBeHidden();
  await usage.locator(':scope > summary').click();
  await expect(usage.locator(':scope > ul > li .jp-nr-json-key')).toHaveText([
    'prompt_tokens',
    'completion_tokens',
    'calls',
    'cost_usd',
    'wall_ms',
    'cache_hits'
  ]);
  await inBothThemes(page, 'lab-sql-json', file => lab.screenshot({ path: file }));
});

test('"+ Stage" on a new notebook switches it to the TypeScript kernel with the quickstart\'s defaults; import asks which notebook', async ({ page }) => {
  await page.goto();
  await page.notebook.createNew('fresh.ipynb', { kernel: 'python3' });
  await expect.poll(() => page.evaluate(() => (window as any).jupyterapp.shell.currentWidget.sessionContext.session?.kernel?.name)).toBe('python3');
  await page
    .locator(
      '.jp-NotebookPanel-toolbar [data-jp-item-name="nanoresearch-insert-stage"] jp-button, .jp-NotebookPanel-toolbar [data-jp-item-name="nanoresearch-insert-stage"] button'
    )
    .first()
    .click();
  const dialog = page.locator('.jp-Dialog');
  await dialog.locator('input').fill('Fresh notebooks start right');
  await dialog.locator('.jp-mod-accept').click();
  await expect(page.locator('.jp-Cell[data-nanoresearch-stage="ideation"] .jp-nr-badge')).toHaveText('Ideation · new');
  await expect
    .poll(() => page.evaluate(() => (window as any).jupyterapp.shell.currentWidget.sessionContext.session?.kernel?.name), { timeout: 30000 })
    .toBe('tslab');
  const setup = await page.notebook.getCellTextInput(0);
  expect(setup).toContain('process.env.NANORESEARCH_LITERATURE_SOURCES ??= "none";');
  expect(setup).toContain('timeoutMs: llm.timeoutMs ?? 600000');
  expect(setup).toContain('lab.project("Fresh notebooks start right")');
  await inBothThemes(page, 'new-notebook-setup', file => page.locator('.jp-NotebookPanel').screenshot({ path: file }));
  // The set-up cell it wrote runs in that kernel.
  await expect
    .poll(() => page.evaluate(() => (window as any).jupyterapp.shell.currentWidget.sessionContext.session?.kernel?.status), { timeout: 30000 })
    .toBe('idle');
  await page.notebook.runCell(0, true);
  const ran = await page.evaluate(() => {
    const cell = (window as any).jupyterapp.shell.currentWidget.content.model.cells.get(0);
    return {
      count: cell.executionCount,
      outputs: cell.outputs.toJSON().map((o: any) => (o.output_type === 'error' ? `${o.ename}: ${o.evalue}` : o.output_type))
    };
  });
  expect(ran.count).not.toBeNull();
  expect(ran.outputs).toEqual([]);

  // Import from the palette asks which notebook, even with nothing selected anywhere.
  void page.evaluate(() => (window as any).jupyterapp.commands.execute('nanoresearch:import-notebook'));
  await expect(dialog.locator('.jp-Dialog-header')).toHaveText(/Notebook to import/);
  await dialog.locator('.jp-mod-reject').click();
  await expect(dialog).toHaveCount(0);
});
