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

    public init(jobID: Int64, token: FencingToken, deadline: Int64, duration: Int64, holder: UInt32? = nil) {
        self.jobID = jobID
        self.token = token
        self.deadline = deadline
        self.duration = duration
        self.holder = holder
    }
}
