import * as schema from '@nanoresearch/schema';
import { STAGE_NAMES, CELL_METADATA_KEY, STAGE_MIME_TYPE } from '../constants';
import {
  applyBundle,
  findBundle,
  getStageMetadata,
  isStageMetadata,
  newStageMetadata,
  setStageMetadata,
  unsyncedFeedback,
  withFeedback,
  withSynced,
  withTrajectory
} from '../metadata';
import { bundleFixture, notebookWithStageCells } from './helpers';

describe('constants', () => {
  it('match the schema package (which the browser bundle cannot import at run time)', () => {
    expect(STAGE_MIME_TYPE).toBe(schema.STAGE_MIME_TYPE);
    expect(CELL_METADATA_KEY).toBe(schema.CELL_METADATA_KEY);
    expect([...STAGE_NAMES]).toEqual([...schema.STAGE_NAMES]);
  });
});

describe('stage cell metadata', () => {
  it('round-trips through a real cell model and the saved notebook JSON', () => {
    const { model, cells } = notebookWithStageCells([null]);
    const cell = cells[1];
    const metadata = { ...newStageMetadata('planning', 'ana'), status: 'running' as const };
    setStageMetadata(cell, metadata);
    expect(getStageMetadata(cell)).toEqual(metadata);
    const saved = model.toJSON().cells[1].metadata as Record<string, unknown>;
    expect(saved[CELL_METADATA_KEY]).toEqual(metadata);
    expect(getStageMetadata(cells[0])).toBeUndefined();
  });

  it('rejects values that are not stage metadata', () => {
    expect(isStageMetadata({ stage: 'dreaming', status: 'new', feedback: [] })).toBe(false);
    expect(isStageMetadata({ stage: 'ideation', status: 'new' })).toBe(false);
    expect(isStageMetadata('ideation')).toBe(false);
    expect(isStageMetadata(newStageMetadata('review'))).toBe(true);
  });

  it('takes status, ids and the store feedback from a stage bundle', () => {
    const bundle = bundleFixture();
    const next = applyBundle(newStageMetadata('ideation'), bundle)!;
    expect(next.status).toBe('done');
    expect(next.stage_run_id).toBe('sr_fixture0001');
    expect(next.project_id).toBe('prj_0123456789abcdef');
    expect(next.feedback).toEqual([{ ...bundle.feedback![0], synced: true }]);
    // Applying the same bundle again changes nothing.
    expect(applyBundle(next, bundle)).toBeUndefined();
  });

  it('keeps local feedback and drops the embedded trajectory when the stage is re-run', () => {
    const bundle = bundleFixture();
    let metadata = applyBundle(newStageMetadata('ideation'), bundle)!;
    metadata = withTrajectory(metadata, { id: 'sr_fixture0001' } as any, null);
    metadata = withFeedback(metadata, { id: 'fb_local', text: 'More baselines', author: 'ana', created_at: '2026-11-21T00:00:00Z', synced: false });
    const rerun = applyBundle(metadata, { ...bundle, stage_run_id: 'sr_second', status: 'running', feedback: [] })!;
    expect(rerun.stage_run_id).toBe('sr_second');
    expect(rerun.trajectory).toBeNull();
    expect(rerun.feedback.map(f => f.id)).toEqual(['fb_code1', 'fb_local']);
  });

  it('adds feedback once per id and marks only the given ids synced', () => {
    const entry = { id: 'fb_a', text: 'a', author: 'ana', created_at: '2026-11-21T00:00:00Z', synced: false };
    const other = { ...entry, id: 'fb_b', text: 'b' };
    let metadata = withFeedback(withFeedback(newStageMetadata('ideation'), entry), entry);
    metadata = withFeedback(metadata, other);
    expect(metadata.feedback).toHaveLength(2);
    metadata = withSynced(metadata, ['fb_b']);
    expect(unsyncedFeedback(metadata).map(f => f.id)).toEqual(['fb_a']);
  });

  it('finds a bundle in outputs given as an object or as a JSON string', () => {
    const bundle = bundleFixture();
    expect(findBundle([{ data: { 'text/plain': 'x' } }, { data: { [STAGE_MIME_TYPE]: bundle } }], STAGE_MIME_TYPE)).toEqual(bundle);
    expect(findBundle([{ data: { [STAGE_MIME_TYPE]: JSON.stringify(bundle) } }], STAGE_MIME_TYPE)).toEqual(bundle);
    expect(findBundle([{ data: { [STAGE_MIME_TYPE]: 'not json' } }, {}], STAGE_MIME_TYPE)).toBeUndefined();
  });
});
