/// A job as the store holds it.
///
/// JSON values (payload, checkpoint, progress, result) are kept as their serialized text:
/// the server never needs to look inside them, so they pass from the request line to the
/// store and back to a reply without being parsed again.
public struct Job: Hashable, Sendable {
    public var id: Int64
    public var queue: String
    public var state: JobState
    public var payload: String
    public var priority: Int64
    /// Wall-clock milliseconds before which the job is not claimed.
    public var runAt: Int64
    /// Attempts started so far; `release` gives one back.
    public var attempts: Int
    public var maxAttempts: Int
    public var backoff: BackoffPolicy
    public var leaseMilliseconds: Int64
    public var uniqueKey: String?
    /// At most one job holding a key runs at a time, across the store.
    public var concurrencyKey: String?
    public var checkpoint: String?
    public var progress: String?
    public var result: String?
    public var lastError: String?
    /// The token of the latest lease; it stays after the job finishes, so a repeated
    /// `complete` with the same token can be recognised and answered again.
    public var leaseToken: FencingToken?
    public var worker: String?
    public var peer: PeerIdentity?
    public var createdAt: Int64
    public var startedAt: Int64?
    public var finishedAt: Int64?
    /// The job whose completion enqueued this one, if any.
    public var parent: Int64?
    /// Each attempt's time limit (``AttemptTimeout``); `nil` for its queue's.
    public var timeoutMilliseconds: Int64?
    /// The named limits it counts against (``NamedLimits``).
    public var limits: [String] = []
    /// Its fair-share group within its queue, if any.
    public var group: String?
    /// The trace of the process that enqueued it, if it gave one.
    public var trace: TraceContext?

    public init(
        id: Int64, queue: String, state: JobState, payload: String, priority: Int64, runAt: Int64,
        attempts: Int, maxAttempts: Int, backoff: BackoffPolicy, leaseMilliseconds: Int64,
        uniqueKey: String? = nil, concurrencyKey: String? = nil, checkpoint: String? = nil, progress: String? = nil, result: String? = nil,
        lastError: String? = nil, leaseToken: FencingToken? = nil, worker: String? = nil, peer: PeerIdentity? = nil,
        createdAt: Int64, startedAt: Int64? = nil, finishedAt: Int64? = nil, parent: Int64? = nil,
        timeoutMilliseconds: Int64? = nil
    ) {
        self.id = id
        self.queue = queue
        self.state = state
        self.payload = payload
        self.priority = priority
        self.runAt = runAt
        self.attempts = attempts
        self.maxAttempts = maxAttempts
        self.backoff = backoff
        self.leaseMilliseconds = leaseMilliseconds
        self.uniqueKey = uniqueKey
        self.concurrencyKey = concurrencyKey
        self.checkpoint = checkpoint
        self.progress = progress
        self.result = result
        self.lastError = lastError
        self.leaseToken = leaseToken
        self.worker = worker
        self.peer = peer
        self.createdAt = createdAt
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.parent = parent
        self.timeoutMilliseconds = timeoutMilliseconds
    }
}

/// What a worker needs of the job it has just claimed.
public struct ClaimedJob: Hashable, Sendable {
    public var id: Int64
    public var queue: String
    /// The payload's JSON text.
    public var payload: String
    /// This attempt's number, counting from 1.
    public var attempt: Int
    public var maxAttempts: Int
    public var leaseMilliseconds: Int64
    /// The last checkpoint's JSON text, to resume from.
    public var checkpoint: String?
    public var progress: String?
    /// When the job became due: its enqueue, or the end of its delay or backoff.
    public var dueAt: Int64
    /// The job's own time limit per attempt, if it has one.
    public var timeoutMilliseconds: Int64?
    /// The trace of the process that enqueued it, for the worker's span to join.
    public var trace: TraceContext?

    public init(
        id: Int64, queue: String, payload: String, attempt: Int, maxAttempts: Int,
        leaseMilliseconds: Int64, checkpoint: String?, progress: String?, dueAt: Int64 = 0, timeoutMilliseconds: Int64? = nil,
        trace: TraceContext? = nil
    ) {
        self.trace = trace
        self.dueAt = dueAt
        self.timeoutMilliseconds = timeoutMilliseconds
        self.id = id
        self.queue = queue
        self.payload = payload
        self.attempt = attempt
        self.maxAttempts = maxAttempts
        self.leaseMilliseconds = leaseMilliseconds
        self.checkpoint = checkpoint
        self.progress = progress
    }
}

/// The process on the other end of a connection, as the kernel reports it (SO_PEERCRED).
public struct PeerIdentity: Hashable, Sendable {
    public var pid: Int32
    public var uid: UInt32
    /// The process's group; `nil` where it was not recorded (a job's stored claimant).
    public var gid: UInt32?

    public init(pid: Int32, uid: UInt32, gid: UInt32? = nil) {
        self.pid = pid
        self.uid = uid
        self.gid = gid
    }
}

/// A job to enqueue, as either store inserts it.
public struct NewJob: Sendable {
    public var queue: String
    public var payload: String
    public var priority: Int64
    public var runAt: Int64
    public var maxAttempts: Int
    public var backoff: BackoffPolicy
    public var leaseMilliseconds: Int64
    public var uniqueKey: String?
    public var concurrencyKey: String?
    /// The job whose completion enqueued this one.
    public var parent: Int64?
    public var timeoutMilliseconds: Int64?
    /// The named limits it counts against, at most ``NamedLimits/maximumPerJob``.
    public var limits: [String]
    /// Its fair-share group within its queue.
    public var group: String?
    /// The trace of the process that enqueued it.
    public var trace: TraceContext?

    public init(
        queue: String, payload: String, priority: Int64, runAt: Int64, maxAttempts: Int,
        backoff: BackoffPolicy, leaseMilliseconds: Int64, uniqueKey: String?, concurrencyKey: String? = nil,
        parent: Int64? = nil, timeoutMilliseconds: Int64? = nil, limits: [String] = [], group: String? = nil,
        trace: TraceContext? = nil
    ) {
        self.trace = trace
        self.queue = queue
        self.payload = payload
        self.priority = priority
        self.runAt = runAt
        self.maxAttempts = maxAttempts
        self.backoff = backoff
        self.leaseMilliseconds = leaseMilliseconds
        self.uniqueKey = uniqueKey
        self.concurrencyKey = concurrencyKey
        self.parent = parent
        self.timeoutMilliseconds = timeoutMilliseconds
        self.limits = limits
        self.group = group
    }
}
