import DequeModule

/// When each claimed job became due, from its claim until its attempt ends: where the span
/// of an attempt (queued, claimed, finished) starts.
///
/// Bounded: past ``limit`` claims, the oldest are forgotten, so that jobs whose attempts end
/// where this process cannot see it (another host of a fleet sweeps their leases) cannot
/// grow it. A job claimed again keeps its newer entry when its older claim is forgotten.
public struct ClaimDueTimes: Sendable {
    public static let limit = 100_000

    /// Each claimed job's due time, and its claim's number.
    private var times: [Int64: (dueAt: Int64, claim: UInt64)] = [:]
    /// Claims, oldest first; an entry whose claim is no longer its job's is stale.
    private var order: Deque<(job: Int64, claim: UInt64)> = []
    private var claims: UInt64 = 0
    private let limit: Int

    public init(limit: Int = ClaimDueTimes.limit) {
        self.limit = limit
    }

    /// How many jobs it remembers.
    public var count: Int { self.times.count }

    public mutating func claimed(_ job: Int64, dueAt: Int64) {
        self.claims += 1
        self.times[job] = (dueAt, self.claims)
        self.order.append((job, self.claims))
        while self.order.count > self.limit, let oldest = self.order.popFirst() {
            if self.times[oldest.job]?.claim == oldest.claim { self.times[oldest.job] = nil }
        }
    }

    /// The job's due time, forgotten: its attempt ended.
    public mutating func ended(_ job: Int64) -> Int64? {
        self.times.removeValue(forKey: job)?.dueAt
    }
}
