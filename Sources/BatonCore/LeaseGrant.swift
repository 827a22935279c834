/// The server's record of a lease: a time-bounded right to change one running job.
///
/// Deadlines are on the server's monotonic clock (milliseconds since an arbitrary origin),
/// never the wall clock, so a clock step cannot expire or extend a lease.
public struct LeaseGrant: Hashable, Sendable {
    public var jobID: Int64
    public var token: FencingToken
    /// The monotonic millisecond after which the lease is lost.
    public var deadline: Int64
    /// The lease period, renewed by each heartbeat unless the heartbeat names another.
    public var duration: Int64
    /// The uid of the process that claimed the job, where known. With an access policy, only
    /// that uid may use the lease.
    public var holder: UInt32?
    /// The attempt's time limit (`timeout_ms`), if it has one: the deadline never passes
    /// `timeoutAt`, however often the lease is renewed.
    public var timeout: Int64?
    /// The monotonic millisecond at which the attempt has run for `timeout`.
    public var timeoutAt: Int64?

    public init(jobID: Int64, token: FencingToken, deadline: Int64, duration: Int64, holder: UInt32? = nil) {
        self.jobID = jobID
        self.token = token
        self.deadline = deadline
        self.duration = duration
        self.holder = holder
    }

    /// Whether the lease ends, at `now`, because the attempt ran out of time rather than
    /// because its worker went quiet.
    public func timedOut(at now: Int64) -> Bool {
        self.timeoutAt.map { now >= $0 } ?? false
    }

    /// Why the attempt ends, if the lease runs out at `now` because the attempt ran out of
    /// time: its `last_error`. `nil` for a lease that simply expired.
    public func timeoutReason(at now: Int64) -> String? {
        guard let timeout, self.timedOut(at: now) else { return nil }
        return AttemptTimeout.reason(milliseconds: timeout)
    }
}

/// An attempt's time limit, `timeout_ms`: the job's own, else its queue's. An attempt that
/// runs longer is ended even while its worker heartbeats, and retried by the job's rule.
public enum AttemptTimeout {
    /// The error an attempt that ran out of time ends with.
    public static func reason(milliseconds: Int64) -> String {
        "timed out after \(milliseconds) ms"
    }

    /// Whether a job's `last_error` says its attempt ran out of time.
    public static func isReason(_ error: String?) -> Bool {
        guard let error else { return false }
        return error.hasPrefix("timed out after ") && error.hasSuffix(" ms")
    }
}
