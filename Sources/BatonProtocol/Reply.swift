import BatonCore

/// Writes reply lines, as UTF-8 ready for the socket: `{"id":…,"ok":true,…}` or
/// `{"id":…,"ok":false,"error":{…}}`, each ending in `\n`.
public enum Reply {
    /// A successful reply whose results `body` writes as members of the reply object.
    public static func success(id: String?, _ body: (inout JSONWriter) -> Void = { _ in }) -> [UInt8] {
        var writer = JSONWriter()
        writer.beginObject()
        writer.member("id", rawJSON: id)
        writer.member("ok", true)
        body(&writer)
        writer.endObject()
        writer.newline()
        return writer.bytes
    }

    /// An error reply.
    public static func failure(id: String?, _ error: BatonError) -> [UInt8] {
        var writer = JSONWriter()
        writer.beginObject()
        writer.member("id", rawJSON: id)
        writer.member("ok", false)
        writer.key("error")
        writer.beginObject()
        writer.member("code", error.code.wireValue)
        writer.member("message", error.message)
        if let state = error.state { writer.member("state", state.rawValue) }
        writer.endObject()
        writer.endObject()
        writer.newline()
        return writer.bytes
    }
}

/// The lease a running job is held under, as `get` shows it.
public struct LeaseView: Sendable {
    public var expiresAt: Int64

    public init(expiresAt: Int64) {
        self.expiresAt = expiresAt
    }
}

extension JSONWriter {
    /// `"breaker": {failures, window_ms, cooldown_ms}`, or `null`: in `set_queue` and
    /// `set_limit` requests and in the replies that show the settings.
    public mutating func member(_ name: String, breaker: CircuitBreaker.Settings?) {
        self.key(name)
        guard let breaker else { return self.null() }
        self.beginObject()
        self.member("failures", Int64(breaker.failures))
        self.member("window_ms", breaker.windowMilliseconds)
        self.member("cooldown_ms", breaker.cooldownMilliseconds)
        self.endObject()
    }

    /// `jobs: [{job, duplicate}, …]`, for a batch of enqueues.
    public mutating func enqueued(_ results: [(jobID: Int64, duplicate: Bool)]) {
        self.key("jobs")
        self.beginArray()
        for result in results {
            self.beginObject()
            self.member("job", result.jobID)
            self.member("duplicate", result.duplicate)
            self.endObject()
        }
        self.endArray()
    }

    /// A claimed job, as `claim` returns it to the worker that now holds it.
    public mutating func claimedJob(_ job: ClaimedJob, token: FencingToken, leaseExpiresAt: Int64) {
        self.beginObject()
        self.member("id", job.id)
        self.member("queue", job.queue)
        self.member("payload", rawJSON: job.payload)
        self.member("attempt", job.attempt)
        self.member("max_attempts", job.maxAttempts)
        self.member("token", token.rawValue)
        self.member("lease_ms", job.leaseMilliseconds)
        self.member("lease_expires_at", leaseExpiresAt)
        self.member("checkpoint", rawJSON: job.checkpoint)
        self.member("progress", rawJSON: job.progress)
        if let trace = job.trace { self.trace(trace) }
        self.endObject()
    }

    /// `trace`: `{traceparent, tracestate?}`, shown only when the job has one.
    public mutating func trace(_ trace: TraceContext) {
        self.key("trace")
        self.beginObject()
        self.member("traceparent", trace.traceparent)
        if let state = trace.tracestate { self.member("tracestate", state) }
        self.endObject()
    }

    /// A metric's labels as an object.
    public mutating func labels(_ labels: [(String, String)]) {
        self.key("labels")
        self.beginObject()
        for (name, value) in labels { self.member(name, value) }
        self.endObject()
    }

    /// One entry of a job's audit trail, as `events` returns it.
    public mutating func jobEvent(_ event: JobEvent) {
        self.beginObject()
        self.member("event", event.kind.rawValue)
        self.member("at", event.at)
        self.member("state", event.state.rawValue)
        if let token = event.token { self.member("token", token.rawValue) }
        if let pid = event.peerPID { self.member("peer_pid", Int64(pid)) }
        if let detail = event.detail {
            switch event.kind {
            case .claimed: self.member("worker", detail)
            case .cancelled, .paused, .resumed, .retried: self.member("reason", detail)
            default: self.member("error", detail)
            }
        }
        if let parent = event.parent { self.member("parent", parent) }
        if !event.followUps.isEmpty {
            self.key("follow_ups")
            self.beginArray()
            for job in event.followUps { self.integer(job) }
            self.endArray()
        }
        self.endObject()
    }

    /// A whole job, as `get` returns it; `lease` is set while it runs.
    public mutating func jobDetail(_ job: Job, lease: LeaseView?) {
        self.beginObject()
        self.member("id", job.id)
        self.member("queue", job.queue)
        self.member("state", job.state.rawValue)
        self.member("payload", rawJSON: job.payload)
        self.member("priority", job.priority)
        self.member("run_at", job.runAt)
        self.member("attempts", job.attempts)
        self.member("max_attempts", job.maxAttempts)
        self.key("backoff")
        self.beginObject()
        self.member("initial_ms", job.backoff.initialMilliseconds)
        self.key("factor")
        self.double(job.backoff.factor)
        self.member("max_ms", job.backoff.maximumMilliseconds)
        self.endObject()
        self.member("lease_ms", job.leaseMilliseconds)
        self.member("timeout_ms", optional: job.timeoutMilliseconds)
        self.member("unique_key", optional: job.uniqueKey)
        self.member("concurrency_key", optional: job.concurrencyKey)
        // Shown only when set: they arrived after the rest, and most jobs use neither.
        if !job.limits.isEmpty {
            self.key("limits")
            self.beginArray()
            for name in job.limits { self.string(name) }
            self.endArray()
        }
        if let group = job.group { self.member("group", group) }
        if let trace = job.trace { self.trace(trace) }
        self.member("checkpoint", rawJSON: job.checkpoint)
        self.member("progress", rawJSON: job.progress)
        self.member("result", rawJSON: job.result)
        // A completed job's error is an earlier attempt's: shown as such, never as current.
        self.member("last_error", optional: job.state == .completed ? nil : job.lastError)
        self.member("earlier_error", optional: job.state == .completed ? job.lastError : nil)
        self.member("parent", optional: job.parent)
        self.member("created_at", job.createdAt)
        self.member("started_at", optional: job.startedAt)
        self.member("finished_at", optional: job.finishedAt)
        self.key("lease")
        if let lease, job.state == .running {
            self.beginObject()
            self.member("expires_at", lease.expiresAt)
            self.member("worker", optional: job.worker)
            self.member("peer_pid", optional: job.peer.map { Int64($0.pid) })
            self.member("peer_uid", optional: job.peer.map { Int64($0.uid) })
            self.endObject()
        } else {
            self.null()
        }
        self.endObject()
    }
}
