import BatonCore
import BatonProtocol
import BatonStore

/// Named limits (``NamedLimits``, kept in ``RunningJobs``) and fair groups: which ready
/// job of a queue a claim may start, and the ops that set and show the limits.
extension Authority {
    /// The ready job of `queue` a claim starts, if any: the best one every rule admits, or,
    /// in a queue whose claims rotate across groups, the next group's.
    ///
    /// Fair groups: among ready jobs of the top priority, claims take each group's oldest
    /// admitted job in turn, by group name; at the turn of each round, the oldest job of that
    /// priority if it has no group (jobs without a group are not rotated, they keep their
    /// place in age order), else the first group's. Rotation starts in a queue with the first
    /// job claimed that has a group.
    func bestReadyJob(in queue: String, _ context: inout BatchContext) throws -> StoreTransaction.ReadyJob? {
        let now = context.leaseNow
        let admits = { (job: StoreTransaction.ReadyJob) in self.admits(job, of: queue, now: now) }
        guard let first = try context.tx.bestReadyJob(queue: queue, admits: admits) else { return nil }
        guard let cursor = self.groupCursors[queue] else { return first }
        if let next = try context.tx.nextGroupJob(queue: queue, priority: first.priority, after: cursor, admits: admits) {
            return next
        }
        // The turn of the round: the oldest job if it has no group, else the first group's.
        if first.group == nil || cursor.isEmpty { return first }
        return try context.tx.nextGroupJob(queue: queue, priority: first.priority, after: nil, admits: admits) ?? first
    }

    /// A claim started `job` of `queue`: the next claim there goes on from its group.
    func served(_ job: StoreTransaction.ReadyJob, of queue: String) {
        if let group = job.group {
            self.groupCursors[queue] = group
        } else if self.groupCursors[queue] != nil {
            self.groupCursors[queue] = ""  // the turn of the round: start again from the first group
        }
    }

    /// Whether `job` may start now: its concurrency key is free and every limit it names
    /// admits it. A job held back is remembered where it waits, so that its queue is
    /// offered again when what held it frees.
    private func admits(_ job: StoreTransaction.ReadyJob, of queue: String, now: Int64) -> Bool {
        if let key = job.concurrencyKey, self.running.isHeld(key) {
            self.running.passedOver(key: key, in: queue)
            return false
        }
        return job.limits.isEmpty || self.running.admits(limits: job.limits, queue: queue, now: now)
    }

    /// `set_limit`: the change applied to the limit's settings, durably.
    func setLimit(_ name: String, _ change: LimitSettings.Change, id: String?, _ context: inout BatchContext) throws -> [UInt8] {
        let settings = (self.running.namedLimits.settings[name] ?? LimitSettings()).applying(change)
        try context.tx.saveLimit(name, settings)
        self.running.setNamedLimit(name, to: settings, freeing: &context.readyQueues)
        return Reply.limitSettings(id: id, name: name, settings)
    }

    /// The named limits set or in use, and the names jobs waiting to run name, with how
    /// many wait on each: at most ``Reply/maximumLimitsShown`` of each, by name.
    func limitUses(_ tx: StoreTransaction) throws -> [NamedLimits.Use] {
        let known = self.running.namedLimits.uses.prefix(Reply.maximumLimitsShown).map(\.name)
        let waiting = try tx.waitingByLimit(Array(known), limit: Reply.maximumLimitsShown)
        return self.running.namedLimits.uses(including: waiting.keys, waiting: waiting)
    }

    /// The queues whose limits' rate windows have opened, offered to the parked claims.
    func limitWindowsOpened(_ context: inout BatchContext) {
        guard let next = self.running.namedLimits.nextWakeup, next <= context.leaseNow else { return }
        self.running.wakeNamedLimits(now: context.leaseNow, freeing: &context.readyQueues)
    }
}

extension Reply {
    /// `set_limit`'s answer: the limit's settings now.
    static func limitSettings(id: String?, name: String, _ settings: LimitSettings) -> [UInt8] {
        Reply.success(id: id) { reply in
            reply.member("name", name)
            reply.limitSettings(settings)
        }
    }

    /// `limits`: every limit set, and every name in use, at most `maximumLimitsShown`.
    static func limits(id: String?, _ uses: [NamedLimits.Use]) -> [UInt8] {
        Reply.success(id: id) { reply in
            reply.key("limits")
            reply.beginArray()
            for use in uses.prefix(maximumLimitsShown) {
                reply.beginObject()
                reply.member("name", use.name)
                reply.limitUse(use)
                reply.endObject()
            }
            reply.endArray()
            reply.member("truncated", uses.count > maximumLimitsShown)
        }
    }

    /// How many limits `limits` and `stats` list: names in use under a template can be many.
    static let maximumLimitsShown = 1_000
}

extension JSONWriter {
    mutating func limitSettings(_ settings: LimitSettings?) {
        self.member("max_running", optional: settings?.maxRunning.map { Int64($0) })
        self.key("rate")
        if let rate = settings?.rate {
            self.beginObject()
            self.member("count", Int64(rate.count))
            self.member("per_ms", rate.perMilliseconds)
            self.endObject()
        } else {
            self.null()
        }
        self.member("breaker", breaker: settings?.breaker)
    }

    /// One limit's settings and use: the rule it runs under (its own name or a template's,
    /// `null` when unset), running jobs, starts in the rate window, whether it holds back a
    /// claim, the jobs waiting on it, and its breaker's state.
    mutating func limitUse(_ use: NamedLimits.Use) {
        self.member("rule", optional: use.rule)
        self.limitSettings(use.settings)
        self.member("running", Int64(use.running))
        self.member("started_in_window", Int64(use.recentStarts))
        self.member("holding", use.holding)
        self.member("waiting", Int64(use.waiting))
        // "closed", "open" or "half_open" where it has a breaker (a template's instances each their own).
        self.member("breaker_state", optional: use.breaker?.name)
    }
}
