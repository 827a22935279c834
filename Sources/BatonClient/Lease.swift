import BatonCore
import BatonProtocol

/// A job this worker holds, and the right to act on it until the lease runs out.
///
/// The fencing token travels with every call, so a lease that was lost (it expired, or the
/// job was taken from this worker) can change nothing: its calls fail with a ``BatonError``
/// whose code is ``BatonError/Code/leaseLost``. Stop working on the job when you see it.
public struct Lease: Sendable {
    /// The job's id.
    public let jobID: Int64
    /// The queue the job came from.
    public let queue: String
    /// This attempt's number, counting from 1.
    public let attempt: Int
    /// Attempts the job may have in all.
    public let maxAttempts: Int
    /// The lease's fencing token.
    public let token: FencingToken
    /// The lease period; heartbeat well inside it (about every third).
    public let leaseDuration: Duration
    /// When the lease ends without a heartbeat, in wall-clock milliseconds since the epoch.
    public let expiresAt: Int64
    /// The payload as the producer enqueued it.
    public let payload: JSONValue
    /// The state the last attempt checkpointed, or `nil` on a first attempt.
    public let checkpoint: JSONValue?
    /// The producer's trace context, if the job carries one.
    public let trace: TraceContext?
    private let client: BatonClient

    init(_ job: [String: JSONValue], client: BatonClient) throws {
        self.jobID = try job.int64("id")
        self.queue = try job.string("queue")
        self.attempt = Int(try job.int64("attempt"))
        self.maxAttempts = Int(try job.int64("max_attempts"))
        self.token = FencingToken(rawValue: try job.int64("token"))
        self.leaseDuration = .milliseconds(try job.int64("lease_ms"))
        self.expiresAt = try job.int64("lease_expires_at")
        self.payload = job["payload"] ?? .null
        self.checkpoint = job.value("checkpoint")
        self.trace = TraceContext(reply: job["trace"])
        self.client = client
    }

    /// A lease known by its job and token alone, such as one a script passes to `baton
    /// complete`; its payload and checkpoint are unknown (`null`).
    public init(jobID: Int64, token: FencingToken, client: BatonClient) {
        self.jobID = jobID
        self.queue = ""
        self.attempt = 0
        self.maxAttempts = 0
        self.token = token
        self.leaseDuration = .zero
        self.expiresAt = 0
        self.payload = .null
        self.checkpoint = nil
        self.trace = nil
        self.client = client
    }

    /// The payload, decoded.
    public func payload<T: Decodable>(as type: T.Type) throws -> T {
        try self.payload.decode(type)
    }

    /// The last checkpoint, decoded; `nil` when there is none.
    public func checkpoint<T: Decodable>(as type: T.Type) throws -> T? {
        try self.checkpoint?.decode(type)
    }

    /// Renews the lease.
    ///
    /// - Parameters:
    ///   - duration: a new lease period; by default the current one.
    ///   - progress: progress to show in `get`.
    /// - Returns: when the renewed lease ends, in wall-clock milliseconds.
    @discardableResult
    public func heartbeat(duration: Duration? = nil, progress: Progress? = nil) async throws -> Int64 {
        let reply = try await self.client.request("heartbeat") { request in
            self.writeReference(&request)
            if let duration { request.member("lease_ms", duration.milliseconds) }
            progress?.write(into: &request)
        }
        return try reply.int64("lease_expires_at")
    }

    /// Durably stores the state a later attempt resumes from, and renews the lease.
    public func saveCheckpoint<State: Encodable>(_ state: State, progress: Progress? = nil) async throws {
        let text = try jsonText(state)
        _ = try await self.client.request("checkpoint") { request in
            self.writeReference(&request)
            request.member("state", rawJSON: text)
            progress?.write(into: &request)
        }
    }

    /// Finishes the job successfully.
    public func complete() async throws {
        _ = try await self.client.request("complete") { self.writeReference(&$0) }
    }

    /// Finishes the job successfully with a result that `get` shows.
    public func complete<Result: Encodable>(result: Result) async throws {
        let text = try jsonText(result)
        _ = try await self.client.request("complete") { request in
            self.writeReference(&request)
            request.member("result", rawJSON: text)
        }
    }

    /// Finishes the job with a result and follow-up jobs, enqueued in the same commit as the
    /// completion (if one is refused, nothing happens at all).
    ///
    /// - Returns: each follow-up's id, in order.
    @discardableResult
    public func complete(_ completion: Completion) async throws -> [EnqueueResult] {
        let reply = try await self.client.request("complete") { request in
            self.writeReference(&request)
            completion.write(into: &request)
        }
        return try Self.enqueued(in: reply)
    }

    /// The follow-ups a completion enqueued.
    private static func enqueued(in reply: [String: JSONValue]) throws -> [EnqueueResult] {
        guard case .array(let items)? = reply["jobs"] else { return [] }
        return try items.map { item in
            guard case .object(let fields) = item else {
                throw BatonConnectionError(.protocolViolation, "a follow-up that is not an object")
            }
            return EnqueueResult(jobID: try fields.int64("job"), duplicate: try fields.bool("duplicate"))
        }
    }

    /// Finishes the job successfully and, in the same request, leases the next job from
    /// `queues`: one round trip per job instead of two, for a worker that goes straight on.
    ///
    /// - Returns: the next job's lease, or `nil` when none was ready (then ``BatonClient/claim(queues:wait:leaseDuration:worker:)``
    ///   with a wait).
    public func complete(claimingNextFrom queues: [String], leaseDuration: Duration? = nil, worker: String? = nil) async throws -> Lease? {
        try await self.complete(.done, claimingNextFrom: queues, leaseDuration: leaseDuration, worker: worker)
    }

    /// Finishes the job successfully with a result, and leases the next job from `queues`
    /// in the same request; see ``complete(claimingNextFrom:leaseDuration:worker:)``.
    public func complete<Result: Encodable>(
        result: Result, claimingNextFrom queues: [String], leaseDuration: Duration? = nil, worker: String? = nil
    ) async throws -> Lease? {
        try await self.complete(try Completion(result: result), claimingNextFrom: queues, leaseDuration: leaseDuration, worker: worker)
    }

    /// Finishes the job with a result and follow-ups, and leases the next job from `queues`
    /// in the same request; see ``complete(claimingNextFrom:leaseDuration:worker:)``.
    public func complete(
        _ completion: Completion, claimingNextFrom queues: [String], leaseDuration: Duration? = nil, worker: String? = nil
    ) async throws -> Lease? {
        // Repeatable like any completion: a repeat after a lost reply claims again, and the
        // job the lost reply leased expires like any other.
        let reply = try await self.client.request("complete", abandoned: BatonClient.releaseAbandonedClaim) { request in
            self.writeReference(&request)
            completion.write(into: &request)
            request.key("claim")
            request.beginObject()
            BatonClient.writeClaim(queues: queues, leaseDuration: leaseDuration, worker: worker, into: &request)
            request.endObject()
        }
        return try self.client.lease(in: reply)
    }

    /// Ends this attempt unsuccessfully.
    ///
    /// - Parameters:
    ///   - error: why, stored as the job's `last_error`.
    ///   - retry: `false` when trying again cannot help.
    ///   - retryIn: a delay before the next attempt, instead of the job's backoff.
    /// - Returns: whether the job will be retried, and when.
    @discardableResult
    public func fail(_ error: String, retry: Bool = true, retryIn: Duration? = nil) async throws -> FailOutcome {
        let reply = try await self.client.request("fail") { request in
            self.writeReference(&request)
            request.member("error", error)
            if !retry { request.member("retry", false) }
            if let retryIn { request.member("retry_in_ms", retryIn.milliseconds) }
        }
        if try reply.string("state") == JobState.retrying.rawValue {
            return .retrying(runAt: try reply.int64("run_at"))
        }
        return .failed
    }

    /// Gives the job back without spending this attempt, as a worker that is stopping does.
    public func release(after delay: Duration = .zero) async throws {
        _ = try await self.client.request("release") { request in
            self.writeReference(&request)
            if delay > .zero { request.member("delay_ms", delay.milliseconds) }
        }
    }

    private func writeReference(_ request: inout JSONWriter) {
        request.member("job", self.jobID)
        request.member("token", self.token.rawValue)
    }
}

/// What became of a job after ``Lease/fail(_:retry:retryIn:)``.
public enum FailOutcome: Hashable, Sendable {
    /// It will be tried again, not before `runAt` (wall-clock milliseconds).
    case retrying(runAt: Int64)
    /// It has failed for good.
    case failed
}

/// How far a job has got, shown by `get`.
public struct Progress: Hashable, Sendable {
    /// From 0 to 100.
    public var percent: Double
    /// What it is doing, in words.
    public var message: String?

    /// Progress: `percent` from 0 to 100, and optionally what is happening.
    public init(percent: Double, message: String? = nil) {
        self.percent = percent
        self.message = message
    }

    func write(into request: inout JSONWriter) {
        request.key("progress")
        request.beginObject()
        request.key("percent")
        request.double(self.percent)
        if let message = self.message { request.member("message", message) }
        request.endObject()
    }
}
