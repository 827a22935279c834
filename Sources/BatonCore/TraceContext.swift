/// A W3C Trace Context (`traceparent` and `tracestate`) that a job carries from the process
/// that enqueued it to the worker of each attempt, so that one trace runs across both.
///
/// batond keeps it and hands it back; it never starts or ends the trace itself.
public struct TraceContext: Hashable, Sendable {
    /// `version-traceid-parentid-flags`, such as `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`.
    public let traceparent: String
    /// Vendor-specific entries, passed along unread.
    public let tracestate: String?

    /// The longest `tracestate` kept, as the W3C recommends propagating.
    public static let maximumStateBytes = 512

    /// A valid context, or `nil`, with why not in ``problem(traceparent:tracestate:)``.
    public init?(traceparent: String, tracestate: String? = nil) {
        guard Self.problem(traceparent: traceparent, tracestate: tracestate) == nil else { return nil }
        self.traceparent = traceparent
        self.tracestate = tracestate.flatMap { $0.isEmpty ? nil : $0 }
    }

    /// The trace's id: 32 lowercase hex digits.
    public var traceID: Substring { self.traceparent.dropFirst(3).prefix(32) }
    /// The producer's span id: 16 lowercase hex digits.
    public var parentSpanID: Substring { self.traceparent.dropFirst(36).prefix(16) }

    /// What is wrong with a context, by the W3C's rules, or `nil` when it is valid.
    public static func problem(traceparent: String, tracestate: String?) -> String? {
        let bytes = Array(traceparent.utf8)
        func isHex(_ range: Range<Int>) -> Bool {
            bytes[range].allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0) }
        }
        func isZero(_ range: Range<Int>) -> Bool { bytes[range].allSatisfy { $0 == UInt8(ascii: "0") } }
        let dash = UInt8(ascii: "-")
        guard bytes.count >= 55, bytes[2] == dash, bytes[35] == dash, bytes[52] == dash,
            isHex(0..<2), isHex(3..<35), isHex(36..<52), isHex(53..<55)
        else {
            return "traceparent must be VERSION-TRACEID-PARENTID-FLAGS in lowercase hex (2-32-16-2 digits)"
        }
        // A later version may add fields after a dash; version 00 has none, and ff is invalid.
        let version = traceparent.prefix(2)
        guard version != "ff", version != "00" || bytes.count == 55, bytes.count == 55 || bytes[55] == dash, bytes.count <= 512 else {
            return "traceparent has a version or length the W3C does not allow"
        }
        guard !isZero(3..<35), !isZero(36..<52) else { return "traceparent's trace id and parent id must not be all zeros" }
        if let tracestate {
            guard tracestate.utf8.count <= Self.maximumStateBytes, tracestate.utf8.allSatisfy({ (0x20...0x7e).contains($0) }) else {
                return "tracestate must be at most \(Self.maximumStateBytes) bytes of printable ASCII"
            }
        }
        return nil
    }

    /// The form both stores keep it in: the `traceparent`, then a space and the
    /// `tracestate` if there is one (a `traceparent` holds no space).
    public var stored: String {
        self.tracestate.map { "\(self.traceparent) \($0)" } ?? self.traceparent
    }

    public init?(stored: String?) {
        guard let stored else { return nil }
        if let space = stored.firstIndex(of: " ") {
            self.init(traceparent: String(stored[..<space]), tracestate: String(stored[stored.index(after: space)...]))
        } else {
            self.init(traceparent: stored)
        }
    }
}

/// What a span of an ended attempt needs from the store beyond the change itself.
public struct StoredTrace: Hashable, Sendable {
    public var trace: TraceContext
    /// Attempts started so far (the ended one included, unless it was released).
    public var attempts: Int
    /// When the latest attempt started.
    public var startedAt: Int64?

    public init(trace: TraceContext, attempts: Int, startedAt: Int64?) {
        self.trace = trace
        self.attempts = attempts
        self.startedAt = startedAt
    }
}
