/** The `artifacts` table: files a stage produced, with their checksums. The only place its SQL lives. */
import { newId, nowIso } from '../ids';
import type { ArtifactRecord } from '../stage-contract';
import type { Queryable } from '../store';

/** Records the files a stage run produced, in the caller's transaction. */
export async function insertArtifacts(q: Queryable, ids: { projectId: string; stageRunId: string }, artifacts: readonly ArtifactRecord[]): Promise<void> {
  if (!artifacts.length) return;
  const at = nowIso();
  await q.appendRows(
    'artifacts',
    artifacts.map(a => ({
      id: newId('art'),
      project_id: ids.projectId,
      stage_run_id: ids.stageRunId,
      path: a.path,
      kind: a.kind,
      sha256: a.sha256,
      bytes: a.bytes,
      created_at: at
    }))
  );
}

/** The paths recorded for a stage run, in path order. */
export async function artifactPathsOf(q: Queryable, stageRunId: string): Promise<string[]> {
  const rows = await q.all<{ path: string }>('select path from artifacts where stage_run_id = $1 order by path', [stageRunId]);
  return rows.map(r => r.path);
}
