import BatonCore

/// One queue's counters and histograms: plain numbers the authority changes in place.
///
/// Per-queue families used to be swift-prometheus handles, and the registry copies its
/// whole label table on every registration: one `enqueue_batch` naming 1,000 new queues
/// took 9 s with 10,000 known, and the first scrape at 8,000 queues 111 s, all on the
/// authority's thread while every heartbeat waited. Here a new queue is one dictionary
/// insert, and an event one addition.
struct QueueMetrics: Sendable {
    var enqueued: Int64 = 0
    var claimed: Int64 = 0
    var completed: Int64 = 0
    /// Jobs that ended `failed`: attempts used up, or the worker said not to retry.
    var failed: Int64 = 0
    /// Attempts that failed or expired with attempts left: the job will run again.
    var retried: Int64 = 0
    /// Leases that ran out.
    var expired: Int64 = 0
    var cancelled: Int64 = 0
    /// From when a job became due (its enqueue, or the end of its delay or backoff) to its claim.
    var wait = DurationHistogram()
    /// From a claim to the attempt's end.
    var run = DurationHistogram()

    /// The counter families, in exposition order, with how to read each.
    static let counters: [(name: String, value: @Sendable (QueueMetrics) -> Int64)] = [
        ("baton_jobs_enqueued_total", { $0.enqueued }),
        ("baton_jobs_claimed_total", { $0.claimed }),
        ("baton_jobs_completed_total", { $0.completed }),
        ("baton_jobs_failed_total", { $0.failed }),
        ("baton_jobs_retried_total", { $0.retried }),
        ("baton_jobs_expired_total", { $0.expired }),
        ("baton_jobs_cancelled_total", { $0.cancelled }),
    ]

    /// The histogram families, in exposition order.
    static let histograms: [(name: String, value: @Sendable (QueueMetrics) -> DurationHistogram)] = [
        ("baton_job_wait_seconds", { $0.wait }),
        ("baton_job_run_seconds", { $0.run }),
    ]

    /// Counts one committed state change of a job of this queue.
    mutating func count(_ change: ChangeLog.Change) {
        switch change.event.kind {
        case .enqueued:
            self.enqueued += 1
        case .claimed:
            self.claimed += 1
            if let wait = change.milliseconds { self.wait.record(milliseconds: wait) }
        case .completed:
            self.completed += 1
            if let run = change.milliseconds { self.run.record(milliseconds: run) }
        case .failed, .expired:
            if change.event.kind == .expired { self.expired += 1 }
            if change.event.state == .failed { self.failed += 1 } else { self.retried += 1 }
            if let run = change.milliseconds { self.run.record(milliseconds: run) }
        case .cancelled:
            self.cancelled += 1
        case .checkpointed, .released, .paused, .resumed, .retried:
            break
        }
    }
}

/// A histogram of durations over fixed buckets, from milliseconds to an hour: jobs wait
/// and run for anything in that range.
///
/// The counts live inline (no heap allocation per queue), so copying a table of them for
/// a scrape is a memory copy.
struct DurationHistogram: Sendable {
    /// The buckets' upper bounds, inclusive, in milliseconds; a last bucket takes the rest.
    static let bounds: [Int64] = [1, 5, 25, 100, 500, 1_000, 5_000, 15_000, 60_000, 300_000, 900_000, 3_600_000]
    /// The bounds as Prometheus writes them, in seconds.
    static let boundLabels: [String] = [
        "0.001", "0.005", "0.025", "0.1", "0.5", "1.0", "5.0", "15.0", "60.0", "300.0", "900.0", "3600.0", "+Inf",
    ]

    /// Observations per bucket (not cumulative); index 12 is above the last bound.
    private(set) var buckets = InlineArray<13, Int64>(repeating: 0)
    private(set) var count: Int64 = 0
    private(set) var sumMilliseconds: Int64 = 0

    mutating func record(milliseconds: Int64) {
        let value = max(milliseconds, 0)
        var index = 0
        while index < Self.bounds.count, value > Self.bounds[index] { index += 1 }
        self.buckets[index] += 1
        self.count += 1
        self.sumMilliseconds += value
    }

    /// Cumulative counts with their upper bounds in seconds, as `histogram_quantile` reads them.
    var cumulative: [(bound: Double, count: Double)] {
        var total: Int64 = 0
        var result: [(bound: Double, count: Double)] = []
        result.reserveCapacity(13)
        for index in 0..<13 {
            total += self.buckets[index]
            let bound = index < Self.bounds.count ? Double(Self.bounds[index]) / 1_000 : .infinity
            result.append((bound, Double(total)))
        }
        return result
    }
}
