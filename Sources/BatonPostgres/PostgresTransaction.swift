import BatonCore
import Logging
import PostgresNIO

/// The PostgreSQL store's operations, valid inside one ``PostgresStore/write(_:)``
/// transaction.
///
/// Each fenced write is one statement guarded by the job's state, the lease token and the
/// lease deadline on the database's clock, so it applies whole or not at all, on whichever
/// host it runs, and a token whose lease ran out is refused everywhere at once.
public struct PostgresTransaction {
    let connection: PostgresConnection
    let logger: Logger

    // MARK: Enqueue

    /// Inserts a queued job under the next id of the fleet's sequence; see the batch form below.
    public func insert(_ job: NewJob) async throws -> (id: Int64, inserted: Bool) {
        try await self.insert([job])[0]
    }

    /// Inserts a batch's jobs with one statement, under ids from the fleet's sequence.
    ///
    /// - Returns: for each job, in order, its new id; or, where its unique key is held by
    ///   an unfinished job of its queue (one inserted earlier in the same batch included),
    ///   that job's id and `inserted: false`.
    public func insert(_ jobs: [NewJob]) async throws -> [(id: Int64, inserted: Bool)] {
        guard !jobs.isEmpty else { return [] }
        // Absent keys and parents travel as sentinels ("" never names a key: see RequestDecoder).
        let rows = try await self.run(InsertJobs(jobs: jobs))
        var results = [(id: Int64, inserted: Bool)](repeating: (0, false), count: jobs.count)
        var held: [Int] = []
        for try await (n, id) in rows.decode((Int, Int64?).self) {
            if let id { results[n - 1] = (id, true) } else { held.append(n - 1) }
        }
        // Each held key's holder, visible to this next statement once its insert committed
        // (or, inserted earlier in this batch, at once).
        for index in held {
            let holder = try await self.connection.query(
                """
                SELECT id FROM jobs
                WHERE queue = \(jobs[index].queue) AND unique_key = \(jobs[index].uniqueKey) AND finished_at IS NULL
                """, logger: self.logger)
            guard let id = try await holder.first(Int64.self) else {
                throw PostgresStoreError(
                    "the unique key \(jobs[index].uniqueKey ?? "") of queue \(jobs[index].queue) is held, but by no unfinished job")
            }
            results[index] = (id, false)
        }
        return results
    }

    private struct InsertJobs: PreparedBatchStatement {
        static let name = "baton_insert_jobs"
        static let sql = """
            WITH new AS (
                SELECT *, nextval('baton_job_ids') AS id FROM unnest(
                    $1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::float8[], $8::bigint[],
                    $9::bigint[], $10::text[], $11::text[], $12::bigint[], $13::bigint[], $14::text[], $15::text[], $16::text[]
                ) WITH ORDINALITY AS n(queue, payload, priority, run_at, max_attempts, backoff_initial_ms,
                    backoff_factor, backoff_max_ms, lease_ms, unique_key, concurrency_key, parent, timeout_ms, limits, fair_group,
                    trace, n)
            ),
            inserted AS (
                INSERT INTO jobs (id, queue, state, ready, payload, priority, run_at, max_attempts,
                    backoff_initial_ms, backoff_factor, backoff_max_ms, lease_ms, unique_key,
                    concurrency_key, parent, timeout_ms, limits, fair_group, trace, created_at)
                SELECT id, queue, 'queued', run_at <= baton_now_ms(), payload, priority, run_at, max_attempts,
                    backoff_initial_ms, backoff_factor, backoff_max_ms, lease_ms, nullif(unique_key, ''),
                    nullif(concurrency_key, ''), nullif(parent, -1), nullif(timeout_ms, -1), nullif(limits, ''),
                    nullif(fair_group, ''), nullif(trace, ''), baton_now_ms()
                FROM new ORDER BY n
                ON CONFLICT (queue, unique_key) WHERE unique_key IS NOT NULL AND finished_at IS NULL DO NOTHING
                RETURNING id
            )
            SELECT new.n, inserted.id FROM new LEFT JOIN inserted ON inserted.id = new.id
            """
        var jobs: [NewJob]

        func makeBindings() -> PostgresBindings {
            PostgresBindings(
                self.jobs.map(\.queue), self.jobs.map(\.payload), self.jobs.map(\.priority), self.jobs.map(\.runAt),
                self.jobs.map { Int64($0.maxAttempts) }, self.jobs.map(\.backoff.initialMilliseconds), self.jobs.map(\.backoff.factor),
                self.jobs.map(\.backoff.maximumMilliseconds), self.jobs.map(\.leaseMilliseconds), self.jobs.map { $0.uniqueKey ?? "" },
                self.jobs.map { $0.concurrencyKey ?? "" }, self.jobs.map { $0.parent ?? -1 }, self.jobs.map { $0.timeoutMilliseconds ?? -1 },
                self.jobs.map { NamedLimits.text(of: $0.limits) ?? "" }, self.jobs.map { $0.group ?? "" },
                self.jobs.map { $0.trace?.stored ?? "" })
        }
    }

    // MARK: Claim

    /// A job a claim leased.
    public struct Claim: Sendable {
        public var job: ClaimedJob
        public var token: FencingToken
        /// When the lease runs out, on the database's clock (milliseconds since the epoch).
        public var deadline: Int64
        /// The state the job was claimed from: `queued` or `retrying`.
        public var from: JobState
        /// Whether it is the trial its queue's half-open breaker let through.
        public var isTrial = false
    }

    /// What one claim asks for.
    public struct ClaimWish: Hashable, Sendable {
        public var queues: [String]
        /// The lease period, or `nil` for the job's own.
        public var leaseMilliseconds: Int64?
        public var worker: String?
        public var peer: PeerIdentity?

        public init(queues: [String], leaseMilliseconds: Int64? = nil, worker: String? = nil, peer: PeerIdentity? = nil) {
            self.queues = queues
            self.leaseMilliseconds = leaseMilliseconds
            self.worker = worker
            self.peer = peer
        }
    }

    /// Leases the best ready job (highest priority, then oldest) across `queues`; see
    /// ``claim(_:host:)``.
    public func claim(
        queues: [String], leaseMilliseconds: Int64?, host: String, worker: String?, peer: PeerIdentity?
    ) async throws -> Claim? {
        try await self.claim(
            [ClaimWish(queues: queues, leaseMilliseconds: leaseMilliseconds, worker: worker, peer: peer)], host: host
        )[0]
    }

    /// Serves a batch's claims: each gets the best ready job left across its queues, the
    /// earlier claims the better jobs, passing over paused queues, queues at their
    /// `max_running`, and jobs whose concurrency key a running job holds, all fleet-wide.
    /// Tokens come from the fleet's sequence.
    ///
    /// Claims that name the same queues are served together by one statement, however many
    /// there are, in the order they arrived; sets of queues are served in the order the
    /// first claim of each arrived. The statement probes the claim index once per queue,
    /// and skips a job another transaction has locked (another host claiming it right now)
    /// instead of waiting, so hosts never queue up behind one another's claims. It reads the
    /// queues' settings itself, so a claim from queues without a limit is that one statement.
    /// Only a queue with a limit serializes its claims: its row is locked while its running
    /// jobs are counted, so two hosts cannot both take its last free place; the statement
    /// leases nothing then, and runs again with the counted room.
    ///
    /// - Returns: one entry per wish, in order; `nil` where no job could be leased.
    public func claim(_ wishes: [ClaimWish], host: String) async throws -> [Claim?] {
        var effects = LimitEffects()
        return try await self.claim(wishes, host: host, limits: &effects)
    }

    /// The same, adding to `limits` what the named limits did: the holds that let the host
    /// offer the queues they held back to its parked claims again when they may admit, and
    /// their breakers' changes.
    public func claim(_ wishes: [ClaimWish], host: String, limits: inout LimitEffects) async throws -> [Claim?] {
        var claims = [Claim?](repeating: nil, count: wishes.count)
        var groups: [[String]: [Int]] = [:]
        var order: [[String]] = []
        for (index, wish) in wishes.enumerated() {
            if groups[wish.queues] == nil { order.append(wish.queues) }
            groups[wish.queues, default: []].append(index)
        }
        for queues in order {
            var waiting = groups[queues]!
            // -1: the statement reads each queue's settings itself (see claimRound).
            var room = [Int32](repeating: -1, count: queues.count)
            var trials: Set<String> = []
            var counted = false
            // A job whose key another host took a moment ago is claimed by no one here; the
            // next round, in a new snapshot, sees the key held and passes that job over.
            for _ in 0..<8 where !waiting.isEmpty {
                let round = try await self.claimRound(queues: queues, room: room, wishes: waiting.map { wishes[$0] }, host: host)
                for (position, var claim) in round.claims {
                    if trials.remove(claim.job.queue) != nil {
                        try await self.startedTrial(claim.job.id, of: claim.job.queue)
                        claim.isTrial = true
                    }
                    claims[waiting[position]] = claim
                }
                waiting = waiting.indices.filter { round.claims[$0] == nil }.map { waiting[$0] }
                if round.gated {
                    // A job naming limits among the best: the limits decide, under their rows' locks.
                    if !counted { (room, trials) = try await self.room(in: queues) }
                    let gated = try await self.claimGated(
                        queues: queues, room: room, trials: &trials, wishes: waiting.map { wishes[$0] }, host: host,
                        rotating: round.rotating, effects: &limits)
                    for (position, claim) in gated { claims[waiting[position]] = claim }
                    break
                }
                guard round.limited || round.keyTaken else { break }
                if round.limited || counted {
                    // A queue with a limit: its room is counted under its row's lock, and
                    // again before each round, since the last one took some of it.
                    (room, trials) = try await self.room(in: queues)
                    counted = true
                    guard room.contains(where: { $0 > 0 }) else { break }
                }
            }
        }
        return claims
    }

    /// How many more jobs each of `queues` may start: 0 for a paused queue, one at its
    /// limit or one whose breaker is open, at most 1 where a half-open breaker lets its trial
    /// through (those queues are `trials`). The rows of the queues with a limit or a breaker
    /// not closed stay locked until this transaction ends, so what was counted holds.
    private func room(in queues: [String]) async throws -> (room: [Int32], trials: Set<String>) {
        let settings = try await self.connection.query(
            """
            SELECT name, paused, max_running, breaker_failures IS NOT NULL AND breaker_open_until IS NOT NULL
            FROM queues WHERE name = ANY(\(queues)::text[]) ORDER BY name
            """, logger: self.logger)
        var room = [String: Int32]()
        var limited: [String] = []
        var breaking: [String] = []
        for try await (name, paused, limit, broken) in settings.decode((String, Bool, Int?, Bool).self) {
            if paused {
                room[name] = 0
                continue
            }
            if limit != nil { limited.append(name) }
            if broken { breaking.append(name) }
        }
        var trials: Set<String> = []
        for (queue, breaker, now) in try await self.lockedBreakers(breaking) {
            var breaker = breaker
            guard breaker.admits(now: now).admits else {
                room[queue] = 0
                continue
            }
            if case .halfOpen = breaker.state {
                room[queue] = 1
                trials.insert(queue)
            }
        }
        for queue in limited where room[queue] != 0 {
            let locked = try await self.connection.query(
                "SELECT max_running FROM queues WHERE name = \(queue) FOR NO KEY UPDATE", logger: self.logger)
            // Read again under the lock: the limit may have changed since.
            guard let current = try await locked.first(Int?.self), let limit = current else { continue }
            let running = try await self.connection.query(
                "SELECT count(*) FROM jobs WHERE queue = \(queue) AND state = 'running'", logger: self.logger)
            room[queue] = min(room[queue] ?? .max, Int32(clamping: max(limit - (try await running.first(Int.self) ?? 0), 0)))
        }
        return (queues.map { room[$0] ?? .max }, trials)
    }

    /// One statement that leases up to `wishes.count` jobs across `queues`, at most
    /// `room[i]` from `queues[i]` and at most one per concurrency key, best first, the
    /// best to the first wish. A room of -1 is read from the queue's settings: none if it is
    /// paused, no bound if it has no limit; if it has one, the statement leases nothing and
    /// says `limited`.
    private func claimRound(
        queues: [String], room: [Int32], wishes: [ClaimWish], host: String
    ) async throws -> (claims: [Int: Claim], keyTaken: Bool, limited: Bool, gated: Bool, rotating: Bool) {
        let rows = try await self.run(ClaimRound(queues: queues, room: room, wishes: WishValues(wishes, host: host)))
        return try await Self.claims(rows)
    }

    /// The leases a claim statement returns, by wish (see ``claimTail``): and whether a
    /// chosen job's key went to another transaction, a queue must be counted (`limited`,
    /// n = 0), or a candidate names limits or has a group (`gated`, n = -1; `rotating`
    /// when a queue's claims rotate across groups already).
    static func claims(
        _ rows: some AsyncSequence<PostgresRow, any Error>
    ) async throws -> (claims: [Int: Claim], keyTaken: Bool, limited: Bool, gated: Bool, rotating: Bool) {
        var claims: [Int: Claim] = [:]
        var keyTaken = false
        var limited = false
        var gated = false
        var rotating = false
        for try await (n, id, from, queue, payload, attempts, maxAttempts, lease, checkpoint, progress, runAt, token, deadline, trace)
            in rows.decode(
                (Int, Int64, String, String?, String?, Int?, Int?, Int64?, String?, String?, Int64?, Int64?, Int64?, String?).self)
        {
            guard n > 0 else {
                if n == 0 { limited = true } else { (gated, rotating) = (true, from == "rotating") }
                continue
            }
            guard let queue, let payload, let attempts, let maxAttempts, let lease, let runAt, let token, let deadline else {
                keyTaken = true
                continue
            }
            guard let from = JobState(rawValue: from), JobMove.claim.from.contains(from) else {
                throw PostgresStoreError("job \(id) was ready to claim but its state is '\(from)'")
            }
            let job = ClaimedJob(
                id: id, queue: queue, payload: payload, attempt: attempts, maxAttempts: maxAttempts,
                leaseMilliseconds: lease, checkpoint: checkpoint, progress: progress, dueAt: runAt, trace: TraceContext(stored: trace)
            )
            claims[n - 1] = Claim(job: job, token: FencingToken(rawValue: token), deadline: deadline, from: from)
        }
        return (claims, keyTaken, limited, gated, rotating)
    }

    /// The wishes' values as every claim statement binds them, $4 to $8 (see ``claimTail``):
    /// absent values travel as sentinels (-1, ""), so the arrays hold plain values.
    struct WishValues {
        var leases: [Int64]
        var workers: [String]
        var pids: [Int64]
        var uids: [Int64]
        var host: String

        init(_ wishes: [ClaimWish], host: String) {
            self.leases = wishes.map { $0.leaseMilliseconds ?? -1 }
            self.workers = wishes.map { $0.worker ?? "" }
            self.pids = wishes.map { $0.peer.map { Int64($0.pid) } ?? -1 }
            self.uids = wishes.map { $0.peer.map { Int64($0.uid) } ?? -1 }
            self.host = host
        }

        var count: Int { self.leases.count }

        /// The bindings of a statement whose first three are `first` ($1 to $3), then these.
        func bindings(after first: any PostgresDynamicTypeEncodable...) -> PostgresBindings {
            var bindings = PostgresBindings(capacity: first.count + 5)
            for value in first { bindings.append(value) }
            for value: any PostgresDynamicTypeEncodable in [self.leases, self.workers, self.pids, self.uids, self.host] {
                bindings.append(value)
            }
            return bindings
        }
    }

    /// What every claim statement ends with, from `best` (the chosen jobs, each with its
    /// wish's number `n`, state, key and queue time limit): the wishes' values ($4 leases,
    /// $5 workers, $6 pids, $7 uids, $8 the host), the keys taken, the leases, and a row per
    /// job whose key another transaction took first.
    static let claimTail = """
            -- The nth best job goes to the nth wish, whose values are read by subscript: a join
            -- with the unnested wishes is planned as a loop over both, quadratic in the batch.
            chosen AS (
                SELECT best.*, ($4::bigint[])[n] AS lease, ($5::text[])[n] AS worker, ($6::bigint[])[n] AS pid,
                    ($7::bigint[])[n] AS uid
                FROM best
            ),
            -- Waits only for a transaction inserting the same key, then yields nothing if it committed.
            key AS (
                INSERT INTO concurrency_keys (key, job)
                SELECT concurrency_key, id FROM chosen WHERE concurrency_key IS NOT NULL
                ON CONFLICT (key) DO NOTHING RETURNING job
            ),
            claimed AS (
                UPDATE jobs SET state = '\(JobMove.claim.to.rawValue)', ready = false, attempts = attempts + 1,
                    lease_token = nextval('baton_tokens'), lease_ms = coalesce(nullif(chosen.lease, -1), jobs.lease_ms),
                    -- An attempt's time limit caps its lease, however often it is renewed.
                    timeout_at = baton_now_ms() + coalesce(jobs.timeout_ms, chosen.timeout),
                    lease_deadline = least(baton_now_ms() + coalesce(nullif(chosen.lease, -1), jobs.lease_ms),
                        baton_now_ms() + coalesce(jobs.timeout_ms, chosen.timeout)), lease_host = $8,
                    worker = nullif(chosen.worker, ''), peer_pid = nullif(chosen.pid, -1), peer_uid = nullif(chosen.uid, -1),
                    started_at = baton_now_ms()
                FROM chosen
                WHERE jobs.id = chosen.id AND (chosen.concurrency_key IS NULL OR chosen.id IN (SELECT job FROM key))
                RETURNING chosen.n, jobs.id, chosen.state, jobs.queue, jobs.payload, jobs.attempts, jobs.max_attempts,
                    jobs.lease_ms, jobs.checkpoint, jobs.progress, jobs.run_at, jobs.lease_token, jobs.lease_deadline, jobs.trace
            )
            SELECT * FROM claimed
            UNION ALL
            -- Chosen, but its key went to another transaction first: claimed by no one.
            SELECT n, id, state, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM chosen
            WHERE concurrency_key IS NOT NULL AND id NOT IN (SELECT job FROM key)
        """

    private struct ClaimRound: PreparedBatchStatement {
        static let name = "baton_claim_round"
        static let sql = """
            WITH q AS (
                SELECT a.name, CASE WHEN a.room >= 0 THEN a.room
                    WHEN s.paused OR s.max_running IS NOT NULL OR s.breaker_open_until IS NOT NULL THEN 0
                    ELSE 2147483647 END AS room, s.timeout_ms AS timeout,
                    -- A queue with a limit, or whose breaker is not closed, is counted under its row's lock.
                    a.room < 0 AND NOT coalesce(s.paused, false)
                        AND (s.max_running IS NOT NULL OR s.breaker_open_until IS NOT NULL) AS limited,
                    s.group_cursor IS NOT NULL AS rotating
                FROM unnest($1::text[], $2::integer[]) AS a(name, room) LEFT JOIN queues s ON s.name = a.name
            ),
            locked AS (
                SELECT j.id, j.state, j.priority, j.queue, j.concurrency_key, j.limits, j.fair_group, q.room, q.timeout
                FROM q
                CROSS JOIN LATERAL (
                    SELECT id, state, priority, queue, concurrency_key, limits, fair_group FROM jobs
                    WHERE ready AND queue = q.name AND (concurrency_key IS NULL
                        OR NOT EXISTS (SELECT 1 FROM concurrency_keys k WHERE k.key = jobs.concurrency_key))
                    ORDER BY priority DESC, id LIMIT $3 FOR UPDATE SKIP LOCKED
                ) j
                WHERE q.room > 0 AND NOT EXISTS (SELECT 1 FROM q WHERE limited)
            ),
            -- A candidate naming limits, or in a group: its limits are counted under their rows'
            -- locks, and its queue's claims rotate across groups, instead (claimGated); this
            -- statement leases nothing.
            gated AS (SELECT EXISTS (SELECT 1 FROM locked WHERE limits IS NOT NULL OR fair_group IS NOT NULL)
                OR EXISTS (SELECT 1 FROM q WHERE rotating AND room > 0 AND NOT EXISTS (SELECT 1 FROM q WHERE limited)) AS found),
            ranked AS (
                SELECT *, row_number() OVER (PARTITION BY queue ORDER BY priority DESC, id) AS in_queue,
                    row_number() OVER (PARTITION BY coalesce(concurrency_key, '#' || id) ORDER BY priority DESC, id) AS in_key
                FROM locked WHERE NOT (SELECT found FROM gated)
            ),
            best AS (
                SELECT id, state, concurrency_key, timeout, (row_number() OVER (ORDER BY priority DESC, id))::integer AS n
                FROM ranked WHERE in_queue <= room AND in_key = 1
                ORDER BY priority DESC, id LIMIT $3
            ),
            \(PostgresTransaction.claimTail)
            UNION ALL
            SELECT 0, 0, '', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL WHERE EXISTS (SELECT 1 FROM q WHERE limited)
            UNION ALL
            SELECT -1, 0, CASE WHEN EXISTS (SELECT 1 FROM q WHERE rotating) THEN 'rotating' ELSE '' END,
                NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL WHERE (SELECT found FROM gated)
            """
        var queues: [String]
        /// How many jobs each queue may start.
        var room: [Int32]
        /// One per claim; as many jobs as there are leased at most.
        var wishes: WishValues

        func makeBindings() -> PostgresBindings {
            self.wishes.bindings(after: self.queues, self.room, self.wishes.count)
        }
    }

    // MARK: Queue settings

    /// Applies `change` to a queue's settings, fleet-wide; the settings it leaves out stay.
    ///
    /// - Returns: the queue's settings now.
    public func changeQueueSettings(_ queue: String, _ change: QueueSettings.Change) async throws -> QueueSettings {
        let maxRunning = (change.maxRunning ?? nil).map { Int64($0) }
        let timeout = change.timeoutMilliseconds ?? nil
        let breaker = change.breaker ?? nil
        // A breaker set anew keeps its state; one removed forgets it.
        let rows = try await self.connection.query(
            """
            INSERT INTO queues (name, max_running, timeout_ms, breaker_failures, breaker_window_ms, breaker_cooldown_ms)
            VALUES (\(queue), \(maxRunning), \(timeout), \(breaker.map { Int64($0.failures) }), \(breaker?.windowMilliseconds),
                \(breaker?.cooldownMilliseconds))
            ON CONFLICT (name) DO UPDATE SET
                max_running = CASE WHEN \(change.maxRunning != nil) THEN excluded.max_running ELSE queues.max_running END,
                timeout_ms = CASE WHEN \(change.timeoutMilliseconds != nil) THEN excluded.timeout_ms ELSE queues.timeout_ms END,
                breaker_failures = CASE WHEN \(change.breaker != nil) THEN excluded.breaker_failures ELSE queues.breaker_failures END,
                breaker_window_ms = CASE WHEN \(change.breaker != nil) THEN excluded.breaker_window_ms ELSE queues.breaker_window_ms END,
                breaker_cooldown_ms = CASE WHEN \(change.breaker != nil) THEN excluded.breaker_cooldown_ms ELSE queues.breaker_cooldown_ms END,
                breaker_open_until = CASE WHEN \(change.breaker != nil) AND excluded.breaker_failures IS NULL THEN NULL
                    ELSE queues.breaker_open_until END,
                breaker_trial = CASE WHEN \(change.breaker != nil) AND excluded.breaker_failures IS NULL THEN NULL ELSE queues.breaker_trial END,
                breaker_failed_at = CASE WHEN \(change.breaker != nil) AND excluded.breaker_failures IS NULL THEN '{}'
                    ELSE queues.breaker_failed_at END
            RETURNING max_running, timeout_ms, breaker_failures, breaker_window_ms, breaker_cooldown_ms
            """, logger: self.logger)
        for try await (maxRunning, timeout, failures, window, cooldown) in rows.decode((Int64?, Int64?, Int64?, Int64?, Int64?).self) {
            let breaker = failures.flatMap { failures in
                window.flatMap { window in
                    cooldown.map { CircuitBreaker.Settings(failures: Int(failures), windowMilliseconds: window, cooldownMilliseconds: $0) }
                }
            }
            return QueueSettings(maxRunning: maxRunning.map { Int($0) }, timeoutMilliseconds: timeout, breaker: breaker)
        }
        throw PostgresStoreError("setting queue \(queue) returned no row")
    }

    /// Pauses or resumes claims from `queue`, fleet-wide.
    public func setQueuePaused(_ queue: String, _ paused: Bool) async throws {
        try await self.connection.query(
            """
            INSERT INTO queues (name, paused) VALUES (\(queue), \(paused))
            ON CONFLICT (name) DO UPDATE SET paused = excluded.paused
            """, logger: self.logger)
    }

    // MARK: Fenced writes

    /// The guard of every fenced write: the job is in one of `states` (a move's starting
    /// states, running for all of them), the token (an SQL expression, a column of the
    /// statement's requests) holds its lease, and the lease is live on the database's clock
    /// when the statement runs, on whichever host.
    static func liveLease(_ token: String, from states: [JobState] = [.running]) -> String {
        "\(Self.fenced(from: states)) AND jobs.lease_token = \(token) AND jobs.lease_deadline > baton_now_ms()"
    }

    /// The state guard of a fenced write: the job is in one of `states` (a move's starting
    /// states). They are written as a subquery, not constants, so that no plan can take a
    /// partial index on running jobs (jobs_leases) for the way to the rows: a plan made on
    /// stale statistics would scan every running job and join each with the whole batch, a
    /// cost that grows with the jobs running fleet-wide, where the primary key finds each
    /// job in one probe.
    static func fenced(from states: [JobState]) -> String {
        "jobs.state = ANY((SELECT '{\(states.map(\.rawValue).joined(separator: ","))}'::text[])::text[])"
    }

    /// Renews the lease `token` holds on a running job, if it is live; see ``renew(_:)``.
    public func renew(id: Int64, token: FencingToken, leaseMilliseconds: Int64? = nil) async throws -> Int64? {
        try await self.renew([(id, token, leaseMilliseconds)])[0]
    }

    /// Renews a batch's leases with one statement, each that its token holds and that is
    /// live, to now plus its new period (or the job's own).
    ///
    /// - Returns: for each, in order, the new deadline, or `nil` when the token holds no
    ///   live lease.
    public func renew(_ leases: [(id: Int64, token: FencingToken, leaseMilliseconds: Int64?)]) async throws -> [Int64?] {
        guard !leases.isEmpty else { return [] }
        let rows = try await self.run(
            RenewLeases(ids: leases.map(\.id), tokens: leases.map(\.token.rawValue), leases: leases.map { $0.leaseMilliseconds ?? -1 }))
        return try await rows.numbered(Int64.self, count: leases.count)
    }

    private struct RenewLeases: PreparedBatchStatement {
        static let name = "baton_renew_leases"
        static let sql = """
            WITH renewal AS (
                SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) WITH ORDINALITY AS r(id, token, lease, n)
            )
            UPDATE jobs SET lease_ms = coalesce(nullif(renewal.lease, -1), lease_ms),
                lease_deadline = least(baton_now_ms() + coalesce(nullif(renewal.lease, -1), lease_ms), timeout_at)
            FROM renewal
            WHERE jobs.id = renewal.id AND \(PostgresTransaction.liveLease("renewal.token"))
            RETURNING renewal.n, jobs.lease_deadline
            """
        var ids: [Int64]
        var tokens: [Int64]
        /// The new lease periods, -1 for the job's own.
        var leases: [Int64]

        func makeBindings() -> PostgresBindings { PostgresBindings(self.ids, self.tokens, self.leases) }
    }

    /// Stores a checkpoint for the job whose live lease `token` holds; see ``saveCheckpoints(_:)``.
    public func saveCheckpoint(id: Int64, token: FencingToken, state: String, progress: String?) async throws -> Int64? {
        try await self.saveCheckpoints([(id, token, state, progress)])[0]
    }

    /// Stores a batch's checkpoints (and progress, where given) with one statement, each for
    /// the job whose live lease its token holds, and renews those leases: a checkpoint is
    /// proof of life.
    ///
    /// - Returns: for each, in order, the new deadline, or `nil` when the token holds no live lease.
    public func saveCheckpoints(_ checkpoints: [(id: Int64, token: FencingToken, state: String, progress: String?)]) async throws -> [Int64?] {
        guard !checkpoints.isEmpty else { return [] }
        // No progress travels as "", which is not JSON.
        let rows = try await self.connection.query(
            """
            WITH saved AS (
                SELECT * FROM unnest(\(checkpoints.map(\.id))::bigint[], \(checkpoints.map(\.token.rawValue))::bigint[],
                    \(checkpoints.map(\.state))::text[], \(checkpoints.map { $0.progress ?? "" })::text[])
                    WITH ORDINALITY AS c(id, token, state, progress, n)
            )
            UPDATE jobs SET checkpoint = saved.state, progress = coalesce(nullif(saved.progress, ''), jobs.progress),
                lease_deadline = least(baton_now_ms() + jobs.lease_ms, jobs.timeout_at)
            FROM saved
            WHERE jobs.id = saved.id AND \(unescaped: Self.liveLease("saved.token"))
            RETURNING saved.n, jobs.lease_deadline
            """, logger: self.logger)
        return try await rows.numbered(Int64.self, count: checkpoints.count)
    }

    /// Stores progress for the job whose live lease `token` holds; see ``saveProgress(_:)``.
    public func saveProgress(id: Int64, token: FencingToken, progress: String) async throws -> Bool {
        try await self.saveProgress([(id, token, progress)])[0]
    }

    /// Stores a batch's progress reports with one statement, each for the job whose live
    /// lease its token holds.
    ///
    /// - Returns: for each, in order, whether it was stored.
    public func saveProgress(_ reports: [(id: Int64, token: FencingToken, progress: String)]) async throws -> [Bool] {
        guard !reports.isEmpty else { return [] }
        let rows = try await self.run(
            SaveProgress(ids: reports.map(\.id), tokens: reports.map(\.token.rawValue), progress: reports.map(\.progress)))
        return try await rows.numbered(count: reports.count)
    }

    private struct SaveProgress: PreparedBatchStatement {
        static let name = "baton_save_progress"
        static let sql = """
            WITH report AS (
                SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[]) WITH ORDINALITY AS p(id, token, progress, n)
            )
            UPDATE jobs SET progress = report.progress FROM report
            WHERE jobs.id = report.id AND \(PostgresTransaction.liveLease("report.token"))
            RETURNING report.n
            """
        var ids: [Int64]
        var tokens: [Int64]
        var progress: [String]

        func makeBindings() -> PostgresBindings { PostgresBindings(self.ids, self.tokens, self.progress) }
    }

    /// Completes the running job whose live lease `token` holds; see ``complete(_:)``.
    public func complete(id: Int64, token: FencingToken, result: String?) async throws -> Bool {
        try await self.complete([(id, token, result)])[0] != nil
    }

    /// A job a completion moved to `completed`.
    public struct Completed: Sendable {
        public var queue: String
        /// When its attempt started, on the database's clock.
        public var startedAt: Int64?
        /// Whether other jobs wait on it: only then has ``dependenciesCompleted(_:)`` work to do.
        public var hasDependents: Bool
        /// Whether its queue's breaker must hear of it (``breakersHeard(_:)``): it is the
        /// trial, or failures since the last success are counted.
        public var breakerHears: Bool
        /// The named limits it gave its places back to.
        public var limits: [String]
        /// Whether one of those limits' breakers must hear of it (``limitBreakersHeard(_:)``).
        public var limitBreakerHears: Bool
    }

    /// Completes a batch's jobs with one statement, each whose live lease its token holds.
    ///
    /// - Returns: for each, in order, the completed job, or `nil` when the token holds no
    ///   live lease (or the job came twice in the batch: the first completes it).
    public func complete(_ jobs: [(id: Int64, token: FencingToken, result: String?)]) async throws -> [Completed?] {
        guard !jobs.isEmpty else { return [] }
        // No result travels as "", which is not JSON.
        let rows = try await self.run(
            CompleteJobs(ids: jobs.map(\.id), tokens: jobs.map(\.token.rawValue), results: jobs.map { $0.result ?? "" }))
        var completed = [Completed?](repeating: nil, count: jobs.count)
        for try await (n, queue, startedAt, hasDependents, breakerHears, limits, limitBreakerHears)
            in rows.decode((Int, String, Int64?, Bool, Bool, String?, Bool).self)
        {
            completed[n - 1] = Completed(
                queue: queue, startedAt: startedAt, hasDependents: hasDependents, breakerHears: breakerHears,
                limits: NamedLimits.names(inText: limits), limitBreakerHears: limitBreakerHears)
        }
        return completed
    }

    private struct CompleteJobs: PreparedBatchStatement {
        static let name = "baton_complete_jobs"
        static let sql = """
            WITH done AS (
                SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[]) WITH ORDINALITY AS d(id, token, result, n)
            )
            UPDATE jobs SET state = '\(JobMove.complete.to.rawValue)', result = nullif(done.result, ''),
                finished_at = baton_now_ms(), lease_deadline = NULL
            FROM done
            WHERE jobs.id = done.id AND \(PostgresTransaction.liveLease("done.token", from: JobMove.complete.from))
            RETURNING done.n, jobs.queue, jobs.started_at, jobs.has_dependents,
                EXISTS (SELECT 1 FROM queues q WHERE q.name = jobs.queue AND q.breaker_failures IS NOT NULL
                    AND (cardinality(q.breaker_failed_at) > 0 OR q.breaker_trial = jobs.id)),
                jobs.limits,
                CASE WHEN jobs.limits IS NULL THEN false ELSE EXISTS (
                    SELECT 1 FROM limit_usage u WHERE u.name IN (SELECT jsonb_array_elements_text(jobs.limits::jsonb))
                        AND (cardinality(u.breaker_failed_at) > 0 OR u.breaker_trial = jobs.id)) END
            """
        var ids: [Int64]
        var tokens: [Int64]
        /// The results, "" for none.
        var results: [String]

        func makeBindings() -> PostgresBindings { PostgresBindings(self.ids, self.tokens, self.results) }
    }

    /// Ends the attempt of the job whose live lease `token` holds unsuccessfully; see
    /// ``endAttempts(_:expired:)``.
    public func markUnsuccessful(id: Int64, token: FencingToken, decision: RetryDecision, error: String) async throws -> Bool {
        try await self.endAttempts([(id, token, decision, error)])[0]
    }

    /// Ends a batch's attempts unsuccessfully with one statement: each to `retrying` at its
    /// decision's time, or `failed`.
    ///
    /// - Parameter expired: `false` for workers' `fail`s, each applied only while its token
    ///   holds a live lease; `true` for an expiry, where the lease that ran out is the guard.
    /// - Returns: for each, in order, whether it applied.
    public func endAttempts(
        _ attempts: [(id: Int64, token: FencingToken, decision: RetryDecision, error: String)], expired: Bool = false
    ) async throws -> [Bool] {
        guard !attempts.isEmpty else { return [] }
        // A retry and a failure start from the same states, so one guard serves both.
        precondition(JobMove.retry.from == JobMove.fail.from)
        let states = attempts.map(\.decision.state.rawValue)
        let runAts = attempts.map { if case .retry(let runAt) = $0.decision { runAt } else { Int64(-1) } }
        let rows = try await self.connection.query(
            """
            WITH ending AS (
                SELECT * FROM unnest(\(attempts.map(\.id))::bigint[], \(attempts.map(\.token.rawValue))::bigint[],
                    \(states)::text[], \(runAts)::bigint[], \(attempts.map(\.error))::text[])
                    WITH ORDINALITY AS e(id, token, state, run_at, error, n)
            )
            UPDATE jobs SET state = ending.state, last_error = ending.error, lease_deadline = NULL,
                run_at = CASE WHEN ending.run_at >= 0 THEN ending.run_at ELSE jobs.run_at END,
                ready = ending.run_at >= 0 AND ending.run_at <= baton_now_ms(),
                finished_at = CASE WHEN ending.state = '\(unescaped: JobMove.fail.to.rawValue)' THEN baton_now_ms() END
            FROM ending
            WHERE jobs.id = ending.id AND \(unescaped: expired
                ? Self.fenced(from: JobMove.retry.from) + " AND jobs.lease_token = ending.token"
                : Self.liveLease("ending.token", from: JobMove.retry.from))
            RETURNING ending.n
            """, logger: self.logger)
        return try await rows.numbered(count: attempts.count)
    }

    /// Hands the running job whose live lease `token` holds back to `queued`; see ``release(_:)``.
    public func markReleased(id: Int64, token: FencingToken, runAt: Int64) async throws -> String? {
        try await self.release([(id, token, runAt)])[0]
    }

    /// Hands a batch's running jobs back to `queued` with one statement, each at its
    /// `runAt` and without spending its attempt, where its token holds a live lease.
    ///
    /// - Returns: for each, in order, the job's queue, or `nil` when the token holds no live lease.
    public func release(_ releases: [(id: Int64, token: FencingToken, runAt: Int64)]) async throws -> [String?] {
        guard !releases.isEmpty else { return [] }
        let rows = try await self.connection.query(
            """
            WITH released AS (
                SELECT * FROM unnest(\(releases.map(\.id))::bigint[], \(releases.map(\.token.rawValue))::bigint[],
                    \(releases.map(\.runAt))::bigint[]) WITH ORDINALITY AS r(id, token, run_at, n)
            )
            UPDATE jobs SET state = '\(unescaped: JobMove.release.to.rawValue)', ready = released.run_at <= baton_now_ms(),
                run_at = released.run_at, attempts = greatest(jobs.attempts - 1, 0), lease_deadline = NULL
            FROM released
            WHERE jobs.id = released.id AND \(unescaped: Self.liveLease("released.token", from: JobMove.release.from))
            RETURNING released.n, jobs.queue
            """, logger: self.logger)
        return try await rows.numbered(String.self, count: releases.count)
    }

    /// A running job whose lease has run out, as the expiry found it.
    public struct Expired: Sendable {
        public var id: Int64
        public var queue: String
        public var token: FencingToken
        /// Where it went: `retrying` or `failed`.
        public var decision: RetryDecision
        /// Why, when it was not that the lease ran out: the attempt's time limit, or its
        /// process's exit.
        public var reason: String?
        /// The named limits it counted against.
        public var limits: [String]
    }

    /// Ends the attempts of up to `limit` running jobs whose leases have run out on the
    /// database's clock, by the jobs' retry rule (``RetryDecision``). Any host may run it:
    /// rows another transaction is expiring are skipped.
    ///
    /// - Parameter jitter: the backoff's jitter for each job, a number in `0..<1`.
    public func expireOverdueLeases(limit: Int, jitter: () -> Double) async throws -> [Expired] {
        try await self.expire(try await self.run(OverdueLeases(limit: limit)), because: nil, jitter: jitter)
    }

    /// Ends the attempts of the running jobs whose leases `leases` name, where those tokens
    /// still hold them, as an expiry does but with `error`: the leases of a worker whose
    /// process exited, ended before their time.
    public func expireLeases(
        _ leases: [(id: Int64, token: FencingToken)], error: String, jitter: () -> Double
    ) async throws -> [Expired] {
        guard !leases.isEmpty else { return [] }
        let rows = try await self.connection.query(
            """
            SELECT \(unescaped: Self.expiryColumns) FROM jobs
            WHERE state = 'running' AND (id, lease_token) IN (
                SELECT * FROM unnest(\(leases.map(\.id))::bigint[], \(leases.map(\.token.rawValue))::bigint[]))
            ORDER BY id FOR UPDATE
            """, logger: self.logger)
        return try await self.expire(rows, because: error, jitter: jitter)
    }

    /// What an expiry reads of each job it ends.
    private static let expiryColumns = """
        id, queue, lease_token, attempts, max_attempts, backoff_initial_ms, backoff_factor, backoff_max_ms, baton_now_ms(),
        CASE WHEN timeout_at <= baton_now_ms() THEN timeout_at - started_at END, limits
        """

    /// Ends the attempts of the jobs `rows` read (``expiryColumns``) by their retry rule,
    /// `because` of that, or else of the time limit where the attempt ran out of time, or
    /// else because the lease expired.
    private func expire(
        _ rows: some AsyncSequence<PostgresRow, any Error>, because reason: String?, jitter: () -> Double
    ) async throws -> [Expired] {
        var expired: [Expired] = []
        for try await (id, queue, token, attempts, maxAttempts, initial, factor, maximum, now, timeout, limits)
            in rows.decode((Int64, String, Int64, Int, Int, Int64, Double, Int64, Int64, Int64?, String?).self)
        {
            let decision = RetryDecision.afterUnsuccessfulAttempt(
                attempts, maxAttempts: maxAttempts,
                backoff: BackoffPolicy(initialMilliseconds: initial, factor: factor, maximumMilliseconds: maximum),
                jitter: jitter(), now: now
            )
            let reason = reason ?? timeout.map { AttemptTimeout.reason(milliseconds: $0) }
            expired.append(Expired(
                id: id, queue: queue, token: FencingToken(rawValue: token), decision: decision, reason: reason,
                limits: NamedLimits.names(inText: limits)))
        }
        _ = try await self.endAttempts(expired.map { ($0.id, $0.token, $0.decision, $0.reason ?? "lease expired") }, expired: true)
        return expired
    }

    // The sweep's statements run on every host a few times a second: prepared too.
    private struct OverdueLeases: PreparedBatchStatement {
        static let name = "baton_overdue_leases"
        static let sql = """
            SELECT \(PostgresTransaction.expiryColumns)
            FROM jobs WHERE state = 'running' AND lease_deadline <= baton_now_ms()
            ORDER BY lease_deadline LIMIT $1 FOR UPDATE SKIP LOCKED
            """
        var limit: Int

        func makeBindings() -> PostgresBindings { PostgresBindings(self.limit) }
    }

    // MARK: An operator's moves

    /// Moves an unfinished job from `state` to `cancelled`.
    ///
    /// - Returns: whether the job was still in `state`.
    public func markCancelled(id: Int64, from state: JobState, reason: String) async throws -> Bool {
        try await !self.markCancelled(ids: [id], from: state, reason: reason).isEmpty
    }

    /// Moves those of `ids` still in `state` to `cancelled`, with one statement.
    ///
    /// - Returns: the jobs it moved, with their queues and whether jobs wait on them.
    public func markCancelled(ids: [Int64], from state: JobState, reason: String) async throws -> [(id: Int64, queue: String, hasDependents: Bool)] {
        try state.checkMove(to: .cancelled)
        var moved: [(id: Int64, queue: String, hasDependents: Bool)] = []
        for try await row in try await self.connection.query(
            """
            UPDATE jobs SET state = 'cancelled', ready = false, last_error = \(reason), finished_at = baton_now_ms(),
                lease_deadline = NULL
            WHERE id = ANY(\(ids)::bigint[]) AND state = \(state.rawValue) RETURNING id, queue, has_dependents
            """, logger: self.logger
        ).decode((Int64, String, Bool).self) {
            moved.append(row)
        }
        return moved
    }

    /// Moves an unfinished job from `state` to `paused`; a running job gets its attempt back.
    ///
    /// - Returns: whether the job was still in `state`.
    public func markPaused(id: Int64, from state: JobState) async throws -> Bool {
        try state.checkMove(to: .paused)
        return try await self.connection.query(
            """
            UPDATE jobs SET state = 'paused', ready = false, lease_deadline = NULL,
                attempts = CASE state WHEN 'running' THEN greatest(attempts - 1, 0) ELSE attempts END
            WHERE id = \(id) AND state = \(state.rawValue) RETURNING id
            """, logger: self.logger
        ).first(Int64.self) != nil
    }

    /// Gives an unfinished job a new priority: a ready job moves in the claim order at once,
    /// a running one keeps it for its next attempt.
    ///
    /// - Returns: the job's state, or `nil` when it has finished or does not exist.
    public func setPriority(id: Int64, priority: Int64) async throws -> JobState? {
        let rows = try await self.connection.query(
            """
            UPDATE jobs SET priority = \(priority)
            WHERE id = \(id) AND state IN ('queued', 'running', 'paused', 'retrying') RETURNING state
            """, logger: self.logger)
        for try await state in rows.decode(String.self) {
            return JobState(rawValue: state)
        }
        return nil
    }

    /// Moves a paused job back to `queued`, ready at once unless its `run_at` is ahead.
    ///
    /// - Returns: the job's queue and `run_at`, or `nil` when it was not paused.
    public func markResumed(id: Int64) async throws -> (queue: String, runAt: Int64)? {
        let rows = try await self.connection.query(
            """
            UPDATE jobs SET state = '\(unescaped: JobMove.resume.to.rawValue)', ready = (run_at <= baton_now_ms() AND waiting_on = 0)
            WHERE id = \(id) AND \(unescaped: JobMove.resume.sqlGuard) RETURNING queue, run_at
            """, logger: self.logger)
        for try await (queue, runAt) in rows.decode((String, Int64).self) {
            return (queue, runAt)
        }
        return nil
    }

    /// Puts a failed or cancelled job back to `queued` with its attempts reset and its
    /// checkpoint kept.
    ///
    /// - Returns: the job's queue, or `nil` when it was not in `state`.
    public func markRetried(id: Int64, from state: JobState) async throws -> String? {
        try await self.markRetried(ids: [id], from: state).first?.queue
    }

    /// Puts those of `ids` still in `state` back to `queued`, with one statement.
    ///
    /// - Returns: the jobs it moved, with their queues.
    public func markRetried(ids: [Int64], from state: JobState) async throws -> [(id: Int64, queue: String)] {
        try state.checkMove(to: .queued)
        var moved: [(id: Int64, queue: String)] = []
        for try await row in try await self.connection.query(
            """
            UPDATE jobs SET state = 'queued', ready = (waiting_on = 0), run_at = baton_now_ms(), attempts = 0,
                finished_at = NULL
            WHERE id = ANY(\(ids)::bigint[]) AND state = \(state.rawValue) RETURNING id, queue
            """, logger: self.logger
        ).decode((Int64, String).self) {
            moved.append(row)
        }
        return moved
    }

    /// Marks retrying and delayed jobs whose time has come as ready to claim.
    ///
    /// - Returns: the queues that gained ready jobs.
    public func promoteDueJobs() async throws -> Set<String> {
        var queues = Set<String>()
        for try await queue in try await self.run(PromoteDueJobs()).decode(String.self) {
            queues.insert(queue)
        }
        return queues
    }

    private struct PromoteDueJobs: PreparedBatchStatement {
        static let name = "baton_promote_due_jobs"
        static let sql = """
            UPDATE jobs SET ready = true
            WHERE NOT ready AND state IN ('queued', 'retrying') AND waiting_on = 0 AND run_at <= baton_now_ms()
            RETURNING queue
            """
        func makeBindings() -> PostgresBindings { PostgresBindings() }
    }

    // MARK: Reads

    /// A job's state, or `nil` if there is no such job.
    public func state(of id: Int64) async throws -> JobState? {
        let rows = try await self.connection.query("SELECT state FROM jobs WHERE id = \(id)", logger: self.logger)
        return try await rows.first(String.self).flatMap(JobState.init(rawValue:))
    }

    /// The database's clock, in milliseconds since the epoch.
    public func now() async throws -> Int64 {
        guard let now = try await self.run(Now()).first(Int64.self) else { throw PostgresStoreError("baton_now_ms() returned nothing") }
        return now
    }

    private struct Now: PreparedBatchStatement {
        static let name = "baton_now"
        static let sql = "SELECT baton_now_ms()"
        func makeBindings() -> PostgresBindings { PostgresBindings() }
    }
}
