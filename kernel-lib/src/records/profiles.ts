/** The `profiles` table: researcher profiles, the latest set one current. The only place its SQL lives. */
import type { Profile } from '@nanoresearch/schema';
import type { Queryable } from '../store';
import { withoutNulls } from './rows';

export async function profileById(q: Queryable, id: string): Promise<Profile | undefined> {
  const row = await q.get<Profile>('select * from profiles where id = $1', [id]);
  return row && withoutNulls(row);
}

/** The profile set most recently (the current one), or undefined when none was ever set. */
export async function latestProfile(q: Queryable): Promise<Profile | undefined> {
  const row = await q.get<Profile>('select * from profiles order by updated_at desc nulls last, id limit 1');
  return row && withoutNulls(row);
}

/** Stores `profile` as set now (keeping when it was first stored): it becomes the current one. */
export async function saveProfile(q: Queryable, profile: Profile, now: string): Promise<Profile> {
  const existing = await q.get<Pick<Profile, 'created_at'>>('select created_at from profiles where id = $1', [profile.id]);
  const row = { ...profile, created_at: existing?.created_at ?? profile.created_at ?? now, updated_at: now };
  await q.run('delete from profiles where id = $1', [row.id]);
  await q.run(
    `insert into profiles (id, name, archetype, research, resources, writing, publication, interaction, notes, created_at, updated_at)
     values ($id, $name, $archetype, $research, $resources, $writing, $publication, $interaction, $notes, $created_at, $updated_at)`,
    { archetype: null, notes: null, ...row }
  );
  return row;
}
