import DequeModule

/// Per-minute rates of completions and failures by queue, from the counters the console
/// read at its recent page loads: over the last minute, or since the console first looked.
actor ConsoleRates {
    typealias Counts = [String: (completed: Double, failed: Double)]

    private var samples: Deque<(at: Int64, counts: Counts)> = []
    /// Samples closer together than this are not kept: a busy page needs no more.
    private let spacing: Int64 = 1_000
    private let window: Int64 = 60_000

    /// The rates up to `now`, or `nil` until two looks a second apart give one.
    func record(_ counts: Counts, at now: Int64) -> [String: ConsolePages.Rates]? {
        while let first = self.samples.first, now - first.at > self.window, self.samples.count > 1 {
            self.samples.removeFirst()
        }
        if now - (self.samples.last?.at ?? .min / 2) >= self.spacing {
            self.samples.append((now, counts))
        }
        guard let oldest = self.samples.first, now - oldest.at >= self.spacing else { return nil }
        let minutes = Double(now - oldest.at) / 60_000
        var rates: [String: ConsolePages.Rates] = [:]
        for (queue, count) in counts {
            let before = oldest.counts[queue] ?? (0, 0)
            rates[queue] = ConsolePages.Rates(
                completed: max(count.completed - before.completed, 0) / minutes, failed: max(count.failed - before.failed, 0) / minutes
            )
        }
        return rates
    }
}
