/// How many jobs each queue holds in each state.
///
/// Kept in memory by the authority, so that `stats` and the metrics scrape read a few
/// numbers instead of counting every row in the store, finished ones included: with a
/// week's retention, that count took hundreds of milliseconds per call, during which
/// nothing else was applied. Built from the store once at start, then moved by every
/// committed state change.
public struct JobCensus: Sendable, Equatable {
    public private(set) var counts: [String: [JobState: Int]]
    /// Jobs queued or retrying, in every queue: the work not yet running.
    public private(set) var waiting = 0

    public init(counts: [String: [JobState: Int]] = [:]) {
        self.counts = counts.filter { !$0.value.values.allSatisfy { $0 == 0 } }
        self.waiting = self.counts.values.reduce(0) { $0 + ($1[.queued] ?? 0) + ($1[.retrying] ?? 0) }
    }

    private static func isWaiting(_ state: JobState?) -> Bool { state == .queued || state == .retrying }

    /// A job of `queue` moved from `from` (`nil`: it was just created) to `to` (`nil`: it
    /// was deleted).
    public mutating func move(queue: String, from: JobState?, to: JobState?) {
        guard from != to else { return }
        if Self.isWaiting(from) { self.waiting -= 1 }
        if Self.isWaiting(to) { self.waiting += 1 }
        // The queue's counts are changed where they are stored: a copy taken out and put back
        // is copied again by its first write, an allocation for every job's every move.
        let index: [String: [JobState: Int]].Index
        if let existing = self.counts.index(forKey: queue) {
            index = existing
        } else {
            self.counts[queue] = [:]
            index = self.counts.index(forKey: queue)!
        }
        if let from {
            self.counts.values[index][from, default: 0] -= 1
            if self.counts.values[index][from] == 0 { self.counts.values[index].removeValue(forKey: from) }
        }
        if let to {
            self.counts.values[index][to, default: 0] += 1
        }
        // A queue with no jobs left is not listed, as a count of rows would not list it.
        if self.counts.values[index].isEmpty { self.counts.remove(at: index) }
    }
}

