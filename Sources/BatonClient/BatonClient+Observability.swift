import BatonCore
import BatonProtocol

extension BatonClient {
    /// The server's verdict on its own health, with its reasons.
    public func health() async throws -> HealthInfo {
        try HealthInfo(try await self.request("health"))
    }

    /// The connected workers: who they are and what they hold.
    public func workers() async throws -> [WorkerInfo] {
        let reply = try await self.request("workers")
        guard case .array(let items)? = reply["workers"] else {
            throw BatonConnectionError(.protocolViolation, "a workers reply without workers")
        }
        return try items.map { item in
            guard case .object(let fields) = item else {
                throw BatonConnectionError(.protocolViolation, "a worker that is not an object")
            }
            return try WorkerInfo(fields)
        }
    }

    /// The metrics in Prometheus's text format.
    public func metricsText() async throws -> String {
        try await self.request("metrics") { $0.member("format", "prometheus") }.string("text")
    }

    /// The metrics as values: every sample, and each histogram's count and quantiles.
    public func metrics() async throws -> MetricsSnapshot {
        try MetricsSnapshot(try await self.request("metrics") { $0.member("format", "json") })
    }
}

/// What `health` answered.
public struct HealthInfo: Sendable {
    /// `ok`, `degraded` or `failing`.
    public var verdict: String
    public var reasons: [String]
    public var oldestReadyAgeMilliseconds: Int64?
    public var longRunningJobs: [Int64]
    public var freeBytes: Int64?
    /// Jobs queued or retrying, due or not.
    public var waiting: Int
    public var running: Int

    init(_ reply: [String: JSONValue]) throws {
        self.verdict = try reply.string("health")
        if case .array(let reasons)? = reply["reasons"] {
            self.reasons = reasons.compactMap { if case .string(let text) = $0 { text } else { nil } }
        } else {
            self.reasons = []
        }
        self.oldestReadyAgeMilliseconds = reply.optionalInt64("oldest_ready_age_ms")
        if case .array(let jobs)? = reply["long_running_jobs"] {
            self.longRunningJobs = jobs.compactMap { if case .integer(let id) = $0 { id } else { nil } }
        } else {
            self.longRunningJobs = []
        }
        self.freeBytes = reply.optionalInt64("free_bytes")
        self.waiting = Int(reply.optionalInt64("waiting") ?? 0)
        self.running = Int(reply.optionalInt64("running") ?? 0)
    }
}

/// One connected worker, as `workers` lists it.
public struct WorkerInfo: Sendable {
    public var name: String?
    public var pid: Int64?
    public var uid: Int64?
    /// Wall-clock milliseconds of its first request as a worker.
    public var since: Int64
    public var lastHeartbeatAt: Int64?
    /// The jobs it holds.
    public var jobs: [Int64]

    init(_ fields: [String: JSONValue]) throws {
        self.name = fields.optionalString("worker")
        self.pid = fields.optionalInt64("pid")
        self.uid = fields.optionalInt64("uid")
        self.since = try fields.int64("since")
        self.lastHeartbeatAt = fields.optionalInt64("last_heartbeat_at")
        if case .array(let jobs)? = fields["jobs"] {
            self.jobs = jobs.compactMap { if case .integer(let id) = $0 { id } else { nil } }
        } else {
            self.jobs = []
        }
    }
}

/// The metrics as values.
public struct MetricsSnapshot: Sendable {
    public struct Sample: Sendable {
        public var name: String
        public var labels: [String: String]
        public var value: Double
    }

    public struct Histogram: Sendable {
        public var name: String
        public var labels: [String: String]
        public var count: Int64
        public var p50: Double?
        public var p95: Double?
        public var p99: Double?
    }

    public var samples: [Sample] = []
    public var histograms: [Histogram] = []

    /// The value of a sample, such as `baton_jobs_completed_total` for `queue`.
    public func value(_ name: String, queue: String? = nil) -> Double? {
        self.samples.first { $0.name == name && $0.labels["queue"] == queue }?.value
    }

    init(_ reply: [String: JSONValue]) throws {
        func labels(_ fields: [String: JSONValue]) -> [String: String] {
            guard case .object(let labels)? = fields["labels"] else { return [:] }
            return labels.compactMapValues { if case .string(let text) = $0 { text } else { nil } }
        }
        func number(_ value: JSONValue?) -> Double? {
            switch value {
            case .integer(let integer)?: Double(integer)
            case .double(let double)?: double
            default: nil
            }
        }
        if case .array(let items)? = reply["samples"] {
            for case .object(let fields) in items {
                self.samples.append(Sample(name: try fields.string("name"), labels: labels(fields), value: number(fields["value"]) ?? 0))
            }
        }
        if case .array(let items)? = reply["histograms"] {
            for case .object(let fields) in items {
                self.histograms.append(
                    Histogram(
                        name: try fields.string("name"), labels: labels(fields), count: fields.optionalInt64("count") ?? 0,
                        p50: number(fields["p50"]), p95: number(fields["p95"]), p99: number(fields["p99"])
                    )
                )
            }
        }
    }
}
