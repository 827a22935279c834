import BatonCore
import PostgresNIO

/// The audit trail, the fleet's job counts, its hosts, its chores and whole-job reads.
extension PostgresTransaction {
    // MARK: Audit trail

    /// Records a batch's state changes with one statement, numbered from the fleet's event
    /// sequence in the order given.
    public func recordEvents(_ events: [(job: Int64, event: JobEvent)]) async throws {
        try await self.finishBatch(host: "", lane: 0, events: events, counts: [])
    }

    /// The end of a batch in one statement: its events recorded (``recordEvents(_:)``) and
    /// its moves added to `host`'s job counts in `lane` (``addToCounts(host:lane:_:)``).
    public func finishBatch(
        host: String, lane: Int, events: [(job: Int64, event: JobEvent)], counts deltas: [(queue: String, state: JobState, delta: Int64)]
    ) async throws {
        let moved = deltas.filter { $0.delta != 0 }
        guard !events.isEmpty || !moved.isEmpty else { return }
        // Absent tokens and pids travel as -1; a detail as "" with has_detail false.
        for try await _ in try await self.run(
            FinishBatch(
                jobs: events.map(\.job), at: events.map(\.event.at), kinds: events.map(\.event.kind.rawValue),
                states: events.map(\.event.state.rawValue), tokens: events.map { $0.event.token?.rawValue ?? -1 },
                pids: events.map { Int64($0.event.peerPID ?? -1) }, details: events.map { $0.event.detail ?? "" },
                hasDetails: events.map { $0.event.detail != nil }, host: host, lane: Int16(clamping: lane), queues: moved.map(\.queue),
                countedStates: moved.map(\.state.rawValue), deltas: moved.map(\.delta)))
        {}
    }

    private struct FinishBatch: PreparedBatchStatement {
        static let name = "baton_finish_batch"
        static let sql = """
            WITH recorded AS (
                INSERT INTO job_events (job_id, seq, at, event, state, token, peer_pid, detail)
                SELECT job, nextval('baton_events'), at, event, state, nullif(token, -1), nullif(pid, -1)::integer,
                    CASE WHEN has_detail THEN detail END
                FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::text[], $8::boolean[])
                    WITH ORDINALITY AS e(job, at, event, state, token, pid, detail, has_detail, n)
                ORDER BY n
            )
            INSERT INTO job_counts (host, lane, queue, state, n)
            SELECT $9, $10, queue, state, sum(delta)
            FROM unnest($11::text[], $12::text[], $13::bigint[]) AS d(queue, state, delta)
            GROUP BY queue, state
            ORDER BY queue, state
            ON CONFLICT (host, lane, queue, state) DO UPDATE SET n = job_counts.n + excluded.n
            """
        var jobs: [Int64]
        var at: [Int64]
        var kinds: [String]
        var states: [String]
        var tokens: [Int64]
        var pids: [Int64]
        var details: [String]
        var hasDetails: [Bool]
        var host: String
        var lane: Int16
        var queues: [String]
        var countedStates: [String]
        var deltas: [Int64]

        func makeBindings() -> PostgresBindings {
            PostgresBindings(
                self.jobs, self.at, self.kinds, self.states, self.tokens, self.pids, self.details, self.hasDetails, self.host,
                self.lane, self.queues, self.countedStates, self.deltas)
        }
    }

    /// A job's recorded events, oldest first.
    public func events(of job: Int64) async throws -> [JobEvent] {
        let rows = try await self.connection.query(
            "SELECT at, event, state, token, peer_pid, detail FROM job_events WHERE job_id = \(job) ORDER BY seq",
            logger: self.logger)
        var events: [JobEvent] = []
        for try await (at, kind, state, token, pid, detail) in rows.decode((Int64, String, String, Int64?, Int32?, String?).self) {
            guard let kind = JobEvent.Kind(rawValue: kind), let state = JobState(rawValue: state) else {
                throw PostgresStoreError("job \(job) has an event this version does not know: \(kind) to \(state)")
            }
            events.append(
                JobEvent(kind, at: at, state: state, token: token.map(FencingToken.init(rawValue:)), peerPID: pid, detail: detail))
        }
        return events
    }

    // MARK: Job counts

    /// Adds a batch's moves to this host's share of the job counts, in one statement.
    ///
    /// Each host writes only its own rows, and each batch a host has in flight only those of
    /// its own `lane`, so batches never contend for a counter; the fleet's count of a queue
    /// and state is the sum over hosts and lanes (``jobCounts()``), and one row may be
    /// negative (its host completed jobs another host enqueued).
    public func addToCounts(host: String, lane: Int = 0, _ deltas: [(queue: String, state: JobState, delta: Int64)]) async throws {
        let moved = deltas.filter { $0.delta != 0 }
        guard !moved.isEmpty else { return }
        try await self.connection.query(
            """
            INSERT INTO job_counts (host, lane, queue, state, n)
            SELECT \(host), \(Int16(clamping: lane)), queue, state, sum(delta)
            FROM unnest(\(moved.map(\.queue))::text[], \(moved.map(\.state.rawValue))::text[], \(moved.map(\.delta))::bigint[])
                AS d(queue, state, delta)
            GROUP BY queue, state
            ORDER BY queue, state
            ON CONFLICT (host, lane, queue, state) DO UPDATE SET n = job_counts.n + excluded.n
            """, logger: self.logger)
    }

    /// How many jobs each queue holds in each state, fleet-wide: O(hosts × queues × states),
    /// whatever the number of jobs.
    public func jobCounts() async throws -> [String: [JobState: Int]] {
        let rows = try await self.connection.query(
            "SELECT queue, state, sum(n)::bigint FROM job_counts GROUP BY queue, state HAVING sum(n) <> 0", logger: self.logger)
        var counts: [String: [JobState: Int]] = [:]
        for try await (queue, state, n) in rows.decode((String, String, Int64).self) {
            guard let state = JobState(rawValue: state) else { continue }
            counts[queue, default: [:]][state] = Int(n)
        }
        return counts
    }

    // MARK: Hosts

    /// Records that `host` is alive, now on the database's clock.
    public func hostSeen(_ host: String, startedAt: Int64) async throws {
        try await self.connection.query(
            """
            INSERT INTO hosts (name, started_at, seen_at) VALUES (\(host), \(startedAt), baton_now_ms())
            ON CONFLICT (name) DO UPDATE SET started_at = excluded.started_at, seen_at = excluded.seen_at
            """, logger: self.logger)
    }

    /// The hosts seen within the last `milliseconds`, by name.
    public func hosts(seenWithin milliseconds: Int64) async throws -> [FleetHost] {
        let rows = try await self.connection.query(
            "SELECT name, started_at, seen_at FROM hosts WHERE seen_at > baton_now_ms() - \(milliseconds) ORDER BY name",
            logger: self.logger)
        var hosts: [FleetHost] = []
        for try await (name, startedAt, seenAt) in rows.decode((String, Int64, Int64).self) {
            hosts.append(FleetHost(name: name, startedAt: startedAt, seenAt: seenAt))
        }
        return hosts
    }

    // MARK: Fleet chores

    /// A chore that one host at a time does for the fleet.
    public enum Chore: Int64, Sendable {
        /// Deleting finished jobs past their retention.
        case retention = 0x62_61_74_6F_6E_01
    }

    /// Takes the chore for the rest of this transaction if no other host has it now.
    ///
    /// - Returns: whether this host has it; `false` means another host is doing it.
    public func take(_ chore: Chore) async throws -> Bool {
        try await self.connection.query("SELECT pg_try_advisory_xact_lock(\(chore.rawValue))", logger: self.logger)
            .first(Bool.self) ?? false
    }

    // MARK: Retention

    /// Deletes up to `limit` finished jobs that finished before their cut-off (wall-clock
    /// milliseconds), oldest first, with their events and the records of what waited on them,
    /// and counts them to `host` (see ``prunedCount()``).
    ///
    /// - Returns: each deleted job's queue and state.
    public func pruneFinishedJobs(
        completedBefore: Int64, failedBefore: Int64, limit: Int, host: String = ""
    ) async throws -> [(queue: String, state: JobState)] {
        let rows = try await self.connection.query(
            """
            WITH gone AS (
                DELETE FROM jobs WHERE id IN (
                    SELECT id FROM jobs WHERE finished_at IS NOT NULL
                        AND finished_at < CASE state WHEN 'completed' THEN \(completedBefore) ELSE \(failedBefore) END
                    ORDER BY finished_at LIMIT \(limit) FOR UPDATE SKIP LOCKED)
                RETURNING id, queue, state
            ),
            events AS (DELETE FROM job_events WHERE job_id IN (SELECT id FROM gone)),
            dependents AS (DELETE FROM job_dependencies WHERE depends_on IN (SELECT id FROM gone)),
            counted AS (UPDATE hosts SET pruned = pruned + (SELECT count(*) FROM gone) WHERE name = \(host))
            SELECT queue, state FROM gone
            """, logger: self.logger)
        var pruned: [(queue: String, state: JobState)] = []
        for try await (queue, state) in rows.decode((String, String).self) {
            if let state = JobState(rawValue: state) { pruned.append((queue, state)) }
        }
        return pruned
    }

    // MARK: Recurring jobs

    /// Creates or replaces a schedule; a replaced one keeps its last job, for `overlap`.
    public func saveSchedule(_ schedule: RecurringSchedule) async throws {
        let rule = schedule.storedRule
        try await self.connection.query(
            """
            INSERT INTO schedules (name, queue, payload, priority, cron, timezone, every_ms, anchor, overlap, catch_up, next_at, last_job, trace)
            VALUES (\(schedule.name), \(schedule.queue), \(schedule.payload), \(schedule.priority), \(rule.cron), \(rule.timeZone),
                \(rule.every), \(rule.anchor), \(schedule.overlap.rawValue), \(schedule.catchUp.rawValue), \(schedule.nextAt), \(schedule.lastJob),
                \(schedule.trace?.stored))
            ON CONFLICT (name) DO UPDATE SET queue = excluded.queue, payload = excluded.payload, priority = excluded.priority,
                cron = excluded.cron, timezone = excluded.timezone, every_ms = excluded.every_ms, anchor = excluded.anchor,
                overlap = excluded.overlap, catch_up = excluded.catch_up, next_at = excluded.next_at,
                last_job = coalesce(excluded.last_job, schedules.last_job), trace = excluded.trace
            """, logger: self.logger)
    }

    /// Deletes a schedule; whether there was one.
    public func deleteSchedule(named name: String) async throws -> Bool {
        try await self.connection.query("DELETE FROM schedules WHERE name = \(name) RETURNING name", logger: self.logger)
            .first(String.self) != nil
    }

    /// Every schedule, by name.
    public func schedules() async throws -> [RecurringSchedule] {
        try await self.schedules(try await self.connection.query(
            "SELECT \(unescaped: Self.scheduleColumns) FROM schedules ORDER BY name", logger: self.logger))
    }

    /// Up to `limit` schedules whose next slot is at or before `now`, earliest first, locked:
    /// rows another host is firing are skipped.
    public func dueSchedules(now: Int64, limit: Int) async throws -> [RecurringSchedule] {
        try await self.schedules(try await self.connection.query(
            """
            SELECT \(unescaped: Self.scheduleColumns) FROM schedules WHERE next_at <= \(now)
            ORDER BY next_at LIMIT \(limit) FOR UPDATE SKIP LOCKED
            """, logger: self.logger))
    }

    /// Records that a schedule's slot `slot` was dealt with, where it is still the next one.
    public func scheduleFired(_ name: String, slot: Int64, next: Int64?, job: Int64?) async throws {
        try await self.connection.query(
            """
            UPDATE schedules SET next_at = \(next), last_job = coalesce(\(job), last_job) WHERE name = \(name) AND next_at = \(slot)
            """, logger: self.logger)
    }

    /// The earliest next slot of any schedule.
    public func nextScheduleAt() async throws -> Int64? {
        try await self.connection.query(
            "SELECT next_at FROM schedules WHERE next_at IS NOT NULL ORDER BY next_at LIMIT 1", logger: self.logger
        ).first(Int64.self)
    }

    static let scheduleColumns = "name, queue, payload, priority, cron, timezone, every_ms, anchor, overlap, catch_up, next_at, last_job, trace"

    private func schedules(_ rows: PostgresRowSequence) async throws -> [RecurringSchedule] {
        var schedules: [RecurringSchedule] = []
        for try await (name, queue, payload, priority, cron, zone, every, anchor, overlap, catchUp, nextAt, lastJob, trace) in rows.decode(
            (String, String, String, Int64, String?, String?, Int64?, Int64?, String, String, Int64?, Int64?, String?).self)
        {
            do {
                var schedule = RecurringSchedule(
                    name: name, queue: queue, payload: payload, priority: priority,
                    rule: try RecurringSchedule.rule(cron: cron, timeZone: zone, every: every, anchor: anchor),
                    overlap: RecurringSchedule.Overlap(rawValue: overlap) ?? .allow, catchUp: RecurringSchedule.CatchUp(rawValue: catchUp) ?? .none,
                    nextAt: nextAt, lastJob: lastJob)
                schedule.trace = TraceContext(stored: trace)
                schedules.append(schedule)
            } catch {
                throw PostgresStoreError("schedule \(name) cannot be read: \(error)")
            }
        }
        return schedules
    }

    /// The highest job id issued so far (0 for none).
    public func lastJobID() async throws -> Int64 {
        try await self.connection.query("SELECT coalesce(max(id), 0)::bigint FROM jobs", logger: self.logger).first(Int64.self) ?? 0
    }

    /// Up to `limit` ids, in order, of the jobs among ids `after`+1 through `through` that
    /// `change` matches: one walk of that primary-key range, whatever the table holds.
    public func bulkMatches(_ change: BulkChange, after: Int64, through: Int64, limit: Int) async throws -> [Int64] {
        var ids: [Int64] = []
        for try await id in try await self.connection.query(
            """
            SELECT id FROM jobs WHERE id > \(after) AND id <= \(through) AND queue = \(change.queue) AND state = \(change.state.rawValue)
                AND (\(change.errorContains)::text IS NULL OR strpos(last_error, \(change.errorContains)::text) > 0)
            ORDER BY id LIMIT \(limit)
            """, logger: self.logger
        ).decode(Int64.self) {
            ids.append(id)
        }
        return ids
    }

    /// Deletes those of `ids` that are finished, with their events and the records of what
    /// waited on them: an operator's purge.
    ///
    /// - Returns: each deleted job's queue and state.
    public func deleteFinishedJobs(_ ids: [Int64]) async throws -> [(queue: String, state: JobState)] {
        guard !ids.isEmpty else { return [] }
        let rows = try await self.connection.query(
            """
            WITH gone AS (
                DELETE FROM jobs WHERE id = ANY(\(ids)::bigint[]) AND finished_at IS NOT NULL RETURNING id, queue, state
            ),
            events AS (DELETE FROM job_events WHERE job_id IN (SELECT id FROM gone)),
            dependents AS (DELETE FROM job_dependencies WHERE depends_on IN (SELECT id FROM gone))
            SELECT queue, state FROM gone
            """, logger: self.logger)
        var deleted: [(queue: String, state: JobState)] = []
        for try await (queue, state) in rows.decode((String, String).self) {
            if let state = JobState(rawValue: state) { deleted.append((queue, state)) }
        }
        return deleted
    }

    /// Finished jobs retention has deleted, fleet-wide.
    public func prunedCount() async throws -> Int64 {
        try await self.connection.query("SELECT coalesce(sum(pruned), 0)::bigint FROM hosts", logger: self.logger)
            .first(Int64.self) ?? 0
    }

    // MARK: Reads

    /// The columns every whole-job read selects, in the order ``jobs(_:)`` decodes them.
    static let jobColumns = """
        id, queue, state, payload, priority, run_at, attempts, max_attempts, backoff_initial_ms,
        backoff_factor, backoff_max_ms, lease_ms, unique_key, concurrency_key, checkpoint, progress, result,
        last_error, lease_token, worker, peer_pid, peer_uid, created_at, started_at, finished_at, parent,
        lease_deadline, timeout_ms, limits, fair_group, trace
        """

    /// The whole job, or `nil` when no job has that id.
    public func job(id: Int64) async throws -> Job? {
        try await self.leasedJob(id: id)?.job
    }

    /// A job as it is stored, with the deadline of its live lease while it runs.
    public struct LeasedJob: Sendable {
        public var job: Job
        /// When the running attempt's lease runs out, on the database's clock.
        public var leaseDeadline: Int64?
    }

    /// The whole job with its lease deadline, or `nil` when no job has that id.
    ///
    /// - Parameter locking: lock the row until the transaction ends, for a change decided
    ///   from what is read (an operator's move), so that no other host moves it meanwhile.
    public func leasedJob(id: Int64, locking: Bool = false) async throws -> LeasedJob? {
        try await self.jobs(
            self.connection.query(
                "SELECT \(unescaped: Self.jobColumns) FROM jobs WHERE id = \(id) \(unescaped: locking ? "FOR UPDATE" : "")",
                logger: self.logger)
        ).first
    }

    /// The earliest time something falls due: a lease deadline or a scheduled job's `run_at`.
    public func nextDue() async throws -> Int64? {
        try await self.run(NextDue()).first(Int64?.self).flatMap { $0 }
    }

    private struct NextDue: PreparedBatchStatement {
        static let name = "baton_next_due"
        // The first entry of each index, not min(): planned while the table was small,
        // min() read the whole index.
        static let sql = """
            SELECT least(
                (SELECT lease_deadline FROM jobs WHERE state = 'running' ORDER BY lease_deadline LIMIT 1),
                (SELECT run_at FROM jobs WHERE NOT ready AND state IN ('queued', 'retrying') AND waiting_on = 0
                    ORDER BY run_at LIMIT 1))
            """
        func makeBindings() -> PostgresBindings { PostgresBindings() }
    }

    /// A page of jobs by id, newest or oldest first, optionally of one queue and state and
    /// with text in the last error (``JobListing``), walking the primary key from the cursor,
    /// and the cursor for the next page. One filtered by error text reads at most
    /// ``JobListing/scanLimit`` ids.
    public func listJobs(_ listing: JobListing) async throws -> (jobs: [LeasedJob], next: Int64?) {
        let (start, queue, state, text) = (listing.start, listing.queue, listing.state?.rawValue, listing.errorContains)
        // Two texts, not a CASE: the planner walks the primary key in the page's direction.
        let (comparison, order, bound) = listing.oldestFirst ? (">", "ASC", "<=") : ("<", "DESC", ">=")
        // Where a scan for error text stops: the last id of the window it may read.
        var scanEnd: Int64?
        if text != nil {
            let rows = try await self.connection.query(
                """
                SELECT id FROM jobs
                WHERE id \(unescaped: comparison) \(start)
                    AND (\(queue)::text IS NULL OR queue = \(queue)) AND (\(state)::text IS NULL OR state = \(state))
                ORDER BY id \(unescaped: order) LIMIT 1 OFFSET \(JobListing.scanLimit - 1)
                """, logger: self.logger)
            for try await id in rows.decode(Int64.self) { scanEnd = id }
        }
        let jobs = try await self.jobs(
            self.connection.query(
                """
                SELECT \(unescaped: Self.jobColumns) FROM jobs
                WHERE id \(unescaped: comparison) \(start)
                    AND (\(queue)::text IS NULL OR queue = \(queue)) AND (\(state)::text IS NULL OR state = \(state))
                    AND (\(scanEnd)::bigint IS NULL OR id \(unescaped: bound) \(scanEnd))
                    AND (\(text)::text IS NULL OR strpos(last_error, \(text)::text) > 0)
                ORDER BY id \(unescaped: order) LIMIT \(listing.limit)
                """, logger: self.logger))
        return (jobs, listing.next(found: jobs.map(\.job.id), scanEnd: scanEnd))
    }

    /// The trace contexts of those of `ids` that carry one, for the spans of their ended attempts.
    public func traces(of ids: [Int64]) async throws -> [Int64: StoredTrace] {
        var traces: [Int64: StoredTrace] = [:]
        guard !ids.isEmpty else { return traces }
        let rows = try await self.connection.query(
            "SELECT id, trace, attempts, started_at FROM jobs WHERE id = ANY(\(ids)) AND trace IS NOT NULL", logger: self.logger)
        for try await (id, stored, attempts, startedAt) in rows.decode((Int64, String, Int, Int64?).self) {
            guard let trace = TraceContext(stored: stored) else { continue }
            traces[id] = StoredTrace(trace: trace, attempts: attempts, startedAt: startedAt)
        }
        return traces
    }

    /// Jobs read with ``jobColumns``.
    private func jobs(_ rows: PostgresRowSequence) async throws -> [LeasedJob] {
        var jobs: [LeasedJob] = []
        for try await (
            id, queue, stateName, payload, priority, runAt, attempts, maxAttempts, initial, factor, maximum, lease,
            uniqueKey, concurrencyKey, checkpoint, progress, result, lastError, token, worker, pid, uid,
            createdAt, startedAt, finishedAt, parent, deadline, timeout, limits, group, trace
        ) in rows.decode(
            (Int64, String, String, String, Int64, Int64, Int, Int, Int64, Double, Int64, Int64,
             String?, String?, String?, String?, String?, String?, Int64?, String?, Int32?, Int64?,
             Int64, Int64?, Int64?, Int64?, Int64?, Int64?, String?, String?, String?).self)
        {
            guard let state = JobState(rawValue: stateName) else {
                throw PostgresStoreError("job \(id) has a state this version does not know: '\(stateName)'")
            }
            var job = Job(
                id: id, queue: queue, state: state, payload: payload, priority: priority, runAt: runAt,
                attempts: attempts, maxAttempts: maxAttempts,
                backoff: BackoffPolicy(initialMilliseconds: initial, factor: factor, maximumMilliseconds: maximum),
                leaseMilliseconds: lease, uniqueKey: uniqueKey, concurrencyKey: concurrencyKey, checkpoint: checkpoint,
                progress: progress, result: result, lastError: lastError, leaseToken: token.map(FencingToken.init(rawValue:)),
                worker: worker, peer: pid.map { PeerIdentity(pid: $0, uid: UInt32(truncatingIfNeeded: uid ?? 0)) },
                createdAt: createdAt, startedAt: startedAt, finishedAt: finishedAt, parent: parent, timeoutMilliseconds: timeout
            )
            job.limits = NamedLimits.names(inText: limits)
            job.group = group
            job.trace = TraceContext(stored: trace)
            jobs.append(LeasedJob(job: job, leaseDeadline: state == .running ? deadline : nil))
        }
        return jobs
    }

    /// What decides how a refused fenced request is answered, and who may touch a job.
    public struct LeaseFacts: Sendable {
        public var queue: String
        public var state: JobState
        /// The latest lease's token; it stays after the job stops running.
        public var token: FencingToken?
        public var lastError: String?
        /// The uid of the process holding the lease, while the job runs.
        public var holder: UInt32?
        /// Whether the job is running and its lease has run out, on the database's clock.
        public var overdue: Bool
        /// For an overdue lease that ran into the attempt's time limit: the limit.
        public var timedOutAfter: Int64?
    }

    /// The lease facts of the jobs among `ids` that exist, with one statement.
    public func leaseFacts(of ids: [Int64]) async throws -> [Int64: LeaseFacts] {
        var facts: [Int64: LeaseFacts] = [:]
        guard !ids.isEmpty else { return facts }
        for try await (id, queue, state, token, lastError, uid, overdue, timedOutAfter) in try await self.connection.query(
            """
            SELECT id, queue, state, lease_token, last_error, CASE WHEN state = 'running' THEN peer_uid END,
                state = 'running' AND lease_deadline <= baton_now_ms(),
                CASE WHEN state = 'running' AND timeout_at <= baton_now_ms() THEN timeout_at - started_at END
            FROM jobs WHERE id = ANY(\(ids)::bigint[])
            """, logger: self.logger
        ).decode((Int64, String, String, Int64?, String?, Int64?, Bool, Int64?).self) {
            guard let state = JobState(rawValue: state) else { continue }
            facts[id] = LeaseFacts(
                queue: queue, state: state, token: token.map(FencingToken.init(rawValue:)), lastError: lastError,
                holder: uid.map { UInt32(truncatingIfNeeded: $0) }, overdue: overdue, timedOutAfter: timedOutAfter)
        }
        return facts
    }

    /// The queues with settings: which are paused, and each limited one's limit and running jobs.
    public struct QueueAdmission: Sendable {
        public var paused: [String] = []
        public var limits: [(queue: String, maxRunning: Int, running: Int)] = []
    }

    /// Every queue's settings, fleet-wide: O(queues with settings).
    public func queueAdmission() async throws -> QueueAdmission {
        var settings = QueueAdmission()
        for try await (name, paused, limit, running) in try await self.connection.query(
            """
            SELECT q.name, q.paused, q.max_running,
                CASE WHEN q.max_running IS NULL THEN 0 ELSE (SELECT count(*) FROM jobs WHERE queue = q.name AND state = 'running') END
            FROM queues q ORDER BY q.name
            """, logger: self.logger
        ).decode((String, Bool, Int?, Int).self) {
            if paused { settings.paused.append(name) }
            if let limit { settings.limits.append((name, limit, running)) }
        }
        return settings
    }

    /// How far the earliest lease deadline is overdue now, fleet-wide (0 when none is).
    public func expiryLag() async throws -> Int64 {
        try await self.connection.query(
            """
            SELECT greatest(baton_now_ms() - (SELECT lease_deadline FROM jobs WHERE state = 'running'
                ORDER BY lease_deadline LIMIT 1), 0)::bigint
            """,
            logger: self.logger
        ).first(Int64?.self).flatMap { $0 } ?? 0
    }

    /// Running jobs that started before `startedBefore`, longest-running first, at most `limit`.
    public func runningSince(before startedBefore: Int64, limit: Int) async throws -> [(id: Int64, queue: String, startedAt: Int64)] {
        var jobs: [(id: Int64, queue: String, startedAt: Int64)] = []
        for try await (id, queue, startedAt) in try await self.connection.query(
            """
            SELECT id, queue, started_at FROM jobs WHERE state = 'running' AND started_at < \(startedBefore)
            ORDER BY started_at LIMIT \(limit)
            """, logger: self.logger
        ).decode((Int64, String, Int64).self) {
            jobs.append((id, queue, startedAt))
        }
        return jobs
    }

    /// Which of `ids` are running under a lease this host granted.
    public func runningHere(_ ids: [Int64], host: String) async throws -> Set<Int64> {
        var running = Set<Int64>()
        guard !ids.isEmpty else { return running }
        for try await id in try await self.connection.query(
            "SELECT id FROM jobs WHERE id = ANY(\(ids)::bigint[]) AND state = 'running' AND lease_host = \(host)",
            logger: self.logger
        ).decode(Int64.self) {
            running.insert(id)
        }
        return running
    }

    /// The jobs a job's completion enqueued, by id.
    public func followUps(of id: Int64) async throws -> [Int64] {
        var ids: [Int64] = []
        for try await child in try await self.connection.query(
            "SELECT id FROM jobs WHERE parent = \(id) ORDER BY id", logger: self.logger
        ).decode(Int64.self) {
            ids.append(child)
        }
        return ids
    }

    /// A queue's longest-waiting ready job and when it became due: one probe of an index.
    public func oldestReady(queue: String) async throws -> (job: Int64, runAt: Int64)? {
        try await self.oldestReady(queues: [queue])[queue]
    }

    /// Each of `queues`' longest-waiting ready job and when it became due, for those that
    /// have one: one statement, one index probe per queue, however many queues there are
    /// (a round trip per queue held a batch for seconds at thousands of queues).
    public func oldestReady(queues: [String]) async throws -> [String: (job: Int64, runAt: Int64)] {
        guard !queues.isEmpty else { return [:] }
        let rows = try await self.connection.query(
            """
            SELECT q.name, o.id, o.run_at FROM unnest(\(queues)::text[]) AS q(name)
            CROSS JOIN LATERAL (
                SELECT id, run_at FROM jobs WHERE ready AND run_at IS NOT NULL AND queue = q.name ORDER BY run_at LIMIT 1
            ) o
            """, logger: self.logger)
        var oldest: [String: (job: Int64, runAt: Int64)] = [:]
        for try await (queue, id, runAt) in rows.decode((String, Int64, Int64).self) { oldest[queue] = (id, runAt) }
        return oldest
    }

    /// The earliest `run_at` among jobs waiting for their time.
    public func nextScheduledRunAt() async throws -> Int64? {
        try await self.connection.query(
            "SELECT min(run_at) FROM jobs WHERE NOT ready AND state IN ('queued', 'retrying') AND waiting_on = 0",
            logger: self.logger
        ).first(Int64?.self) ?? nil
    }

    // MARK: Dependencies

    /// The states of the jobs a new job names in `after`; a missing id has no entry.
    ///
    /// The rows are share-locked until the transaction ends: a dependency that another
    /// host is completing right now is either seen completed here, or its completion waits
    /// for this transaction and then counts the new dependent.
    public func states(of ids: [Int64]) async throws -> [Int64: JobState] {
        var states: [Int64: JobState] = [:]
        guard !ids.isEmpty else { return states }
        for try await (id, state) in try await self.connection.query(
            "SELECT id, state FROM jobs WHERE id = ANY(\(ids)::bigint[]) FOR SHARE", logger: self.logger
        ).decode((Int64, String).self) {
            states[id] = JobState(rawValue: state)
        }
        return states
    }

    /// Records that `job` waits for `dependencies` (unfinished ones, share-locked by
    /// ``states(of:)``) and holds it back; marks them as having dependents.
    public func addDependencies(job: Int64, on dependencies: [Int64]) async throws {
        try await self.connection.query(
            """
            WITH added AS (
                INSERT INTO job_dependencies (job_id, depends_on)
                SELECT \(job), depends_on FROM unnest(\(dependencies)::bigint[]) AS d(depends_on)
                ON CONFLICT DO NOTHING RETURNING depends_on
            ),
            marked AS (
                UPDATE jobs SET has_dependents = true WHERE id IN (SELECT depends_on FROM added) AND NOT has_dependents
            )
            UPDATE jobs SET waiting_on = (SELECT count(*) FROM added), ready = false WHERE id = \(job)
            """, logger: self.logger)
    }

    /// Counts one dependency of each of `dependency`'s dependents as done; see
    /// ``dependenciesCompleted(_:)``.
    public func dependencyCompleted(_ dependency: Int64) async throws -> [(id: Int64, queue: String, runAt: Int64)] {
        try await self.dependenciesCompleted([dependency])
    }

    /// Counts the completed `dependencies` as done for each of their dependents, with one
    /// statement for a whole batch's completions.
    ///
    /// - Returns: the dependents now waiting on nothing, with their queue and `run_at`; the
    ///   ones whose time has come are already marked ready.
    public func dependenciesCompleted(_ dependencies: [Int64]) async throws -> [(id: Int64, queue: String, runAt: Int64)] {
        var freed: [(id: Int64, queue: String, runAt: Int64)] = []
        guard !dependencies.isEmpty else { return freed }
        for try await (id, queue, runAt, waiting) in try await self.connection.query(
            """
            UPDATE jobs SET waiting_on = waiting_on - done.n,
                ready = (waiting_on - done.n = 0 AND run_at <= baton_now_ms() AND state IN ('queued', 'retrying'))
            FROM (
                SELECT job_id, count(*)::integer AS n FROM job_dependencies
                WHERE depends_on = ANY(\(dependencies)::bigint[]) GROUP BY job_id
            ) done
            WHERE jobs.id = done.job_id AND waiting_on > 0
            RETURNING id, queue, run_at, waiting_on
            """, logger: self.logger
        ).decode((Int64, String, Int64, Int).self) where waiting == 0 {
            freed.append((id, queue, runAt))
        }
        return freed
    }

    /// The unfinished jobs that wait on `dependency`.
    public func unfinishedDependents(of dependency: Int64) async throws -> [(id: Int64, state: JobState, queue: String)] {
        var dependents: [(id: Int64, state: JobState, queue: String)] = []
        for try await (id, state, queue) in try await self.connection.query(
            """
            SELECT j.id, j.state, j.queue FROM job_dependencies d JOIN jobs j ON j.id = d.job_id
            WHERE d.depends_on = \(dependency) AND j.finished_at IS NULL ORDER BY j.id
            """, logger: self.logger
        ).decode((Int64, String, String).self) {
            if let state = JobState(rawValue: state) { dependents.append((id, state, queue)) }
        }
        return dependents
    }

    // MARK: All or nothing

    /// Runs `body` all or nothing within the transaction (a savepoint): if it throws,
    /// every write it made is undone and the rest of the transaction is untouched.
    public func atomically<T>(_ body: () async throws -> T) async throws -> T {
        try await self.connection.query("SAVEPOINT baton_atomically", logger: self.logger)
        do {
            let value = try await body()
            try await self.connection.query("RELEASE SAVEPOINT baton_atomically", logger: self.logger)
            return value
        } catch {
            try await self.connection.query("ROLLBACK TO SAVEPOINT baton_atomically", logger: self.logger)
            throw error
        }
    }
}
