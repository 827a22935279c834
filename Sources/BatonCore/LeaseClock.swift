/// The clock leases run on: the authority's monotonic time, less the time the authority
/// was stalled.
///
/// A lease must expire because its worker went quiet, never because the server did. When
/// the whole process stops (SIGSTOP, a paused VM, a machine too loaded to schedule it),
/// heartbeats sent on time wait unread in the socket, and on the raw monotonic clock the
/// expiry sweep would run before they are read. So the authority observes this clock at a
/// steady pulse and at the start of every batch; a gap between two observations longer
/// than the pulse allows is a stall, and lease time does not advance through it. Every
/// live lease is thereby extended by the stall, in O(1).
///
/// The authority's own batches are not stalls: while it applies a batch or waits for an
/// fsync, the connection threads keep reading and stamp each request with the time it
/// arrived, and a fenced request is judged at that time (see ``leaseTime(ofMonotonic:)``).
/// A batch is therefore bracketed by ``observe(_:)`` and ``rest(at:)``.
public struct LeaseClock: Sendable {
    /// How often the authority observes the clock when it has nothing else to do.
    public let pulseMilliseconds: Int64
    /// How late an observation may be, beyond the pulse, before the gap counts as a stall.
    public let toleranceMilliseconds: Int64
    /// The monotonic time of the last observation.
    private var lastObserved: Int64?
    /// All the stall time so far: lease time is monotonic time less this.
    public private(set) var stalledMilliseconds: Int64 = 0
    /// The last stall: when it began and ended (monotonic), and the stall time before it.
    private var lastStall: (start: Int64, end: Int64, stalledBefore: Int64)?

    public init(pulseMilliseconds: Int64 = 250, toleranceMilliseconds: Int64 = 250) {
        self.pulseMilliseconds = pulseMilliseconds
        self.toleranceMilliseconds = toleranceMilliseconds
    }

    /// Observes monotonic time `now`, counting the gap since the last observation as a stall
    /// when it is longer than the pulse and the tolerance.
    ///
    /// - Returns: the stall found, in milliseconds, or 0.
    @discardableResult
    public mutating func observe(_ now: Int64) -> Int64 {
        defer { self.lastObserved = now }
        guard let last = self.lastObserved, now - last > self.pulseMilliseconds + self.toleranceMilliseconds else {
            return 0
        }
        // The pulse would have observed `pulse` after `last`; the rest was lost.
        let stall = now - last - self.pulseMilliseconds
        self.lastStall = (start: last, end: now, stalledBefore: self.stalledMilliseconds)
        self.stalledMilliseconds += stall
        return stall
    }

    /// Marks the end of the authority's own work at monotonic time `now`: the time it spent
    /// is not a stall.
    public mutating func rest(at now: Int64) {
        self.lastObserved = now
    }

    /// Lease time now, as of the last observation's stall count.
    public func now(monotonic: Int64) -> Int64 {
        monotonic - self.stalledMilliseconds
    }

    /// The lease time of a moment already past, such as a request's arrival.
    ///
    /// A request that arrived before the last stall is judged by the lease time it arrived
    /// at, not given the stall as well: a token that was already expired when it arrived
    /// stays expired.
    public func leaseTime(ofMonotonic moment: Int64) -> Int64 {
        guard let stall = self.lastStall, moment < stall.end else {
            return moment - self.stalledMilliseconds
        }
        return min(moment, stall.start) - stall.stalledBefore
    }

    /// The monotonic time at which a lease deadline falls, for the expiry timer.
    public func monotonicTime(ofLeaseTime leaseTime: Int64) -> Int64 {
        leaseTime + self.stalledMilliseconds
    }
}
