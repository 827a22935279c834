import BatonCore
import PostgresNIO

/// The queues' circuit breakers on a store many hosts share. Each breaker's state lives in
/// its queue's row (open until when, the trial job, the recent failures), and every move
/// of it happens under that row's lock by the rules of ``CircuitBreaker``, on the
/// database's clock: two hosts never both let a trial through, and a failure heard on one
/// host counts on all.
extension PostgresTransaction {
    /// A breaker's change, and the queue it belongs to.
    public struct BreakerMove: Sendable {
        public var queue: String
        public var transition: CircuitBreaker.Transition
    }

    /// The columns a breaker is read from, in ``breakers(_:)``'s order, for a look without
    /// locks. A trial that no longer runs (released, cancelled, paused: ended without an
    /// outcome) has given its place back to the next claim.
    static let breakerColumns = """
        name, breaker_failures, breaker_window_ms, breaker_cooldown_ms, breaker_open_until,
        (SELECT id FROM jobs WHERE id = breaker_trial AND state = 'running'), breaker_failed_at, baton_now_ms()
        """

    /// The same, with the trial as recorded: for reading under the rows' locks (see
    /// ``givingBackEndedTrials(_:)``), and for hearing the outcome of an attempt that has
    /// just stopped running.
    static let breakerColumnsAsRecorded = """
        name, breaker_failures, breaker_window_ms, breaker_cooldown_ms, breaker_open_until,
        breaker_trial, breaker_failed_at, baton_now_ms()
        """

    /// Reads the breakers of `queues` that have one, each row locked until the transaction
    /// ends, in name order (so that two transactions lock them in the same order).
    ///
    /// - Parameter asRecorded: the trial as recorded, whether or not it still runs.
    func lockedBreakers(_ queues: [String], asRecorded: Bool = false) async throws -> [(queue: String, breaker: CircuitBreaker, now: Int64)] {
        let rows = try await self.connection.query(
            """
            SELECT \(unescaped: Self.breakerColumnsAsRecorded) FROM queues
            WHERE name = ANY(\(queues)::text[]) AND breaker_failures IS NOT NULL ORDER BY name FOR NO KEY UPDATE
            """, logger: self.logger)
        let breakers = try await Self.breakers(rows)
        guard !asRecorded else { return breakers }
        let live = try await self.givingBackEndedTrials(breakers.map(\.breaker))
        return zip(breakers, live).map { ($0.queue, $1, $0.now) }
    }

    /// `breakers`, read under their rows' locks with their trials as recorded, each with its
    /// trial given back where that no longer runs (released, cancelled, paused: ended
    /// without an outcome). Read by a statement of its own: a statement sees the jobs as of
    /// its start, so a trial another host started and committed while this one waited for
    /// the lock would look not yet running to the statement that waited, and a second
    /// trial would pass.
    func givingBackEndedTrials(_ breakers: [CircuitBreaker]) async throws -> [CircuitBreaker] {
        let trials = breakers.compactMap { breaker -> Int64? in
            if case .halfOpen(let trial?) = breaker.state { trial } else { nil }
        }
        guard !trials.isEmpty else { return breakers }
        let rows = try await self.connection.query(
            "SELECT id FROM jobs WHERE id = ANY(\(trials)::bigint[]) AND state = 'running'", logger: self.logger)
        var running: Set<Int64> = []
        for try await id in rows.decode(Int64.self) { running.insert(id) }
        return breakers.map { breaker in
            var breaker = breaker
            if case .halfOpen(let trial?) = breaker.state, !running.contains(trial) { breaker.abandoned(trial) }
            return breaker
        }
    }

    private static func breakers(_ rows: PostgresRowSequence) async throws -> [(queue: String, breaker: CircuitBreaker, now: Int64)] {
        var breakers: [(queue: String, breaker: CircuitBreaker, now: Int64)] = []
        for try await (queue, failures, window, cooldown, openUntil, trial, failedAt, now)
            in rows.decode((String, Int, Int64, Int64, Int64?, Int64?, [Int64], Int64).self)
        {
            let settings = CircuitBreaker.Settings(failures: failures, windowMilliseconds: window, cooldownMilliseconds: cooldown)
            breakers.append((queue, CircuitBreaker(settings, openUntil: openUntil, trial: trial, failures: failedAt, now: now), now))
        }
        return breakers
    }

    /// The tables a breaker's state lives in, keyed by `name`: a queue's row, or the usage
    /// row of a name a named limit governs.
    enum BreakerRows: String {
        case queues
        case limitUsage = "limit_usage"
    }

    /// Writes a breaker's state back to its row (locked by the caller).
    func save(_ breaker: CircuitBreaker, of name: String, in table: BreakerRows) async throws {
        let (openUntil, trial): (Int64?, Int64?) =
            switch breaker.state {
            case .closed: (nil, nil)
            case .open(let until): (until, nil)
            case .halfOpen(let trial): (nil, trial)
            }
        // Half-open keeps the passed open_until it had: it is what says "half-open".
        try await self.connection.query(
            """
            UPDATE \(unescaped: table.rawValue) SET breaker_open_until = CASE WHEN \(breaker.state == .closed) THEN NULL
                    ELSE coalesce(\(openUntil), breaker_open_until) END,
                breaker_trial = \(trial), breaker_failed_at = \(breaker.failures)
            WHERE name = \(name)
            """, logger: self.logger)
    }

    /// Attempts that ended: each job of its queue completed (`succeeded`) or failed (a
    /// `fail`, or its lease or time limit ran out). Only queues with a breaker are touched.
    ///
    /// - Returns: the breakers that changed state.
    public func breakersHeard(_ outcomes: [(queue: String, job: Int64, succeeded: Bool)]) async throws -> [BreakerMove] {
        guard !outcomes.isEmpty else { return [] }
        var moves: [BreakerMove] = []
        for (queue, breaker, now) in try await self.lockedBreakers(Array(Set(outcomes.map(\.queue))), asRecorded: true) {
            var breaker = breaker
            let before = breaker
            for outcome in outcomes where outcome.queue == queue {
                let transition = outcome.succeeded ? breaker.succeeded(outcome.job) : breaker.failed(outcome.job, now: now)
                if let transition { moves.append(BreakerMove(queue: queue, transition: transition)) }
            }
            if breaker != before { try await self.save(breaker, of: queue, in: .queues) }
        }
        return moves
    }

    /// A claim started `job` of `queue`, whose half-open breaker let it through: the trial.
    func startedTrial(_ job: Int64, of queue: String) async throws {
        try await self.connection.query("UPDATE queues SET breaker_trial = \(job) WHERE name = \(queue)", logger: self.logger)
    }

    /// Closes a queue's breaker by hand (`resume_queue`).
    ///
    /// - Returns: whether it was not closed.
    public func resetBreaker(of queue: String) async throws -> Bool {
        let rows = try await self.connection.query(
            """
            WITH before AS (SELECT breaker_open_until FROM queues WHERE name = \(queue) FOR NO KEY UPDATE)
            UPDATE queues SET breaker_open_until = NULL, breaker_trial = NULL, breaker_failed_at = '{}'
            WHERE name = \(queue) AND breaker_failures IS NOT NULL
            RETURNING (SELECT breaker_open_until FROM before) IS NOT NULL
            """, logger: self.logger)
        return try await rows.first(Bool.self) ?? false
    }

    /// The breakers that are not closed, fleet-wide, by queue, for `stats` and `health`.
    public func openBreakers() async throws -> [(queue: String, state: CircuitBreaker.State)] {
        let rows = try await self.connection.query(
            """
            SELECT \(unescaped: Self.breakerColumns) FROM queues
            WHERE breaker_failures IS NOT NULL AND breaker_open_until IS NOT NULL ORDER BY name
            """, logger: self.logger)
        return try await Self.breakers(rows).map { ($0.queue, $0.breaker.state) }
    }
}
