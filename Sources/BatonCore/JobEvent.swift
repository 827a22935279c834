/// One entry of a job's audit trail: a state change, when it happened, and its particulars.
///
/// Heartbeats are not events: they change no state, and recording them would cost a write
/// per heartbeat for nothing anyone asks about afterwards.
public struct JobEvent: Hashable, Sendable {
    public enum Kind: String, Hashable, Sendable, CaseIterable {
        case enqueued
        case claimed
        case checkpointed
        case completed
        /// The worker reported a failure; `state` says whether the job will be retried.
        case failed
        /// The lease ran out; `state` says whether the job will be retried.
        case expired
        case released
        case cancelled
        case paused
        case resumed
        case retried
    }

    public var kind: Kind
    /// Wall-clock milliseconds.
    public var at: Int64
    /// The state the job moved to.
    public var state: JobState
    /// The lease the change was made under: the new one for a claim.
    public var token: FencingToken?
    /// The process that claimed the job.
    public var peerPID: Int32?
    /// The worker's name for a claim; the error or the reason otherwise.
    public var detail: String?
    /// For `enqueued`: the job whose completion enqueued this one.
    public var parent: Int64?
    /// For `completed`: the jobs the completion enqueued.
    public var followUps: [Int64] = []

    public init(
        _ kind: Kind, at: Int64, state: JobState, token: FencingToken? = nil, peerPID: Int32? = nil, detail: String? = nil
    ) {
        self.kind = kind
        self.at = at
        self.state = state
        self.token = token
        self.peerPID = peerPID
        self.detail = detail
    }
}

extension JobEvent {
    /// A job's whole audit trail, oldest first: its enqueue and its completion come from the
    /// job's row, which records them, and every other change from the `recorded` events.
    ///
    /// - Parameter followUps: the jobs its completion enqueued, for a completed job.
    public static func trail(of job: Job, recorded: [JobEvent], followUps: [Int64]) -> [JobEvent] {
        var enqueued = JobEvent(.enqueued, at: job.createdAt, state: .queued)
        enqueued.parent = job.parent
        var events = [enqueued]
        events += recorded
        if job.state == .completed, let finishedAt = job.finishedAt {
            var completed = JobEvent(.completed, at: finishedAt, state: .completed, token: job.leaseToken)
            completed.followUps = followUps
            events.append(completed)
        }
        return events
    }
}
