import BatonCore

/// A request line, decoded and validated: the op with its typed arguments.
public enum Request: Sendable {
    case hello(client: String?)
    case enqueue(EnqueueRequest)
    case claim(ClaimRequest)
    case heartbeat(HeartbeatRequest)
    case checkpoint(CheckpointRequest)
    case complete(CompleteRequest)
    case fail(FailRequest)
    case release(ReleaseRequest)
    case get(jobID: Int64)
    case cancel(jobID: Int64, reason: String?)
    /// `reason`, where given, is kept in the job's audit trail (as is a cancel's).
    case pause(jobID: Int64, reason: String?)
    case resume(jobID: Int64, reason: String?)
    case retry(jobID: Int64, reason: String?)
    /// A new priority for an unfinished job: a queued job moves in the claim order at once,
    /// a running one keeps it for its next attempt.
    case setPriority(jobID: Int64, priority: Int64)
    /// `retry`, `cancel` or `purge` of the jobs a filter matches, in steps.
    case bulk(BulkChange)
    /// Creates or replaces a recurring job; its `nextAt` is set by the server.
    case schedule(RecurringSchedule)
    case unschedule(name: String)
    case schedules
    case enqueueBatch([EnqueueRequest])
    case pauseQueue(String)
    case resumeQueue(String)
    /// The settings the change names are set (or, `nil`, removed); the others stay.
    case setQueue(queue: String, QueueSettings.Change)
    /// A named limit (or template, `tenant:*`) is set or changed; settings set to `nil` are removed.
    case setLimit(name: String, LimitSettings.Change)
    /// Every named limit, with its use.
    case limits
    case events(jobID: Int64)
    /// `json: false` for Prometheus's text format.
    case metrics(json: Bool)
    case health
    case workers
    case list(JobListing)
    case stats
    /// A consistent copy of the store, written to `path` (absolute) by batond.
    case backup(path: String)

    /// The op's name on the wire.
    public var op: String {
        switch self {
        case .hello: "hello"
        case .enqueue: "enqueue"
        case .claim: "claim"
        case .heartbeat: "heartbeat"
        case .checkpoint: "checkpoint"
        case .complete: "complete"
        case .fail: "fail"
        case .release: "release"
        case .get: "get"
        case .cancel: "cancel"
        case .pause: "pause"
        case .resume: "resume"
        case .retry: "retry"
        case .setPriority: "set_priority"
        case .bulk(let change): change.action.rawValue
        case .schedule: "schedule"
        case .unschedule: "unschedule"
        case .schedules: "schedules"
        case .enqueueBatch: "enqueue_batch"
        case .pauseQueue: "pause_queue"
        case .resumeQueue: "resume_queue"
        case .setQueue: "set_queue"
        case .setLimit: "set_limit"
        case .limits: "limits"
        case .events: "events"
        case .metrics: "metrics"
        case .health: "health"
        case .workers: "workers"
        case .list: "list"
        case .stats: "stats"
        case .backup: "backup"
        }
    }
}

extension RecurringSchedule {
    /// The job a slot of the schedule enqueues: its queue, payload and priority, under the
    /// slot's unique key, so that a slot fires once however often it is tried.
    public func job(firing slot: Int64) -> EnqueueRequest {
        var request = EnqueueRequest(queue: self.queue, payload: self.payload, priority: self.priority)
        request.uniqueKey = self.uniqueKey(slot: slot)
        request.trace = self.trace
        return request
    }
}

/// `enqueue`: add a job.
public struct EnqueueRequest: Sendable {
    public var queue: String
    /// The payload's JSON text, as the client sent it.
    public var payload: String
    public var priority: Int64
    /// When to run, as a delay from now or as a wall-clock time; `nil` for now.
    public var schedule: Schedule?
    public var maxAttempts: Int?
    public var backoff: BackoffPolicy?
    public var leaseMilliseconds: Int64?
    public var uniqueKey: String?
    /// At most one job holding a key runs at a time, across the store; the others wait.
    public var concurrencyKey: String?
    /// Jobs that must complete before this one may run.
    public var after: [Int64] = []
    /// Each attempt's time limit; `nil` for the queue's.
    public var timeoutMilliseconds: Int64?
    /// The named limits the job counts against; every one must admit it to start.
    public var limits: [String] = []
    /// Its fair-share group: claims rotate across a queue's groups.
    public var group: String?
    /// The enqueuing process's trace, handed to each attempt's worker.
    public var trace: TraceContext?

    public enum Schedule: Hashable, Sendable {
        case delay(milliseconds: Int64)
        case at(epochMilliseconds: Int64)
    }

    /// When the job becomes due, enqueued at wall-clock `now`. A time already past means
    /// now: the job cannot have waited before it existed, and a wait counted from
    /// `run_at: 0` would read as 56 years in `health` and the wait histogram.
    public func runAt(now: Int64) -> Int64 {
        switch self.schedule {
        case .none: now
        case .delay(let milliseconds): now + milliseconds
        case .at(let epochMilliseconds): max(epochMilliseconds, now)
        }
    }

    /// The job either store inserts, with the server's defaults for what the request left out.
    public func newJob(parent: Int64?, now: Int64, defaults: JobDefaults) -> NewJob {
        NewJob(
            queue: self.queue, payload: self.payload, priority: self.priority, runAt: self.runAt(now: now),
            maxAttempts: self.maxAttempts ?? defaults.maxAttempts, backoff: self.backoff ?? defaults.backoff,
            leaseMilliseconds: self.leaseMilliseconds ?? defaults.leaseMilliseconds, uniqueKey: self.uniqueKey,
            concurrencyKey: self.concurrencyKey, parent: parent, timeoutMilliseconds: self.timeoutMilliseconds,
            limits: self.limits, group: self.group, trace: self.trace
        )
    }

    public init(queue: String, payload: String, priority: Int64, schedule: Schedule? = nil, maxAttempts: Int? = nil, backoff: BackoffPolicy? = nil, leaseMilliseconds: Int64? = nil, uniqueKey: String? = nil) {
        self.queue = queue
        self.payload = payload
        self.priority = priority
        self.schedule = schedule
        self.maxAttempts = maxAttempts
        self.backoff = backoff
        self.leaseMilliseconds = leaseMilliseconds
        self.uniqueKey = uniqueKey
    }
}

/// `claim`: lease the best ready job from some queues, waiting for one if asked.
public struct ClaimRequest: Sendable {
    public var queues: [String]
    public var worker: String?
    public var leaseMilliseconds: Int64?
    public var waitMilliseconds: Int64
    /// Whether the lease outlives the claiming process: it is handed to other processes (a
    /// script that claims with one command and completes with another), so the claimer's
    /// exit does not end it. Otherwise it ends as soon as the process has exited with its
    /// connection closed.
    public var detached: Bool

    public init(queues: [String], worker: String? = nil, leaseMilliseconds: Int64? = nil, waitMilliseconds: Int64, detached: Bool = false) {
        self.queues = queues
        self.worker = worker
        self.leaseMilliseconds = leaseMilliseconds
        self.waitMilliseconds = waitMilliseconds
        self.detached = detached
    }
}

/// `heartbeat`: renew a lease, optionally reporting progress.
public struct HeartbeatRequest: Sendable {
    public var lease: LeaseReference
    public var leaseMilliseconds: Int64?
    /// The progress's JSON text.
    public var progress: String?

    public init(lease: LeaseReference, leaseMilliseconds: Int64? = nil, progress: String? = nil) {
        self.lease = lease
        self.leaseMilliseconds = leaseMilliseconds
        self.progress = progress
    }
}

/// `checkpoint`: durably store the state a later attempt resumes from.
public struct CheckpointRequest: Sendable {
    public var lease: LeaseReference
    /// The state's JSON text.
    public var state: String
    public var progress: String?

    public init(lease: LeaseReference, state: String, progress: String? = nil) {
        self.lease = lease
        self.state = state
        self.progress = progress
    }
}

/// `complete`: finish a job successfully.
public struct CompleteRequest: Sendable {
    public var lease: LeaseReference
    /// The result's JSON text, if any.
    public var result: String?
    /// Follow-up jobs, enqueued in the same commit as the completion or not at all.
    public var followUps: [EnqueueRequest] = []
    /// The worker's next claim, made right after the completion: one request per job
    /// instead of two. It does not wait.
    public var next: ClaimRequest?

    public init(lease: LeaseReference, result: String? = nil, followUps: [EnqueueRequest] = [], next: ClaimRequest? = nil) {
        self.lease = lease
        self.result = result
        self.followUps = followUps
        self.next = next
    }
}

/// `fail`: end an attempt unsuccessfully.
public struct FailRequest: Sendable {
    public var lease: LeaseReference
    public var error: String
    /// `false` when the failure is permanent and the job must not be retried.
    public var retry: Bool
    public var retryInMilliseconds: Int64?

    public init(lease: LeaseReference, error: String, retry: Bool, retryInMilliseconds: Int64? = nil) {
        self.lease = lease
        self.error = error
        self.retry = retry
        self.retryInMilliseconds = retryInMilliseconds
    }
}

/// `release`: give a job back without spending an attempt.
public struct ReleaseRequest: Sendable {
    public var lease: LeaseReference
    public var delayMilliseconds: Int64

    public init(lease: LeaseReference, delayMilliseconds: Int64) {
        self.lease = lease
        self.delayMilliseconds = delayMilliseconds
    }
}

/// The job and token a fenced request acts on.
public struct LeaseReference: Hashable, Sendable {
    public var jobID: Int64
    public var token: FencingToken

    public init(jobID: Int64, token: FencingToken) {
        self.jobID = jobID
        self.token = token
    }
}

