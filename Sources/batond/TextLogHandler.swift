import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Writes one line per event to standard error, with every control character in the
/// message and the metadata escaped (see ``LogText``): swift-log's `StreamLogHandler`
/// writes metadata raw, so a client-supplied value could forge a line.
///
/// For a terminal or a file (`--log-format text`) a line is time, level, label, message,
/// then `key=value` metadata. For the journal it starts with the syslog priority (`<6>`)
/// instead, which journald reads as the entry's priority and time.
struct TextLogHandler: LogHandler {
    enum Style {
        case terminal(label: String)
        case journal
    }

    let style: Style
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let merged = self.metadata.merging(event.metadata ?? [:]) { $1 }
        var line: String
        switch self.style {
        case .terminal(let label): line = "\(Self.timestamp()) \(event.level) \(label): "
        case .journal: line = "<\(Self.priority(event.level))>"
        }
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

    /// The syslog priority of a log level.
    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    /// Whether standard error is the journal stream systemd connected it to (`JOURNAL_STREAM`).
    static var standardErrorIsJournal: Bool {
        guard let value = getenv("JOURNAL_STREAM").map({ String(cString: $0) }) else { return false }
        let parts = value.split(separator: ":")
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]) else { return false }
        var status = stat()
        guard fstat(2, &status) == 0 else { return false }
        return UInt64(status.st_dev) == device && UInt64(status.st_ino) == inode
    }
}
