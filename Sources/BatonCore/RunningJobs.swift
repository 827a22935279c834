import HeapModule

/// One running job, as a single-writer store keeps it beside its rows: its lease, what the
/// admission rules count (its queue and concurrency key), and who holds it since when.
public struct RunningJob: Hashable, Sendable {
    public var lease: LeaseGrant
    public var queue: String
    public var concurrencyKey: String?
    /// The named limits it counts against (see ``NamedLimits``).
    public var limits: [String]
    /// Wall-clock milliseconds when the attempt started.
    public var startedAt: Int64

    public var jobID: Int64 { self.lease.jobID }

    public init(lease: LeaseGrant, queue: String, concurrencyKey: String?, limits: [String] = [], startedAt: Int64) {
        self.lease = lease
        self.queue = queue
        self.concurrencyKey = concurrencyKey
        self.limits = limits
        self.startedAt = startedAt
    }
}

/// Every running job, one record each, and what follows from them: the live leases with
/// the next deadline at hand, and the admission rules (per-queue limits on running jobs,
/// at most one running job per concurrency key, and the named limits).
///
/// The record is the single answer to "does this token hold this job?", "may this queue
/// start another job?" and "who holds this job since when?": a job starts and ends in one
/// call each, so the answers cannot drift apart. Kept in memory by the single writer over
/// SQLite, rebuilt from the store's running jobs at start; a store with many writers keeps
/// these truths in the database instead.
///
/// Leases are kept on a monotonic clock (see ``LeaseClock``). Each lease has exactly one
/// heap entry that stands for it (`Slot.heapDeadline`): a heartbeat only moves the deadline
/// in the record, and when the outdated entry surfaces it is pushed back with the current
/// deadline. Heartbeats therefore cost O(1), and entries left behind by ended jobs are
/// recognised and dropped when they surface.
public struct RunningJobs: Sendable {
    private var slots: [Int64: Slot] = [:]
    private var deadlines = Heap<Entry>()
    /// How many jobs of each queue run; queues with none are absent.
    private var running: [String: Int] = [:]
    private var limits: [String: Int] = [:]
    /// Each held key, with the queues in which a claim passed a ready job over for it.
    private var heldKeys: [String: Set<String>] = [:]
    /// Who holds each job: the connection, and the process whose exit ends the lease.
    public private(set) var holders = LeaseHolders()
    /// The named limits shared across queues, counted as jobs start and end here.
    public private(set) var namedLimits = NamedLimits()

    private struct Slot: Sendable {
        var job: RunningJob
        /// The deadline of the heap entry that represents this job's lease.
        var heapDeadline: Int64
    }

    private struct Entry: Comparable, Sendable {
        var deadline: Int64
        var jobID: Int64

        static func < (lhs: Entry, rhs: Entry) -> Bool {
            (lhs.deadline, lhs.jobID) < (rhs.deadline, rhs.jobID)
        }
    }

    /// The outcome of presenting a token.
    public enum Check: Hashable, Sendable {
        /// The token holds the job's live lease.
        case live(LeaseGrant)
        /// The token held the lease, but its deadline has passed; the caller must expire it.
        case expired(LeaseGrant)
        /// The token does not hold a lease on the job (stale, forged, or never granted).
        case notHeld
    }

    public init() {}

    /// The number of running jobs.
    public var count: Int { self.slots.count }

    /// A running job's record.
    public subscript(jobID: Int64) -> RunningJob? { self.slots[jobID]?.job }

    /// The earliest deadline that may be due; it can be early (a renewed lease), never late.
    public var nextDeadline: Int64? { self.deadlines.min?.deadline }

    // MARK: Start and end

    /// Records a job that starts running under a lease from lease time `now`, held on
    /// `connection` (none after a restart) and bound to `process` (see ``LeaseHolders``).
    ///
    /// - Parameter timeout: the attempt's time limit (``AttemptTimeout``), and how much of it
    ///   is left (less than all of it after a restart).
    @discardableResult
    public mutating func start(
        jobID: Int64, token: FencingToken, duration: Int64, now: Int64, holder: UInt32? = nil,
        queue: String, concurrencyKey: String? = nil, limits: [String] = [], startedAt: Int64 = 0, connection: UInt64? = nil,
        process: Int32? = nil, timeout: (limit: Int64, left: Int64)? = nil
    ) -> LeaseGrant {
        var lease = LeaseGrant(jobID: jobID, token: token, deadline: now + duration, duration: duration, holder: holder)
        if let timeout {
            lease.timeout = timeout.limit
            lease.timeoutAt = now + timeout.left
            lease.deadline = min(lease.deadline, now + timeout.left)
        }
        let job = RunningJob(lease: lease, queue: queue, concurrencyKey: concurrencyKey, limits: limits, startedAt: startedAt)
        if let previous = self.slots.updateValue(Slot(job: job, heapDeadline: lease.deadline), forKey: jobID)?.job {
            var ignored = Set<String>()
            self.uncount(previous, freeing: &ignored)
        }
        if let connection {
            self.holders.claimed(jobID, token: token, connection: connection, process: process)
        } else {
            self.holders.ended(jobID)
        }
        self.deadlines.insert(Entry(deadline: lease.deadline, jobID: jobID))
        self.running[queue, default: 0] += 1
        if let concurrencyKey, self.heldKeys[concurrencyKey] == nil {
            self.heldKeys[concurrencyKey] = []
        }
        if !limits.isEmpty { self.namedLimits.started(limits, job: jobID, now: now) }
        return lease
    }

    /// Ends a job's run, however it ended, whatever its token.
    ///
    /// - Parameter freed: receives the queues whose held-back jobs may now start: the job's
    ///   own queue if it was at its limit, and the queues where its key turned jobs away.
    @discardableResult
    public mutating func end(jobID: Int64, freeing freed: inout Set<String>) -> RunningJob? {
        guard let job = self.slots.removeValue(forKey: jobID)?.job else { return nil }
        self.uncount(job, freeing: &freed)
        self.holders.ended(jobID)
        return job
    }

    private mutating func uncount(_ job: RunningJob, freeing freed: inout Set<String>) {
        let wasFull = self.isFull(job.queue)
        self.running[job.queue, default: 1] -= 1
        if self.running[job.queue] == 0 {
            self.running.removeValue(forKey: job.queue)
        }
        if wasFull, !self.isFull(job.queue) {
            freed.insert(job.queue)
        }
        if let key = job.concurrencyKey, let passedOver = self.heldKeys.removeValue(forKey: key) {
            freed.formUnion(passedOver)
        }
        if !job.limits.isEmpty { self.namedLimits.ended(job.limits, job: job.jobID, freeing: &freed) }
    }

    // MARK: Leases

    /// Checks a token against the job's lease at lease time `now`.
    public func check(jobID: Int64, token: FencingToken, now: Int64) -> Check {
        guard let lease = self.slots[jobID]?.job.lease, lease.token == token else {
            return .notHeld
        }
        return now < lease.deadline ? .live(lease) : .expired(lease)
    }

    /// Extends a lease that was live when its renewal was heard to `now + duration`, or
    /// `now` plus its own period, and records `connection` (of `process`) as the job's
    /// holder, by ``LeaseHolders``' rules.
    ///
    /// - Parameters:
    ///   - heardAt: when the renewal arrived; the lease must have been live then. Defaults to `now`.
    /// - Returns: the renewed lease, or `nil` when the token did not hold a live lease.
    public mutating func renew(
        jobID: Int64, token: FencingToken, duration: Int64? = nil, heardAt: Int64? = nil, now: Int64,
        connection: UInt64? = nil, process: Int32? = nil
    ) -> LeaseGrant? {
        guard case .live(var lease) = self.check(jobID: jobID, token: token, now: heardAt ?? now) else {
            return nil
        }
        lease.duration = duration ?? lease.duration
        lease.deadline = min(now + lease.duration, lease.timeoutAt ?? .max)
        self.slots[jobID]!.job.lease = lease
        if let connection {
            self.holders.renewed(jobID, token: token, connection: connection, process: process)
        }
        return lease
    }

    /// Ends and returns every job whose lease deadline is at or before lease time `now`.
    public mutating func removeExpired(now: Int64, freeing freed: inout Set<String>) -> [RunningJob] {
        var expired: [RunningJob] = []
        while let entry = self.deadlines.min, entry.deadline <= now {
            self.deadlines.removeMin()
            guard var slot = self.slots[entry.jobID], slot.heapDeadline == entry.deadline else {
                continue  // left behind by an ended or restarted job
            }
            if slot.job.lease.deadline > now {
                // Renewed since this entry was pushed: let a new entry stand for it.
                slot.heapDeadline = slot.job.lease.deadline
                self.slots[entry.jobID] = slot
                self.deadlines.insert(Entry(deadline: slot.job.lease.deadline, jobID: entry.jobID))
                continue
            }
            if let job = self.end(jobID: entry.jobID, freeing: &freed) {
                expired.append(job)
            }
        }
        return expired
    }

    // MARK: Admission

    /// Every queue's limit.
    public var allLimits: [String: Int] { self.limits }

    /// Sets or removes a queue's limit.
    ///
    /// - Returns: whether jobs of the queue that were held back may now start.
    @discardableResult
    public mutating func setLimit(_ limit: Int?, of queue: String) -> Bool {
        let wasFull = self.isFull(queue)
        self.limits[queue] = limit
        return wasFull && !self.isFull(queue)
    }

    /// Whether `queue` already runs as many jobs as its limit allows.
    public func isFull(_ queue: String) -> Bool {
        guard let limit = self.limits[queue] else { return false }
        return self.running[queue, default: 0] >= limit
    }

    /// How many jobs of `queue` are running.
    public func runningCount(of queue: String) -> Int {
        self.running[queue, default: 0]
    }

    /// Whether a running job holds `key`.
    public func isHeld(_ key: String) -> Bool {
        self.heldKeys[key] != nil
    }

    /// Records that a ready job of `queue` was passed over because its key is held, so
    /// that the queue is named as freed when the key is given back.
    public mutating func passedOver(key: String, in queue: String) {
        self.heldKeys.modifyValue(forKey: key) { $0.insert(queue) }
    }

    /// Whether every named limit in `limits` lets a job of `queue` start at lease time `now`
    /// (see ``NamedLimits/admits(_:queue:now:)``).
    public mutating func admits(limits: [String], queue: String, now: Int64) -> Bool {
        self.namedLimits.admits(limits, queue: queue, now: now)
    }

    /// Sets or (empty) removes a named limit; `freed` receives the queues it may let start.
    public mutating func setNamedLimit(_ name: String, to settings: LimitSettings, freeing freed: inout Set<String>) {
        self.namedLimits.set(name, to: settings, freeing: &freed)
    }

    /// A running job's attempt completed (`succeeded`) or failed at lease time `now`: the
    /// breakers of its named limits hear of it. Before the job ends.
    public mutating func limitsHeard(_ jobID: Int64, succeeded: Bool, now: Int64) {
        guard let job = self.slots[jobID]?.job, !job.limits.isEmpty else { return }
        self.namedLimits.heard(job.limits, job: jobID, succeeded: succeeded, now: now)
    }

    /// The named limits' breaker changes since the last call.
    public mutating func takeLimitTransitions() -> [NamedLimits.Transition] {
        self.namedLimits.takeTransitions()
    }

    /// Offers again the queues whose named limits' windows opened by lease time `now`.
    public mutating func wakeNamedLimits(now: Int64, freeing freed: inout Set<String>) {
        self.namedLimits.wake(now: now, freeing: &freed)
    }

    // MARK: Holders

    /// The running jobs that started before `cutoff` (wall-clock milliseconds), longest first.
    public func started(before cutoff: Int64) -> [RunningJob] {
        self.slots.values.lazy.map(\.job).filter { $0.startedAt < cutoff }.sorted { $0.startedAt < $1.startedAt }
    }

    /// The ids of the jobs each connection holds, in increasing order.
    public var jobsByConnection: [UInt64: [Int64]] { self.holders.jobsByConnection }
}
