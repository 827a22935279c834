import BatonProtocol
import NIOCore

/// What the authority hands back for one request.
struct Outcome: Sendable {
    /// The reply line as UTF-8, newline included; empty for a claim whose connection closed.
    var line: [UInt8]
    /// Set when the reply grants a lease: if it cannot be delivered, the job is released.
    var granted: LeaseReference?
    /// Writes the reply instead of `line`, for a reply whose size grows with the number of
    /// queues: the connection runs it off the authority's thread and off its event loop.
    var render: (@Sendable () -> [UInt8])?

    init(line: [UInt8], granted: LeaseReference? = nil) {
        self.line = line
        self.granted = granted
    }

    init(render: @escaping @Sendable () -> [UInt8]) {
        self.line = []
        self.render = render
    }
}

/// Where a request's outcome goes once its batch has committed.
typealias ReplySink = EventLoopPromise<Outcome>
