import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Writes one line per event to standard error: time, level, label, message, then the
/// metadata as `key=value`, with every control character escaped (see ``LogText``).
///
/// swift-log's `StreamLogHandler` writes metadata raw, so a client-supplied value could
/// forge a line; this is `batond`'s `--log-format text`.
struct TextLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let merged = self.metadata.merging(event.metadata ?? [:]) { $1 }
        var line = "\(Self.timestamp()) \(event.level) \(self.label): "
        line += LogText.line(message: event.message, metadata: merged)
        line += "\n"
        line.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
    }

    /// Local time to the second, as ISO 8601 with the zone offset.
    private static func timestamp() -> String {
        var now = time(nil)
        var local = tm()
        localtime_r(&now, &local)
        var buffer = [CChar](repeating: 0, count: 32)
        let length = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S%z", &local)
        return String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
