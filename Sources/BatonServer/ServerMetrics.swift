import CoreMetrics
import Prometheus

/// The server's metrics, recorded through swift-metrics handles that one Prometheus
/// registry makes, so the `metrics` op, the HTTP endpoint and `baton top` all read the
/// same numbers.
///
/// The registry is the server's own, not the process-wide `MetricsSystem`: two servers in
/// one process (as in tests) keep separate counts.
public final class ServerMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    let factory: PrometheusMetricsFactory

    /// Tokens that did not hold the lease they claimed to: stale workers, split brains.
    let staleTokenRefusals: CoreMetrics.Counter
    /// Requests applied per commit: how well group commit is batching.
    let batchSize: Recorder
    /// The time a commit takes once its requests are applied: mostly the fsync.
    let commitTime: CoreMetrics.Timer
    let connections: Meter
    let parkedClaims: Meter
    let leases: Meter

    public init() {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        // Jobs wait and run for anything from milliseconds to hours.
        factory.defaultDurationHistogramBuckets = [
            .milliseconds(1), .milliseconds(5), .milliseconds(25), .milliseconds(100), .milliseconds(500),
            .seconds(1), .seconds(5), .seconds(15), .seconds(60), .seconds(300), .seconds(900), .seconds(3_600),
        ]
        factory.durationHistogramBuckets["baton_commit_seconds"] = [
            .microseconds(50), .microseconds(100), .microseconds(200), .microseconds(500), .milliseconds(1),
            .milliseconds(2), .milliseconds(5), .milliseconds(20), .milliseconds(100), .seconds(1),
        ]
        factory.valueHistogramBuckets["baton_commit_batch_size"] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1_024]
        self.registry = registry
        self.factory = factory
        self.staleTokenRefusals = Counter(label: "baton_stale_token_refusals_total", factory: factory)
        self.batchSize = Recorder(label: "baton_commit_batch_size", aggregate: true, factory: factory)
        self.commitTime = Timer(label: "baton_commit_seconds", factory: factory)
        self.connections = Meter(label: "baton_connections", factory: factory)
        self.parkedClaims = Meter(label: "baton_parked_claims", factory: factory)
        self.leases = Meter(label: "baton_leases", factory: factory)
    }

    /// The metrics in Prometheus's text exposition format.
    public func exposition() -> String {
        self.registry.emitToString()
    }

    /// A queue's counters and histograms, made once and kept by the authority.
    func queue(_ name: String) -> QueueMetrics {
        QueueMetrics(queue: name, factory: self.factory)
    }

    /// The gauge of a queue's jobs in one state.
    func jobs(queue: String, state: String) -> Meter {
        Meter(label: "baton_jobs", dimensions: [("queue", queue), ("state", state)], factory: self.factory)
    }
}

/// One queue's metrics.
struct QueueMetrics {
    let enqueued: CoreMetrics.Counter
    let claimed: CoreMetrics.Counter
    let completed: CoreMetrics.Counter
    /// Jobs that ended `failed`: attempts used up, or the worker said not to retry.
    let failed: CoreMetrics.Counter
    /// Attempts that failed or expired with attempts left: the job will run again.
    let retried: CoreMetrics.Counter
    /// Leases that ran out.
    let expired: CoreMetrics.Counter
    let cancelled: CoreMetrics.Counter
    /// From when a job became due (its enqueue, or the end of its delay or backoff) to its claim.
    let wait: CoreMetrics.Timer
    /// From a claim to the attempt's end.
    let run: CoreMetrics.Timer

    init(queue: String, factory: PrometheusMetricsFactory) {
        let dimensions = [("queue", queue)]
        func counter(_ label: String) -> CoreMetrics.Counter {
            Counter(label: label, dimensions: dimensions, factory: factory)
        }
        self.enqueued = counter("baton_jobs_enqueued_total")
        self.claimed = counter("baton_jobs_claimed_total")
        self.completed = counter("baton_jobs_completed_total")
        self.failed = counter("baton_jobs_failed_total")
        self.retried = counter("baton_jobs_retried_total")
        self.expired = counter("baton_jobs_expired_total")
        self.cancelled = counter("baton_jobs_cancelled_total")
        self.wait = Timer(label: "baton_job_wait_seconds", dimensions: dimensions, factory: factory)
        self.run = Timer(label: "baton_job_run_seconds", dimensions: dimensions, factory: factory)
    }
}
