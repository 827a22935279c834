import BatonCore
import PostgresNIO

/// Named limits on a store many hosts share. The settings live in `limits`; each name in
/// use has a row in `limit_usage` (its running jobs, its recent starts on the database's
/// clock, its waiting jobs). A claim that meets a job naming limits locks those rows, in
/// name order, and decides with the same rules as the single-host store (``NamedLimits``),
/// so two hosts never both take a limit's last place or its window's last start. A job
/// that stops running gives its places back by trigger, whichever operation moved it. A
/// name's breaker lives in its usage row too, moved under the same lock.
extension PostgresTransaction {
    /// What the named limits did to a batch's claims, for the host to keep once it commits.
    public struct LimitEffects: Sendable {
        /// The limits that held jobs back (``LimitHolds``).
        public var holds: [LimitHolds.Hold] = []
        /// Their breakers' changes.
        public var transitions: [NamedLimits.Transition] = []

        public init() {}
    }

    /// How many candidates a gated claim looks at per queue: the jobs a limit holds back
    /// that it passes over, at most.
    static let gatedCandidates = 200

    /// Serves `wishes` from `queues`, where a job naming limits is among the best ready
    /// ones, or a job with a group (or a queue whose claims rotate across groups, when
    /// `rotating`): reads the best candidates (locking them), counts the limits they name
    /// under their rows' locks, and leases, best first or by the groups' rotation, what the
    /// queues' `room`, the concurrency keys and the limits admit. Queues in `trials` have a
    /// half-open breaker whose trial this is (see ``room(in:)``). What the limits did goes
    /// to `effects`.
    ///
    /// - Returns: the leases by the position of their wish.
    func claimGated(
        queues: [String], room: [Int32], trials: inout Set<String>, wishes: [ClaimWish], host: String, rotating: Bool,
        effects: inout LimitEffects
    ) async throws -> [Int: Claim] {
        var room = Dictionary(uniqueKeysWithValues: zip(queues, room))
        let jobs = try await self.candidates(
            """
            SELECT j.id, j.queue, j.concurrency_key, j.limits, j.priority, j.fair_group FROM unnest(\(queues)::text[]) AS q(name)
            CROSS JOIN LATERAL (
                SELECT id, queue, concurrency_key, limits, priority, fair_group FROM jobs
                WHERE ready AND queue = q.name AND (concurrency_key IS NULL
                    OR NOT EXISTS (SELECT 1 FROM concurrency_keys k WHERE k.key = jobs.concurrency_key))
                ORDER BY priority DESC, id LIMIT \(Self.gatedCandidates) FOR UPDATE SKIP LOCKED
            ) j
            ORDER BY j.priority DESC, j.id
            """)
        var rotation = GroupRotation()
        if rotating || jobs.contains(where: { $0.group != nil }) { rotation = try await self.groupRotation(of: queues, candidates: jobs) }
        var limits = LockedLimits(try await self.namedLimits())
        var now: Int64
        if let locked = try await self.lock(Set(jobs.flatMap(\.limits)), in: &limits) { now = locked } else { now = try await self.now() }
        var chosen: [(id: Int64, limits: [String])] = []
        var taken: Set<Int64> = []
        var keys: Set<String> = []
        /// Whether `job` may start: not taken, its queue has room, its key is free, and its limits admit it.
        func admitted(_ job: Candidate) -> Bool {
            guard !taken.contains(job.id), room[job.queue, default: .max] > 0 else { return false }
            if let key = job.key, keys.contains(key) { return false }
            return limits.rules.admits(job.limits, queue: job.queue, now: now)
        }
        while chosen.count < wishes.count, let first = jobs.first(where: admitted) {
            var pick = first
            // Fair groups: among jobs of this priority, the next group's oldest the rules admit.
            if let cursor = rotation.cursors[first.queue] {
                let run = try await self.groupJobs(of: first.queue, priority: first.priority, after: cursor, &rotation)
                now = try await self.lock(Set(run.flatMap(\.limits)), in: &limits) ?? now
                if let next = run.first(where: admitted) {
                    pick = next
                } else if first.group != nil, !cursor.isEmpty {
                    // The turn of the round: the first group's again.
                    let round = try await self.groupJobs(of: first.queue, priority: first.priority, after: "", &rotation)
                    now = try await self.lock(Set(round.flatMap(\.limits)), in: &limits) ?? now
                    pick = round.first(where: admitted) ?? first
                }
            }
            limits.rules.started(pick.limits, job: pick.id, now: now)
            chosen.append((pick.id, pick.limits))
            taken.insert(pick.id)
            if let key = pick.key { keys.insert(key) }
            room[pick.queue, default: .max] -= 1
            rotation.served(pick)
        }
        try await self.saveCursors(rotation)
        effects.holds += limits.rules.holds
        // A breaker that went half-open, or let its trial through, is moved where every host sees it.
        try await self.saveBreakers(of: limits)
        effects.transitions += limits.rules.takeTransitions()
        guard !chosen.isEmpty else { return [:] }
        let rows = try await self.run(ClaimChosen(ids: chosen.map(\.id), queues: queues, wishes: WishValues(wishes, host: host)))
        var claims = try await Self.claims(rows).claims
        // The places and starts of the jobs leased, counted where every host sees them.
        var started: [String: Int] = [:]
        for claim in claims.values {
            for name in chosen.first(where: { $0.id == claim.job.id })?.limits ?? [] { started[name, default: 0] += 1 }
        }
        try await self.countStarts(started, limits: limits.rules, now: now)
        for (position, claim) in claims where trials.remove(claim.job.queue) != nil {
            try await self.startedTrial(claim.job.id, of: claim.job.queue)
            claims[position]?.isTrial = true
        }
        return claims
    }

    /// The named limits a transaction decides by: every limit's settings, and the use of the
    /// names whose rows it has locked.
    private struct LockedLimits {
        var rules: NamedLimits
        /// The names locked, with their breakers as read (to tell what changed).
        var locked: Set<String> = []
        var breakersRead: [String: CircuitBreaker] = [:]

        init(_ rules: NamedLimits) { self.rules = rules }
    }

    /// Writes back the breakers that changed since they were read.
    private func saveBreakers(of limits: LockedLimits) async throws {
        for (name, before) in limits.breakersRead {
            guard let breaker = limits.rules.breaker(of: name), breaker != before else { continue }
            try await self.save(breaker, of: name, in: .limitUsage)
        }
    }

    /// Restores into `limits` the use of those of `names` it has not locked yet, whose rows
    /// are locked (made where missing) until the transaction ends.
    ///
    /// - Parameter asRecorded: a breaker's trial as recorded, whether or not it still runs
    ///   (for hearing the outcome of an attempt that has just stopped); otherwise a trial
    ///   that no longer runs has given its place back.
    /// - Returns: the database's clock, unless every name was locked already.
    private func lock(_ names: Set<String>, in limits: inout LockedLimits, asRecorded: Bool = false) async throws -> Int64? {
        let names = names.subtracting(limits.locked)
        guard !names.isEmpty else { return nil }
        limits.locked.formUnion(names)
        // One statement makes the missing rows and locks them all, in name order.
        let rows = try await self.connection.query(
            """
            INSERT INTO limit_usage AS u (name) SELECT unnest(\(names.sorted())::text[])
            ON CONFLICT (name) DO UPDATE SET name = u.name
            RETURNING u.name, u.running, u.starts, u.breaker_open_until, u.breaker_trial, u.breaker_failed_at, baton_now_ms()
            """, logger: self.logger)
        var now: Int64?
        var read: [(name: String, breaker: CircuitBreaker)] = []
        for try await (name, running, starts, openUntil, trial, failedAt, clock)
            in rows.decode((String, Int, [Int64], Int64?, Int64?, [Int64], Int64).self)
        {
            limits.rules.restore(name, running: running, starts: starts)
            if let settings = limits.rules.rule(for: name)?.settings.breaker {
                read.append((name, CircuitBreaker(settings, openUntil: openUntil, trial: trial, failures: failedAt, now: clock)))
            }
            now = clock
        }
        let live = asRecorded ? read.map(\.breaker) : try await self.givingBackEndedTrials(read.map(\.breaker))
        for (name, breaker) in zip(read.map(\.name), live) {
            limits.rules.restore(breaker, of: name)
            limits.breakersRead[name] = breaker
        }
        return now
    }

    /// Every limit's settings, templates included, as the rules decide by.
    private func namedLimits() async throws -> NamedLimits {
        var limits = NamedLimits()
        var ignored = Set<String>()
        for (name, settings) in try await self.limitSettings() { limits.set(name, to: settings, freeing: &ignored) }
        return limits
    }

    /// Attempts of jobs naming limits that ended: each completed (`succeeded`) or failed (a
    /// `fail`, or its lease or time limit ran out). Only the names whose rules have a
    /// breaker are touched, under their rows' locks.
    ///
    /// - Returns: the breakers' changes.
    public func limitBreakersHeard(_ outcomes: [(limits: [String], job: Int64, succeeded: Bool)]) async throws -> [NamedLimits.Transition] {
        guard outcomes.contains(where: { !$0.limits.isEmpty }) else { return [] }
        let settings = try await self.namedLimits()
        let names = Set(outcomes.flatMap(\.limits)).filter { settings.rule(for: $0)?.settings.breaker != nil }
        guard !names.isEmpty else { return [] }
        var limits = LockedLimits(settings)
        guard let now = try await self.lock(names, in: &limits, asRecorded: true) else { return [] }
        for outcome in outcomes {
            limits.rules.heard(outcome.limits.filter(names.contains), job: outcome.job, succeeded: outcome.succeeded, now: now)
        }
        try await self.saveBreakers(of: limits)
        return limits.rules.takeTransitions()
    }

    /// The names whose breakers are not closed, fleet-wide, by name, for `stats` and `health`.
    public func openLimitBreakers() async throws -> [(name: String, state: CircuitBreaker.State)] {
        let settings = try await self.namedLimits()
        let rows = try await self.connection.query(
            """
            SELECT name, breaker_open_until, (SELECT id FROM jobs WHERE id = breaker_trial AND state = 'running'),
                breaker_failed_at, baton_now_ms()
            FROM limit_usage WHERE breaker_open_until IS NOT NULL ORDER BY name
            """, logger: self.logger)
        var open: [(name: String, state: CircuitBreaker.State)] = []
        for try await (name, openUntil, trial, failedAt, now) in rows.decode((String, Int64?, Int64?, [Int64], Int64).self) {
            guard let rule = settings.rule(for: name)?.settings.breaker else { continue }
            open.append((name, CircuitBreaker(rule, openUntil: openUntil, trial: trial, failures: failedAt, now: now).state))
        }
        return open
    }

    /// Adds the starts of the jobs just leased to their names' rows (locked by
    /// ``lockedLimits(_:)``), keeping of each window only what a rate still counts: one
    /// statement for all the names.
    private func countStarts(_ started: [String: Int], limits: NamedLimits, now: Int64) async throws {
        guard !started.isEmpty else { return }
        let names = started.keys.sorted()
        // Without a rate a name keeps no starts: its window is 0 ms and holds none.
        let rates = names.map { limits.rule(for: $0)?.settings.rate }
        try await self.connection.query(
            """
            UPDATE limit_usage u SET running = u.running + c.count,
                starts = (
                    SELECT coalesce(array_agg(s ORDER BY s), '{}') FROM (
                        SELECT s FROM unnest(u.starts || array_fill(\(now)::bigint, ARRAY[c.count])) AS s
                        WHERE s > \(now) - c.per ORDER BY s DESC LIMIT c.kept
                    ) kept)
            FROM unnest(\(names)::text[], \(names.map { Int32(started[$0]!) })::integer[],
                \(rates.map { $0?.perMilliseconds ?? 0 })::bigint[], \(rates.map { Int64($0?.count ?? 0) })::bigint[])
                AS c(name, count, per, kept)
            WHERE u.name = c.name
            """, logger: self.logger)
    }

    /// The names the jobs `ids` count against, all together: for jobs that stopped running.
    public func limitNames(of ids: [Int64]) async throws -> Set<String> {
        guard !ids.isEmpty else { return [] }
        let rows = try await self.connection.query(
            "SELECT limits FROM jobs WHERE id = ANY(\(ids)::bigint[]) AND limits IS NOT NULL", logger: self.logger)
        var names: Set<String> = []
        for try await limits in rows.decode(String.self) { names.formUnion(NamedLimits.names(inText: limits)) }
        return names
    }

    // MARK: Settings and what they show

    /// Every named limit's settings, templates included.
    public func limitSettings() async throws -> [String: LimitSettings] {
        let rows = try await self.connection.query(
            """
            SELECT name, max_running, rate_count, rate_per_ms, breaker_failures, breaker_window_ms, breaker_cooldown_ms FROM limits
            """, logger: self.logger)
        var settings: [String: LimitSettings] = [:]
        for try await (name, maxRunning, count, per, failures, window, cooldown)
            in rows.decode((String, Int?, Int?, Int64?, Int?, Int64?, Int64?).self)
        {
            settings[name] = LimitSettings(
                maxRunning: maxRunning, rate: count.flatMap { count in per.map { LimitSettings.Rate(count: count, perMilliseconds: $0) } },
                breaker: failures.flatMap { failures in
                    window.flatMap { window in
                        cooldown.map { CircuitBreaker.Settings(failures: failures, windowMilliseconds: window, cooldownMilliseconds: $0) }
                    }
                })
        }
        return settings
    }

    /// Applies `change` to a named limit's settings, fleet-wide; a limit left with none is
    /// removed. The breakers it governs close, as do those it no longer governs: setting a
    /// limit is how an operator closes one by hand.
    ///
    /// - Returns: its settings now, and the names whose breakers it closed.
    public func changeLimit(_ name: String, _ change: LimitSettings.Change) async throws -> (settings: LimitSettings, closed: [String]) {
        let settings = (try await self.limitSettings()[name] ?? LimitSettings()).applying(change)
        if settings.isEmpty {
            try await self.connection.query("DELETE FROM limits WHERE name = \(name)", logger: self.logger)
        } else {
            let breaker = settings.breaker
            try await self.connection.query(
                """
                INSERT INTO limits (name, max_running, rate_count, rate_per_ms, breaker_failures, breaker_window_ms, breaker_cooldown_ms)
                VALUES (\(name), \(settings.maxRunning.map { Int64($0) }), \(settings.rate.map { Int64($0.count) }), \(settings.rate?.perMilliseconds),
                    \(breaker.map { Int64($0.failures) }), \(breaker?.windowMilliseconds), \(breaker?.cooldownMilliseconds))
                ON CONFLICT (name) DO UPDATE SET max_running = excluded.max_running, rate_count = excluded.rate_count,
                    rate_per_ms = excluded.rate_per_ms, breaker_failures = excluded.breaker_failures,
                    breaker_window_ms = excluded.breaker_window_ms, breaker_cooldown_ms = excluded.breaker_cooldown_ms
                """, logger: self.logger)
        }
        // The names whose breaker state this limit governed or now governs: its own, or a
        // template's names that no longer fall to another rule with a breaker.
        let limits = try await self.namedLimits()
        let prefix = LimitSettings.isTemplate(name) ? String(name.dropLast()) : nil
        let rows = try await self.connection.query(
            """
            SELECT name, breaker_open_until IS NOT NULL FROM limit_usage
            WHERE (name = \(name) OR starts_with(name, \(prefix ?? name)))
                AND (breaker_open_until IS NOT NULL OR breaker_trial IS NOT NULL OR cardinality(breaker_failed_at) > 0)
            ORDER BY name FOR NO KEY UPDATE
            """, logger: self.logger)
        var reset: [String] = []
        var closed: [String] = []
        for try await (used, wasOpen) in rows.decode((String, Bool).self) {
            guard used == name || prefix != nil else { continue }
            let rule = limits.rule(for: used)
            guard rule?.rule == name || rule?.settings.breaker == nil else { continue }
            reset.append(used)
            if wasOpen { closed.append(used) }
        }
        try await self.connection.query(
            """
            UPDATE limit_usage SET breaker_open_until = NULL, breaker_trial = NULL, breaker_failed_at = '{}'
            WHERE name = ANY(\(reset)::text[])
            """, logger: self.logger)
        return (settings, closed)
    }

    /// The limits set and the names in use, fleet-wide, by name (at most `limit` names in use):
    /// each with its running jobs, its starts within its window, and its waiting jobs.
    public func limitUses(limit: Int) async throws -> [NamedLimits.Use] {
        var limits = try await self.namedLimits()
        let rows = try await self.connection.query(
            """
            SELECT name, running, starts, waiting, breaker_open_until,
                (SELECT id FROM jobs WHERE id = breaker_trial AND state = 'running'), breaker_failed_at, baton_now_ms()
            FROM limit_usage
            WHERE running > 0 OR waiting > 0 OR cardinality(starts) > 0 OR breaker_open_until IS NOT NULL
                OR cardinality(breaker_failed_at) > 0
            ORDER BY name LIMIT \(limit)
            """, logger: self.logger)
        var waiting: [String: Int] = [:]
        for try await (name, running, starts, waits, openUntil, trial, failedAt, clock)
            in rows.decode((String, Int, [Int64], Int, Int64?, Int64?, [Int64], Int64).self)
        {
            let settings = limits.rule(for: name)?.settings
            let rate = settings?.rate
            limits.restore(name, running: running, starts: rate.map { rate in starts.filter { $0 > clock - rate.perMilliseconds } } ?? [])
            if let breaker = settings?.breaker {
                limits.restore(CircuitBreaker(breaker, openUntil: openUntil, trial: trial, failures: failedAt, now: clock), of: name)
            }
            waiting[name] = waits
        }
        return limits.uses(including: waiting.keys, waiting: waiting)
    }
}

/// Leases the jobs a gated claim chose, the nth to the nth wish, as a claim round does.
private struct ClaimChosen: PreparedBatchStatement {
    static let name = "baton_claim_chosen"
    static let sql = """
        WITH picked AS (SELECT * FROM unnest($1::bigint[]) WITH ORDINALITY AS p(id, n) LIMIT $3),
        best AS (
            SELECT jobs.id, jobs.state, jobs.concurrency_key, s.timeout_ms AS timeout, picked.n::integer AS n
            FROM picked JOIN jobs ON jobs.id = picked.id LEFT JOIN queues s ON s.name = jobs.queue AND s.name = ANY($2::text[])
            WHERE jobs.ready
        ),
        \(PostgresTransaction.claimTail)
        """
    var ids: [Int64]
    var queues: [String]
    var wishes: PostgresTransaction.WishValues

    func makeBindings() -> PostgresBindings {
        self.wishes.bindings(after: self.ids, self.queues, self.ids.count)
    }
}
