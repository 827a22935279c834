import BatonCore
import BatonProtocol

/// The metrics as of one moment, taken on the authority's thread and written out anywhere
/// else.
///
/// Taking it costs the authority two copy-on-write dictionary copies and the text of the
/// few server-wide families; the thousands of per-queue lines are written by the
/// connection that asked, off the authority's thread, so a scrape of 10,000 queues
/// delays no request.
struct MetricsSnapshot: Sendable {
    /// The server-wide families (commit batch sizes and times, connections, leases), in
    /// Prometheus's text format, from swift-prometheus's registry.
    var serverWide: String
    /// Each queue's counters and histograms.
    var queues: [String: QueueMetrics]
    /// Each queue's jobs by state.
    var jobs: [String: [JobState: Int]]
    /// The named limits set or in use (at most ``Reply/maximumLimitsShown``).
    var limits: [NamedLimits.Use] = []
    /// The health checks' verdict as the metrics were taken, and each queue's oldest ready
    /// job's age; `nil` where they could not be taken.
    var health: HealthReport?

    /// Each limit's gauges: running jobs, starts in its rate window, whether it holds a claim back.
    private static let limitGauges: [(String, @Sendable (NamedLimits.Use) -> Int64)] = [
        ("baton_limit_running", { Int64($0.running) }),
        ("baton_limit_started_in_window", { Int64($0.recentStarts) }),
        ("baton_limit_holding", { $0.holding ? 1 : 0 }),
        ("baton_limit_waiting", { Int64($0.waiting) }),
    ]

    /// Every queue with metrics or jobs, sorted, so that the output is stable.
    private var queueNames: [String] {
        Set(self.queues.keys).union(self.jobs.keys).sorted()
    }

    /// Prometheus's text exposition format, 0.0.4.
    func prometheusText() -> String {
        let names = self.queueNames
        var out = ExpositionWriter(capacity: self.serverWide.utf8.count + names.count * 2_048)
        out.raw(self.serverWide)
        for (family, value) in QueueMetrics.counters {
            out.type(family, "counter")
            for name in names {
                out.sample(family, [("queue", name)], value(self.queues[name] ?? QueueMetrics()))
            }
        }
        out.type("baton_jobs", "gauge")
        for name in names {
            let counts = self.jobs[name]
            for state in JobState.allCases {
                out.sample("baton_jobs", [("queue", name), ("state", state.rawValue)], Int64(counts?[state] ?? 0))
            }
        }
        for (family, value) in Self.limitGauges {
            out.type(family, "gauge")
            for use in self.limits.prefix(Reply.maximumLimitsShown) { out.sample(family, [("limit", use.name)], value(use)) }
        }
        if let health = self.health {
            out.type("baton_health", "gauge")
            out.sample("baton_health", [], health.verdict.level)
            out.type("baton_oldest_ready_seconds", "gauge")
            for name in names {
                out.sample("baton_oldest_ready_seconds", [("queue", name)], milliseconds: health.readyAgeByQueue[name] ?? 0)
            }
        }
        for (family, value) in QueueMetrics.histograms {
            out.type(family, "histogram")
            for name in names {
                out.histogram(family, queue: name, value(self.queues[name] ?? QueueMetrics()))
            }
        }
        return out.text
    }

    /// The `metrics` op's reply: the text, or the same numbers as JSON samples and
    /// histograms with estimated quantiles.
    func reply(id: String?, json: Bool) -> [UInt8] {
        guard json else {
            return Reply.success(id: id) { reply in
                reply.member("format", "prometheus")
                reply.member("text", self.prometheusText())
            }
        }
        let names = self.queueNames
        let serverWide = MetricsExposition(text: self.serverWide)
        return Reply.success(id: id) { reply in
            reply.member("format", "json")
            reply.key("samples")
            reply.beginArray()
            for sample in serverWide.samples {
                reply.sample(sample.name, sample.labels, sample.value)
            }
            for (family, value) in QueueMetrics.counters {
                for name in names {
                    reply.sample(family, [("queue", name)], Double(value(self.queues[name] ?? QueueMetrics())))
                }
            }
            for name in names {
                let counts = self.jobs[name]
                for state in JobState.allCases {
                    reply.sample("baton_jobs", [("queue", name), ("state", state.rawValue)], Double(counts?[state] ?? 0))
                }
            }
            for (family, value) in Self.limitGauges {
                for use in self.limits.prefix(Reply.maximumLimitsShown) { reply.sample(family, [("limit", use.name)], Double(value(use))) }
            }
            if let health = self.health {
                reply.sample("baton_health", [], Double(health.verdict.level))
                for name in names {
                    reply.sample("baton_oldest_ready_seconds", [("queue", name)], Double(health.readyAgeByQueue[name] ?? 0) / 1_000)
                }
            }
            reply.endArray()
            reply.key("histograms")
            reply.beginArray()
            for histogram in serverWide.histograms {
                reply.histogram(histogram)
            }
            for (family, value) in QueueMetrics.histograms {
                for name in names {
                    let histogram = value(self.queues[name] ?? QueueMetrics())
                    let buckets = histogram.cumulative
                    reply.histogram(
                        MetricsExposition.Histogram(
                            name: family, labels: [("queue", name)], count: Double(histogram.count),
                            sum: Double(histogram.sumMilliseconds) / 1_000,
                            p50: MetricsExposition.quantile(0.5, buckets), p95: MetricsExposition.quantile(0.95, buckets),
                            p99: MetricsExposition.quantile(0.99, buckets)
                        )
                    )
                }
            }
            reply.endArray()
        }
    }
}

extension JSONWriter {
    fileprivate mutating func sample(_ name: String, _ labels: [(String, String)], _ value: Double) {
        self.beginObject()
        self.member("name", name)
        self.labels(labels)
        self.key("value")
        self.double(value)
        self.endObject()
    }

    fileprivate mutating func histogram(_ histogram: MetricsExposition.Histogram) {
        self.beginObject()
        self.member("name", histogram.name)
        self.labels(histogram.labels)
        self.member("count", Int64(histogram.count))
        self.key("sum")
        self.double(histogram.sum)
        for (name, value) in [("p50", histogram.p50), ("p95", histogram.p95), ("p99", histogram.p99)] {
            self.key(name)
            if let value { self.double(value) } else { self.null() }
        }
        self.endObject()
    }
}

/// Writes Prometheus's text format as bytes: one sample a line, label values escaped.
private struct ExpositionWriter {
    private var bytes: [UInt8] = []

    init(capacity: Int) {
        self.bytes.reserveCapacity(capacity)
    }

    var text: String { String(decoding: self.bytes, as: UTF8.self) }

    mutating func raw(_ text: String) {
        self.bytes.append(contentsOf: text.utf8)
        if let last = self.bytes.last, last != UInt8(ascii: "\n") { self.bytes.append(UInt8(ascii: "\n")) }
    }

    mutating func type(_ family: String, _ type: String) {
        self.bytes.append(contentsOf: "# TYPE ".utf8)
        self.bytes.append(contentsOf: family.utf8)
        self.bytes.append(UInt8(ascii: " "))
        self.bytes.append(contentsOf: type.utf8)
        self.bytes.append(UInt8(ascii: "\n"))
    }

    mutating func sample(_ name: String, _ labels: [(String, String)], _ value: Int64) {
        self.name(name, labels)
        self.decimal(value)
        self.bytes.append(UInt8(ascii: "\n"))
    }

    /// A sample of a span kept in milliseconds, written in seconds.
    mutating func sample(_ name: String, _ labels: [(String, String)], milliseconds: Int64) {
        self.name(name, labels)
        self.seconds(milliseconds)
        self.bytes.append(UInt8(ascii: "\n"))
    }

    mutating func histogram(_ family: String, queue: String, _ histogram: DurationHistogram) {
        let bucketName = family + "_bucket"
        var total: Int64 = 0
        for (index, label) in DurationHistogram.boundLabels.enumerated() {
            total += histogram.buckets[index]
            self.name(bucketName, [("queue", queue), ("le", label)])
            self.decimal(total)
            self.bytes.append(UInt8(ascii: "\n"))
        }
        self.sample(family + "_sum", [("queue", queue)], milliseconds: histogram.sumMilliseconds)
        self.sample(family + "_count", [("queue", queue)], histogram.count)
    }

    /// Milliseconds (not negative) as seconds with three decimals, exactly.
    private mutating func seconds(_ milliseconds: Int64) {
        self.decimal(milliseconds / 1_000)
        self.bytes.append(UInt8(ascii: "."))
        let fraction = milliseconds % 1_000
        if fraction < 100 { self.bytes.append(UInt8(ascii: "0")) }
        if fraction < 10 { self.bytes.append(UInt8(ascii: "0")) }
        self.decimal(fraction)
    }

    /// `name{label="value",…} `, or `name ` without labels.
    private mutating func name(_ name: String, _ labels: [(String, String)]) {
        self.bytes.append(contentsOf: name.utf8)
        guard !labels.isEmpty else { return self.bytes.append(UInt8(ascii: " ")) }
        self.bytes.append(UInt8(ascii: "{"))
        for (index, (label, value)) in labels.enumerated() {
            if index > 0 { self.bytes.append(UInt8(ascii: ",")) }
            self.bytes.append(contentsOf: label.utf8)
            self.bytes.append(contentsOf: "=\"".utf8)
            for byte in value.utf8 {
                switch byte {
                case UInt8(ascii: "\\"): self.bytes.append(contentsOf: #"\\"#.utf8)
                case UInt8(ascii: "\""): self.bytes.append(contentsOf: #"\""#.utf8)
                case UInt8(ascii: "\n"): self.bytes.append(contentsOf: #"\n"#.utf8)
                default: self.bytes.append(byte)
                }
            }
            self.bytes.append(UInt8(ascii: "\""))
        }
        self.bytes.append(contentsOf: "} ".utf8)
    }

    private mutating func decimal(_ value: Int64) {
        guard value != 0 else { return self.bytes.append(UInt8(ascii: "0")) }
        if value < 0 { self.bytes.append(UInt8(ascii: "-")) }
        var magnitude = value.magnitude
        var digits = InlineArray<20, UInt8>(repeating: 0)
        var count = 0
        while magnitude > 0 {
            digits[count] = UInt8(ascii: "0") + UInt8(magnitude % 10)
            magnitude /= 10
            count += 1
        }
        while count > 0 {
            count -= 1
            self.bytes.append(digits[count])
        }
    }
}
