import Logging

/// Makes a logged value safe for a line-oriented log.
///
/// Queue names, worker names, cancel reasons and error texts come from clients. Written
/// raw, a value holding a newline forges a whole log line (`…\ncritical batond: store
/// corrupted`) and an ANSI escape repaints the operator's terminal. Every control
/// character is written as an escape instead, so one event stays one line, and the
/// backslash itself is doubled so an escape in the log cannot be mistaken for a real one.
enum LogText {
    static func escaped(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: Self.needsEscape) else { return text }
        var escaped = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\n": escaped.append(contentsOf: #"\n"#.unicodeScalars)
            case "\r": escaped.append(contentsOf: #"\r"#.unicodeScalars)
            case "\t": escaped.append(contentsOf: #"\t"#.unicodeScalars)
            case "\\": escaped.append(contentsOf: #"\\"#.unicodeScalars)
            case _ where Self.needsEscape(scalar):
                let hex = String(scalar.value, radix: 16)
                escaped.append(contentsOf: "\\u{\(hex)}".unicodeScalars)
            default: escaped.append(scalar)
            }
        }
        return String(escaped)
    }

    private static func needsEscape(_ scalar: Unicode.Scalar) -> Bool {
        scalar == "\\" || scalar.properties.generalCategory == .control
            || scalar == "\u{2028}" || scalar == "\u{2029}"
    }

    /// An event's message and metadata as one line: `message key=value …`, sorted by key.
    static func line(message: Logger.Message, metadata: Logger.Metadata) -> String {
        var line = Self.escaped("\(message)")
        for (key, value) in metadata.sorted(by: { $0.key < $1.key }) {
            line += " \(Self.escaped(key))=\(Self.escaped("\(value)"))"
        }
        return line
    }
}
