/// How many jobs each queue holds in each state.
///
/// Kept in memory by the authority, so that `stats` and the metrics scrape read a few
/// numbers instead of counting every row in the store, finished ones included: with a
/// week's retention, that count took hundreds of milliseconds per call, during which
/// nothing else was applied. Built from the store once at start, then moved by every
/// committed state change.
public struct JobCensus: Sendable, Equatable {
    public private(set) var counts: [String: [JobState: Int]]

    public init(counts: [String: [JobState: Int]] = [:]) {
        self.counts = counts.filter { !$0.value.values.allSatisfy { $0 == 0 } }
    }

    /// A job of `queue` moved from `from` (`nil`: it was just created) to `to` (`nil`: it
    /// was deleted).
    public mutating func move(queue: String, from: JobState?, to: JobState?) {
        guard from != to else { return }
        var states = self.counts[queue, default: [:]]
        if let from {
            states[from, default: 0] -= 1
            if states[from] == 0 { states.removeValue(forKey: from) }
        }
        if let to {
            states[to, default: 0] += 1
        }
        // A queue with no jobs left is not listed, as a count of rows would not list it.
        self.counts[queue] = states.isEmpty ? nil : states
    }
}
