import BatonCore
import PostgresNIO

/// Named limits on a store many hosts share. The settings live in `limits`; each name in
/// use has a row in `limit_usage` (its running jobs, its recent starts on the database's
/// clock, its waiting jobs). A claim that meets a job naming limits locks those rows, in
/// name order, and decides with the same rules as the single-host store (``NamedLimits``),
/// so two hosts never both take a limit's last place or its window's last start. A job
/// that stops running gives its places back by trigger, whichever operation moved it.
extension PostgresTransaction {
    /// How many candidates a gated claim looks at per queue: the jobs a limit holds back
    /// that it passes over, at most.
    static let gatedCandidates = 200

    /// Serves `wishes` from `queues`, where a job naming limits is among the best ready
    /// ones: reads the best candidates (locking them), counts the limits they name under
    /// their rows' locks, and leases, best first, what the queues' `room`, the concurrency
    /// keys and the limits admit. Queues in `trials` have a half-open breaker whose trial
    /// this is (see ``room(in:)``). The limits that held jobs back go to `holds`.
    ///
    /// - Returns: the leases by the position of their wish.
    func claimGated(
        queues: [String], room: [Int32], trials: inout Set<String>, wishes: [ClaimWish], host: String,
        holds: inout [LimitHolds.Hold]
    ) async throws -> [Int: Claim] {
        var room = Dictionary(uniqueKeysWithValues: zip(queues, room))
        let candidates = try await self.connection.query(
            """
            SELECT j.id, j.queue, j.concurrency_key, j.limits FROM unnest(\(queues)::text[]) AS q(name)
            CROSS JOIN LATERAL (
                SELECT id, queue, concurrency_key, limits, priority FROM jobs
                WHERE ready AND queue = q.name AND (concurrency_key IS NULL
                    OR NOT EXISTS (SELECT 1 FROM concurrency_keys k WHERE k.key = jobs.concurrency_key))
                ORDER BY priority DESC, id LIMIT \(Self.gatedCandidates) FOR UPDATE SKIP LOCKED
            ) j
            ORDER BY j.priority DESC, j.id
            """, logger: self.logger)
        var jobs: [(id: Int64, queue: String, key: String?, limits: [String])] = []
        for try await (id, queue, key, limits) in candidates.decode((Int64, String, String?, String?).self) {
            jobs.append((id, queue, key, NamedLimits.names(inText: limits)))
        }
        var (limits, now) = try await self.lockedLimits(Set(jobs.flatMap(\.limits)))
        var chosen: [(id: Int64, limits: [String])] = []
        var keys: Set<String> = []
        for job in jobs where chosen.count < wishes.count && room[job.queue, default: .max] > 0 {
            if let key = job.key, keys.contains(key) { continue }
            guard limits.admits(job.limits, queue: job.queue, now: now) else { continue }
            limits.started(job.limits, job: job.id, now: now)
            chosen.append((job.id, job.limits))
            if let key = job.key { keys.insert(key) }
            room[job.queue, default: .max] -= 1
        }
        holds += limits.holds
        guard !chosen.isEmpty else { return [:] }
        let rows = try await self.run(ClaimChosen(ids: chosen.map(\.id), queues: queues, wishes: WishValues(wishes, host: host)))
        var (claims, _, _, _) = try await Self.claims(rows)
        // The places and starts of the jobs leased, counted where every host sees them.
        var started: [String: Int] = [:]
        for claim in claims.values {
            for name in chosen.first(where: { $0.id == claim.job.id })?.limits ?? [] { started[name, default: 0] += 1 }
        }
        try await self.countStarts(started, limits: limits, now: now)
        for (position, claim) in claims where trials.remove(claim.job.queue) != nil {
            try await self.startedTrial(claim.job.id, of: claim.job.queue)
            claims[position]?.isTrial = true
        }
        return claims
    }

    /// The settings of every limit, and the use of `names`, whose rows are locked (made
    /// where missing) until the transaction ends; with the database's clock.
    private func lockedLimits(_ names: Set<String>) async throws -> (NamedLimits, now: Int64) {
        var limits = NamedLimits()
        var ignored = Set<String>()
        for (name, settings) in try await self.limitSettings() { limits.set(name, to: settings, freeing: &ignored) }
        // One statement makes the missing rows and locks them all, in name order.
        let rows = try await self.connection.query(
            """
            INSERT INTO limit_usage AS u (name) SELECT unnest(\(names.sorted())::text[])
            ON CONFLICT (name) DO UPDATE SET name = u.name
            RETURNING u.name, u.running, u.starts, baton_now_ms()
            """, logger: self.logger)
        var now: Int64?
        for try await (name, running, starts, clock) in rows.decode((String, Int, [Int64], Int64).self) {
            limits.restore(name, running: running, starts: starts)
            now = clock
        }
        if let now { return (limits, now) }
        return (limits, try await self.now())
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
        let rows = try await self.connection.query("SELECT name, max_running, rate_count, rate_per_ms FROM limits", logger: self.logger)
        var settings: [String: LimitSettings] = [:]
        for try await (name, maxRunning, count, per) in rows.decode((String, Int?, Int?, Int64?).self) {
            settings[name] = LimitSettings(
                maxRunning: maxRunning, rate: count.flatMap { count in per.map { LimitSettings.Rate(count: count, perMilliseconds: $0) } })
        }
        return settings
    }

    /// Applies `change` to a named limit's settings, fleet-wide; a limit left with none is removed.
    ///
    /// - Returns: its settings now.
    public func changeLimit(_ name: String, _ change: LimitSettings.Change) async throws -> LimitSettings {
        let settings = (try await self.limitSettings()[name] ?? LimitSettings()).applying(change)
        if settings.isEmpty {
            try await self.connection.query("DELETE FROM limits WHERE name = \(name)", logger: self.logger)
        } else {
            try await self.connection.query(
                """
                INSERT INTO limits (name, max_running, rate_count, rate_per_ms)
                VALUES (\(name), \(settings.maxRunning.map { Int64($0) }), \(settings.rate.map { Int64($0.count) }), \(settings.rate?.perMilliseconds))
                ON CONFLICT (name) DO UPDATE SET max_running = excluded.max_running, rate_count = excluded.rate_count,
                    rate_per_ms = excluded.rate_per_ms
                """, logger: self.logger)
        }
        return settings
    }

    /// The limits set and the names in use, fleet-wide, by name (at most `limit` names in use):
    /// each with its running jobs, its starts within its window, and its waiting jobs.
    public func limitUses(limit: Int) async throws -> [NamedLimits.Use] {
        var limits = NamedLimits()
        var ignored = Set<String>()
        for (name, settings) in try await self.limitSettings() { limits.set(name, to: settings, freeing: &ignored) }
        let rows = try await self.connection.query(
            """
            SELECT name, running, starts, waiting, baton_now_ms() FROM limit_usage
            WHERE running > 0 OR waiting > 0 OR cardinality(starts) > 0 ORDER BY name LIMIT \(limit)
            """, logger: self.logger)
        var waiting: [String: Int] = [:]
        for try await (name, running, starts, waits, clock) in rows.decode((String, Int, [Int64], Int, Int64).self) {
            let rate = limits.rule(for: name)?.settings.rate
            limits.restore(name, running: running, starts: rate.map { rate in starts.filter { $0 > clock - rate.perMilliseconds } } ?? [])
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
