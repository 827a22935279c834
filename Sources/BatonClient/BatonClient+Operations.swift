import BatonCore
import BatonProtocol
import NIOCore

extension BatonClient {
    /// Identifies the server.
    public func hello(client name: String? = nil) async throws -> ServerInfo {
        let reply = try await self.request("hello") { request in
            if let name { request.member("client", name) }
        }
        return ServerInfo(
            version: try reply.string("version"),
            protocolVersion: Int(try reply.int64("protocol")),
            durability: try reply.string("durability"),
            maximumLineBytes: Int(try reply.object("limits").int64("max_line_bytes"))
        )
    }

    /// Adds a job.
    ///
    /// - Parameters:
    ///   - queue: the queue's name.
    ///   - payload: any `Encodable` value; the worker receives it as JSON.
    ///   - options: priority, delay, attempts, backoff, lease period, unique key.
    /// - Returns: the job's id, and whether an unfinished job with the same unique key was
    ///   returned instead of a new one.
    /// - Note: `enqueue` is not sent again after a lost connection, since it could add
    ///   the job twice; give it a ``EnqueueOptions/uniqueKey`` and retry it yourself.
    @discardableResult
    public func enqueue<Payload: Encodable>(
        queue: String, payload: Payload, options: EnqueueOptions = EnqueueOptions()
    ) async throws -> EnqueueResult {
        let text = try jsonText(payload)
        let reply = try await self.request("enqueue") { request in
            request.member("queue", queue)
            request.member("payload", rawJSON: text)
            options.write(into: &request)
        }
        return EnqueueResult(jobID: try reply.int64("job"), duplicate: try reply.bool("duplicate"))
    }

    /// Leases the best ready job of some queues: the highest priority, then the oldest.
    ///
    /// - Parameters:
    ///   - queues: the queues to take from.
    ///   - wait: how long to wait for a job if none is ready (up to 5 minutes).
    ///   - leaseDuration: the lease period, instead of the job's own.
    ///   - worker: a name for this worker, shown by `get`.
    ///   - detached: `true` when the lease outlives this process (it is handed to another
    ///     one that reports the outcome); otherwise, should this process exit with the
    ///     connection closed, the server ends the lease at once.
    /// - Returns: the lease, or `nil` when no job came within `wait`.
    /// - Throws: `CancellationError` when the task is cancelled while waiting; a job the
    ///   server hands out after that is released at once, not left to its lease.
    public func claim(
        queues: [String], wait: Duration = .zero, leaseDuration: Duration? = nil, worker: String? = nil, detached: Bool = false
    ) async throws -> Lease? {
        let reply = try await self.request("claim", abandoned: Self.releaseAbandonedClaim) { request in
            Self.writeClaim(queues: queues, leaseDuration: leaseDuration, worker: worker, into: &request)
            if wait > .zero { request.member("wait_ms", wait.milliseconds) }
            if detached { request.member("detached", true) }
        }
        return try self.lease(in: reply)
    }

    /// A claim's arguments, for `claim` itself and for the `claim` a completion carries.
    static func writeClaim(queues: [String], leaseDuration: Duration?, worker: String?, into request: inout JSONWriter) {
        request.key("queues")
        request.beginArray()
        for queue in queues { request.string(queue) }
        request.endArray()
        if let leaseDuration { request.member("lease_ms", leaseDuration.milliseconds) }
        if let worker { request.member("worker", worker) }
    }

    /// The lease a reply's `job` grants, if it grants one.
    func lease(in reply: [String: JSONValue]) throws -> Lease? {
        guard case .object(let job)? = reply["job"] else { return nil }
        return try Lease(job, client: self)
    }

    /// Gives back a job whose claim was answered after its caller stopped waiting.
    static let releaseAbandonedClaim = AbandonedReplyHandler { reply, channel in
        guard case .object(let job)? = reply["job"], let id = job.optionalInt64("id"), let token = job.optionalInt64("token") else {
            return
        }
        BatonClient.sendUnanswered("release", on: channel) { request in
            request.member("job", id)
            request.member("token", token)
        }
    }

    /// The whole job.
    ///
    /// - Throws: ``BatonError`` with code ``BatonError/Code/notFound`` for an unknown id.
    public func job(_ id: Int64) async throws -> JobInfo {
        let reply = try await self.request("get") { $0.member("job", id) }
        return try JobInfo(try reply.object("job"))
    }

    /// Cancels an unfinished job. If it is running, its lease is revoked at once and its
    /// worker's next heartbeat is refused with ``BatonError/Code/cancelled``.
    ///
    /// - Throws: ``BatonError`` with ``BatonError/Code/invalidTransition`` for a finished job.
    /// - Returns: the job's state now, `cancelled`.
    @discardableResult
    public func cancel(_ id: Int64, reason: String? = nil) async throws -> JobState {
        try Self.state(
            of: await self.request("cancel") { request in
                request.member("job", id)
                if let reason { request.member("reason", reason) }
            })
    }

    /// Holds a job back until ``resume(_:)``. A running job's lease is revoked and its
    /// attempt given back; its worker's next heartbeat is refused with
    /// ``BatonError/Code/paused``.
    /// - Returns: the job's state now.
    @discardableResult
    public func pause(_ id: Int64) async throws -> JobState {
        try Self.state(of: await self.request("pause") { $0.member("job", id) })
    }

    /// Lets a paused job be claimed again; the next attempt resumes from its checkpoint.
    /// - Returns: the job's state now.
    @discardableResult
    public func resume(_ id: Int64) async throws -> JobState {
        try Self.state(of: await self.request("resume") { $0.member("job", id) })
    }

    /// Runs a failed or cancelled job again, with its attempts reset and its checkpoint kept.
    /// - Returns: the job's state now.
    @discardableResult
    public func retry(_ id: Int64) async throws -> JobState {
        try Self.state(of: await self.request("retry") { $0.member("job", id) })
    }

    /// Retries, cancels or purges every job `change` matches, in steps that let other
    /// requests through between them (see ``BulkChange``).
    ///
    /// - Returns: how many jobs it changed, and whether it went through all it matched
    ///   (`false` when batond stopped first).
    @discardableResult
    public func changeJobs(_ change: BulkChange) async throws -> (changed: Int, done: Bool) {
        let reply = try await self.request(change.action.rawValue) { request in
            request.member("queue", change.queue)
            request.member("state", change.state.rawValue)
            if let text = change.errorContains { request.member("error_contains", text) }
            if let limit = change.limit { request.member("limit", limit) }
            if let reason = change.reason { request.member("reason", reason) }
        }
        return (Int(try reply.int64("changed")), try reply.bool("done"))
    }

    /// Gives an unfinished job a new priority: a queued job moves in the claim order at
    /// once, a running one keeps it for its next attempt.
    /// - Returns: the job's state, unchanged.
    @discardableResult
    public func setPriority(_ id: Int64, to priority: Int64) async throws -> JobState {
        try Self.state(of: await self.request("set_priority") { $0.member("job", id); $0.member("priority", priority) })
    }

    /// Stops claims from taking jobs of `queue`; running jobs finish normally. The pause
    /// survives restarts.
    public func pauseQueue(_ queue: String) async throws {
        _ = try await self.request("pause_queue") { $0.member("queue", queue) }
    }

    /// Lets claims take jobs of `queue` again.
    public func resumeQueue(_ queue: String) async throws {
        _ = try await self.request("resume_queue") { $0.member("queue", queue) }
    }

    /// Caps how many jobs of `queue` run at once (`nil` removes the cap); claims take
    /// nothing from the queue while it is at its limit. The setting survives restarts.
    public func setQueueLimit(_ queue: String, maxRunning: Int?) async throws {
        try await self.setQueue(queue, QueueSettings.Change(maxRunning: .some(maxRunning)))
    }

    /// Changes some of `queue`'s settings (those `change` names; `.some(nil)` removes
    /// one): `maxRunning`; `timeoutMilliseconds`, the time limit of each attempt of its
    /// jobs that set none of their own; `breaker`, its circuit breaker. The settings
    /// survive restarts.
    ///
    /// - Returns: the queue's settings now.
    @discardableResult
    public func setQueue(_ queue: String, _ change: QueueSettings.Change) async throws -> QueueSettings {
        let reply = try await self.request("set_queue") { request in
            request.member("queue", queue)
            if let maxRunning = change.maxRunning {
                if let maxRunning { request.member("max_running", maxRunning) } else { request.member("max_running", rawJSON: nil) }
            }
            if let timeout = change.timeoutMilliseconds {
                if let timeout { request.member("timeout_ms", timeout) } else { request.member("timeout_ms", rawJSON: nil) }
            }
            if let breaker = change.breaker { request.member("breaker", breaker: breaker) }
        }
        let breaker = try reply.breaker()
        return QueueSettings(
            maxRunning: reply.optionalInt64("max_running").map { Int($0) }, timeoutMilliseconds: reply.optionalInt64("timeout_ms"), breaker: breaker)
    }

    /// The job's audit trail, oldest first.
    public func events(of id: Int64) async throws -> [JobEventInfo] {
        let reply = try await self.request("events") { $0.member("job", id) }
        guard case .array(let items)? = reply["events"] else {
            throw BatonConnectionError(.protocolViolation, "an events reply without events")
        }
        return try items.map { item in
            guard case .object(let fields) = item else {
                throw BatonConnectionError(.protocolViolation, "an event that is not an object")
            }
            return try JobEventInfo(fields)
        }
    }

    /// A page of jobs, newest first (or oldest first), optionally of one queue and state.
    ///
    /// - Parameter after: the `next` cursor of the previous page.
    /// - Returns: the jobs, and the cursor for the next page (`nil` on the last one).
    public func list(
        queue: String? = nil, state: JobState? = nil, limit: Int = 100, after: Int64? = nil, oldestFirst: Bool = false
    ) async throws -> (jobs: [JobInfo], next: Int64?) {
        let reply = try await self.request("list") { request in
            if let queue { request.member("queue", queue) }
            if let state { request.member("state", state.rawValue) }
            request.member("limit", limit)
            if let after { request.member("after", after) }
            if oldestFirst { request.member("order", "oldest") }
        }
        guard case .array(let items)? = reply["jobs"] else {
            throw BatonConnectionError(.protocolViolation, "a list reply without jobs")
        }
        let jobs = try items.map { item -> JobInfo in
            guard case .object(let fields) = item else {
                throw BatonConnectionError(.protocolViolation, "a listed job that is not an object")
            }
            return try JobInfo(fields)
        }
        return (jobs, reply.optionalInt64("next"))
    }

    /// The `state` a job-control reply reports.
    private static func state(of reply: [String: JSONValue]) throws -> JobState {
        let name = try reply.string("state")
        guard let state = JobState(rawValue: name) else {
            throw BatonConnectionError(.protocolViolation, "unknown job state \(name)")
        }
        return state
    }

    /// Each queue's job counts by state and its admission settings: every queue that has
    /// jobs, is paused, or has a limit on running jobs.
    public func stats() async throws -> [String: QueueStats] {
        let reply = try await self.request("stats")
        var queues: [String: QueueStats] = [:]
        for (name, value) in try reply.object("queues") {
            guard case .object(let fields) = value else { continue }
            var counts: [JobState: Int] = [:]
            for state in JobState.allCases {
                counts[state] = Int(fields.optionalInt64(state.rawValue) ?? 0)
            }
            queues[name] = QueueStats(counts: counts, oldestReadyAgeMilliseconds: fields.optionalInt64("oldest_ready_age_ms"))
        }
        if case .array(let paused)? = reply["paused_queues"] {
            for case .string(let name) in paused { queues[name, default: QueueStats()].paused = true }
        }
        if case .object(let limits)? = reply["queue_limits"] {
            for (name, value) in limits {
                guard case .object(let fields) = value, let limit = fields.optionalInt64("max_running") else { continue }
                queues[name, default: QueueStats()].maxRunning = Int(limit)
            }
        }
        if case .object(let breakers)? = reply["breakers"] {
            for (name, value) in breakers {
                guard case .object(let fields) = value else { continue }
                queues[name, default: QueueStats()].breaker = fields.optionalString("state")
            }
        }
        return queues
    }
}

/// The settings of a new job; what is left out takes the server's default.
public struct EnqueueOptions: Sendable {
    /// Higher runs first.
    public var priority: Int32?
    /// Not before this delay from now.
    public var delay: Duration?
    /// Not before this wall-clock time, in milliseconds since the epoch.
    public var runAt: Int64?
    /// Attempts in all.
    public var maxAttempts: Int?
    /// How long to wait between attempts.
    public var backoff: BackoffPolicy?
    /// The lease period for this job's claims.
    public var leaseDuration: Duration?
    /// While an unfinished job of the queue has this key, enqueueing returns it instead.
    public var uniqueKey: String?
    /// While a job holding this key runs, in any queue, this one waits.
    public var concurrencyKey: String?
    /// Jobs that must complete before this one may run; if one fails or is cancelled,
    /// this one is cancelled.
    public var after: [Int64]
    /// Each attempt's time limit: one that runs longer is stopped, even while it
    /// heartbeats, and retried. Without it, the queue's (`set_queue`), if any.
    public var timeout: Duration?
    /// The named limits (``BatonClient/setLimit(_:_:)``) the job counts against, at most
    /// four: it starts only when every one admits it.
    public var limits: [String]
    /// Its fair-share group: claims rotate across a queue's groups.
    public var group: String?
    /// The W3C trace context the job carries to its workers.
    public var trace: Trace = .current

    /// Which trace context a job carries.
    public enum Trace: Sendable {
        /// The caller's: the task's `ServiceContext` as the bootstrapped instrument writes it
        /// out, else `$TRACEPARENT`; inside a ``Worker`` handler, the handler's span.
        case current
        /// None.
        case none
        /// This one.
        case context(TraceContext)
    }

    /// Options; each left `nil` takes the server's default.
    public init(
        priority: Int32? = nil, delay: Duration? = nil, runAt: Int64? = nil, maxAttempts: Int? = nil,
        backoff: BackoffPolicy? = nil, leaseDuration: Duration? = nil, uniqueKey: String? = nil,
        concurrencyKey: String? = nil, after: [Int64] = [], timeout: Duration? = nil, limits: [String] = [], group: String? = nil,
        trace: Trace = .current
    ) {
        self.trace = trace
        self.timeout = timeout
        self.limits = limits
        self.group = group
        self.concurrencyKey = concurrencyKey
        self.after = after
        self.priority = priority
        self.delay = delay
        self.runAt = runAt
        self.maxAttempts = maxAttempts
        self.backoff = backoff
        self.leaseDuration = leaseDuration
        self.uniqueKey = uniqueKey
    }

    func write(into request: inout JSONWriter) {
        if let priority { request.member("priority", Int64(priority)) }
        if let delay { request.member("delay_ms", delay.milliseconds) }
        if let runAt { request.member("run_at", runAt) }
        if let maxAttempts { request.member("max_attempts", maxAttempts) }
        if let backoff {
            request.key("backoff")
            request.beginObject()
            request.member("initial_ms", backoff.initialMilliseconds)
            request.key("factor")
            request.double(backoff.factor)
            request.member("max_ms", backoff.maximumMilliseconds)
            request.endObject()
        }
        if let leaseDuration { request.member("lease_ms", leaseDuration.milliseconds) }
        if let uniqueKey { request.member("unique_key", uniqueKey) }
        if let concurrencyKey { request.member("concurrency_key", concurrencyKey) }
        if let timeout { request.member("timeout_ms", timeout.milliseconds) }
        if !self.limits.isEmpty {
            request.key("limits")
            request.beginArray()
            for name in self.limits { request.string(name) }
            request.endArray()
        }
        if let group { request.member("group", group) }
        if let trace = self.resolvedTrace {
            request.key("trace")
            request.beginObject()
            request.member("traceparent", trace.traceparent)
            if let state = trace.tracestate { request.member("tracestate", state) }
            request.endObject()
        }
        if !self.after.isEmpty {
            request.key("after")
            request.beginArray()
            for id in self.after { request.integer(id) }
            request.endArray()
        }
    }
}

extension EnqueueOptions {
    /// The context to send, with `.current` read now.
    var resolvedTrace: TraceContext? {
        switch self.trace {
        case .current: JobTracing.current()
        case .none: nil
        case .context(let trace): trace
        }
    }

    /// These options with `.current` fixed to what it is now: for follow-ups, which are
    /// written after the handler's span has ended.
    func fixingTrace() -> EnqueueOptions {
        var options = self
        if case .current = self.trace { options.trace = self.resolvedTrace.map { .context($0) } ?? .none }
        return options
    }
}

/// What `enqueue` answered.
public struct EnqueueResult: Hashable, Sendable {
    /// The job's id.
    public var jobID: Int64
    /// `true` when an unfinished job with the same unique key was returned instead.
    public var duplicate: Bool
}

/// The server, as `hello` describes it.
public struct ServerInfo: Hashable, Sendable {
    /// The server's version.
    public var version: String
    /// The protocol version it speaks (1).
    public var protocolVersion: Int
    /// `full` or `normal`.
    public var durability: String
    /// The longest request line it accepts.
    public var maximumLineBytes: Int
}

/// One queue's counts and admission settings, as `stats` reports them.
public struct QueueStats: Hashable, Sendable {
    /// How many of the queue's jobs are in each state.
    public var counts: [JobState: Int] = [:]
    /// How long the longest-waiting claimable job has waited, if any is claimable.
    public var oldestReadyAgeMilliseconds: Int64?
    /// Claims take nothing from a paused queue (`pause_queue`).
    public var paused = false
    /// The most of its jobs that may run at once (`set_queue`), if limited.
    public var maxRunning: Int?
    /// Its circuit breaker's state when not closed: `open` or `half_open`.
    public var breaker: String?
}

/// A whole job, as `get` returns it.
public struct JobInfo: Sendable {
    /// The job's id.
    public var id: Int64
    /// The queue it belongs to.
    public var queue: String
    /// Where it is in its life.
    public var state: JobState
    /// The payload, as the producer enqueued it.
    public var payload: JSONValue
    /// Higher runs first.
    public var priority: Int64
    /// Attempts started so far.
    public var attempts: Int
    /// Attempts allowed in all.
    public var maxAttempts: Int
    /// The last checkpointed state.
    public var checkpoint: JSONValue?
    /// The last progress reported: `{percent, message?}`.
    public var progress: JSONValue?
    /// What `complete` stored.
    public var result: JSONValue?
    /// Why the last attempt failed, or why the job was cancelled; `nil` once it completed.
    public var lastError: String?
    /// For a completed job, the error of an attempt before the one that completed.
    public var earlierError: String?
    /// The job whose completion enqueued this one, if any.
    public var parent: Int64?
    /// When it was enqueued, in wall-clock milliseconds.
    public var createdAt: Int64
    /// When its latest attempt started.
    public var startedAt: Int64?
    /// When it completed, failed or was cancelled.
    public var finishedAt: Int64?
    /// The worker holding the job, while it runs.
    public var worker: String?
    /// The process holding the job, while it runs.
    public var peerPID: Int64?
    /// The W3C trace context it carries, if any.
    public var trace: TraceContext?

    init(_ job: [String: JSONValue]) throws {
        self.id = try job.int64("id")
        self.queue = try job.string("queue")
        guard let state = JobState(rawValue: try job.string("state")) else {
            throw BatonConnectionError(.protocolViolation, "unknown job state \(job["state"].map { $0.jsonText } ?? "")")
        }
        self.state = state
        self.payload = job["payload"] ?? .null
        self.priority = try job.int64("priority")
        self.attempts = Int(try job.int64("attempts"))
        self.maxAttempts = Int(try job.int64("max_attempts"))
        self.checkpoint = job.value("checkpoint")
        self.progress = job.value("progress")
        self.result = job.value("result")
        self.lastError = job.optionalString("last_error")
        self.earlierError = job.optionalString("earlier_error")
        self.parent = job.optionalInt64("parent")
        self.createdAt = try job.int64("created_at")
        self.startedAt = job.optionalInt64("started_at")
        self.finishedAt = job.optionalInt64("finished_at")
        if case .object(let lease)? = job["lease"] {
            self.worker = lease.optionalString("worker")
            self.peerPID = lease.optionalInt64("peer_pid")
        }
        self.trace = TraceContext(reply: job["trace"])
    }

    /// The result, decoded; `nil` when there is none.
    public func result<T: Decodable>(as type: T.Type) throws -> T? {
        try self.result?.decode(type)
    }
}

/// One entry of a job's audit trail.
public struct JobEventInfo: Hashable, Sendable {
    /// What happened: `enqueued`, `claimed`, `checkpointed`, `completed`, `failed`,
    /// `expired`, `released`, `cancelled`, `paused`, `resumed` or `retried`.
    public var event: String
    /// Wall-clock milliseconds.
    public var at: Int64
    /// The state the job moved to.
    public var state: JobState
    /// The lease the change was made under, or the one a claim granted.
    public var token: Int64?
    /// The process that claimed the job.
    public var peerPID: Int64?
    /// The worker's name (claims), the error (failures) or the reason (cancellations).
    public var detail: String?
    /// For `enqueued`: the job whose completion enqueued this one.
    public var parent: Int64?
    /// For `completed`: the jobs the completion enqueued.
    public var followUps: [Int64]

    init(_ fields: [String: JSONValue]) throws {
        self.event = try fields.string("event")
        self.at = try fields.int64("at")
        guard let state = JobState(rawValue: try fields.string("state")) else {
            throw BatonConnectionError(.protocolViolation, "an event with an unknown state")
        }
        self.state = state
        self.token = fields.optionalInt64("token")
        self.peerPID = fields.optionalInt64("peer_pid")
        self.detail = fields.optionalString("worker") ?? fields.optionalString("error") ?? fields.optionalString("reason")
        self.parent = fields.optionalInt64("parent")
        if case .array(let jobs)? = fields["follow_ups"] {
            self.followUps = jobs.compactMap { if case .integer(let id) = $0 { id } else { nil } }
        } else {
            self.followUps = []
        }
    }
}

/// What `backup` wrote.
public struct BackupInfo: Sendable {
    /// The copy's absolute path, as batond wrote it.
    public var path: String
    public var bytes: Int64
    /// How long the copy took, in milliseconds.
    public var milliseconds: Int64
}

extension BatonClient {
    /// Has batond write a consistent copy of its store to `path`, an absolute path on this
    /// host that must not exist yet; returns once the copy is complete and synced.
    ///
    /// The file is written by batond's user, where it may write (under systemd, its state
    /// directory). Not resent on reconnect: a copy may already be under way.
    public func backup(to path: String) async throws -> BackupInfo {
        let reply = try await self.request("backup") { $0.member("path", path) }
        return BackupInfo(path: try reply.string("path"), bytes: try reply.int64("bytes"), milliseconds: try reply.int64("ms"))
    }
}
