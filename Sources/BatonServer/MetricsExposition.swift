/// Prometheus's text exposition, read back into samples for the `metrics` op's JSON form,
/// with the quantiles of each histogram estimated from its buckets.
///
/// Reading our own exposition keeps one source for every number: the registry the
/// swift-metrics handles write to.
struct MetricsExposition {
    struct Sample {
        var name: String
        var labels: [(String, String)]
        var value: Double
    }

    struct Histogram {
        var name: String
        var labels: [(String, String)]
        var count: Double
        var sum: Double
        /// The 0.5, 0.95 and 0.99 quantiles, estimated as Prometheus's `histogram_quantile` does.
        var p50: Double?
        var p95: Double?
        var p99: Double?
    }

    var samples: [Sample] = []
    var histograms: [Histogram] = []

    init(text: String) {
        var buckets: [String: [(bound: Double, count: Double)]] = [:]
        var series: [String: (name: String, labels: [(String, String)], count: Double, sum: Double)] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let sample = Self.parse(line) else { continue }
            if sample.name.hasSuffix("_bucket"), let le = sample.labels.first(where: { $0.0 == "le" }) {
                let name = String(sample.name.dropLast("_bucket".count))
                let labels = sample.labels.filter { $0.0 != "le" }
                let key = Self.key(name, labels)
                buckets[key, default: []].append((Double(le.1) ?? .infinity, sample.value))
                series[key] = series[key] ?? (name, labels, 0, 0)
                continue
            }
            for suffix in ["_count", "_sum"] where sample.name.hasSuffix(suffix) {
                let key = Self.key(String(sample.name.dropLast(suffix.count)), sample.labels)
                if series[key] != nil || buckets[key] != nil {
                    if suffix == "_count" { series[key]?.count = sample.value } else { series[key]?.sum = sample.value }
                }
            }
            self.samples.append(sample)
        }
        for (key, entry) in series.sorted(by: { $0.key < $1.key }) {
            let sorted = (buckets[key] ?? []).sorted { $0.bound < $1.bound }
            self.histograms.append(
                Histogram(
                    name: entry.name, labels: entry.labels, count: entry.count, sum: entry.sum,
                    p50: Self.quantile(0.5, sorted), p95: Self.quantile(0.95, sorted), p99: Self.quantile(0.99, sorted)
                )
            )
        }
        self.samples.removeAll { sample in series.keys.contains(Self.key(Self.baseName(sample.name), sample.labels)) }
    }

    private static func baseName(_ name: String) -> String {
        for suffix in ["_count", "_sum"] where name.hasSuffix(suffix) { return String(name.dropLast(suffix.count)) }
        return name
    }

    private static func key(_ name: String, _ labels: [(String, String)]) -> String {
        name + "{" + labels.map { "\($0.0)=\($0.1)" }.sorted().joined(separator: ",") + "}"
    }

    /// Linear interpolation within the bucket where the rank falls; the highest finite
    /// bound when it falls in the `+Inf` bucket; `nil` for an empty histogram.
    static func quantile(_ q: Double, _ buckets: [(bound: Double, count: Double)]) -> Double? {
        guard let total = buckets.last?.count, total > 0 else { return nil }
        let rank = q * total
        var lower = 0.0
        var below = 0.0
        for bucket in buckets {
            if bucket.count >= rank {
                guard bucket.bound.isFinite else { return lower }
                guard bucket.count > below else { return bucket.bound }
                return lower + (bucket.bound - lower) * (rank - below) / (bucket.count - below)
            }
            lower = bucket.bound
            below = bucket.count
        }
        return lower
    }

    /// One sample line: `name{label="value",…} number`.
    static func parse(_ line: Substring) -> Sample? {
        var index = line.startIndex
        while index < line.endIndex, line[index] != "{", line[index] != " " { index = line.index(after: index) }
        let name = String(line[line.startIndex..<index])
        var labels: [(String, String)] = []
        if index < line.endIndex, line[index] == "{" {
            index = line.index(after: index)
            while index < line.endIndex, line[index] != "}" {
                guard let equals = line[index...].firstIndex(of: "=") else { return nil }
                let label = String(line[index..<equals])
                index = line.index(equals, offsetBy: 2)  // past `="`
                var value = ""
                while index < line.endIndex, line[index] != "\"" {
                    if line[index] == "\\" {
                        index = line.index(after: index)
                        guard index < line.endIndex else { return nil }
                        value.append(line[index] == "n" ? "\n" : line[index])
                    } else {
                        value.append(line[index])
                    }
                    index = line.index(after: index)
                }
                labels.append((label, value))
                index = line.index(after: index)  // past the closing quote
                if index < line.endIndex, line[index] == "," { index = line.index(after: index) }
            }
            guard index < line.endIndex else { return nil }
            index = line.index(after: index)  // past `}`
        }
        let text = line[index...].trimmingPrefix(" ").split(separator: " ").first.map(String.init) ?? ""
        guard let value = Double(text) ?? (text == "+Inf" ? .infinity : nil) else { return nil }
        return Sample(name: name, labels: labels, value: value)
    }
}
