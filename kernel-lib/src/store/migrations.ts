/**
 * The store's schema history. Each entry is applied once, in its own transaction, and
 * recorded in `schema_migrations`. To change the schema, APPEND an entry with the next
 * version number; never edit or reorder an applied one (stores in the field already ran it).
 *
 * Columns follow `schema/*.schema.json`: one column per top-level property with the same
 * name, nested objects and arrays as JSON, timestamps as TIMESTAMP, required properties
 * NOT NULL unless the schema allows null.
 */

/** One schema step. `up` statements run in order inside one transaction. */
export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly up: readonly string[];
}

export const migrations: readonly Migration[] = [
  {
    version: 1,
    name: 'core tables',
    up: [
      `CREATE TABLE profiles (
        id VARCHAR PRIMARY KEY,
        name VARCHAR NOT NULL,
        archetype VARCHAR,
        research JSON NOT NULL,
        resources JSON NOT NULL,
        writing JSON NOT NULL,
        publication JSON NOT NULL,
        interaction JSON NOT NULL,
        notes VARCHAR,
        created_at TIMESTAMP,
        updated_at TIMESTAMP
      )`,
      `CREATE TABLE projects (
        id VARCHAR PRIMARY KEY,
        title VARCHAR NOT NULL,
        topic VARCHAR NOT NULL,
        profile_id VARCHAR NOT NULL,
        workspace VARCHAR,
        status VARCHAR NOT NULL,
        created_at TIMESTAMP,
        updated_at TIMESTAMP
      )`,
      `CREATE TABLE runs (
        id VARCHAR PRIMARY KEY,
        project_id VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        config JSON,
        started_at TIMESTAMP,
        finished_at TIMESTAMP
      )`,
      `CREATE TABLE stage_runs (
        id VARCHAR PRIMARY KEY,
        project_id VARCHAR NOT NULL,
        run_id VARCHAR NOT NULL,
        stage VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        attempt INTEGER,
        input JSON,
        output JSON,
        summary VARCHAR,
        error VARCHAR,
        planner_call_id VARCHAR,
        skills_used JSON,
        memories_used JSON,
        usage JSON,
        started_at TIMESTAMP,
        finished_at TIMESTAMP,
        origin VARCHAR
      )`,
      `CREATE TABLE planner_calls (
        id VARCHAR PRIMARY KEY,
        stage_run_id VARCHAR NOT NULL,
        stage VARCHAR NOT NULL,
        x VARCHAR NOT NULL,
        y VARCHAR NOT NULL,
        parsed JSON,
        candidate_skill_ids JSON,
        candidate_memory_ids JSON,
        model VARCHAR NOT NULL,
        adapter_version VARCHAR,
        fallback VARCHAR,
        created_at TIMESTAMP
      )`,
      `CREATE TABLE llm_calls (
        id VARCHAR PRIMARY KEY,
        stage_run_id VARCHAR,
        role VARCHAR NOT NULL,
        model VARCHAR NOT NULL,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        latency_ms DOUBLE,
        cost_usd DOUBLE,
        cache_hit BOOLEAN NOT NULL DEFAULT false,
        error VARCHAR,
        created_at TIMESTAMP NOT NULL
      )`,
      `CREATE TABLE llm_cache (
        key VARCHAR PRIMARY KEY,
        model VARCHAR NOT NULL,
        response JSON NOT NULL,
        created_at TIMESTAMP NOT NULL
      )`,
      `CREATE TABLE feedback (
        id VARCHAR PRIMARY KEY,
        stage_run_id VARCHAR NOT NULL,
        planner_call_id VARCHAR,
        text VARCHAR NOT NULL,
        author VARCHAR NOT NULL,
        origin VARCHAR,
        created_at TIMESTAMP NOT NULL,
        synced_from VARCHAR
      )`,
      `CREATE TABLE skills (
        id VARCHAR PRIMARY KEY,
        name VARCHAR NOT NULL,
        description VARCHAR NOT NULL,
        when_to_use VARCHAR,
        instructions JSON NOT NULL,
        stages JSON,
        tags JSON,
        source VARCHAR NOT NULL,
        version INTEGER NOT NULL,
        status VARCHAR NOT NULL,
        usage_count INTEGER NOT NULL DEFAULT 0,
        success_count INTEGER NOT NULL DEFAULT 0,
        provenance JSON,
        created_at TIMESTAMP,
        updated_at TIMESTAMP
      )`,
      `CREATE TABLE skill_reviews (
        id VARCHAR PRIMARY KEY,
        skill_id VARCHAR,
        candidate JSON NOT NULL,
        decision VARCHAR NOT NULL,
        reason VARCHAR,
        similarity DOUBLE,
        created_at TIMESTAMP NOT NULL
      )`,
      `CREATE TABLE memories (
        id VARCHAR PRIMARY KEY,
        kind VARCHAR NOT NULL,
        scope VARCHAR NOT NULL,
        key VARCHAR NOT NULL,
        content VARCHAR NOT NULL,
        tags JSON,
        stages JSON,
        conditions JSON,
        importance DOUBLE NOT NULL,
        confidence DOUBLE NOT NULL,
        support_count INTEGER NOT NULL DEFAULT 0,
        contradiction_count INTEGER NOT NULL DEFAULT 0,
        usage_count INTEGER NOT NULL DEFAULT 0,
        status VARCHAR NOT NULL,
        source VARCHAR,
        created_at TIMESTAMP,
        updated_at TIMESTAMP,
        last_used_at TIMESTAMP
      )`,
      `CREATE TABLE papers (
        key VARCHAR PRIMARY KEY,
        title VARCHAR NOT NULL,
        authors JSON,
        year INTEGER,
        venue VARCHAR,
        doi VARCHAR,
        url VARCHAR,
        abstract VARCHAR,
        source VARCHAR NOT NULL,
        fetched_at TIMESTAMP NOT NULL
      )`,
      `CREATE TABLE literature_cache (
        key VARCHAR PRIMARY KEY,
        provider VARCHAR NOT NULL,
        query VARCHAR NOT NULL,
        response JSON NOT NULL,
        fetched_at TIMESTAMP NOT NULL
      )`,
      `CREATE TABLE adapters (
        version VARCHAR PRIMARY KEY,
        manifest JSON NOT NULL,
        path VARCHAR NOT NULL,
        active BOOLEAN NOT NULL DEFAULT false,
        created_at TIMESTAMP NOT NULL
      )`,
      `CREATE TABLE artifacts (
        id VARCHAR PRIMARY KEY,
        project_id VARCHAR NOT NULL,
        stage_run_id VARCHAR,
        path VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        sha256 VARCHAR,
        bytes BIGINT,
        created_at TIMESTAMP NOT NULL
      )`,
      'CREATE INDEX projects_profile_id ON projects (profile_id)',
      'CREATE INDEX runs_project_id ON runs (project_id)',
      'CREATE INDEX stage_runs_project_id ON stage_runs (project_id)',
      'CREATE INDEX stage_runs_run_id ON stage_runs (run_id)',
      'CREATE INDEX planner_calls_stage_run_id ON planner_calls (stage_run_id)',
      'CREATE INDEX llm_calls_stage_run_id ON llm_calls (stage_run_id)',
      'CREATE INDEX feedback_stage_run_id ON feedback (stage_run_id)',
      'CREATE INDEX skill_reviews_skill_id ON skill_reviews (skill_id)',
      'CREATE INDEX memories_kind_scope ON memories (kind, scope)',
      'CREATE INDEX artifacts_project_id ON artifacts (project_id)',
      'CREATE INDEX artifacts_stage_run_id ON artifacts (stage_run_id)'
    ]
  },
  {
    // Retrieval's term statistics (retrieval/terms.ts keeps them in step with active skills
    // and memories). Terms are 53-bit integer keys of (doc kind, term). `term_postings` holds
    // each term's postings as one list (plus small delta rows between compactions), probed by
    // an ART index; `doc_terms` is the forward index used to unindex a document; df and
    // corpus totals are precomputed. Measured at 100k records: probing a flat postings table
    // fetched rows one by one (~35 ms for 20k postings), the list form reads them in bulk.
    version: 2,
    name: 'retrieval term tables',
    up: [
      `CREATE TABLE doc_terms (
        doc_kind VARCHAR NOT NULL,
        doc_id VARCHAR NOT NULL,
        term_key BIGINT NOT NULL,
        tf INTEGER NOT NULL,
        doc_len INTEGER NOT NULL
      )`,
      `CREATE TABLE term_postings (
        term_key BIGINT NOT NULL,
        postings STRUCT(doc_id VARCHAR, tf INTEGER, len INTEGER, scope VARCHAR)[] NOT NULL
      )`,
      `CREATE TABLE term_df (
        term_key BIGINT PRIMARY KEY,
        doc_kind VARCHAR NOT NULL,
        term VARCHAR NOT NULL,
        df INTEGER NOT NULL
      )`,
      `CREATE TABLE doc_stats (
        doc_kind VARCHAR PRIMARY KEY,
        n_docs INTEGER NOT NULL,
        total_len BIGINT NOT NULL
      )`,
      'CREATE INDEX doc_terms_doc_id ON doc_terms (doc_id)',
      'CREATE INDEX term_postings_term_key ON term_postings (term_key)'
    ]
  },
  {
    // Change log of the term tables for in-process caches of the term index
    // (retrieval/term-index.ts): every (un)indexing bumps `term_generation` and logs the
    // documents it touched in the same transaction, so a cache in any process brings itself
    // up to date by re-reading only those documents. `store_id` tells apart two store files
    // that happen to share a generation number.
    version: 3,
    name: 'retrieval term generation',
    up: [
      `CREATE TABLE term_generation (
        id INTEGER PRIMARY KEY,
        generation BIGINT NOT NULL,
        store_id VARCHAR NOT NULL
      )`,
      `INSERT INTO term_generation VALUES (1, 0, uuid()::VARCHAR)`,
      `CREATE TABLE term_changes (
        generation BIGINT NOT NULL,
        doc_kind VARCHAR NOT NULL,
        doc_id VARCHAR NOT NULL,
        scope VARCHAR
      )`
    ]
  },
  {
    // Before stage runs become unique per (run_id, stage, attempt) (next migration), a store
    // that already holds repeats gets them renumbered after the last attempt of their stage, in
    // start order, so no row (nor what refers to it by id) is lost. This runs in its own
    // transaction, apart from the CREATE INDEX: DuckDB has mis-indexed rows updated in the
    // transaction that indexes them (duckdb/duckdb#21394).
    version: 4,
    name: 'renumber repeated stage run attempts',
    up: [
      `UPDATE stage_runs SET attempt = renumbered.attempt
         FROM (
           SELECT repeats.id, last.attempt + row_number() OVER (PARTITION BY repeats.run_id, repeats.stage ORDER BY repeats.started_at NULLS LAST, repeats.id) AS attempt
             FROM (
               SELECT id, run_id, stage, started_at,
                      row_number() OVER (PARTITION BY run_id, stage, attempt ORDER BY started_at NULLS LAST, id) AS copy
                 FROM stage_runs WHERE attempt IS NOT NULL
             ) repeats
             JOIN (SELECT run_id, stage, max(attempt) AS attempt FROM stage_runs GROUP BY run_id, stage) last
               ON last.run_id = repeats.run_id AND last.stage = repeats.stage
            WHERE repeats.copy > 1
         ) renumbered
        WHERE stage_runs.id = renumbered.id`
    ]
  },
  {
    // One row per attempt of a stage in a run, by constraint: a second 'done' row for the same
    // attempt (two kernels resuming one run, a retried write) is refused instead of written.
    version: 5,
    name: 'stage runs unique per attempt',
    up: ['CREATE UNIQUE INDEX stage_runs_run_stage_attempt ON stage_runs (run_id, stage, attempt)']
  },
  {
    // What each open after an unclean shutdown found and did (store/recovery.ts), so any
    // process (the Lab, the sidebar) can show it; rows a rebuild set aside are kept in `rebuilt`.
    version: 6,
    name: 'store recoveries',
    up: [
      `CREATE TABLE store_recoveries (
        id VARCHAR PRIMARY KEY,
        recovered_at TIMESTAMP NOT NULL,
        pid INTEGER NOT NULL,
        wal_bytes BIGINT NOT NULL,
        keys_checked INTEGER NOT NULL,
        problems JSON NOT NULL,
        rebuilt JSON NOT NULL,
        ms DOUBLE NOT NULL,
        message VARCHAR NOT NULL
      )`
    ]
  },
  {
    // Who is running each project (store/run-lease.ts): one row while a process runs stages of
    // the project, kept fresh by its heartbeat and deleted when it stops. A second kernel on the
    // same project waits or is told who holds it; a dead holder's row is taken over.
    version: 7,
    name: 'run leases',
    up: [
      `CREATE TABLE run_leases (
        project_id VARCHAR PRIMARY KEY,
        holder_id VARCHAR NOT NULL,
        holder_pid INTEGER NOT NULL,
        holder_host VARCHAR NOT NULL,
        run_id VARCHAR,
        acquired_at TIMESTAMP NOT NULL,
        heartbeat_at TIMESTAMP NOT NULL
      )`
    ]
  },
  {
    // Learning from feedback runs after the feedback is stored, as a background job
    // (feedback/learning.ts). The job row is written in the feedback's own transaction, so
    // stored feedback always has its job; a kernel that dies mid-job leaves the row behind and
    // the next Lab in any process resumes it (owner and heartbeat say whether its worker lives).
    version: 8,
    name: 'feedback learning jobs',
    up: [
      `CREATE TABLE learning_jobs (
        feedback_id VARCHAR PRIMARY KEY,
        status VARCHAR NOT NULL,
        attempts INTEGER NOT NULL,
        error VARCHAR,
        steps JSON NOT NULL,
        owner_id VARCHAR,
        owner_pid INTEGER,
        owner_host VARCHAR,
        heartbeat_at TIMESTAMP,
        created_at TIMESTAMP NOT NULL,
        started_at TIMESTAMP,
        finished_at TIMESTAMP,
        updated_at TIMESTAMP NOT NULL
      )`
    ]
  },
  {
    // Entries of the durable-write outbox (store/outbox.ts) that a replay has handled: applied
    // ones (so a replay that died halfway never applies an entry twice; removed with their
    // outbox file), and refused ones, kept with the error and the payload.
    version: 9,
    name: 'outbox entries',
    up: [
      `CREATE TABLE outbox_entries (
        id VARCHAR PRIMARY KEY,
        kind VARCHAR NOT NULL,
        queued_at TIMESTAMP NOT NULL,
        applied_at TIMESTAMP NOT NULL,
        error VARCHAR,
        payload JSON
      )`
    ]
  },
  {
    // Retrieval scores in memory (retrieval/term-index.ts), so the store keeps only what that
    // index is built from: one row per indexed document with its distinct terms and their
    // frequencies (retrieval/terms.ts). The term tables of migration 2 were kept for an SQL
    // search that no longer exists and cost ~200 ms per batch of 100 memories (postings,
    // forward index and df rewritten on each write) and about as much space as the records.
    // Their rows carry over; term_generation and term_changes stay as they are, so a cached
    // index or snapshot of the store stays valid.
    version: 10,
    name: 'one index row per document',
    up: [
      `CREATE TABLE doc_index (
        doc_kind VARCHAR NOT NULL,
        doc_id VARCHAR NOT NULL,
        scope VARCHAR NOT NULL,
        len INTEGER NOT NULL,
        terms VARCHAR[] NOT NULL,
        tfs INTEGER[] NOT NULL
      )`,
      'CREATE INDEX doc_index_doc_id ON doc_index (doc_id)',
      `INSERT INTO doc_index
         SELECT t.doc_kind, t.doc_id, coalesce(any_value(m.scope), 'global'), min(t.doc_len), list(d.term ORDER BY d.term), list(t.tf ORDER BY d.term)
           FROM doc_terms t JOIN term_df d USING (term_key)
           LEFT JOIN memories m ON t.doc_kind = 'memory' AND m.id = t.doc_id
          GROUP BY t.doc_kind, t.doc_id`,
      'DROP INDEX doc_terms_doc_id',
      'DROP INDEX term_postings_term_key',
      'DROP TABLE doc_terms',
      'DROP TABLE term_postings',
      'DROP TABLE term_df',
      'DROP TABLE doc_stats'
    ]
  },
  {
    // Experiment runs submitted to Slurm (sandbox/slurm-executor.ts): stored before sbatch and
    // updated as the job moves, so a kernel that died while its job was queued or running
    // leaves an open row (ended_at null) that the resumed stage adopts instead of submitting
    // again. program_sha256 is what ran (command, program, data): the key of adoption.
    version: 11,
    name: 'slurm jobs',
    up: [
      `CREATE TABLE slurm_jobs (
        id VARCHAR PRIMARY KEY,
        project_id VARCHAR NOT NULL,
        run_id VARCHAR NOT NULL,
        stage_run_id VARCHAR NOT NULL,
        attempt INTEGER NOT NULL,
        program_sha256 VARCHAR NOT NULL,
        job_name VARCHAR NOT NULL,
        job_id VARCHAR,
        folder VARCHAR NOT NULL,
        cwd VARCHAR NOT NULL,
        request JSON NOT NULL,
        state VARCHAR NOT NULL,
        slurm_state VARCHAR,
        exit_code VARCHAR,
        elapsed VARCHAR,
        elapsed_seconds INTEGER,
        node VARCHAR,
        adopted_by VARCHAR,
        submitted_at TIMESTAMP NOT NULL,
        ended_at TIMESTAMP
      )`,
      'CREATE INDEX slurm_jobs_run ON slurm_jobs (run_id)'
    ]
  }
];

/** The newest schema version this library knows. */
export function latestVersion(list: readonly Migration[] = migrations): number {
  return list.reduce((max, m) => Math.max(max, m.version), 0);
}
