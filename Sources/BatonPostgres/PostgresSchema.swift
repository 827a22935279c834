import Logging
import PostgresNIO

/// The PostgreSQL store's schema and its versioned migrations.
///
/// Several `batond` may start at once against one database: each migrates inside a
/// transaction that first takes a transaction-scoped advisory lock, so one applies what
/// is missing while the others wait, then find nothing left to do. A migration, once
/// released, is never edited: changes are new ones. (Until the PostgreSQL store is
/// released with issue 15, v1 is still being written.)
///
/// Times are milliseconds since the Unix epoch in `bigint`, as in the SQLite store. Lease
/// deadlines are on PostgreSQL's clock (`baton_now_ms()`), never a host's, so clock skew
/// between hosts can neither lengthen nor shorten a lease.
enum PostgresSchema {
    /// The advisory lock migrations hold: "baton" in ASCII.
    static let migrationLock: Int64 = 0x62_61_74_6F_6E

    struct Migration {
        var version: Int
        var name: String
        var statements: [String]
    }

    static let migrations: [Migration] = [
        Migration(
            version: 1, name: "jobs, leases on the database's clock, tokens",
            statements: [
                """
                -- The database's wall clock, which every lease deadline is set and judged by.
                -- A transaction's start: a batch is one instant, as on SQLite, so a completion
                -- and the next claim it leases share a time. A batch is bounded (batond gives
                -- up on one after a few seconds), and a write judged a moment late is still
                -- fenced: a row another host expired or leased meanwhile no longer matches.
                CREATE FUNCTION baton_now_ms() RETURNS bigint LANGUAGE sql STABLE
                    AS $$ SELECT (extract(epoch FROM transaction_timestamp()) * 1000)::bigint $$
                """,
                // Job ids, fencing tokens and event numbers: one sequence each for the
                // fleet, strictly increasing across hosts and restarts.
                "CREATE SEQUENCE baton_job_ids",
                "CREATE SEQUENCE baton_tokens",
                "CREATE SEQUENCE baton_events",
                """
                CREATE TABLE jobs (
                    id bigint PRIMARY KEY,
                    queue text NOT NULL,
                    state text NOT NULL,
                    -- True exactly when the job is queued or retrying and its run_at has
                    -- passed: the claim index holds only these rows.
                    ready boolean NOT NULL,
                    payload text NOT NULL,
                    priority bigint NOT NULL,
                    run_at bigint NOT NULL,
                    attempts integer NOT NULL DEFAULT 0,
                    max_attempts integer NOT NULL,
                    backoff_initial_ms bigint NOT NULL,
                    backoff_factor double precision NOT NULL,
                    backoff_max_ms bigint NOT NULL,
                    lease_ms bigint NOT NULL,
                    unique_key text,
                    concurrency_key text,
                    checkpoint text,
                    progress text,
                    result text,
                    last_error text,
                    lease_token bigint,
                    -- When the running attempt's lease runs out, on baton_now_ms().
                    lease_deadline bigint,
                    -- The batond that granted the lease.
                    lease_host text,
                    worker text,
                    peer_pid integer,
                    peer_uid bigint,
                    created_at bigint NOT NULL,
                    started_at bigint,
                    finished_at bigint,
                    waiting_on integer NOT NULL DEFAULT 0,
                    -- Whether jobs wait on this one: set by the enqueue that names it in
                    -- `after`, in the row a completion updates, so the completion learns of
                    -- a dependent added while it waited for that enqueue's lock.
                    has_dependents boolean NOT NULL DEFAULT false,
                    parent bigint,
                    -- Each attempt's time limit (the job's own; else its queue's), and when
                    -- the running attempt reaches it, on baton_now_ms(): the lease never
                    -- outlives it.
                    timeout_ms bigint,
                    timeout_at bigint
                )
                """,
                // The claim: best priority, then oldest, among one queue's ready jobs.
                "CREATE INDEX jobs_ready ON jobs (queue, priority DESC, id) WHERE ready",
                // How long a queue's oldest ready job has waited (stats, health): one probe.
                // `run_at IS NOT NULL` (always true) is there so the claim, which does not say
                // it, can never use this index in place of jobs_ready: a plan made while the
                // table was small would read every ready job of the queue through it and sort.
                "CREATE INDEX jobs_ready_since ON jobs (queue, run_at) WHERE ready AND run_at IS NOT NULL",
                // Delayed and backing-off jobs, by when they become ready.
                """
                CREATE INDEX jobs_scheduled ON jobs (run_at)
                    WHERE NOT ready AND state IN ('queued', 'retrying') AND waiting_on = 0
                """,
                // Running jobs by deadline: any host expires the overdue ones.
                "CREATE INDEX jobs_leases ON jobs (lease_deadline) WHERE state = 'running'",
                """
                CREATE UNIQUE INDEX jobs_unique_active ON jobs (queue, unique_key)
                    WHERE unique_key IS NOT NULL AND finished_at IS NULL
                """,
                "CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL",
                "CREATE INDEX jobs_parent ON jobs (parent) WHERE parent IS NOT NULL",
                """
                CREATE TABLE schedules (
                    name text PRIMARY KEY,
                    queue text NOT NULL,
                    payload text NOT NULL,
                    priority bigint NOT NULL,
                    cron text,
                    timezone text,
                    every_ms bigint,
                    anchor bigint,
                    overlap text NOT NULL,
                    catch_up text NOT NULL,
                    -- The next slot to fire, wall-clock milliseconds.
                    next_at bigint,
                    last_job bigint
                )
                """,
                "CREATE INDEX schedules_due ON schedules (next_at) WHERE next_at IS NOT NULL",
                """
                CREATE TABLE queues (
                    name text PRIMARY KEY,
                    paused boolean NOT NULL DEFAULT false,
                    max_running integer,
                    timeout_ms bigint
                )
                """,
                """
                -- The concurrency keys of running jobs, fleet-wide: a claim takes its job's key
                -- here or not at all, so two hosts never run two jobs with one key.
                CREATE TABLE concurrency_keys (key text PRIMARY KEY, job bigint NOT NULL)
                """,
                """
                -- A job that stops running frees its key, whichever operation moved it.
                CREATE FUNCTION baton_free_concurrency_key() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    DELETE FROM concurrency_keys WHERE key = OLD.concurrency_key AND job = OLD.id;
                    RETURN NULL;
                END $$
                """,
                """
                CREATE TRIGGER jobs_free_concurrency_key AFTER UPDATE OF state ON jobs FOR EACH ROW
                    WHEN (OLD.state = 'running' AND NEW.state <> 'running' AND OLD.concurrency_key IS NOT NULL)
                    EXECUTE FUNCTION baton_free_concurrency_key()
                """,
                // A limited queue's running jobs are counted at each claim (at most its limit).
                // `queue IS NOT NULL` (always true) keeps it to statements that name a queue:
                // the sweep's and the deadlines' statements, which do not, use jobs_leases.
                "CREATE INDEX jobs_running ON jobs (queue) WHERE state = 'running' AND queue IS NOT NULL",
                """
                -- Each host's share of the job counts by queue and state: a host adds its own
                -- batches' moves to its own rows, and the fleet's count is the sum. Each of a
                -- host's batches in flight has a lane of rows to itself, so that one batch
                -- never waits for another's commit to count.
                CREATE TABLE job_counts (
                    host text NOT NULL,
                    lane smallint NOT NULL,
                    queue text NOT NULL,
                    state text NOT NULL,
                    n bigint NOT NULL,
                    PRIMARY KEY (host, lane, queue, state)
                )
                """,
                """
                -- The fleet's batond processes, each as it last reported itself.
                -- pruned: finished jobs the host's retention chores deleted; the fleet's is the sum.
                CREATE TABLE hosts (
                    name text PRIMARY KEY, started_at bigint NOT NULL, seen_at bigint NOT NULL,
                    pruned bigint NOT NULL DEFAULT 0
                )
                """,
                """
                CREATE TABLE job_dependencies (
                    job_id bigint NOT NULL,
                    depends_on bigint NOT NULL,
                    PRIMARY KEY (depends_on, job_id)
                )
                """,
                """
                CREATE TABLE job_events (
                    job_id bigint NOT NULL,
                    seq bigint NOT NULL,
                    at bigint NOT NULL,
                    event text NOT NULL,
                    state text NOT NULL,
                    token bigint,
                    peer_pid integer,
                    detail text,
                    PRIMARY KEY (job_id, seq)
                )
                """,
            ]
        ),
        Migration(
            version: 2, name: "circuit breakers",
            statements: [
                """
                -- A queue's circuit breaker: its settings, and its state, which every host reads and
                -- moves under the queue row's lock. open_until is NULL while it is closed; once
                -- passed, the breaker is half-open, and trial is the job let through (while it runs).
                -- failed_at: the failures since the last success, within the window.
                ALTER TABLE queues
                    ADD COLUMN breaker_failures integer,
                    ADD COLUMN breaker_window_ms bigint,
                    ADD COLUMN breaker_cooldown_ms bigint,
                    ADD COLUMN breaker_open_until bigint,
                    ADD COLUMN breaker_trial bigint,
                    ADD COLUMN breaker_failed_at bigint[] NOT NULL DEFAULT '{}'
                """,
            ]
        ),
        Migration(
            version: 3, name: "named limits",
            statements: [
                // The named limits a job counts against: a JSON array of names, as the SQLite store keeps it.
                "ALTER TABLE jobs ADD COLUMN limits text",
                """
                -- A named limit's settings (set_limit), templates (tenant:*) included.
                CREATE TABLE limits (
                    name text PRIMARY KEY,
                    max_running integer,
                    rate_count integer,
                    rate_per_ms bigint
                )
                """,
                """
                -- Each name in use, fleet-wide: its running jobs, its starts within the rate window
                -- (database clock), and its jobs waiting to run. A claim of a job naming it locks
                -- the row, so that two hosts never both take its last place.
                CREATE TABLE limit_usage (
                    name text PRIMARY KEY,
                    running integer NOT NULL DEFAULT 0,
                    starts bigint[] NOT NULL DEFAULT '{}',
                    waiting integer NOT NULL DEFAULT 0
                )
                """,
                """
                -- A job naming limits that stops running gives its places back, and one that
                -- starts or stops waiting (queued, retrying) moves the waiting counts, whichever
                -- operation moved it.
                CREATE FUNCTION baton_limit_usage() RETURNS trigger LANGUAGE plpgsql AS $$
                DECLARE
                    was_waiting boolean := TG_OP = 'UPDATE' AND OLD.state IN ('queued', 'retrying');
                    is_waiting boolean := NEW.state IN ('queued', 'retrying');
                BEGIN
                    IF TG_OP = 'UPDATE' AND OLD.state = 'running' AND NEW.state <> 'running' THEN
                        UPDATE limit_usage SET running = greatest(running - 1, 0)
                        WHERE name IN (SELECT jsonb_array_elements_text(NEW.limits::jsonb));
                    END IF;
                    IF was_waiting <> is_waiting THEN
                        INSERT INTO limit_usage AS u (name, waiting)
                        SELECT jsonb_array_elements_text(NEW.limits::jsonb), CASE WHEN is_waiting THEN 1 ELSE 0 END
                        ON CONFLICT (name) DO UPDATE SET waiting = greatest(u.waiting + CASE WHEN is_waiting THEN 1 ELSE -1 END, 0);
                    END IF;
                    RETURN NULL;
                END $$
                """,
                """
                CREATE TRIGGER jobs_limit_usage AFTER INSERT OR UPDATE OF state ON jobs FOR EACH ROW
                    WHEN (NEW.limits IS NOT NULL) EXECUTE FUNCTION baton_limit_usage()
                """,
            ]
        ),
        Migration(
            version: 4, name: "breakers on named limits",
            statements: [
                """
                -- A named limit's breaker: its settings beside its others (a template's govern each
                -- name it covers), and each name's state in its usage row, moved under that row's
                -- lock as a queue's is under the queue's.
                ALTER TABLE limits
                    ADD COLUMN breaker_failures integer,
                    ADD COLUMN breaker_window_ms bigint,
                    ADD COLUMN breaker_cooldown_ms bigint
                """,
                """
                ALTER TABLE limit_usage
                    ADD COLUMN breaker_open_until bigint,
                    ADD COLUMN breaker_trial bigint,
                    ADD COLUMN breaker_failed_at bigint[] NOT NULL DEFAULT '{}'
                """,
            ]
        ),
        Migration(
            version: 5, name: "fair groups",
            statements: [
                // A job's fair-share group within its queue.
                "ALTER TABLE jobs ADD COLUMN fair_group text",
                // The group a queue's claims served last, fleet-wide: NULL until the first job with
                // a group is claimed, '' at the turn of a round.
                "ALTER TABLE queues ADD COLUMN group_cursor text",
                // The groups with ready jobs at a priority, in name order, each oldest first: a
                // claim finds the next group with one probe (a loose index scan).
                """
                CREATE INDEX jobs_ready_groups ON jobs (queue, priority, fair_group, id)
                    WHERE ready AND fair_group IS NOT NULL
                """,
            ]
        ),
        Migration(
            version: 6, name: "trace context",
            statements: [
                // The W3C trace context of whoever enqueued the job ("traceparent" or
                // "traceparent tracestate"), handed to each attempt's worker; and a schedule's.
                "ALTER TABLE jobs ADD COLUMN trace text",
                "ALTER TABLE schedules ADD COLUMN trace text",
            ]
        ),
    ]

    /// Brings the database's schema up to date; returns how many migrations it applied.
    static func migrate(_ client: PostgresClient, logger: Logger) async throws -> Int {
        try await client.withTransaction(logger: logger) { connection in
            try await connection.query("SELECT pg_advisory_xact_lock(\(Self.migrationLock))", logger: logger)
            try await connection.query(
                """
                CREATE TABLE IF NOT EXISTS baton_schema (
                    version integer PRIMARY KEY, name text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT clock_timestamp())
                """, logger: logger)
            var applied = Set<Int>()
            for try await version in try await connection.query("SELECT version FROM baton_schema", logger: logger)
                .decode(Int.self)
            {
                applied.insert(version)
            }
            if let newest = applied.max(), newest > Self.migrations.last?.version ?? 0 {
                throw PostgresStoreError(
                    "the database's schema is at version \(newest), newer than this batond knows (\(Self.migrations.last?.version ?? 0)): upgrade batond"
                )
            }
            var count = 0
            for migration in Self.migrations where !applied.contains(migration.version) {
                for statement in migration.statements {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                try await connection.query(
                    "INSERT INTO baton_schema (version, name) VALUES (\(migration.version), \(migration.name))",
                    logger: logger)
                count += 1
            }
            return count
        }
    }
}
