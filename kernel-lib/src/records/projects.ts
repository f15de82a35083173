/** The `projects` table: one topic under one profile. The only place its SQL lives. */
import type { Project } from '@nanoresearch/schema';
import type { Queryable } from '../store';
import { withoutNulls } from './rows';

export async function projectById(q: Queryable, id: string): Promise<Project | undefined> {
  const row = await q.get<Project>('select * from projects where id = $1', [id]);
  return row && withoutNulls(row);
}

export async function insertProject(q: Queryable, project: Project): Promise<void> {
  await q.run(
    `insert into projects (id, title, topic, profile_id, workspace, status, created_at, updated_at)
     values ($id, $title, $topic, $profile_id, $workspace, $status, $created_at, $updated_at)`,
    { created_at: null, updated_at: null, ...project }
  );
}
