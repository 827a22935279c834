import CoreMetrics
import Prometheus

/// The server-wide metrics, recorded through swift-metrics handles that one Prometheus
/// registry makes. The per-queue families are the authority's own plain numbers
/// (``QueueMetrics``); ``MetricsSnapshot`` writes both out, so the `metrics` op, the HTTP
/// endpoint and `baton top` all read the same numbers.
///
/// The registry is the server's own, not the process-wide `MetricsSystem`: two servers in
/// one process (as in tests) keep separate counts.
public final class ServerMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry

    /// Tokens that did not hold the lease they claimed to: stale workers, split brains.
    let staleTokenRefusals: CoreMetrics.Counter
    /// Completes, fails and releases of a job cancelled or paused under the lease: a worker
    /// that missed the stop its heartbeat was told of (the client contract says to report nothing).
    let lateOutcomes: CoreMetrics.Counter
    /// Requests applied per commit: how well group commit is batching.
    let batchSize: Recorder
    /// The time a commit takes once its requests are applied: mostly the fsync.
    let commitTime: CoreMetrics.Timer
    let connections: Meter
    let parkedClaims: Meter
    let leases: Meter
    /// Circuit breakers opening, half-opening and closing.
    let breakerTransitions: CoreMetrics.Counter
    /// Circuit breakers not closed now.
    let openBreakers: Meter

    public init() {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets["baton_commit_seconds"] = [
            .microseconds(50), .microseconds(100), .microseconds(200), .microseconds(500), .milliseconds(1),
            .milliseconds(2), .milliseconds(5), .milliseconds(20), .milliseconds(100), .seconds(1),
        ]
        factory.valueHistogramBuckets["baton_commit_batch_size"] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1_024]
        self.registry = registry
        self.staleTokenRefusals = Counter(label: "baton_stale_token_refusals_total", factory: factory)
        self.lateOutcomes = Counter(label: "baton_late_outcomes_total", factory: factory)
        self.batchSize = Recorder(label: "baton_commit_batch_size", aggregate: true, factory: factory)
        self.commitTime = Timer(label: "baton_commit_seconds", factory: factory)
        self.connections = Meter(label: "baton_connections", factory: factory)
        self.parkedClaims = Meter(label: "baton_parked_claims", factory: factory)
        self.leases = Meter(label: "baton_leases", factory: factory)
        self.breakerTransitions = Counter(label: "baton_breaker_transitions_total", factory: factory)
        self.openBreakers = Meter(label: "baton_breakers_open", factory: factory)
    }

    /// The server-wide metrics in Prometheus's text exposition format.
    public func exposition() -> String {
        self.registry.emitToString()
    }
}
