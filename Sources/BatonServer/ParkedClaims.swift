import BatonCore
import BatonProtocol
import DequeModule

/// Claims waiting for a job (long-poll), oldest first.
///
/// A parked claim is served the moment a job becomes ready in one of its queues, in the
/// same commit that made it ready, so a parked worker gets a new job without a poll tick.
struct ParkedClaims {
    struct Waiter: Sendable {
        var id: String?
        var request: ClaimRequest
        var connection: ConnectionIdentity
        /// Monotonic milliseconds at which the claim answers `job: null`.
        var deadline: Int64
        var reply: ReplySink
    }

    private(set) var waiters = Deque<Waiter>()

    var count: Int { self.waiters.count }
    var isEmpty: Bool { self.waiters.isEmpty }

    mutating func park(_ waiter: Waiter) {
        self.waiters.append(waiter)
    }

    /// Parks again waiters taken out earlier, oldest first, ahead of any parked since.
    mutating func restore(_ waiters: [Waiter]) {
        self.waiters.insert(contentsOf: waiters, at: self.waiters.startIndex)
    }

    /// The earliest deadline among the waiters.
    var nextDeadline: Int64? {
        // Waiters are few (one per idle worker); a scan is cheaper than keeping a heap in step.
        self.waiters.lazy.map(\.deadline).min()
    }

    /// Removes the waiters whose deadline has passed.
    mutating func removeTimedOut(now: Int64) -> [Waiter] {
        self.remove { $0.deadline <= now }
    }

    /// Removes the waiters of a closed connection.
    mutating func removeAll(of connection: ConnectionIdentity) -> [Waiter] {
        self.remove { $0.connection == connection }
    }

    /// Removes every waiter.
    mutating func removeAll() -> [Waiter] {
        defer { self.waiters.removeAll() }
        return Array(self.waiters)
    }

    /// Offers newly ready jobs to the waiters, oldest first.
    ///
    /// `claim` tries to lease a job for a waiter. When it finds none, every queue that
    /// waiter listens on is known to be empty again, so no later waiter tries them.
    ///
    /// - Parameter readyQueues: the queues that may have ready jobs; emptied as they run dry.
    /// - Returns: the served waiters with their outcomes.
    mutating func serve(
        readyQueues: inout Set<String>,
        claim: (Waiter) throws -> Outcome?
    ) rethrows -> [(Waiter, Outcome)] {
        var served: [(Waiter, Outcome)] = []
        var index = self.waiters.startIndex
        while index < self.waiters.endIndex, !readyQueues.isEmpty {
            let waiter = self.waiters[index]
            guard waiter.request.queues.contains(where: readyQueues.contains) else {
                index += 1
                continue
            }
            if let outcome = try claim(waiter) {
                self.waiters.remove(at: index)
                served.append((waiter, outcome))
            } else {
                readyQueues.subtract(waiter.request.queues)
                index += 1
            }
        }
        return served
    }

    mutating func remove(where predicate: (Waiter) -> Bool) -> [Waiter] {
        var removed: [Waiter] = []
        var kept = Deque<Waiter>()
        for waiter in self.waiters {
            if predicate(waiter) { removed.append(waiter) } else { kept.append(waiter) }
        }
        if !removed.isEmpty { self.waiters = kept }
        return removed
    }
}
