import BatonCore

/// An error as the protocol carries it: a stable code and a message for people.
///
/// The code is what programs match on; it maps one-to-one to the string on the wire.
/// The message may change between versions and is meant to be read.
public struct BatonError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A stable, machine-readable error code.
    ///
    /// A struct over a private enum, so codes can be added without breaking exhaustive
    /// `switch`es in clients.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        fileprivate enum Base: String, Hashable, Sendable, CaseIterable {
            case badRequest = "bad_request"
            case unknownOp = "unknown_op"
            case invalidArgument = "invalid_argument"
            case notFound = "not_found"
            case leaseLost = "lease_lost"
            case invalidTransition = "invalid_transition"
            case cancelled = "cancelled"
            case paused = "paused"
            case timedOut = "timed_out"
            case tooLarge = "too_large"
            case shuttingDown = "shutting_down"
            case storageFull = "storage_full"
            case unavailable = "unavailable"
            case tooManyConnections = "too_many_connections"
            case forbidden = "forbidden"
            case `internal` = "internal"
        }

        fileprivate var base: Base

        /// The line is not JSON, not an object, or too long.
        public static let badRequest = Code(base: .badRequest)
        /// The `op` is not one this server knows.
        public static let unknownOp = Code(base: .unknownOp)
        /// A field is missing, of the wrong type, or out of range; the message names it.
        public static let invalidArgument = Code(base: .invalidArgument)
        /// No job has that id.
        public static let notFound = Code(base: .notFound)
        /// The token does not hold a live lease on the job: it is stale, or the lease expired.
        public static let leaseLost = Code(base: .leaseLost)
        /// The job's state does not allow the operation.
        public static let invalidTransition = Code(base: .invalidTransition)
        /// The job was cancelled: its lease is revoked, and the worker must stop.
        public static let cancelled = Code(base: .cancelled)
        /// The job was paused: its lease is revoked, and the worker must stop; it resumes later.
        public static let paused = Code(base: .paused)
        /// The attempt ran longer than its `timeout_ms`: its lease is revoked, and the worker
        /// must stop; the job is retried by its rules.
        public static let timedOut = Code(base: .timedOut)
        /// A value is nested deeper than the server accepts.
        public static let tooLarge = Code(base: .tooLarge)
        /// The server is stopping and takes no new work.
        public static let shuttingDown = Code(base: .shuttingDown)
        /// The store's disk is full: the write was rolled back, and nothing of it applied.
        /// Retry later; reads and ops that free space still work.
        public static let storageFull = Code(base: .storageFull)
        /// The shared job store (PostgreSQL) cannot be reached: retry later, as across a restart.
        public static let unavailable = Code(base: .unavailable)
        /// The server is at its connection limit; the connection is closed. Retry later.
        public static let tooManyConnections = Code(base: .tooManyConnections)
        /// The access policy does not grant the request to the connection's user; the message
        /// names the op, the role and the queue. Retrying will not help.
        public static let forbidden = Code(base: .forbidden)
        /// The server failed; the request may or may not have been applied only if the message says so.
        public static let `internal` = Code(base: .internal)

        /// Every code this version knows.
        public static var all: [Code] { Base.allCases.map { Code(base: $0) } }

        /// The code's string on the wire.
        public var wireValue: String { self.base.rawValue }

        /// The code for a wire string, or `nil` for one this version does not know.
        public init?(wireValue: String) {
            guard let base = Base(rawValue: wireValue) else { return nil }
            self.base = base
        }

        fileprivate init(base: Base) {
            self.base = base
        }

        public var description: String { self.wireValue }
    }

    public var code: Code
    public var message: String
    /// The job's state when the refusal concerns one job (`invalid_transition`,
    /// `lease_lost`, `cancelled`, `paused`), so a client need not ask again to learn it.
    public var state: JobState?

    public init(_ code: Code, _ message: String, state: JobState? = nil) {
        self.code = code
        self.message = message
        self.state = state
    }

    public var description: String { "\(self.code.wireValue): \(self.message)" }

    public static func invalidArgument(_ field: String, _ problem: String) -> BatonError {
        BatonError(.invalidArgument, "`\(field)` \(problem)")
    }
}
