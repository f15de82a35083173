/**
 * Importing a colleague's notebook: the trajectory and feedback a stage cell carries go into
 * another researcher's store; importing twice adds nothing; bad notebooks are refused whole.
 */
import { promises as fs } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { BRIDGE_MIME_TYPE, type StageGetResult } from '@nanoresearch/schema';
import { Bridge } from '../src/bridge';
import { importNotebook, NotebookImportError } from '../src/sharing';
import { importSummary } from '../src/sharing/import-notebook';
import { openTestLab, type TestLab } from './lab-fixture';

let colleague: TestLab;
let me: TestLab;
let dir: string;
let notebookPath: string;
let stageRunId: string;

/** A notebook as the extension saves it: set-up cell, one stage cell with its metadata, one broken cell. */
async function writeSharedNotebook(): Promise<void> {
  const project = await colleague.lab.project('Small MLPs on tabular data');
  stageRunId = (await project.ideate()).id;
  const replies: Array<Record<string, unknown>> = [];
  const bridge = new Bridge({ findLab: () => colleague.lab, writer: m => replies.push(m.data) });
  await bridge.respond('stage.get', { stage_run_id: stageRunId });
  const { stage_run, planner_call } = (replies[0][BRIDGE_MIME_TYPE] as { result: StageGetResult }).result;
  const notebook = {
    nbformat: 4,
    nbformat_minor: 5,
    metadata: {},
    cells: [
      { cell_type: 'code', source: 'const lab = await Lab.open();', metadata: {}, outputs: [], execution_count: 1 },
      {
        cell_type: 'code',
        source: 'const ideation = await project.ideate();',
        metadata: {
          nanoresearch: {
            stage: 'ideation',
            status: 'done',
            project_id: stage_run.project_id,
            stage_run_id: stageRunId,
            author: 'ben',
            feedback: [
              { id: 'fb_ben_1', text: 'Too many hypotheses; keep two.', author: 'ben', created_at: '2026-11-19T09:00:00.000Z', synced: true },
              { id: 'fb_ben_2', text: 'Cite the tabular benchmark.', author: 'ben', created_at: '2026-11-19T09:05:00.000Z', synced: false }
            ],
            trajectory: stage_run,
            planner_call
          }
        },
        outputs: [],
        execution_count: 2
      },
      { cell_type: 'code', source: '', metadata: { nanoresearch: { stage: 'dreaming', status: 'done', feedback: [] } }, outputs: [], execution_count: null },
      { cell_type: 'markdown', source: 'Notes', metadata: {} }
    ]
  };
  await fs.writeFile(notebookPath, JSON.stringify(notebook, null, 1));
}

beforeAll(async () => {
  colleague = await openTestLab();
  me = await openTestLab();
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'nr-share-'));
  notebookPath = path.join(dir, 'ben-study.ipynb');
  await writeSharedNotebook();
});

afterAll(async () => {
  await colleague.close();
  await me.close();
  await fs.rm(dir, { recursive: true, force: true });
});

const count = (t: TestLab, table: string) => t.lab.store.read(q => q.get<{ n: number }>(`select count(*) as n from ${table}`)).then(r => r!.n);

describe('importNotebook', () => {
  it('brings the stage run, planner call and feedback in with their origin, and skips invalid cells', async () => {
    const counts = await me.lab.importNotebook(notebookPath);
    expect(counts).toMatchObject({ stageRuns: 1, plannerCalls: 1, feedback: 2, skipped: 1 });
    expect(counts.warnings).toEqual([expect.stringMatching(/^cell 3: invalid nanoresearch metadata/)]);
    expect(counts.summary).toMatch(
      new RegExp(`^Imported 1 stage run, 1 planner call, 2 feedback entries from ${notebookPath}\\. 1 cell was skipped: cell 3: invalid`)
    );
    // Imported feedback is a colleague's: it is stored, not learned from (no job is queued).
    expect(await count(me, 'learning_jobs')).toBe(0);
    const run = await me.lab.store.read(q => q.get<Record<string, unknown>>('select id, stage, status, origin from stage_runs where id = $1', [stageRunId]));
    expect(run).toEqual({ id: stageRunId, stage: 'ideation', status: 'done', origin: `import:${notebookPath} (ben)` });
    const feedback = await me.lab.store.read(q =>
      q.all<Record<string, unknown>>('select id, author, origin, planner_call_id, created_at from feedback order by id')
    );
    expect(feedback).toHaveLength(2);
    expect(feedback[0]).toMatchObject({
      id: 'fb_ben_1',
      author: 'ben',
      origin: `import:${notebookPath} (ben)`,
      created_at: expect.stringMatching(/^2026-11-19T09:00:00/)
    });
    expect(feedback[0].planner_call_id).toBeTruthy();
  });

  it('adds nothing when the same notebook is imported again', async () => {
    const before = await Promise.all(['stage_runs', 'planner_calls', 'feedback'].map(t => count(me, t)));
    const counts = await importNotebook(me.lab, notebookPath);
    expect(counts).toMatchObject({ stageRuns: 0, plannerCalls: 0, feedback: 0, skipped: 1, alreadyStored: { stageRuns: 1, plannerCalls: 1, feedback: 2 } });
    expect(counts.summary).toMatch(
      /^Nothing new from .*ben-study\.ipynb: all of it \(1 stage run, 1 planner call, 2 feedback entries\) was already in your store\. 1 cell was skipped: cell 3: invalid/
    );
    expect(await Promise.all(['stage_runs', 'planner_calls', 'feedback'].map(t => count(me, t)))).toEqual(before);
  });

  it('says exactly why an import added nothing', () => {
    const none = { stageRuns: 0, plannerCalls: 0, feedback: 0, skipped: 0, warnings: [] };
    expect(importSummary('a.ipynb', { ...none, alreadyStored: { stageRuns: 3, plannerCalls: 0, feedback: 0 } }, 3)).toBe(
      'Nothing new from a.ipynb: all 3 stage runs were already in your store.'
    );
    expect(importSummary('a.ipynb', { ...none, alreadyStored: { stageRuns: 1, plannerCalls: 0, feedback: 0 } }, 1)).toBe(
      'Nothing new from a.ipynb: its 1 stage run was already in your store.'
    );
    expect(importSummary('a.ipynb', { ...none, alreadyStored: { stageRuns: 0, plannerCalls: 0, feedback: 0 } }, 0)).toBe(
      "Nothing imported from a.ipynb: it has no NanoResearch stage cells (cells with 'nanoresearch' metadata)."
    );
    expect(importSummary('a.ipynb', { ...none, alreadyStored: { stageRuns: 0, plannerCalls: 0, feedback: 0 } }, 2)).toBe(
      'Nothing imported from a.ipynb: its stage cells carry no trajectory or feedback yet (run them and save the notebook first).'
    );
    expect(
      importSummary(
        'a.ipynb',
        {
          ...none,
          skipped: 1,
          warnings: ['cell 1: 1 feedback entries skipped: their stage run sr_x is neither embedded in the notebook nor in this store'],
          alreadyStored: { stageRuns: 0, plannerCalls: 0, feedback: 0 }
        },
        1
      )
    ).toBe(
      'Nothing imported from a.ipynb: 1 cell was skipped: cell 1: 1 feedback entries skipped: their stage run sr_x is neither embedded in the notebook nor in this store.'
    );
  });

  it('refuses broken JSON and non-notebooks before writing anything', async () => {
    const broken = path.join(dir, 'broken.ipynb');
    await fs.writeFile(broken, '{"nbformat": 4, "cells": [');
    await expect(importNotebook(me.lab, broken)).rejects.toThrow(/is not valid JSON.*nothing was imported/);
    const old = path.join(dir, 'old.ipynb');
    await fs.writeFile(old, JSON.stringify({ nbformat: 3, worksheets: [] }));
    const error = await importNotebook(me.lab, old).catch(e => e);
    expect(error).toBeInstanceOf(NotebookImportError);
    expect(error.message).toMatch(/not an nbformat 4 notebook \(nbformat: 3, cells: missing\)/);
    await expect(importNotebook(me.lab, path.join(dir, 'missing.ipynb'))).rejects.toThrow(/cannot be read/);
  });

  it('skips feedback whose stage run is in neither the notebook nor the store', async () => {
    const orphan = path.join(dir, 'orphan.ipynb');
    await fs.writeFile(
      orphan,
      JSON.stringify({
        nbformat: 4,
        nbformat_minor: 5,
        metadata: {},
        cells: [
          {
            cell_type: 'code',
            source: '',
            outputs: [],
            execution_count: null,
            metadata: {
              nanoresearch: {
                stage: 'planning',
                status: 'done',
                stage_run_id: 'sr_elsewhere',
                feedback: [{ id: 'fb_o', text: 'x', author: 'cy', created_at: '2026-11-19T09:00:00.000Z', synced: false }]
              }
            }
          }
        ]
      })
    );
    const counts = await importNotebook(me.lab, orphan);
    expect(counts).toMatchObject({ stageRuns: 0, feedback: 0, skipped: 1 });
    expect(counts.warnings[0]).toMatch(/cell 1: 1 feedback entries skipped: their stage run sr_elsewhere/);
  });

  it('is reachable through the bridge as notebook.import', async () => {
    const replies: Array<Record<string, unknown>> = [];
    const bridge = new Bridge({ findLab: () => me.lab, writer: m => replies.push(m.data) });
    await bridge.respond('notebook.import', { path: notebookPath });
    expect((replies[0][BRIDGE_MIME_TYPE] as { result: unknown }).result).toMatchObject({ stageRuns: 0, feedback: 0, skipped: 1 });
  });
});
