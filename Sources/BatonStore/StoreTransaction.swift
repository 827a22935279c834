import BatonCore
import GRDB

/// The store's operations, valid inside one ``JobStore/write(_:)`` transaction.
///
/// Every write here is a single SQL statement guarded by the state it expects (and, for
/// fenced writes, the lease token), so a write either applies whole or not at all, and
/// an operation that fails leaves the rest of its batch untouched. Statements are cached:
/// each is compiled once per connection.
public struct StoreTransaction {
    let db: Database

    /// Rows inserted, updated or deleted on this connection so far: two readings tell
    /// whether a transaction wrote anything.
    public var totalChanges: Int { self.db.totalChangesCount }
    let prepared: PreparedStatements

    // MARK: Enqueue

    /// Inserts a queued job under an id from the job id sequence.
    ///
    /// - Parameter now: wall-clock milliseconds; the job is ready at once if `runAt <= now`.
    public func insert(_ job: NewJob, id: Int64, now: Int64) throws {
        let statement = try DirectStatement(self, .insertJob)
        statement.bind(1, id)
        statement.bind(2, job.queue)
        statement.bind(3, job.runAt <= now)
        statement.bind(4, job.payload)
        statement.bind(5, job.priority)
        statement.bind(6, job.runAt)
        statement.bind(7, Int64(job.maxAttempts))
        statement.bind(8, job.backoff.initialMilliseconds)
        statement.bind(9, job.backoff.factor)
        statement.bind(10, job.backoff.maximumMilliseconds)
        statement.bind(11, job.leaseMilliseconds)
        statement.bind(12, job.uniqueKey)
        statement.bind(13, now)
        statement.bind(14, job.concurrencyKey)
        statement.bind(15, job.parent)
        statement.bind(16, job.timeoutMilliseconds)
        statement.bind(17, NamedLimits.text(of: job.limits))
        statement.bind(18, job.group)
        statement.bind(19, job.trace?.stored)
        _ = try statement.execute()
    }

    /// The trace contexts of those of `ids` that carry one, for the spans of their ended
    /// attempts: a primary-key lookup each.
    public func traces(of ids: [Int64]) throws -> [Int64: StoredTrace] {
        var traces: [Int64: StoredTrace] = [:]
        guard !ids.isEmpty else { return traces }
        let statement = try self.db.cachedStatement(sql: "SELECT trace, attempts, started_at FROM jobs WHERE id = ? AND trace IS NOT NULL")
        for id in ids {
            guard let row = try Row.fetchOne(statement, arguments: [id]), let trace = TraceContext(stored: row[0]) else { continue }
            traces[id] = StoredTrace(trace: trace, attempts: row[1], startedAt: row[2])
        }
        return traces
    }

    /// The jobs a job's completion enqueued, oldest first: one search of `jobs_parent`.
    public func followUps(of id: Int64) throws -> [Int64] {
        let statement = try self.db.cachedStatement(sql: "SELECT id FROM jobs WHERE parent = ? ORDER BY id")
        return try Int64.fetchAll(statement, arguments: [id])
    }

    /// The unfinished job holding a unique key in a queue, if any.
    public func unfinishedJob(queue: String, uniqueKey: String) throws -> Int64? {
        // The predicate repeats the partial index's, so SQLite answers from the index.
        let statement = try self.db.cachedStatement(
            sql: """
                SELECT id FROM jobs
                WHERE queue = ? AND unique_key = ?
                  AND unique_key IS NOT NULL AND finished_at IS NULL
                """
        )
        return try Int64.fetchOne(statement, arguments: [queue, uniqueKey])
    }

    // MARK: Claim

    /// A ready job, as the claim index shows it.
    public struct ReadyJob: Sendable {
        public var id: Int64
        public var priority: Int64
        public var concurrencyKey: String?
        public var limits: [String]
        public var group: String?

        /// Whether a claim must ask about it: it holds a key or names limits.
        public var isGated: Bool { self.concurrencyKey != nil || !self.limits.isEmpty }
    }

    /// The best ready job of one queue that `admits` lets start: highest priority, then
    /// lowest id.
    ///
    /// A walk of the `jobs_ready` index from its best entry: O(log n) however many jobs
    /// wait, plus one step for each better job passed over because its concurrency key is
    /// held or a limit it names is full (`admits` is asked only about jobs that have a key
    /// or limits).
    public func bestReadyJob(queue: String, admits: (ReadyJob) -> Bool) throws -> ReadyJob? {
        let statement = try DirectStatement(self, .bestReadyJob)
        statement.bind(1, queue)
        return try statement.firstAccepted { row in Self.readyJob(row, admits) }
    }

    /// The first ready job of `queue` at `priority` whose group sorts after `group` (or,
    /// `nil`, any group), that `admits` lets start: by group, then lowest id. A walk of
    /// `jobs_ready_groups`: how claims rotate across groups.
    public func nextGroupJob(queue: String, priority: Int64, after group: String?, admits: (ReadyJob) -> Bool) throws -> ReadyJob? {
        let statement = try DirectStatement(self, .nextGroupJob)
        statement.bind(1, queue)
        statement.bind(2, priority)
        statement.bind(3, group ?? "")
        return try statement.firstAccepted { row in Self.readyJob(row, admits) }
    }

    private static func readyJob(_ row: DirectStatement, _ admits: (ReadyJob) -> Bool) -> ReadyJob? {
        let job = ReadyJob(
            id: row.int64(0), priority: row.int64(1), concurrencyKey: row.optionalString(2),
            limits: NamedLimits.names(inText: row.optionalString(3)), group: row.optionalString(4)
        )
        if job.isGated, !admits(job) { return nil }
        return job
    }

    /// Moves a ready job to `running` under a new lease, and returns what its worker needs.
    ///
    /// The claim's audit event is not written here: the row itself records the claim
    /// (`started_at`, `lease_token`, `worker`, `peer_pid`) under the event number
    /// `claimEvent`, and ``events(of:)`` reads it from there. The event row is written only
    /// if the attempt ends other than by completing, before the next claim overwrites those
    /// columns; so a job that completes at its first attempt costs no event row at all.
    ///
    /// A read of the row and then its update, rather than one `UPDATE … RETURNING`:
    /// SQLite gathers returned rows in a temporary b-tree it opens and closes for every
    /// statement, which cost more than the claim's own write.
    ///
    /// - Parameter leaseMilliseconds: the lease period, or `nil` for the job's own.
    /// - Returns: what the worker needs, and the state the job was claimed from (`queued`
    ///   or `retrying`); `nil` when the job was not ready.
    public func markClaimed(
        id: Int64, token: FencingToken, leaseMilliseconds: Int64?,
        worker: String?, peer: PeerIdentity?, claimEvent: Int64, now: Int64
    ) throws -> (job: ClaimedJob, from: JobState)? {
        let read = try DirectStatement(self, .claimRead)
        read.bind(1, id)
        guard
            let (claimed, fromName) = try read.firstRow({ row in
                (ClaimedJob(
                    id: id,
                    queue: row.string(0),
                    payload: row.string(1),
                    attempt: Int(row.int64(2)) + 1,
                    maxAttempts: Int(row.int64(3)),
                    leaseMilliseconds: row.int64(4),
                    checkpoint: row.optionalString(5),
                    progress: row.optionalString(6),
                    dueAt: row.int64(7),
                    timeoutMilliseconds: row.optionalInt64(9),
                    trace: TraceContext(stored: row.optionalString(10))
                ), row.string(8))
            })
        else { return nil }
        // A ready row is waiting to run; anything else is a store this version cannot read.
        // The update needs no state guard of its own: this read, in the same transaction
        // of the only writer, found the state (a store with several writers must guard both).
        guard let from = JobState(rawValue: fromName), JobMove.claim.from.contains(from) else {
            throw StoreError("job \(id) is ready to claim but its state is '\(fromName)'")
        }
        var job = claimed
        job.leaseMilliseconds = leaseMilliseconds ?? job.leaseMilliseconds
        let update = try DirectStatement(self, .claimUpdate)
        update.bind(1, Int64(job.attempt))
        update.bind(2, token.rawValue)
        update.bind(3, job.leaseMilliseconds)
        update.bind(4, worker)
        update.bind(5, peer.map { Int64($0.pid) })
        update.bind(6, peer.map { Int64($0.uid) })
        update.bind(7, now)
        update.bind(8, claimEvent)
        update.bind(9, id)
        _ = try update.execute()
        return (job, from)
    }

    // MARK: Fenced writes

    /// Stores a checkpoint (and progress) for the running job holding `token`.
    ///
    /// - Returns: whether the job was running under that token.
    public func saveCheckpoint(id: Int64, token: FencingToken, state: String, progress: String?) throws -> Bool {
        let statement = try self.db.cachedStatement(
            sql: """
                UPDATE jobs SET checkpoint = ?, progress = coalesce(?, progress)
                WHERE id = ? AND state = 'running' AND lease_token = ?
                """
        )
        try statement.execute(arguments: [state, progress, id, token.rawValue])
        return self.db.changesCount == 1
    }

    /// Stores progress for the running job holding `token`.
    public func saveProgress(id: Int64, token: FencingToken, progress: String) throws -> Bool {
        let statement = try self.db.cachedStatement(
            sql: "UPDATE jobs SET progress = ? WHERE id = ? AND state = 'running' AND lease_token = ?"
        )
        try statement.execute(arguments: [progress, id, token.rawValue])
        return self.db.changesCount == 1
    }

    /// Moves the running job holding `token` to `completed`.
    ///
    /// - Returns: whether the job was running under that token.
    public func markCompleted(id: Int64, token: FencingToken, result: String?, now: Int64) throws -> Bool {
        let statement = try DirectStatement(self, .complete)
        statement.bind(1, result)
        statement.bind(2, now)
        statement.bind(3, id)
        statement.bind(4, token.rawValue)
        return try statement.execute() == 1
    }

    /// Ends the running job's attempt unsuccessfully: to `retrying` at `decision`'s time, or `failed`.
    public func markUnsuccessful(
        id: Int64, token: FencingToken, decision: RetryDecision, error: String, now: Int64
    ) throws -> Bool {
        try self.keepClaimEvent(of: id, token: token)
        switch decision {
        case .retry(let runAt):
            let statement = try self.db.cachedStatement(sql: Self.retrySQL)
            try statement.execute(arguments: [runAt <= now, runAt, error, id, token.rawValue])
        case .fail:
            let statement = try self.db.cachedStatement(sql: Self.failSQL)
            try statement.execute(arguments: [error, now, id, token.rawValue])
        }
        return self.db.changesCount == 1
    }

    /// Hands the running job back to `queued` without spending its attempt.
    ///
    /// - Returns: the job's queue, or `nil` when the job was not running under that token.
    public func markReleased(id: Int64, token: FencingToken, runAt: Int64, now: Int64) throws -> String? {
        try self.keepClaimEvent(of: id, token: token)
        let statement = try self.db.cachedStatement(sql: Self.releaseSQL)
        return try String.fetchOne(statement, arguments: [runAt <= now, runAt, id, token.rawValue])
    }

    /// Moves an unfinished job to `cancelled`, from whatever state it is in.
    ///
    /// - Returns: whether the job was still in `state`.
    public func markCancelled(id: Int64, from state: JobState, reason: String, now: Int64) throws -> Bool {
        try state.checkMove(to: .cancelled)
        if state == .running { try self.keepClaimEvent(of: id, token: nil) }
        let statement = try DirectStatement(
            self.db,
            sql: """
                UPDATE jobs SET state = 'cancelled', ready = 0, last_error = ?, finished_at = ?
                WHERE id = ? AND state = ?
                """
        )
        statement.bind(1, reason)
        statement.bind(2, now)
        statement.bind(3, id)
        statement.bind(4, state.rawValue)
        return try statement.execute() == 1
    }

    /// Moves an unfinished job to `paused`. A running job gets its attempt back, as with
    /// `release`: pausing is an operator's decision, not a failure.
    public func markPaused(id: Int64, from state: JobState) throws -> Bool {
        try state.checkMove(to: .paused)
        if state == .running { try self.keepClaimEvent(of: id, token: nil) }
        let statement = try DirectStatement(
            self.db,
            sql: """
                UPDATE jobs SET state = 'paused', ready = 0,
                    attempts = CASE state WHEN 'running' THEN max(attempts - 1, 0) ELSE attempts END
                WHERE id = ? AND state = ?
                """
        )
        statement.bind(1, id)
        statement.bind(2, state.rawValue)
        return try statement.execute() == 1
    }

    /// Moves a paused job back to `queued`, ready at once unless its `run_at` is still ahead.
    ///
    /// - Returns: the job's queue and `run_at`, or `nil` when it was not paused.
    public func markResumed(id: Int64, now: Int64) throws -> (queue: String, runAt: Int64)? {
        let statement = try DirectStatement(self.db, sql: Self.resumeSQL)
        statement.bind(1, now)
        statement.bind(2, id)
        return try statement.firstRow { ($0.string(0), $0.int64(1)) }
    }

    /// Puts a failed or cancelled job back to `queued` with its attempts reset and its
    /// checkpoint kept: the explicit operator restart.
    ///
    /// - Returns: the job's queue, or `nil` when it was not in `state`.
    public func markRetried(id: Int64, from state: JobState, now: Int64) throws -> String? {
        try state.checkMove(to: .queued)
        let statement = try DirectStatement(
            self.db,
            sql: """
                UPDATE jobs SET state = 'queued', ready = (waiting_on = 0), run_at = ?, attempts = 0, finished_at = NULL
                WHERE id = ? AND state = ?
                RETURNING queue
                """
        )
        statement.bind(1, now)
        statement.bind(2, id)
        statement.bind(3, state.rawValue)
        return try statement.firstRow { $0.string(0) }
    }

    /// Gives an unfinished job a new priority: a ready job moves in the claim order at once
    /// (the ready index is ordered by it), a running one keeps it for its next attempt.
    ///
    /// - Returns: the job's state, or `nil` when it has finished or does not exist.
    public func setPriority(id: Int64, priority: Int64) throws -> JobState? {
        let statement = try DirectStatement(self.db, sql: Self.setPrioritySQL)
        statement.bind(1, priority)
        statement.bind(2, id)
        return try statement.firstRow { $0.string(0) }.flatMap(JobState.init(rawValue:))
    }

    /// Runs `body` all or nothing: if it throws, every write it made is undone and the
    /// rest of the batch's transaction is untouched.
    public func atomically<T>(_ body: () throws -> T) throws -> T {
        var value: T?
        try self.db.inSavepoint {
            value = try body()
            return .commit
        }
        return value!
    }

    // MARK: Queues

    /// The queues that are paused.
    public func pausedQueues() throws -> Set<String> {
        try Set(String.fetchAll(self.db, sql: "SELECT name FROM queues WHERE paused = 1"))
    }

    /// Every queue's settings, for the queues that have any.
    public func queueSettings() throws -> [String: QueueSettings] {
        var settings: [String: QueueSettings] = [:]
        for row in try Row.fetchAll(
            self.db,
            sql: """
                SELECT name, max_running, timeout_ms, breaker_failures, breaker_window_ms, breaker_cooldown_ms FROM queues
                WHERE max_running IS NOT NULL OR timeout_ms IS NOT NULL OR breaker_failures IS NOT NULL
                """
        ) {
            settings[row[0]] = QueueSettings(maxRunning: row[1], timeoutMilliseconds: row[2], breaker: Self.breaker(row[3], row[4], row[5]))
        }
        return settings
    }

    /// Every named limit's settings (`set_limit`), templates included.
    public func limitSettings() throws -> [String: LimitSettings] {
        var settings: [String: LimitSettings] = [:]
        for row in try Row.fetchAll(
            self.db,
            sql: "SELECT name, max_running, rate_count, rate_per_ms, breaker_failures, breaker_window_ms, breaker_cooldown_ms FROM limits"
        ) {
            let count: Int? = row[2]
            let per: Int64? = row[3]
            settings[row[0]] = LimitSettings(
                maxRunning: row[1], rate: count.flatMap { count in per.map { LimitSettings.Rate(count: count, perMilliseconds: $0) } },
                breaker: Self.breaker(row[4], row[5], row[6])
            )
        }
        return settings
    }

    /// How many jobs naming each of `names` wait to run (queued or retrying), and the first
    /// `limit` other names with waiting jobs, by name.
    public func waitingByLimit(_ names: [String], limit: Int) throws -> [String: Int] {
        var waiting: [String: Int] = [:]
        for row in try Row.fetchAll(self.db, sql: "SELECT name, n FROM limit_waiting WHERE n > 0 ORDER BY name LIMIT ?", arguments: [limit]) {
            waiting[row[0]] = row[1]
        }
        let statement = try self.db.cachedStatement(sql: "SELECT n FROM limit_waiting WHERE name = ?")
        for name in names where waiting[name] == nil {
            waiting[name] = try Int.fetchOne(statement, arguments: [name]) ?? 0
        }
        return waiting
    }

    /// Deletes up to `limit` names no job waits on any more from the waiting counts: one
    /// walk of their partial index.
    public func forgetIdleLimitNames(limit: Int) throws {
        try self.db.execute(
            sql: "DELETE FROM limit_waiting WHERE name IN (SELECT name FROM limit_waiting WHERE n <= 0 LIMIT ?)", arguments: [limit])
    }

    /// Stores a named limit's settings, durably; empty settings remove it.
    public func saveLimit(_ name: String, _ settings: LimitSettings) throws {
        guard !settings.isEmpty else {
            try self.db.execute(sql: "DELETE FROM limits WHERE name = ?", arguments: [name])
            return
        }
        try self.db.execute(
            sql: """
                INSERT OR REPLACE INTO limits (name, max_running, rate_count, rate_per_ms, breaker_failures, breaker_window_ms, breaker_cooldown_ms)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                """,
            arguments: [
                name, settings.maxRunning, settings.rate?.count, settings.rate?.perMilliseconds, settings.breaker?.failures,
                settings.breaker?.windowMilliseconds, settings.breaker?.cooldownMilliseconds,
            ]
        )
    }

    /// Applies `change` to a queue's settings, durably; the settings it leaves out stay.
    ///
    /// - Returns: the queue's settings now.
    public func changeQueueSettings(_ queue: String, _ change: QueueSettings.Change) throws -> QueueSettings {
        let statement = try DirectStatement(
            self.db,
            sql: """
                INSERT INTO queues (name, max_running, timeout_ms, breaker_failures, breaker_window_ms, breaker_cooldown_ms)
                VALUES (?1, ?3, ?5, ?7, ?8, ?9) ON CONFLICT (name) DO UPDATE SET
                    max_running = CASE WHEN ?2 THEN excluded.max_running ELSE max_running END,
                    timeout_ms = CASE WHEN ?4 THEN excluded.timeout_ms ELSE timeout_ms END,
                    breaker_failures = CASE WHEN ?6 THEN excluded.breaker_failures ELSE breaker_failures END,
                    breaker_window_ms = CASE WHEN ?6 THEN excluded.breaker_window_ms ELSE breaker_window_ms END,
                    breaker_cooldown_ms = CASE WHEN ?6 THEN excluded.breaker_cooldown_ms ELSE breaker_cooldown_ms END
                RETURNING max_running, timeout_ms, breaker_failures, breaker_window_ms, breaker_cooldown_ms
                """
        )
        statement.bind(1, queue)
        statement.bind(2, change.maxRunning != nil)
        statement.bind(3, (change.maxRunning ?? nil).map { Int64($0) })
        statement.bind(4, change.timeoutMilliseconds != nil)
        statement.bind(5, change.timeoutMilliseconds ?? nil)
        let breaker = change.breaker ?? nil
        statement.bind(6, change.breaker != nil)
        statement.bind(7, breaker.map { Int64($0.failures) })
        statement.bind(8, breaker?.windowMilliseconds)
        statement.bind(9, breaker?.cooldownMilliseconds)
        return try statement.firstRow { row in
            QueueSettings(
                maxRunning: row.optionalInt64(0).map { Int($0) }, timeoutMilliseconds: row.optionalInt64(1),
                breaker: Self.breaker(row.optionalInt64(2), row.optionalInt64(3), row.optionalInt64(4)))
        }!
    }

    /// A breaker's settings from their columns.
    static func breaker(_ failures: Int64?, _ window: Int64?, _ cooldown: Int64?) -> CircuitBreaker.Settings? {
        guard let failures, let window, let cooldown else { return nil }
        return CircuitBreaker.Settings(failures: Int(failures), windowMilliseconds: window, cooldownMilliseconds: cooldown)
    }

    /// Pauses or resumes a queue, durably.
    public func setQueuePaused(_ queue: String, _ paused: Bool) throws {
        try self.db.execute(
            sql: "INSERT INTO queues (name, paused) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET paused = excluded.paused",
            arguments: [queue, paused]
        )
    }

    /// A page of jobs by id, newest or oldest first, optionally of one queue and state and
    /// with text in the last error (``JobListing``), and the cursor for the next page.
    ///
    /// A page walks the primary key from the cursor, so paging is cheap however far it goes;
    /// one filtered by error text reads at most ``JobListing/scanLimit`` ids.
    public func listJobs(_ listing: JobListing) throws -> (jobs: [Job], next: Int64?) {
        let (comparison, order) = listing.oldestFirst ? (">", "ASC") : ("<", "DESC")
        let filter = "id \(comparison) ? AND (? IS NULL OR queue = ?) AND (? IS NULL OR state = ?)"
        let filterArguments: StatementArguments = [listing.start, listing.queue, listing.queue, listing.state?.rawValue, listing.state?.rawValue]
        // Where a scan for error text stops: the last id of the window it may read.
        var scanEnd: Int64?
        if listing.errorContains != nil {
            scanEnd = try Int64.fetchOne(
                self.db.cachedStatement(sql: "SELECT id FROM jobs WHERE \(filter) ORDER BY id \(order) LIMIT 1 OFFSET ?"),
                arguments: filterArguments + [JobListing.scanLimit - 1]
            )
        }
        let statement = try self.db.cachedStatement(
            sql: """
                SELECT \(JobStore.jobColumns) FROM jobs
                WHERE \(filter) AND (? IS NULL OR id \(listing.oldestFirst ? "<=" : ">=") ?)
                    AND (? IS NULL OR instr(last_error, ?) > 0)
                ORDER BY id \(order) LIMIT ?
                """
        )
        let jobs = try Row.fetchAll(
            statement,
            arguments: filterArguments + [scanEnd, scanEnd, listing.errorContains, listing.errorContains, listing.limit]
        ).map(JobStore.job(from:))
        return (jobs, listing.next(found: jobs.map(\.id), scanEnd: scanEnd))
    }

    // MARK: Dependencies

    /// The states of the jobs a new job names in `after`; a missing id has no entry.
    public func states(of ids: [Int64]) throws -> [Int64: JobState] {
        var states: [Int64: JobState] = [:]
        guard !ids.isEmpty else { return states }
        let statement = try self.db.cachedStatement(sql: "SELECT state FROM jobs WHERE id = ?")
        for id in ids {
            if let name = try String.fetchOne(statement, arguments: [id]), let state = JobState(rawValue: name) {
                states[id] = state
            }
        }
        return states
    }

    /// Records that `job` waits for `dependencies` (unfinished ones) and holds it back.
    public func addDependencies(job: Int64, on dependencies: [Int64]) throws {
        for dependency in dependencies {
            try self.db.execute(
                sql: "INSERT OR IGNORE INTO job_dependencies (job_id, depends_on) VALUES (?, ?)",
                arguments: [job, dependency]
            )
        }
        try self.db.execute(
            sql: "UPDATE jobs SET waiting_on = ?, ready = 0 WHERE id = ?",
            arguments: [dependencies.count, job]
        )
    }

    /// Counts one dependency of each of `dependency`'s dependents as done.
    ///
    /// - Returns: the dependents now waiting on nothing, with their queue and `run_at`; the
    ///   ones whose time has come are already marked ready.
    public func dependencyCompleted(_ dependency: Int64, now: Int64) throws -> [(id: Int64, queue: String, runAt: Int64)] {
        // Most jobs have no dependents: one probe of the primary key settles it.
        let dependents = try DirectStatement(self, .dependents)
        dependents.bind(1, dependency)
        let ids = try dependents.allRows { $0.int64(0) }
        guard !ids.isEmpty else { return [] }
        let update = try self.db.cachedStatement(
            sql: """
                UPDATE jobs SET waiting_on = waiting_on - 1,
                    ready = (waiting_on - 1 = 0 AND run_at <= ? AND state IN ('queued', 'retrying'))
                WHERE id = ? AND waiting_on > 0
                RETURNING id, queue, run_at, waiting_on
                """
        )
        var freed: [(id: Int64, queue: String, runAt: Int64)] = []
        for id in ids {
            if let row = try Row.fetchOne(update, arguments: [now, id]), (row[3] as Int64) == 0 {
                freed.append((row[0], row[1], row[2]))
            }
        }
        return freed
    }

    /// The unfinished jobs that wait on `dependency`.
    public func unfinishedDependents(of dependency: Int64) throws -> [(id: Int64, state: JobState, queue: String)] {
        // Driven from the dependency table's primary key, then one job lookup per dependent.
        let statement = try self.db.cachedStatement(
            sql: """
                SELECT j.id, j.state, j.queue FROM job_dependencies d CROSS JOIN jobs j ON j.id = d.job_id
                WHERE d.depends_on = ? AND j.finished_at IS NULL
                """
        )
        return try Row.fetchAll(statement, arguments: [dependency]).compactMap { row in
            JobState(rawValue: row[1]).map { (row[0], $0, row[2]) }
        }
    }

    // MARK: Audit trail

    /// Moves the running attempt's claim from the job's row into the audit trail, as the
    /// attempt ends other than by completing: the next claim will overwrite the row.
    ///
    /// - Parameter token: the lease the ending write is fenced by, or `nil` for an
    ///   operator's cancel or pause; the event is kept exactly when that write applies.
    func keepClaimEvent(of id: Int64, token: FencingToken?) throws {
        let statement = try DirectStatement(
            self.db,
            sql: """
                INSERT OR IGNORE INTO job_events (job_id, seq, at, event, state, token, peer_pid, detail)
                SELECT id, claim_event, started_at, 'claimed', 'running', lease_token, peer_pid, worker FROM jobs
                WHERE id = ?1 AND state = 'running' AND claim_event IS NOT NULL AND (?2 IS NULL OR lease_token = ?2)
                """
        )
        statement.bind(1, id)
        statement.bind(2, token?.rawValue)
        _ = try statement.execute()
    }

    /// Records a state change of a job.
    public func recordEvent(_ event: JobEvent, job: Int64, sequence: Int64) throws {
        let statement = try DirectStatement(self.db, sql: Self.recordEventSQL)
        statement.bind(1, job)
        statement.bind(2, sequence)
        statement.bind(3, event.at)
        statement.bind(4, event.kind.rawValue)
        statement.bind(5, event.state.rawValue)
        statement.bind(6, event.token?.rawValue)
        statement.bind(7, event.peerPID.map { Int64($0) })
        statement.bind(8, event.detail)
        _ = try statement.execute()
    }

    /// A job's recorded events, oldest first.
    ///
    /// The claim of the job's current or last attempt comes from the job's row when it has
    /// no event row of its own (see ``markClaimed(id:token:leaseMilliseconds:worker:peer:claimEvent:now:)``).
    public func events(of job: Int64) throws -> [JobEvent] {
        let statement = try self.db.cachedStatement(
            sql: """
                SELECT seq, at, event, state, token, peer_pid, detail FROM job_events WHERE job_id = ?1
                UNION ALL
                SELECT claim_event, started_at, 'claimed', 'running', lease_token, peer_pid, worker FROM jobs
                WHERE id = ?1 AND claim_event IS NOT NULL
                  AND NOT EXISTS (SELECT 1 FROM job_events WHERE job_id = ?1 AND seq = jobs.claim_event)
                ORDER BY 1
                """
        )
        return try Row.fetchAll(statement, arguments: [job]).compactMap { row in
            guard let kind = JobEvent.Kind(rawValue: row[2]), let state = JobState(rawValue: row[3]) else { return nil }
            return JobEvent(
                kind, at: row[1], state: state, token: (row[4] as Int64?).map(FencingToken.init(rawValue:)),
                peerPID: row[5], detail: row[6]
            )
        }
    }

    // MARK: Retention

    /// Deletes up to `limit` finished jobs that finished before their cut-off, oldest first.
    ///
    /// - Returns: how many were deleted.
    /// - Returns: each deleted job's queue and state.
    public func pruneFinishedJobs(completedBefore: Int64, failedBefore: Int64, limit: Int) throws -> [(queue: String, state: JobState)] {
        // The predicate repeats the partial index's, so the oldest are found from the index.
        let rows = try Row.fetchAll(self.db, sql: Self.prunableJobsSQL, arguments: [completedBefore, failedBefore, limit])
        let ids: [Int64] = rows.map { $0[0] }
        try self.deleteJobs(ids)
        if !ids.isEmpty {
            try self.db.execute(sql: "UPDATE counters SET value = value + ? WHERE name = 'pruned'", arguments: [ids.count])
        }
        return rows.compactMap { row in JobState(rawValue: row[2]).map { (row[1], $0) } }
    }

    /// Deletes finished jobs, each with its events and with the records of what waited on
    /// it; each is one primary-key range. (Its own dependency records went when its
    /// dependencies finished.)
    public func deleteJobs(_ ids: [Int64]) throws {
        let deleteJob = try self.db.cachedStatement(sql: "DELETE FROM jobs WHERE id = ? AND finished_at IS NOT NULL")
        let deleteEvents = try self.db.cachedStatement(sql: "DELETE FROM job_events WHERE job_id = ?")
        let deleteDependents = try self.db.cachedStatement(sql: "DELETE FROM job_dependencies WHERE depends_on = ?")
        for id in ids {
            try deleteJob.execute(arguments: [id])
            guard self.db.changesCount == 1 else { continue }
            try deleteEvents.execute(arguments: [id])
            try deleteDependents.execute(arguments: [id])
        }
    }

    // MARK: Recurring jobs

    /// Creates or replaces a schedule; a replaced one keeps its last job, for `overlap`.
    public func saveSchedule(_ schedule: RecurringSchedule) throws {
        let rule = schedule.storedRule
        try self.db.execute(
            sql: """
                INSERT INTO schedules (name, queue, payload, priority, cron, timezone, every_ms, anchor, overlap,
                    catch_up, next_at, last_job, trace)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (name) DO UPDATE SET queue = excluded.queue, payload = excluded.payload,
                    priority = excluded.priority, cron = excluded.cron, timezone = excluded.timezone,
                    every_ms = excluded.every_ms, anchor = excluded.anchor, overlap = excluded.overlap,
                    catch_up = excluded.catch_up, next_at = excluded.next_at,
                    last_job = coalesce(excluded.last_job, last_job), trace = excluded.trace
                """,
            arguments: [
                schedule.name, schedule.queue, schedule.payload, schedule.priority, rule.cron, rule.timeZone, rule.every, rule.anchor,
                schedule.overlap.rawValue, schedule.catchUp.rawValue, schedule.nextAt, schedule.lastJob, schedule.trace?.stored,
            ]
        )
    }

    /// Deletes a schedule; whether there was one.
    public func deleteSchedule(named name: String) throws -> Bool {
        try self.db.execute(sql: "DELETE FROM schedules WHERE name = ?", arguments: [name])
        return self.db.changesCount == 1
    }

    /// Every schedule, by name.
    public func schedules() throws -> [RecurringSchedule] {
        try Row.fetchAll(self.db, sql: "SELECT \(Self.scheduleColumns) FROM schedules ORDER BY name").map(Self.schedule(from:))
    }

    /// Up to `limit` schedules whose next slot is at or before `now`, earliest first.
    public func dueSchedules(now: Int64, limit: Int) throws -> [RecurringSchedule] {
        try Row.fetchAll(
            self.db, sql: "SELECT \(Self.scheduleColumns) FROM schedules WHERE next_at <= ? ORDER BY next_at LIMIT ?",
            arguments: [now, limit]
        ).map(Self.schedule(from:))
    }

    /// Records that a schedule's slot `slot` was dealt with: the next slot, and the job it
    /// enqueued, if any.
    public func scheduleFired(_ name: String, slot: Int64, next: Int64?, job: Int64?) throws {
        try self.db.execute(
            sql: "UPDATE schedules SET next_at = ?, last_job = coalesce(?, last_job) WHERE name = ? AND next_at = ?",
            arguments: [next, job, name, slot]
        )
    }

    /// The earliest next slot of any schedule.
    public func nextScheduleAt() throws -> Int64? {
        try Int64.fetchOne(self.db, sql: "SELECT next_at FROM schedules WHERE next_at IS NOT NULL ORDER BY next_at LIMIT 1")
    }

    static let scheduleColumns = "name, queue, payload, priority, cron, timezone, every_ms, anchor, overlap, catch_up, next_at, last_job, trace"

    static func schedule(from row: Row) throws -> RecurringSchedule {
        let name: String = row[0]
        do {
            var schedule = RecurringSchedule(
                name: name, queue: row[1], payload: row[2], priority: row[3],
                rule: try RecurringSchedule.rule(cron: row[4], timeZone: row[5], every: row[6], anchor: row[7]),
                overlap: RecurringSchedule.Overlap(rawValue: row[8]) ?? .allow, catchUp: RecurringSchedule.CatchUp(rawValue: row[9]) ?? .none,
                nextAt: row[10], lastJob: row[11]
            )
            schedule.trace = TraceContext(stored: row[12])
            return schedule
        } catch {
            throw StoreError("schedule \(name) cannot be read: \(error)")
        }
    }

    // MARK: Bulk changes

    /// The highest job id issued so far (0 for none).
    public func lastJobID() throws -> Int64 {
        try Int64.fetchOne(self.db, sql: "SELECT coalesce(max(id), 0) FROM jobs") ?? 0
    }

    /// Up to `limit` ids, in order, of the jobs among ids `after`+1 through `through` that
    /// `change` matches: one walk of that primary-key range, whatever the table holds.
    public func bulkMatches(_ change: BulkChange, after: Int64, through: Int64, limit: Int) throws -> [Int64] {
        let statement = try self.db.cachedStatement(
            sql: """
                SELECT id FROM jobs WHERE id > ?1 AND id <= ?2 AND queue = ?3 AND state = ?4
                    AND (?5 IS NULL OR instr(last_error, ?5) > 0)
                ORDER BY id LIMIT ?6
                """
        )
        return try Int64.fetchAll(statement, arguments: [after, through, change.queue, change.state.rawValue, change.errorContains, limit])
    }

    /// How many finished jobs retention has deleted, ever.
    public func prunedCount() throws -> Int {
        try Int.fetchOne(self.db, sql: "SELECT value FROM counters WHERE name = 'pruned'") ?? 0
    }

    // MARK: Scheduling

    /// Makes every delayed or backing-off job whose time has come claimable.
    ///
    /// - Returns: the queues that gained ready jobs.
    public func promoteDueJobs(now: Int64) throws -> Set<String> {
        let statement = try self.db.cachedStatement(
            sql: Self.promoteDueJobsSQL + " RETURNING queue"
        )
        return try Set(String.fetchCursor(statement, arguments: [now]))
    }

    /// The earliest `run_at` among jobs that are waiting for their time.
    public func nextScheduledRunAt() throws -> Int64? {
        let statement = try self.db.cachedStatement(
            sql: "SELECT min(run_at) FROM jobs WHERE ready = 0 AND state IN ('queued', 'retrying') AND waiting_on = 0"
        )
        return try Int64.fetchOne(statement)
    }

    // MARK: Reads

    /// The whole job, or `nil` when no job has that id.
    public func job(id: Int64) throws -> Job? {
        let statement = try self.db.cachedStatement(sql: "SELECT \(JobStore.jobColumns) FROM jobs WHERE id = ?")
        return try Row.fetchOne(statement, arguments: [id]).map(JobStore.job(from:))
    }

    /// The queue of a job, without reading the rest of its row (its payload may be large).
    public func queue(ofJob id: Int64) throws -> String? {
        let statement = try self.db.cachedStatement(sql: "SELECT queue FROM jobs WHERE id = ?")
        return try String.fetchOne(statement, arguments: [id])
    }

    /// A running job's lease, as a restart rebuilds the lease table and concurrency gate from it.
    public struct RunningLease: Sendable {
        public var id: Int64
        public var token: FencingToken
        public var leaseMilliseconds: Int64
        public var queue: String
        public var concurrencyKey: String?
        public var limits: [String]
        public var startedAt: Int64
        /// The uid of the process that claimed it, where known.
        public var holder: UInt32?
        /// The job's own time limit per attempt.
        public var timeoutMilliseconds: Int64?
    }

    /// Every running job's lease.
    public func runningLeases() throws -> [RunningLease] {
        try Row.fetchAll(
            self.db,
            sql: """
                SELECT id, lease_token, lease_ms, queue, concurrency_key, coalesce(started_at, 0), peer_uid, timeout_ms, limits
                FROM jobs WHERE state = 'running'
                """
        ).map {
            RunningLease(
                id: $0[0], token: FencingToken(rawValue: $0[1]), leaseMilliseconds: $0[2], queue: $0[3], concurrencyKey: $0[4],
                limits: NamedLimits.names(inText: $0[8]), startedAt: $0[5], holder: ($0[6] as Int64?).map { UInt32(truncatingIfNeeded: $0) }, timeoutMilliseconds: $0[7]
            )
        }
    }

    /// The queue's longest-waiting ready job and when it became due: one probe of
    /// `jobs_ready_since`.
    public func oldestReady(queue: String) throws -> (job: Int64, runAt: Int64)? {
        let statement = try self.db.cachedStatement(sql: Self.oldestReadySQL)
        return try Row.fetchOne(statement, arguments: [queue]).map { row in (row[0], row[1]) }
    }

    /// Per-queue job counts by state: a pass over every job, which the authority makes once,
    /// at start, and then keeps the counts itself (``JobCensus``).
    public func jobCounts() throws -> [String: [JobState: Int]] {
        var counts: [String: [JobState: Int]] = [:]
        let rows = try Row.fetchCursor(self.db, sql: "SELECT queue, state, count(*) FROM jobs GROUP BY queue, state")
        while let row = try rows.next() {
            guard let state = JobState(rawValue: row[1]) else { continue }
            counts[row[0], default: [:]][state] = row[2]
        }
        return counts
    }

    /// How many temporary b-trees a statement opens each time it runs (SQLite's
    /// `OpenEphemeral` steps), for checking that the statements every job passes through
    /// open none: `RETURNING` and `IN` lists of three or more values each cost one.
    public func temporaryTables(in sql: String) throws -> Int {
        try Row.fetchAll(self.db, sql: "EXPLAIN " + sql, arguments: StatementArguments(
            Array(repeating: DatabaseValue.null, count: sql.filter { $0 == "?" }.count)
        )).filter { $0["opcode"] as String? == "OpenEphemeral" }.count
    }

    /// SQLite's plan for a statement, one step per line, for checking that a query uses
    /// the index it was written for.
    public func queryPlan(of sql: String) throws -> String {
        try Row.fetchAll(self.db, sql: "EXPLAIN QUERY PLAN " + sql, arguments: StatementArguments(
            Array(repeating: DatabaseValue.null, count: sql.filter { $0 == "?" }.count)
        )).map { $0["detail"] as String? ?? "" }.joined(separator: "\n")
    }

    // MARK: Sequences

    /// The durable high-water marks of the job id and token sequences, raised to any
    /// value already in use so that a store written before them still resumes past it.
    public func sequenceReservations() throws -> (jobID: Int64, token: Int64, event: Int64) {
        let row = try Row.fetchOne(
            self.db,
            sql: """
                SELECT max((SELECT value FROM counters WHERE name = 'job_id'), coalesce((SELECT max(id) FROM jobs), 0)),
                       max((SELECT value FROM counters WHERE name = 'token'), coalesce((SELECT max(lease_token) FROM jobs), 0)),
                       (SELECT value FROM counters WHERE name = 'event')
                """
        )
        return (row?[0] ?? 0, row?[1] ?? 0, row?[2] ?? 0)
    }

    /// Records a new high-water mark for a sequence (`job_id` or `token`); it only grows.
    public func saveReservation(_ sequence: ReservedCounter, upTo value: Int64) throws {
        let statement = try DirectStatement(self.db, sql: "UPDATE counters SET value = max(value, ?) WHERE name = ?")
        statement.bind(1, value)
        statement.bind(2, sequence.rawValue)
        _ = try statement.execute()
    }

    /// The sequences whose reservations the store keeps, by their row in `counters`.
    public enum ReservedCounter: String, Sendable {
        case jobID = "job_id"
        case token
        case event
    }
}

extension StoreTransaction {
    // MARK: The statements every job passes through

    public static let insertJobSQL = """
        INSERT INTO jobs (id, queue, state, ready, payload, priority, run_at, max_attempts,
            backoff_initial_ms, backoff_factor, backoff_max_ms, lease_ms, unique_key, created_at, concurrency_key, parent, timeout_ms,
            limits, fair_group, trace)
        VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        """

    public static let claimReadSQL = """
        SELECT queue, payload, attempts, max_attempts, lease_ms, checkpoint, progress, run_at, state, timeout_ms, trace
        FROM jobs WHERE id = ? AND ready = 1
        """

    public static let claimUpdateSQL = """
        UPDATE jobs SET state = '\(JobMove.claim.to.rawValue)', ready = 0, attempts = ?, lease_token = ?,
            lease_ms = ?, worker = ?, peer_pid = ?, peer_uid = ?, started_at = ?, claim_event = ?
        WHERE id = ?
        """

    public static let completeSQL = """
        UPDATE jobs SET state = '\(JobMove.complete.to.rawValue)', result = ?, finished_at = ?
        WHERE id = ? AND \(JobMove.complete.sqlGuard) AND lease_token = ?
        """

    // MARK: The other moves with fixed starting states (see JobMove)

    static let retrySQL = """
        UPDATE jobs SET state = '\(JobMove.retry.to.rawValue)', ready = ?, run_at = ?, last_error = ?
        WHERE id = ? AND \(JobMove.retry.sqlGuard) AND lease_token = ?
        """

    static let failSQL = """
        UPDATE jobs SET state = '\(JobMove.fail.to.rawValue)', last_error = ?, finished_at = ?
        WHERE id = ? AND \(JobMove.fail.sqlGuard) AND lease_token = ?
        """

    static let releaseSQL = """
        UPDATE jobs SET state = '\(JobMove.release.to.rawValue)', ready = ?, run_at = ?, attempts = max(attempts - 1, 0)
        WHERE id = ? AND \(JobMove.release.sqlGuard) AND lease_token = ?
        RETURNING queue
        """

    static let resumeSQL = """
        UPDATE jobs SET state = '\(JobMove.resume.to.rawValue)', ready = (run_at <= ? AND waiting_on = 0)
        WHERE id = ? AND \(JobMove.resume.sqlGuard)
        RETURNING queue, run_at
        """

    public static let recordEventSQL =
        "INSERT INTO job_events (job_id, seq, at, event, state, token, peer_pid, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"

    // MARK: Walks of the partial indexes

    /// The claim: a walk of the `jobs_ready` index from its best entry, which needs no
    /// sort and no row reads (the index covers every column).
    public static let bestReadyJobSQL =
        "SELECT id, priority, concurrency_key, limits, fair_group FROM jobs WHERE ready = 1 AND queue = ? ORDER BY priority DESC, id"

    /// The rotation across groups: a walk of `jobs_ready_groups` within one priority.
    public static let nextGroupJobSQL = """
        SELECT id, priority, concurrency_key, limits, fair_group FROM jobs
        WHERE ready = 1 AND fair_group IS NOT NULL AND queue = ? AND priority = ? AND fair_group > ?
        ORDER BY fair_group, id
        """

    /// A queue's longest-waiting ready job: the first entry of `jobs_ready_since` for it.
    static let setPrioritySQL = """
        UPDATE jobs SET priority = ? WHERE id = ? AND state IN ('queued', 'running', 'paused', 'retrying') RETURNING state
        """
    public static let oldestReadySQL = "SELECT id, run_at FROM jobs WHERE ready = 1 AND queue = ? ORDER BY run_at LIMIT 1"

    /// Makes due jobs ready, walking `jobs_scheduled` (its predicate is repeated so that
    /// SQLite can use the partial index).
    public static let promoteDueJobsSQL = """
        UPDATE jobs SET ready = 1
        WHERE ready = 0 AND state IN ('queued', 'retrying') AND waiting_on = 0 AND run_at <= ?
        """

    /// The oldest finished jobs past their retention, from `jobs_finished`.
    public static let prunableJobsSQL = """
        SELECT id, queue, state FROM jobs
        WHERE finished_at IS NOT NULL
          AND finished_at < CASE state WHEN 'completed' THEN ? ELSE ? END
        ORDER BY finished_at LIMIT ?
        """
}

extension JobStore {
    /// Reads a row selected with ``jobColumns``.
    static func job(from row: Row) throws -> Job {
        let name: String = row[2]
        guard let state = JobState(rawValue: name) else {
            throw StoreError("job \(row[0] as Int64) has a state this version does not know: '\(name)'")
        }
        let pid: Int32? = row[19]
        let uid: Int64? = row[20]
        var job = Job(
            id: row[0],
            queue: row[1],
            state: state,
            payload: row[3],
            priority: row[4],
            runAt: row[5],
            attempts: row[6],
            maxAttempts: row[7],
            backoff: BackoffPolicy(initialMilliseconds: row[8], factor: row[9], maximumMilliseconds: row[10]),
            leaseMilliseconds: row[11],
            uniqueKey: row[12],
            concurrencyKey: row[24],
            checkpoint: row[13],
            progress: row[14],
            result: row[15],
            lastError: row[16],
            leaseToken: (row[17] as Int64?).map(FencingToken.init(rawValue:)),
            worker: row[18],
            peer: pid.map { PeerIdentity(pid: $0, uid: UInt32(truncatingIfNeeded: uid ?? 0)) },
            createdAt: row[21],
            startedAt: row[22],
            finishedAt: row[23],
            parent: row[25],
            timeoutMilliseconds: row[26]
        )
        job.limits = NamedLimits.names(inText: row[27])
        job.group = row[28]
        job.trace = TraceContext(stored: row[29])
        return job
    }
}
