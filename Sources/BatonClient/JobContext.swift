import BatonProtocol

/// What a ``Worker``'s handler gets: the job, and the calls it may make while it runs.
///
/// The lease's heartbeats, completion and failure are the worker's business; the handler
/// only does the work, checkpoints between stages, and reports progress.
public struct JobContext: Sendable {
    /// The lease the worker holds for this job.
    public let lease: Lease

    init(lease: Lease) {
        self.lease = lease
    }

    /// The trace context of the consumer span the handler runs in, a child of the producer's
    /// (the producer's own without a bootstrapped tracer); follow-ups carry it.
    public var trace: TraceContext? { JobTracing.recorded() ?? self.lease.trace }

    /// The job's id: `id`, as in every client's job context.
    public var id: Int64 { self.lease.jobID }
    /// The job's id (the same as ``id``).
    public var jobID: Int64 { self.lease.jobID }
    /// The queue the job was claimed from.
    public var queue: String { self.lease.queue }
    /// This attempt's number, counting from 1.
    public var attempt: Int { self.lease.attempt }

    /// The payload, decoded.
    public func payload<T: Decodable>(as type: T.Type) throws -> T {
        try self.lease.payload(as: type)
    }

    /// The state the last attempt checkpointed: where to resume. `nil` on a first attempt.
    public func resumeState<T: Decodable>(as type: T.Type) throws -> T? {
        try self.lease.checkpoint(as: type)
    }

    /// Durably records that a stage is done, so a later attempt resumes after it.
    public func checkpoint<State: Encodable>(_ state: State, progress: Progress? = nil) async throws {
        try await self.lease.saveCheckpoint(state, progress: progress)
    }

    /// Reports progress, shown by `get`; it also renews the lease.
    public func report(_ progress: Progress) async throws {
        try await self.lease.heartbeat(progress: progress)
    }
}
