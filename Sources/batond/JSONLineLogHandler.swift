import BatonProtocol
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Writes one JSON object per event to standard error (`--log-format json`): `ts`,
/// `level`, `label`, `message`, then the metadata (`job.id`, `job.queue`, `lease.token`,
/// `peer.pid`, …) as string fields, for log shippers that index fields.
struct JSONLineLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]

    init(label: String, logLevel: Logger.Level) {
        self.label = label
        self.logLevel = logLevel
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        var writer = JSONWriter()
        writer.beginObject()
        writer.member("ts", Int64(time.tv_sec) * 1_000 + Int64(time.tv_nsec) / 1_000_000)
        writer.member("level", event.level.rawValue)
        writer.member("label", self.label)
        writer.member("message", "\(event.message)")
        let merged = self.metadata.merging(event.metadata ?? [:]) { $1 }
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) where !["ts", "level", "label", "message"].contains(key) {
            writer.member(key, "\(value)")
        }
        writer.endObject()
        var line = writer.text + "\n"
        line.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
    }
}
