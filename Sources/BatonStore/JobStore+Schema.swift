import GRDB

extension JobStore {
    /// The schema's history. A migration, once released, is never edited: changes are new ones.
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: jobs, leases and tokens") { db in
            try db.execute(
                sql: """
                    CREATE TABLE jobs (
                        -- Assigned by the authority from a reserved sequence: increasing, never reused.
                        id INTEGER PRIMARY KEY,
                        queue TEXT NOT NULL,
                        state TEXT NOT NULL,
                        -- 1 exactly when the job is queued or retrying and its run_at has passed:
                        -- the claim index holds only these rows, so a claim never wades through
                        -- delayed jobs.
                        ready INTEGER NOT NULL,
                        payload TEXT NOT NULL,
                        priority INTEGER NOT NULL,
                        run_at INTEGER NOT NULL,
                        attempts INTEGER NOT NULL DEFAULT 0,
                        max_attempts INTEGER NOT NULL,
                        backoff_initial_ms INTEGER NOT NULL,
                        backoff_factor REAL NOT NULL,
                        backoff_max_ms INTEGER NOT NULL,
                        lease_ms INTEGER NOT NULL,
                        unique_key TEXT,
                        checkpoint TEXT,
                        progress TEXT,
                        result TEXT,
                        last_error TEXT,
                        lease_token INTEGER,
                        worker TEXT,
                        peer_pid INTEGER,
                        peer_uid INTEGER,
                        created_at INTEGER NOT NULL,
                        started_at INTEGER,
                        finished_at INTEGER
                    );
                    -- The claim: best priority, then oldest, among ready jobs of one queue.
                    CREATE INDEX jobs_ready ON jobs (queue, priority DESC, id) WHERE ready = 1;
                    -- Delayed and backing-off jobs, by the time they become ready.
                    CREATE INDEX jobs_scheduled ON jobs (run_at) WHERE ready = 0 AND state IN ('queued', 'retrying');
                    -- At most one unfinished job per queue and unique key.
                    CREATE UNIQUE INDEX jobs_unique_active ON jobs (queue, unique_key)
                        WHERE unique_key IS NOT NULL AND state NOT IN ('completed', 'failed', 'cancelled');
                    -- The high-water marks of the job id and fencing token sequences: no value
                    -- above them has been issued (see ReservedSequence).
                    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
                    INSERT INTO counters (name, value) VALUES ('job_id', 0), ('token', 0);
                    """
            )
        }
        migrator.registerMigration("v2: queue settings") { db in
            try db.execute(
                sql: """
                    -- Per-queue settings that outlive restarts; a queue without a row has the defaults.
                    CREATE TABLE queues (name TEXT PRIMARY KEY, paused INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
                    """
            )
        }
        migrator.registerMigration("v3: retention") { db in
            try db.execute(
                sql: """
                    -- Finished jobs by when they finished, for pruning the oldest first.
                    CREATE INDEX jobs_finished ON jobs (finished_at) WHERE state IN ('completed', 'failed', 'cancelled');
                    INSERT INTO counters (name, value) VALUES ('pruned', 0);
                    """
            )
        }
        migrator.registerMigration("v4: dependencies") { db in
            try db.execute(
                sql: """
                    -- How many of a job's dependencies have not completed yet; it is not
                    -- claimable, nor scheduled, until this is 0.
                    ALTER TABLE jobs ADD COLUMN waiting_on INTEGER NOT NULL DEFAULT 0;
                    CREATE TABLE job_dependencies (
                        job_id INTEGER NOT NULL,
                        depends_on INTEGER NOT NULL,
                        PRIMARY KEY (depends_on, job_id)
                    ) WITHOUT ROWID;
                    DROP INDEX jobs_scheduled;
                    CREATE INDEX jobs_scheduled ON jobs (run_at)
                        WHERE ready = 0 AND state IN ('queued', 'retrying') AND waiting_on = 0;
                    """
            )
        }
        migrator.registerMigration("v5: concurrency limits") { db in
            try db.execute(
                sql: """
                    -- At most one running job per concurrency key, across the store.
                    ALTER TABLE jobs ADD COLUMN concurrency_key TEXT;
                    -- The claim walks this index; the key rides along so that a job whose key
                    -- is held can be passed over without reading its row.
                    DROP INDEX jobs_ready;
                    CREATE INDEX jobs_ready ON jobs (queue, priority DESC, id, concurrency_key) WHERE ready = 1;
                    -- The most jobs of a queue that may run at once; NULL for no limit.
                    ALTER TABLE queues ADD COLUMN max_running INTEGER;
                    """
            )
        }
        migrator.registerMigration("v6: audit trail") { db in
            try db.execute(
                sql: """
                    -- Every state change of every job, keyed by job so that one job's history is
                    -- one range of one b-tree, and new events land at its right-hand edge. The
                    -- enqueue and the completion are not repeated here: the job's row records
                    -- them (created_at; finished_at, result and lease_token). From v8 the
                    -- last attempt's claim waits in the row too (claim_event).
                    CREATE TABLE job_events (
                        job_id INTEGER NOT NULL,
                        -- From a sequence reserved like the job ids: orders events across jobs.
                        seq INTEGER NOT NULL,
                        at INTEGER NOT NULL,
                        event TEXT NOT NULL,
                        -- The state the job moved to.
                        state TEXT NOT NULL,
                        token INTEGER,
                        peer_pid INTEGER,
                        -- The worker's name for a claim; the error or reason otherwise.
                        detail TEXT,
                        PRIMARY KEY (job_id, seq)
                    ) WITHOUT ROWID;
                    INSERT INTO counters (name, value) VALUES ('event', 0);
                    """
            )
        }
        migrator.registerMigration("v7: finished is finished_at") { db in
            try db.execute(
                sql: """
                    -- A job is finished exactly when finished_at is set: every move to completed,
                    -- failed or cancelled sets it, and a retry clears it. The partial indexes
                    -- test that instead of `state IN (three states)`, which SQLite evaluates with
                    -- a temporary b-tree built afresh for every insert and update of a job.
                    UPDATE jobs SET finished_at = coalesce(started_at, created_at)
                        WHERE finished_at IS NULL AND state IN ('completed', 'failed', 'cancelled');
                    UPDATE jobs SET finished_at = NULL
                        WHERE finished_at IS NOT NULL AND state NOT IN ('completed', 'failed', 'cancelled');
                    DROP INDEX jobs_unique_active;
                    CREATE UNIQUE INDEX jobs_unique_active ON jobs (queue, unique_key)
                        WHERE unique_key IS NOT NULL AND finished_at IS NULL;
                    DROP INDEX jobs_finished;
                    CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
                    """
            )
        }
        migrator.registerMigration("v8: claim events kept in the job's row") { db in
            try db.execute(
                sql: """
                    -- The event number of the running (or last) attempt's claim. The claim is
                    -- recorded by the row itself (started_at, lease_token, worker, peer_pid)
                    -- and copied into job_events only when the attempt ends other than by
                    -- completing. NULL for claims made before this column: their events
                    -- were written at once.
                    ALTER TABLE jobs ADD COLUMN claim_event INTEGER;
                    """
            )
        }
        migrator.registerMigration("v9: the claim index carries run_at") { db in
            try db.execute(
                sql: """
                    -- With run_at (and ready, which SQLite needs to see the index covers its own
                    -- predicate) in the index, how long the oldest ready job has waited (stats,
                    -- health) is read from the index alone instead of from every ready row.
                    DROP INDEX jobs_ready;
                    CREATE INDEX jobs_ready ON jobs (queue, priority DESC, id, concurrency_key, run_at, ready) WHERE ready = 1;
                    """
            )
        }
        migrator.registerMigration("v10: ready jobs by the time they became due") { db in
            try db.execute(
                sql: """
                    -- How long a queue's oldest ready job has waited (stats, health) is one
                    -- probe of this index per queue, whatever the backlog; the claim index,
                    -- ordered by priority, needed a pass over every ready job. `ready` is in it
                    -- so that SQLite sees the index cover its own predicate.
                    CREATE INDEX jobs_ready_since ON jobs (queue, run_at, ready) WHERE ready = 1;
                    """
            )
        }
        migrator.registerMigration("v11: follow-ups know their parent") { db in
            try db.execute(
                sql: """
                    -- The job whose completion enqueued this one (complete's `enqueue`), if any.
                    -- The index holds follow-ups only, so a job's follow-ups are one search.
                    ALTER TABLE jobs ADD COLUMN parent INTEGER;
                    CREATE INDEX jobs_parent ON jobs (parent) WHERE parent IS NOT NULL;
                    """
            )
        }
        migrator.registerMigration("v12: time limits per attempt") { db in
            try db.execute(
                sql: """
                    -- An attempt's time limit (timeout_ms): the job's own, else its queue's.
                    ALTER TABLE jobs ADD COLUMN timeout_ms INTEGER;
                    ALTER TABLE queues ADD COLUMN timeout_ms INTEGER;
                    """
            )
        }
        migrator.registerMigration("v13: recurring jobs") { db in
            try db.execute(
                sql: """
                    -- A recurring job (the schedule op): its job, its rule (a cron expression
                    -- in a time zone, or a period from an anchor), and the next slot to fire.
                    CREATE TABLE schedules (
                        name TEXT PRIMARY KEY,
                        queue TEXT NOT NULL,
                        payload TEXT NOT NULL,
                        priority INTEGER NOT NULL,
                        cron TEXT,
                        timezone TEXT,
                        every_ms INTEGER,
                        anchor INTEGER,
                        overlap TEXT NOT NULL,
                        catch_up TEXT NOT NULL,
                        next_at INTEGER,
                        last_job INTEGER
                    ) WITHOUT ROWID;
                    CREATE INDEX schedules_due ON schedules (next_at) WHERE next_at IS NOT NULL;
                    """
            )
        }
        migrator.registerMigration("v14: circuit breakers") { db in
            try db.execute(
                sql: """
                    -- A queue's circuit breaker: its settings (its state is the authority's).
                    ALTER TABLE queues ADD COLUMN breaker_failures INTEGER;
                    ALTER TABLE queues ADD COLUMN breaker_window_ms INTEGER;
                    ALTER TABLE queues ADD COLUMN breaker_cooldown_ms INTEGER;
                    """
            )
        }
        migrator.registerMigration("v15: named limits and fair groups") { db in
            try db.execute(
                sql: """
                    -- The named limits a job counts against (a JSON array of names), and its
                    -- fair-share group within its queue.
                    ALTER TABLE jobs ADD COLUMN limits TEXT;
                    ALTER TABLE jobs ADD COLUMN fair_group TEXT;
                    -- A named limit's settings (set_limit); its counts are the authority's.
                    CREATE TABLE limits (
                        name TEXT PRIMARY KEY,
                        max_running INTEGER,
                        rate_count INTEGER,
                        rate_per_ms INTEGER,
                        breaker_failures INTEGER,
                        breaker_window_ms INTEGER,
                        breaker_cooldown_ms INTEGER
                    ) WITHOUT ROWID;
                    -- The claim walk reads a job's limits and group from the index, as it
                    -- reads its concurrency key.
                    DROP INDEX jobs_ready;
                    CREATE INDEX jobs_ready ON jobs (queue, priority DESC, id, concurrency_key, limits, fair_group, run_at, ready)
                        WHERE ready = 1;
                    -- Ready jobs that have a group, by group within each priority: the walk
                    -- that rotates claims across groups. Jobs without one are not in it.
                    CREATE INDEX jobs_ready_groups ON jobs (queue, priority DESC, fair_group, id, concurrency_key, limits, ready)
                        WHERE ready = 1 AND fair_group IS NOT NULL;
                    -- How many jobs naming each limit wait to run (queued or retrying), kept by
                    -- triggers that fire only for jobs with limits. Their
                    -- conditions use OR, not IN: an IN list costs every update of a job a
                    -- temporary b-tree, limits or not.
                    CREATE TABLE limit_waiting (name TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
                    CREATE TRIGGER jobs_limits_enqueued AFTER INSERT ON jobs
                    WHEN NEW.limits IS NOT NULL AND NEW.state = 'queued'
                    BEGIN
                        INSERT INTO limit_waiting (name, n) SELECT value, 1 FROM json_each(NEW.limits) WHERE true
                            ON CONFLICT (name) DO UPDATE SET n = n + 1;
                    END;
                    CREATE TRIGGER jobs_limits_waiting AFTER UPDATE OF state ON jobs
                    WHEN NEW.limits IS NOT NULL AND NOT (OLD.state = 'queued' OR OLD.state = 'retrying')
                        AND (NEW.state = 'queued' OR NEW.state = 'retrying')
                    BEGIN
                        INSERT INTO limit_waiting (name, n) SELECT value, 1 FROM json_each(NEW.limits) WHERE true
                            ON CONFLICT (name) DO UPDATE SET n = n + 1;
                    END;
                    CREATE TRIGGER jobs_limits_not_waiting AFTER UPDATE OF state ON jobs
                    WHEN NEW.limits IS NOT NULL AND (OLD.state = 'queued' OR OLD.state = 'retrying')
                        AND NOT (NEW.state = 'queued' OR NEW.state = 'retrying')
                    BEGIN
                        INSERT INTO limit_waiting (name, n) SELECT value, 0 FROM json_each(NEW.limits) WHERE true
                            ON CONFLICT (name) DO UPDATE SET n = n - 1;
                    END;
                    -- Names none waits on any more, for the retention chore to delete a few at a time.
                    CREATE INDEX limit_waiting_idle ON limit_waiting (name) WHERE n <= 0;
                    """
            )
        }
        migrator.registerMigration("v16: trace context") { db in
            try db.execute(
                sql: """
                    -- The W3C trace context of whoever enqueued the job ("traceparent" or
                    -- "traceparent tracestate"), handed to each attempt's worker; and a
                    -- schedule's, for the jobs it enqueues.
                    ALTER TABLE jobs ADD COLUMN trace TEXT;
                    ALTER TABLE schedules ADD COLUMN trace TEXT;
                    """
            )
        }
        return migrator
    }

    /// The columns every job read selects, in the order ``JobStore/job(from:)`` reads them.
    static let jobColumns = """
        id, queue, state, payload, priority, run_at, attempts, max_attempts,
        backoff_initial_ms, backoff_factor, backoff_max_ms, lease_ms, unique_key,
        checkpoint, progress, result, last_error, lease_token, worker, peer_pid, peer_uid,
        created_at, started_at, finished_at, concurrency_key, parent, timeout_ms, limits, fair_group, trace
        """
}
