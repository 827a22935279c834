import BatonCore
import PostgresNIO

/// Fair groups on a store many hosts share: a queue's claims rotate across the groups that
/// have ready jobs, by the single-host store's rule (see `Authority.bestReadyJob(in:)`).
/// The group served last lives in the queue's row (`group_cursor`), read and moved under
/// its lock, so that the hosts take turns in one rotation. The next groups are found by a
/// loose index scan (`jobs_ready_groups`): one probe per group, however many jobs each holds.
extension PostgresTransaction {
    /// A ready job a gated claim may lease.
    struct Candidate: Sendable {
        var id: Int64
        var queue: String
        var key: String?
        var limits: [String]
        var priority: Int64
        var group: String?
    }

    /// Where the rotation of each queue stands while a batch's claims are decided, and the
    /// runs of groups already read.
    struct GroupRotation: Sendable {
        /// The group served last, by queue: "" at the turn of a round; absent while a
        /// queue's claims do not rotate (no job with a group has been claimed there).
        var cursors: [String: String] = [:]
        /// The cursors as read, to write back only what moved.
        var read: [String: String] = [:]
        fileprivate var runs: [RunKey: GroupRun] = [:]

        /// A claim started `job`: the next claim of its queue goes on from its group.
        mutating func served(_ job: Candidate) {
            if let group = job.group {
                self.cursors[job.queue] = group
            } else if self.cursors[job.queue] != nil {
                self.cursors[job.queue] = ""  // the turn of the round: start again from the first group
            }
        }
    }

    fileprivate struct RunKey: Hashable {
        var queue: String
        var priority: Int64
        var after: String
    }

    /// The oldest ready jobs of a run of groups, in name order, read from `after` on.
    fileprivate struct GroupRun {
        var jobs: [Candidate]
        /// Whether the run holds every group after `after` (fewer came than were asked for).
        var complete: Bool
        var lastGroup: String?
    }

    /// How many groups a look reads beyond the claims it serves, and how many jobs of each:
    /// the jobs a rule (a key, a limit) holds back that a claim passes over, at most.
    static let groupsAhead = 8
    static let jobsPerGroup = 4

    /// The candidates a statement selects as (id, queue, concurrency key, limits, priority, group).
    func candidates(_ query: PostgresQuery) async throws -> [Candidate] {
        var candidates: [Candidate] = []
        for try await (id, queue, key, limits, priority, group)
            in try await self.connection.query(query, logger: self.logger).decode((Int64, String, String?, String?, Int64, String?).self)
        {
            candidates.append(Candidate(id: id, queue: queue, key: key, limits: NamedLimits.names(inText: limits), priority: priority, group: group))
        }
        return candidates
    }

    /// The rotation of those of `queues` whose claims rotate, or whose `candidates` have a
    /// group, each queue's row locked until the transaction ends.
    func groupRotation(of queues: [String], candidates: [Candidate]) async throws -> GroupRotation {
        let grouped = Array(Set(candidates.lazy.filter { $0.group != nil }.map(\.queue)))
        let rows = try await self.connection.query(
            """
            SELECT name, group_cursor FROM queues
            WHERE name = ANY(\(queues)::text[]) AND (group_cursor IS NOT NULL OR name = ANY(\(grouped)::text[]))
            ORDER BY name FOR NO KEY UPDATE
            """, logger: self.logger)
        var rotation = GroupRotation()
        for try await (queue, cursor) in rows.decode((String, String?).self) {
            guard let cursor else { continue }
            rotation.cursors[queue] = cursor
            rotation.read[queue] = cursor
        }
        return rotation
    }

    /// The oldest ready jobs of `queue` at `priority`, a few per group, of the groups whose
    /// names follow `after` (all groups when it is ""), in name order, locked; read a run at
    /// a time and kept in `rotation` for the batch's next claims.
    func groupJobs(of queue: String, priority: Int64, after: String, _ rotation: inout GroupRotation) async throws -> [Candidate] {
        // A run read from an earlier cursor of this batch that reaches past `after` serves.
        for (key, run) in rotation.runs where key.queue == queue && key.priority == priority && key.after <= after {
            if run.complete || run.lastGroup.map({ after < $0 }) == true {
                return run.jobs.filter { $0.group! > after }
            }
        }
        let groups = Self.groupsAhead * 2
        let jobs = try await self.candidates(
            """
            WITH RECURSIVE g(name) AS (
                (SELECT fair_group FROM jobs
                 WHERE ready AND fair_group IS NOT NULL AND queue = \(queue) AND priority = \(priority) AND fair_group > \(after)
                 ORDER BY fair_group LIMIT 1)
                UNION ALL
                SELECT (SELECT j.fair_group FROM jobs j
                        WHERE j.ready AND j.fair_group IS NOT NULL AND j.queue = \(queue) AND j.priority = \(priority) AND j.fair_group > g.name
                        ORDER BY j.fair_group LIMIT 1)
                FROM g WHERE g.name IS NOT NULL
            )
            SELECT c.id, c.queue, c.concurrency_key, c.limits, c.priority, c.fair_group
            FROM (SELECT name FROM g WHERE name IS NOT NULL LIMIT \(groups)) g
            CROSS JOIN LATERAL (
                SELECT id, queue, concurrency_key, limits, priority, fair_group FROM jobs
                WHERE ready AND fair_group = g.name AND queue = \(queue) AND priority = \(priority) AND (concurrency_key IS NULL
                    OR NOT EXISTS (SELECT 1 FROM concurrency_keys k WHERE k.key = jobs.concurrency_key))
                ORDER BY id LIMIT \(Self.jobsPerGroup) FOR UPDATE SKIP LOCKED
            ) c
            ORDER BY c.fair_group, c.id
            """)
        let named = Set(jobs.compactMap(\.group))
        rotation.runs[RunKey(queue: queue, priority: priority, after: after)] = GroupRun(
            jobs: jobs, complete: named.count < groups, lastGroup: jobs.last?.group)
        return jobs
    }

    /// Writes back the cursors the batch's claims moved.
    func saveCursors(_ rotation: GroupRotation) async throws {
        let moved = rotation.cursors.filter { rotation.read[$0.key] != $0.value }
        guard !moved.isEmpty else { return }
        try await self.connection.query(
            """
            INSERT INTO queues AS s (name, group_cursor) SELECT * FROM unnest(\(Array(moved.keys))::text[], \(Array(moved.values))::text[])
            ON CONFLICT (name) DO UPDATE SET group_cursor = excluded.group_cursor
            """, logger: self.logger)
    }
}
