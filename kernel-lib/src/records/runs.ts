/** The `runs` table: one pass of a project through its stages. The only place its SQL lives. */
import { STAGE_NAMES, type StageRun } from '@nanoresearch/schema';
import { nowIso } from '../ids';
import type { Ablation } from '../stage-contract';
import type { Queryable } from '../store';

/** A row of the `runs` table. */
export interface RunRecord {
  id: string;
  project_id: string;
  status: 'running' | 'done' | 'failed';
  config: { ablation: Ablation; profile_id: string } | null;
  started_at: string;
  finished_at: string | null;
}

/** The project's latest run, or undefined when it never ran. */
export async function latestRunOf(q: Queryable, projectId: string): Promise<RunRecord | undefined> {
  return q.get<RunRecord>('select * from runs where project_id = $1 order by started_at desc, id desc limit 1', [projectId]);
}

export async function insertRun(q: Queryable, run: RunRecord): Promise<void> {
  await q.run(
    `insert into runs (id, project_id, status, config, started_at, finished_at)
     values ($id, $project_id, $status, $config, $started_at, $finished_at)`,
    { ...run }
  );
}

/** The run is failed when a stage failed, done when its last stage is done, running otherwise. */
export async function settleRun(q: Queryable, stageRun: Pick<StageRun, 'status' | 'stage' | 'run_id'>): Promise<void> {
  const last = STAGE_NAMES[STAGE_NAMES.length - 1];
  const status = stageRun.status === 'failed' ? 'failed' : stageRun.stage === last ? 'done' : 'running';
  await q.run('update runs set status = $1, finished_at = $2 where id = $3', [status, status === 'running' ? null : nowIso(), stageRun.run_id]);
}
