/// Decides whether a claim may start another job, by the per-queue limits on running jobs
/// and by concurrency keys (at most one running job per key across the store).
///
/// The gate keeps its counts in memory, next to the lease table: every running job holds a
/// lease, so the authority tells the gate whenever it grants or ends one, and rebuilds it
/// from the store's running jobs after a restart. A claim then asks two dictionary lookups
/// instead of counting rows.
///
/// A job turned away because its key is held is not failed, only passed over; the gate
/// remembers the queue it was passed over in, so that when the key is given back the
/// authority knows which waiting claims to try again.
public struct ConcurrencyGate: Sendable {
    private struct Holder: Sendable {
        var queue: String
        var key: String?
    }

    private var holders: [Int64: Holder] = [:]
    private var running: [String: Int] = [:]
    private var limits: [String: Int] = [:]
    /// Each held key, with the queues in which a claim passed a ready job over for it.
    private var heldKeys: [String: Set<String>] = [:]

    public init() {}

    // MARK: Limits

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

    // MARK: Keys

    /// The queue of a running job.
    public func queue(of jobID: Int64) -> String? {
        self.holders[jobID]?.queue
    }

    /// Whether a running job holds `key`.
    public func isHeld(_ key: String) -> Bool {
        self.heldKeys[key] != nil
    }

    /// Records that a ready job of `queue` was passed over because its key is held.
    public mutating func passedOver(key: String, in queue: String) {
        self.heldKeys.modifyValue(forKey: key) { $0.insert(queue) }
    }

    // MARK: Running jobs

    /// A job started running under a lease.
    public mutating func started(jobID: Int64, queue: String, key: String?) {
        guard self.holders.updateValue(Holder(queue: queue, key: key), forKey: jobID) == nil else { return }
        self.running[queue, default: 0] += 1
        if let key, self.heldKeys[key] == nil {
            self.heldKeys[key] = []
        }
    }

    /// A running job stopped running, however it ended.
    ///
    /// - Parameter freed: receives the queues whose held-back jobs may now start: the job's
    ///   own queue if it was at its limit, and the queues where its key turned jobs away.
    public mutating func finished(jobID: Int64, freeing freed: inout Set<String>) {
        guard let holder = self.holders.removeValue(forKey: jobID) else { return }
        let wasFull = self.isFull(holder.queue)
        self.running[holder.queue, default: 1] -= 1
        if self.running[holder.queue] == 0 {
            self.running.removeValue(forKey: holder.queue)
        }
        if wasFull, !self.isFull(holder.queue) {
            freed.insert(holder.queue)
        }
        if let key = holder.key, let passedOver = self.heldKeys.removeValue(forKey: key) {
            freed.formUnion(passedOver)
        }
    }
}
