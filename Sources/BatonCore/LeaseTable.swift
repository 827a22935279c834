import HeapModule

/// The live leases, with the next one to expire at hand in O(1).
///
/// The table owns the answer to "does this token still hold this job?". Each lease has
/// exactly one heap entry that stands for it (`Slot.heapDeadline`): a heartbeat only moves
/// the deadline in the dictionary, and when the outdated entry surfaces it is pushed back
/// with the current deadline. Heartbeats therefore cost O(1), and entries left behind by
/// revoked leases are recognised and dropped when they surface.
public struct LeaseTable: Sendable {
    private var slots: [Int64: Slot] = [:]
    private var deadlines = Heap<Entry>()

    private struct Slot: Sendable {
        var lease: LeaseGrant
        /// The deadline of the heap entry that represents this lease.
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

    /// The number of live leases.
    public var count: Int { self.slots.count }

    /// The lease on a job, if any.
    public subscript(jobID: Int64) -> LeaseGrant? { self.slots[jobID]?.lease }

    /// The earliest deadline that may be due; it can be early (a renewed lease), never late.
    public var nextDeadline: Int64? { self.deadlines.min?.deadline }

    /// Records a lease that starts at monotonic time `now`, replacing any lease on the job.
    @discardableResult
    public mutating func grant(
        jobID: Int64, token: FencingToken, duration: Int64, now: Int64, holder: UInt32? = nil
    ) -> LeaseGrant {
        let lease = LeaseGrant(jobID: jobID, token: token, deadline: now + duration, duration: duration, holder: holder)
        self.slots[jobID] = Slot(lease: lease, heapDeadline: lease.deadline)
        self.deadlines.insert(Entry(deadline: lease.deadline, jobID: jobID))
        return lease
    }

    /// Checks a token against the job's lease at monotonic time `now`.
    public func check(jobID: Int64, token: FencingToken, now: Int64) -> Check {
        guard let lease = self.slots[jobID]?.lease, lease.token == token else {
            return .notHeld
        }
        return now < lease.deadline ? .live(lease) : .expired(lease)
    }

    /// Extends a lease that was live when its renewal was heard to `now + duration`, or
    /// `now` plus its own period.
    ///
    /// - Parameters:
    ///   - heardAt: when the renewal arrived; the lease must have been live then. Defaults to `now`.
    /// - Returns: the renewed lease, or `nil` when the token did not hold a live lease.
    public mutating func renew(
        jobID: Int64, token: FencingToken, duration: Int64? = nil, heardAt: Int64? = nil, now: Int64
    ) -> LeaseGrant? {
        guard case .live(var lease) = self.check(jobID: jobID, token: token, now: heardAt ?? now) else {
            return nil
        }
        lease.duration = duration ?? lease.duration
        lease.deadline = now + lease.duration
        self.slots[jobID]!.lease = lease
        return lease
    }

    /// Ends the lease on a job, whatever its token.
    @discardableResult
    public mutating func revoke(jobID: Int64) -> LeaseGrant? {
        self.slots.removeValue(forKey: jobID)?.lease
    }

    /// Removes and returns every lease whose deadline is at or before monotonic time `now`.
    public mutating func removeExpired(now: Int64) -> [LeaseGrant] {
        var expired: [LeaseGrant] = []
        while let entry = self.deadlines.min, entry.deadline <= now {
            self.deadlines.removeMin()
            guard var slot = self.slots[entry.jobID], slot.heapDeadline == entry.deadline else {
                continue  // left behind by a revoked or replaced lease
            }
            if slot.lease.deadline > now {
                // Renewed since this entry was pushed: let a new entry stand for it.
                slot.heapDeadline = slot.lease.deadline
                self.slots[entry.jobID] = slot
                self.deadlines.insert(Entry(deadline: slot.lease.deadline, jobID: entry.jobID))
                continue
            }
            self.slots.removeValue(forKey: entry.jobID)
            expired.append(slot.lease)
        }
        return expired
    }
}
