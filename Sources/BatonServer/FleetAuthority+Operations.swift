import BatonCore
import BatonPostgres
import BatonProtocol
import NIOCore

/// What the driver hands one batch: its requests and what else is due.
struct FleetWork: Sendable {
    var batch: [Submission]
    /// How many health reports to compute.
    var reports: Int
    /// Whether to read the job counts for the metrics endpoint.
    var scrape: Bool
    /// Queues to offer to the parked claims, besides the ones this batch makes ready.
    var lookFor: Set<String>
    /// The parked claims, oldest first.
    var parked: [ParkedClaims.Waiter]
    /// Leases to end because their process exited, by process.
    var abandoned: [Int32: [(id: Int64, token: FencingToken)]]
    /// The bulk change to take a step of.
    var bulk: BulkChange.Progress?
    var sweep: Bool
    var heartbeat: Bool
    var prune: Bool
    var policy: AccessPolicy?
    var view: DriverView
    /// The lane of job counts this batch writes: its own among the batches in flight.
    var lane: Int

    /// Whether the batch does chores and nothing else.
    var isChoresAlone: Bool {
        self.batch.isEmpty && self.reports == 0 && !self.scrape && self.lookFor.isEmpty && self.abandoned.isEmpty && self.bulk == nil
    }

    var hasChores: Bool { self.sweep || self.heartbeat || self.prune }

    /// Drops the chores, for the rest to run again without them.
    mutating func withoutChores() {
        (self.sweep, self.heartbeat, self.prune) = (false, false, false)
    }
}

/// The driver's state as a batch sees it: a copy, since a batch given up on (the database
/// unreachable) may still run while the driver goes on.
struct DriverView: Sendable {
    var serving: Bool
    var held: LeaseHolders
    var workers: WorkerRegistry
    var queueMetrics: [String: QueueMetrics]
    var parkedClaims: Int
    var lastCommitAt: Int64?
    /// The named limits that hold this host's claims back.
    var limitHolds: LimitHolds
}

/// What one batch did, handed back to the driver once it has committed.
struct FleetBatch: Sendable {
    /// The database's clock when the batch began.
    let now: Int64
    let view: DriverView
    /// The lane of job counts the batch writes (``FleetWork/lane``).
    let lane: Int
    var replies: [Authority.PendingReply] = []
    var events: [(job: Int64, event: JobEvent)] = []
    var changes: [ChangeLog.Change] = []
    /// The trace contexts of the jobs whose attempts ended, when attempts are traced.
    var traces: [Int64: StoredTrace] = [:]
    /// Finished jobs retention deleted, for the job counts.
    var pruned: [(queue: String, state: JobState)] = []
    var prunedFull = false
    /// Queues that gained ready jobs: the parked claims are offered them, and every host told.
    var readyQueues: Set<String> = []
    /// Claims that found nothing and wait.
    var parking: [ParkedClaims.Waiter] = []
    /// Parked claims this batch served.
    var servedParked: [ParkedClaims.Waiter] = []
    /// Bulk changes the batch's requests started, and the progress of the one it stepped.
    var bulkStarted: [BulkRun] = []
    var bulkProgress: BulkChange.Progress?
    /// Leases granted (`claimed`) or renewed, for the driver's ``LeaseHolders``.
    var granted: [(job: Int64, token: FencingToken, connection: UInt64, process: Int32?, claimed: Bool)] = []
    /// Jobs that stopped running, however they ended (``stopped(_:limits:)``).
    private(set) var ended: [Int64] = []
    /// The named limits those jobs gave places back to, announced to every host once the
    /// batch has committed, so that claims their limits held back look again.
    var freedLimits: Set<String> = []
    /// Of the jobs that stopped running, those whose limits the batch has yet to read.
    var limitsUnread: [Int64] = []
    /// The named limits that held this batch's claims back.
    var limitHolds: [LimitHolds.Hold] = []
    var workersSeen: [(ConnectionIdentity, String?)] = []
    var workersRenewed: [ConnectionIdentity] = []
    /// The earliest lease deadline or `run_at` the batch knows of, on the database's clock.
    var nextDue: Int64?
    var reports: [HealthReport] = []
    /// The health checks' verdict and the named limits, when the batch took a scrape's metrics.
    var health: HealthReport?
    var limits: [NamedLimits.Use] = []
    var counts: [String: [JobState: Int]]?
    /// How many of `changes` the job counts already hold.
    var countedChanges = 0
    /// The breakers this batch moved, logged and counted once it has committed.
    var breakerMoves: [(name: String, kind: CircuitBreaker.Guarded, transition: CircuitBreaker.Transition, byHand: Bool)] = []

    init(now: Int64, view: DriverView, lane: Int) {
        self.now = now
        self.view = view
        self.lane = lane
    }

    mutating func reply(_ submission: Submission, _ outcome: Outcome) {
        self.replies.append(Authority.PendingReply(sink: submission.reply, id: submission.id, outcome: outcome))
    }

    mutating func reply(_ submission: Submission, _ error: BatonError) {
        self.reply(submission, Outcome(line: Reply.failure(id: submission.id, error)))
    }

    /// Notes a change, and records it in the audit trail unless the job's row does (the
    /// enqueue and the completion).
    mutating func note(
        _ event: JobEvent, job: Int64, queue: String?, from: JobState?, milliseconds: Int64? = nil, recorded: Bool = true
    ) {
        if recorded { self.events.append((job, event)) }
        self.changes.append(ChangeLog.Change(event: event, job: job, queue: queue, from: from, milliseconds: milliseconds))
    }

    /// Job `job` stopped running; `limits` are the names it used, where the caller has them.
    mutating func stopped(_ job: Int64, limits: [String]? = nil) {
        self.ended.append(job)
        if let limits { self.freedLimits.formUnion(limits) } else { self.limitsUnread.append(job) }
    }

    /// A job in `queue` waits from `runAt`: ready now, or on the schedule.
    mutating func waiting(queue: String, runAt: Int64) {
        if runAt <= self.now {
            self.readyQueues.insert(queue)
        } else {
            self.nextDue = min(self.nextDue ?? .max, runAt)
        }
    }
}

/// The requests of a batch that are applied set-wise: one statement per kind.
private struct Segment {
    var enqueues: [(Submission, EnqueueRequest)] = []
    var heartbeats: [(Submission, HeartbeatRequest)] = []
    var completes: [(Submission, CompleteRequest)] = []
    var claims: [(Submission, ClaimRequest)] = []

    var isEmpty: Bool { self.enqueues.isEmpty && self.heartbeats.isEmpty && self.completes.isEmpty && self.claims.isEmpty }

    /// Takes `submission` if it is one of the kinds applied set-wise.
    mutating func take(_ submission: Submission) -> Bool {
        switch submission.request {
        case .enqueue(let request) where request.after.isEmpty:
            self.enqueues.append((submission, request))
        case .heartbeat(let request):
            self.heartbeats.append((submission, request))
        case .complete(let request) where request.followUps.isEmpty:
            self.completes.append((submission, request))
        case .claim(let request):
            self.claims.append((submission, request))
        default:
            return false
        }
        return true
    }
}

extension FleetAuthority {
    /// Applies a batch inside its transaction. It sees the driver's state only through the
    /// work's copy, and what it changes it returns, for the driver to keep once the
    /// transaction has committed.
    func apply(_ work: FleetWork, _ tx: PostgresTransaction) async throws -> FleetBatch {
        var batch = FleetBatch(now: try await tx.now(), view: work.view, lane: work.lane)
        let monotonicNow = self.clock.monotonicMilliseconds()
        if work.heartbeat {
            try await tx.hostSeen(self.host, startedAt: self.startedAt)
        }
        if work.sweep {
            try await self.sweep(&batch, tx)
        }
        for (pid, leases) in work.abandoned {
            let expired = try await tx.expireLeases(leases, error: LeaseHolders.exitReason(pid: pid)) { Double.random(in: 0..<1) }
            try await self.ended(expired, &batch, tx)
        }
        if work.prune {
            try await self.prune(&batch, tx)
        }
        var facts: [Int64: PostgresTransaction.LeaseFacts] = [:]
        if work.policy != nil {
            // The policy's facts for every job the batch names, read once.
            let ids = work.batch.flatMap { $0.request.accessNeeds.compactMap(\.jobID) }
            facts = try await tx.leaseFacts(of: Array(Set(ids)))
        }
        var segment = Segment()
        for submission in work.batch {
            if let policy = work.policy, !submission.connection.isWebConsole {
                do {
                    try AccessControl.authorize(
                        submission.request, from: submission.connection.peer, under: policy,
                        queueOfJob: { facts[$0]?.queue },
                        holderOfLease: { id in facts[id].flatMap { $0.state == .running && !$0.overdue ? .some($0.holder) : nil } }
                    )
                } catch let error as BatonError {
                    batch.reply(submission, error)
                    continue
                }
            }
            if segment.take(submission) { continue }
            // Anything else runs on its own, in order, after the requests before it.
            try await self.flush(&segment, &batch, tx, monotonicNow: monotonicNow)
            try await self.performAlone(submission, &batch, tx, monotonicNow: monotonicNow)
        }
        try await self.flush(&segment, &batch, tx, monotonicNow: monotonicNow)
        if let progress = work.bulk {
            batch.bulkProgress = try await self.step(progress, &batch, tx)
        }
        try await self.serveParked(work, &batch, tx)
        batch.freedLimits.formUnion(try await tx.limitNames(of: batch.limitsUnread))
        batch.limitsUnread.removeAll()
        // The wake-ups go out once the batch has committed (ReadyAnnouncer).
        try await tx.finishBatch(
            host: self.host, lane: batch.lane, events: batch.events, counts: Self.deltas(batch.changes[batch.countedChanges...], pruned: batch.pruned))
        batch.countedChanges = batch.changes.count
        batch.pruned.removeAll()
        if work.reports > 0 || work.scrape {
            let report = try await self.health(&batch, tx)
            batch.reports = Array(repeating: report, count: work.reports)
            batch.health = report
        }
        if work.scrape { batch.limits = try await self.limitUses(batch, tx) }
        if self.attemptTracer.isEnabled {
            batch.traces = try await tx.traces(of: AttemptTracer.endedAttempts(in: batch.changes))
        }
        return batch
    }

    /// The job counts' moves, by queue and state.
    static func deltas(_ changes: ArraySlice<ChangeLog.Change>, pruned: [(queue: String, state: JobState)]) -> [(queue: String, state: JobState, delta: Int64)] {
        var census = JobCensus()
        for change in changes {
            guard let queue = change.queue else { continue }
            census.move(queue: queue, from: change.from, to: change.event.state)
        }
        for job in pruned {
            census.move(queue: job.queue, from: job.state, to: nil)
        }
        return census.counts.flatMap { queue, states in states.map { (queue, $0.key, Int64($0.value)) } }
    }

    // MARK: Chores

    /// Expires overdue leases (any host's) and makes due jobs ready.
    private func sweep(_ batch: inout FleetBatch, _ tx: PostgresTransaction) async throws {
        let expired = try await tx.expireOverdueLeases(limit: Self.sweepLimit) { Double.random(in: 0..<1) }
        try await self.ended(expired, &batch, tx)
        batch.readyQueues.formUnion(try await tx.promoteDueJobs())
        try await self.fireSchedules(&batch, tx)
        if let due = try await tx.nextDue() {
            batch.nextDue = min(batch.nextDue ?? .max, due)
        }
        if let slot = try await tx.nextScheduleAt() {
            batch.nextDue = min(batch.nextDue ?? .max, slot)
        }
        if expired.count == Self.sweepLimit {
            // More are overdue: look again at once.
            batch.nextDue = batch.now
        }
    }

    /// Enqueues the jobs of the recurring schedules whose slots have come, each with its
    /// slot's unique key, and moves each on to its next slot in the same commit. A schedule
    /// another host is firing is locked and skipped; the slot guard on the update keeps a
    /// slot from firing twice however the hosts' sweeps interleave.
    private func fireSchedules(_ batch: inout FleetBatch, _ tx: PostgresTransaction) async throws {
        for schedule in try await tx.dueSchedules(now: batch.now, limit: 100) {
            guard let slot = schedule.nextAt else { continue }
            var previousUnfinished = false
            if let last = schedule.lastJob, let state = try await tx.state(of: last) { previousUnfinished = !state.isFinished }
            let (fire, next) = schedule.due(now: batch.now, previousUnfinished: previousUnfinished)
            var job: Int64?
            if let fire {
                job = try await self.enqueueOne(schedule.job(firing: fire), parent: nil, &batch, tx).jobID
            }
            try await tx.scheduleFired(schedule.name, slot: slot, next: next, job: job)
        }
    }

    /// Records expired attempts (their lease or time limit ran out, or their process exited),
    /// and what follows from each: a retry waits, a failure cancels its dependents.
    private func ended(_ expired: [PostgresTransaction.Expired], _ batch: inout FleetBatch, _ tx: PostgresTransaction) async throws {
        try await self.breakersHeard(expired.map { ($0.queue, $0.id, $0.limits, false) }, &batch, tx)
        for job in expired {
            batch.note(
                JobEvent(.expired, at: batch.now, state: job.decision.state, token: job.token, detail: job.reason),
                job: job.id, queue: job.queue, from: .running)
            batch.stopped(job.id)
            switch job.decision {
            case .retry(let runAt): batch.waiting(queue: job.queue, runAt: runAt)
            case .fail: try await self.cancelDependents(of: job.id, because: "failed", &batch, tx)
            }
        }
    }

    /// Deletes a small batch of finished jobs past their retention, when no other host is.
    private func prune(_ batch: inout FleetBatch, _ tx: PostgresTransaction) async throws {
        guard try await tx.take(.retention) else { return }
        batch.pruned = try await tx.pruneFinishedJobs(
            completedBefore: batch.now - self.retention.completedMilliseconds,
            failedBefore: batch.now - self.retention.failedMilliseconds,
            limit: self.retention.batchSize, host: self.host
        )
        batch.prunedFull = batch.pruned.count == self.retention.batchSize
        if !batch.pruned.isEmpty {
            self.logger.info("finished jobs pruned", metadata: ["jobs.pruned": "\(batch.pruned.count)"])
        }
    }

    // MARK: The set-wise requests

    /// Applies the segment's requests, one statement per kind: enqueues, heartbeats,
    /// completions, then claims (a completion's next claim among them).
    private func flush(_ segment: inout Segment, _ batch: inout FleetBatch, _ tx: PostgresTransaction, monotonicNow: Int64) async throws {
        guard !segment.isEmpty else { return }
        defer { segment = Segment() }
        if !segment.enqueues.isEmpty {
            let jobs = segment.enqueues.map { self.newJob($0.1, parent: nil, now: batch.now) }
            let inserted = try await tx.insert(jobs)
            for ((submission, request), (job, result)) in zip(segment.enqueues, zip(jobs, inserted)) {
                if result.inserted {
                    batch.note(JobEvent(.enqueued, at: batch.now, state: .queued), job: result.id, queue: request.queue, from: nil, recorded: false)
                    batch.waiting(queue: request.queue, runAt: job.runAt)
                }
                batch.reply(submission, Outcome(line: Reply.success(id: submission.id) { $0.member("job", result.id); $0.member("duplicate", !result.inserted) }))
            }
        }
        var refused: [(Submission, LeaseReference, ending: String?)] = []
        if !segment.heartbeats.isEmpty {
            let reports = segment.heartbeats.compactMap { _, request in
                request.progress.map { (request.lease.jobID, request.lease.token, $0) }
            }
            _ = try await tx.saveProgress(reports)
            let renewed = try await tx.renew(segment.heartbeats.map { ($0.1.lease.jobID, $0.1.lease.token, $0.1.leaseMilliseconds) })
            for ((submission, request), deadline) in zip(segment.heartbeats, renewed) {
                guard let deadline else {
                    refused.append((submission, request.lease, nil))
                    continue
                }
                batch.workersRenewed.append(submission.connection)
                batch.granted.append((request.lease.jobID, request.lease.token, submission.connection.number, submission.connection.peer?.pid, false))
                batch.nextDue = min(batch.nextDue ?? .max, deadline)
                batch.reply(submission, Outcome(line: Reply.success(id: submission.id) { $0.member("lease_expires_at", deadline) }))
            }
        }
        /// Completions answered once their next claims (if any) are served.
        var completed: [(Submission, CompleteRequest)] = []
        if !segment.completes.isEmpty {
            let done = try await tx.complete(segment.completes.map { ($0.1.lease.jobID, $0.1.lease.token, $0.1.result) })
            // The completed jobs that others wait on.
            var awaited: [Int64] = []
            var heard: [(queue: String?, job: Int64, limits: [String], succeeded: Bool)] = []
            for ((submission, request), job) in zip(segment.completes, done) {
                guard let job else {
                    refused.append((submission, request.lease, "completed"))
                    continue
                }
                batch.note(
                    JobEvent(.completed, at: batch.now, state: .completed, token: request.lease.token), job: request.lease.jobID,
                    queue: job.queue, from: .running, milliseconds: job.startedAt.map { max(batch.now - $0, 0) }, recorded: false)
                batch.stopped(request.lease.jobID, limits: job.limits)
                if job.hasDependents { awaited.append(request.lease.jobID) }
                if job.breakerHears || job.limitBreakerHears {
                    heard.append((job.breakerHears ? job.queue : nil, request.lease.jobID, job.limitBreakerHears ? job.limits : [], true))
                }
                completed.append((submission, request))
            }
            try await self.breakersHeard(heard, &batch, tx)
            for dependent in try await tx.dependenciesCompleted(awaited) {
                batch.waiting(queue: dependent.queue, runAt: dependent.runAt)
            }
        }
        if !refused.isEmpty {
            let facts = try await tx.leaseFacts(of: refused.map(\.1.jobID))
            for (submission, reference, ending) in refused {
                if case .complete(let request) = submission.request, let job = facts[reference.jobID], job.state == .completed,
                    job.token == reference.token
                {
                    // The same worker again, after losing our first reply: answer as before.
                    completed.append((submission, request))
                    continue
                }
                batch.reply(submission, self.refusal(reference, facts[reference.jobID], ending: ending))
            }
        }
        // Plain claims first, in arrival order, then the completions' next claims.
        var wishes: [ClaimRequest] = segment.claims.map(\.1)
        let nextClaims = completed.filter { $0.1.next != nil }
        wishes += nextClaims.map { $0.1.next! }
        let connections = segment.claims.map(\.0.connection) + nextClaims.map(\.0.connection)
        let leased = try await self.lease(wishes, connections: connections, &batch, tx)
        for ((submission, request), claim) in zip(segment.claims, leased) {
            if let claim {
                batch.reply(submission, self.claimed(claim, id: submission.id))
            } else if request.waitMilliseconds > 0, batch.view.serving {
                batch.parking.append(
                    ParkedClaims.Waiter(
                        id: submission.id, request: request, connection: submission.connection,
                        deadline: monotonicNow + request.waitMilliseconds, reply: submission.reply))
            } else {
                batch.reply(submission, Outcome(line: Reply.success(id: submission.id) { $0.member("job", rawJSON: nil) }))
            }
        }
        let nextLeases = Dictionary(
            zip(nextClaims.map { ObjectIdentifier($0.0.reply.futureResult) }, leased.dropFirst(segment.claims.count)),
            uniquingKeysWith: { first, _ in first })
        for (submission, request) in completed {
            let next = nextLeases[ObjectIdentifier(submission.reply.futureResult)] ?? nil
            batch.reply(submission, Outcome.completed(request, followUps: nil, next: next.map { ($0.job, $0.token, $0.deadline) }, id: submission.id))
        }
    }

    /// Leases jobs for claims with one statement per set of queues; records each lease.
    private func lease(
        _ claims: [ClaimRequest], connections: [ConnectionIdentity], _ batch: inout FleetBatch, _ tx: PostgresTransaction
    ) async throws -> [PostgresTransaction.Claim?] {
        guard !claims.isEmpty else { return [] }
        let wishes = zip(claims, connections).map { claim, connection in
            PostgresTransaction.ClaimWish(
                queues: claim.queues, leaseMilliseconds: claim.leaseMilliseconds, worker: claim.worker, peer: connection.peer)
        }
        var limits = PostgresTransaction.LimitEffects()
        let leased = try await tx.claim(wishes, host: self.host, limits: &limits)
        batch.limitHolds += limits.holds
        batch.breakerMoves += limits.transitions.map { ($0.name, .limit, $0.transition, $0.byHand) }
        for ((claim, connection), lease) in zip(zip(claims, connections), leased) {
            guard let lease else { continue }
            batch.note(
                JobEvent(.claimed, at: batch.now, state: .running, token: lease.token, peerPID: connection.peer?.pid, detail: claim.worker),
                job: lease.job.id, queue: lease.job.queue, from: lease.from, milliseconds: max(batch.now - lease.job.dueAt, 0))
            batch.granted.append((lease.job.id, lease.token, connection.number, claim.detached ? nil : connection.peer?.pid, true))
            batch.workersSeen.append((connection, claim.worker))
            if lease.isTrial { batch.breakerMoves.append((lease.job.queue, .queue, .halfOpened, false)) }
            batch.nextDue = min(batch.nextDue ?? .max, lease.deadline)
        }
        return leased
    }

    private func claimed(_ claim: PostgresTransaction.Claim, id: String?) -> Outcome {
        let line = Reply.success(id: id) { reply in
            reply.key("job")
            reply.claimedJob(claim.job, token: claim.token, leaseExpiresAt: claim.deadline)
        }
        return Outcome(line: line, granted: LeaseReference(jobID: claim.job.id, token: claim.token))
    }

    /// The refusal of a fenced request, from the job's lease facts.
    private func refusal(_ reference: LeaseReference, _ facts: PostgresTransaction.LeaseFacts?, ending: String?) -> BatonError {
        guard let facts else { return LeaseRefusal.notFound(reference.jobID) }
        if facts.state == .running, facts.token == reference.token, facts.overdue {
            self.metrics.staleTokenRefusals.increment()
            if let limit = facts.timedOutAfter {
                return LeaseRefusal.timedOut(reference.jobID, AttemptTimeout.reason(milliseconds: limit), state: facts.state)
            }
            return BatonError(.leaseLost, "the lease on job \(reference.jobID) expired", state: facts.state)
        }
        let refusal = LeaseRefusal(reference, state: facts.state, leaseToken: facts.token, lastError: facts.lastError, ending: ending)
        if refusal.late { self.metrics.lateOutcomes.increment() } else { self.metrics.staleTokenRefusals.increment() }
        return refusal.error
    }

    /// Offers the ready queues to the parked claims, oldest first, with one statement per set
    /// of queues.
    private func serveParked(_ work: FleetWork, _ batch: inout FleetBatch, _ tx: PostgresTransaction) async throws {
        let queues = work.lookFor.union(batch.readyQueues)
        let waiting = work.parked.filter { $0.request.queues.contains(where: queues.contains) }
        guard !waiting.isEmpty else { return }
        let leased = try await self.lease(waiting.map(\.request), connections: waiting.map(\.connection), &batch, tx)
        for (waiter, claim) in zip(waiting, leased) {
            guard let claim else { continue }
            batch.servedParked.append(waiter)
            batch.replies.append(Authority.PendingReply(sink: waiter.reply, id: waiter.id, outcome: self.claimed(claim, id: waiter.id)))
        }
    }

    // MARK: Requests applied one at a time

    /// Applies a request that is not applied set-wise, answering it in `batch`.
    private func performAlone(_ submission: Submission, _ batch: inout FleetBatch, _ tx: PostgresTransaction, monotonicNow: Int64) async throws {
        let id = submission.id
        do {
            let outcome: Outcome
            switch submission.request {
            case .hello(let client):
                if client != nil { batch.workersSeen.append((submission.connection, client)) }
                outcome = Outcome(line: Reply.hello(id: id, durability: self.store.durability, limits: self.limits, defaults: self.defaults))
            case .enqueue(let request):
                let result = try await self.enqueueOne(request, parent: nil, &batch, tx)
                outcome = Outcome(line: Reply.success(id: id) { $0.member("job", result.jobID); $0.member("duplicate", result.duplicate) })
            case .enqueueBatch(let requests):
                let results = try await self.atomically(&batch, tx) { batch in
                    var results: [(jobID: Int64, duplicate: Bool)] = []
                    for request in requests { results.append(try await self.enqueueOne(request, parent: nil, &batch, tx)) }
                    return results
                }
                outcome = Outcome(line: Reply.success(id: id) { $0.enqueued(results) })
            case .checkpoint(let request):
                guard let deadline = try await tx.saveCheckpoint(
                    id: request.lease.jobID, token: request.lease.token, state: request.state, progress: request.progress)
                else {
                    throw self.refusal(request.lease, try await tx.leaseFacts(of: [request.lease.jobID])[request.lease.jobID], ending: nil)
                }
                batch.note(JobEvent(.checkpointed, at: batch.now, state: .running, token: request.lease.token), job: request.lease.jobID, queue: nil, from: .running)
                batch.workersRenewed.append(submission.connection)
                batch.granted.append((request.lease.jobID, request.lease.token, submission.connection.number, submission.connection.peer?.pid, false))
                outcome = Outcome(line: Reply.success(id: id) { $0.member("lease_expires_at", deadline) })
            case .complete(let request):
                outcome = try await self.completeWithFollowUps(request, submission: submission, &batch, tx)
            case .fail(let request):
                outcome = Outcome(line: try await self.fail(request, id: id, &batch, tx))
            case .release(let request):
                let runAt = batch.now + request.delayMilliseconds
                guard let queue = try await tx.markReleased(id: request.lease.jobID, token: request.lease.token, runAt: runAt) else {
                    throw self.refusal(request.lease, try await tx.leaseFacts(of: [request.lease.jobID])[request.lease.jobID], ending: "released")
                }
                batch.note(JobEvent(.released, at: batch.now, state: .queued, token: request.lease.token), job: request.lease.jobID, queue: queue, from: .running)
                batch.stopped(request.lease.jobID)
                batch.waiting(queue: queue, runAt: runAt)
                outcome = Outcome(line: Reply.success(id: id))
            case .get(let jobID):
                let job = try await self.requireJob(jobID, tx)
                let lease = job.leaseDeadline.map { LeaseView(expiresAt: $0) }
                outcome = Outcome(line: Reply.success(id: id) { $0.key("job"); $0.jobDetail(job.job, lease: lease) })
            case .list(let listing):
                let (jobs, next) = try await tx.listJobs(listing)
                outcome = Outcome(line: Reply.success(id: id) { reply in
                    reply.key("jobs")
                    reply.beginArray()
                    for job in jobs { reply.jobDetail(job.job, lease: job.leaseDeadline.map { LeaseView(expiresAt: $0) }) }
                    reply.endArray()
                    reply.member("next", optional: next)
                })
            case .cancel(let jobID, let reason):
                outcome = Outcome(line: try await self.cancel(jobID, reason: reason ?? "cancelled", id: id, &batch, tx))
            case .pause(let jobID, let reason):
                let job = try await self.requireJob(jobID, tx, locking: true).job
                guard try await tx.markPaused(id: jobID, from: job.state) else { throw InvalidTransition(from: job.state, to: .paused) }
                batch.note(
                    JobEvent(.paused, at: batch.now, state: .paused, token: job.state == .running ? job.leaseToken : nil, detail: reason),
                    job: jobID, queue: job.queue, from: job.state)
                if job.state == .running { batch.stopped(jobID, limits: job.limits) }
                outcome = Outcome(line: Reply.success(id: id) { $0.member("state", JobState.paused.rawValue) })
            case .resume(let jobID, let reason):
                let job = try await self.requireJob(jobID, tx, locking: true).job
                guard job.state == .paused, let resumed = try await tx.markResumed(id: jobID) else {
                    throw InvalidTransition(from: job.state, to: .queued)
                }
                batch.note(JobEvent(.resumed, at: batch.now, state: .queued, detail: reason), job: jobID, queue: resumed.queue, from: .paused)
                batch.waiting(queue: resumed.queue, runAt: resumed.runAt)
                outcome = Outcome(line: Reply.success(id: id) { $0.member("state", JobState.queued.rawValue) })
            case .retry(let jobID, let reason):
                let job = try await self.requireJob(jobID, tx, locking: true).job
                try await self.retry(jobID, from: job.state, reason: reason, &batch, tx)
                outcome = Outcome(line: Reply.success(id: id) { $0.member("state", JobState.queued.rawValue) })
            case .schedule(var schedule):
                schedule.setFirstSlot(now: batch.now)
                try await tx.saveSchedule(schedule)
                if let slot = schedule.nextAt { batch.nextDue = min(batch.nextDue ?? .max, slot) }
                outcome = Outcome(line: Reply.scheduled(id: id, schedule))
            case .unschedule(let name):
                let removed = try await tx.deleteSchedule(named: name)
                outcome = Outcome(line: Reply.success(id: id) { $0.member("name", name); $0.member("removed", removed) })
            case .schedules:
                outcome = Outcome(line: Reply.schedules(id: id, try await tx.schedules()))
            case .limits:
                outcome = Outcome(line: Reply.limits(id: id, try await self.limitUses(batch, tx)))
            case .setLimit(let name, let change):
                let (settings, closed) = try await tx.changeLimit(name, change)
                batch.breakerMoves += closed.map { ($0, .limit, .closed, true) }
                // Claims it held back anywhere look again: the change may admit them.
                batch.freedLimits.insert(name)
                outcome = Outcome(line: Reply.limitSettings(id: id, name: name, settings))
            case .bulk(let change):
                // Stepped by the batches from the next on; answered when done (FleetAuthority.committed).
                batch.bulkStarted.append(BulkRun(progress: BulkChange.Progress(change, lastID: try await tx.lastJobID()), id: id, reply: submission.reply))
                return
            case .setPriority(let jobID, let priority):
                guard let state = try await tx.setPriority(id: jobID, priority: priority) else {
                    throw LeaseRefusal.finished(try await self.requireJob(jobID, tx).job, changing: "priority")
                }
                outcome = Outcome(line: Reply.priority(id: id, state: state, priority: priority))
            case .pauseQueue(let queue):
                try await tx.setQueuePaused(queue, true)
                outcome = Outcome(line: Reply.success(id: id) { $0.member("queue", queue); $0.member("paused", true) })
            case .resumeQueue(let queue):
                try await tx.setQueuePaused(queue, false)
                if try await tx.resetBreaker(of: queue) { batch.breakerMoves.append((queue, .queue, .closed, true)) }
                batch.readyQueues.insert(queue)
                outcome = Outcome(line: Reply.success(id: id) { $0.member("queue", queue); $0.member("paused", false) })
            case .setQueue(let queue, let change):
                let settings = try await tx.changeQueueSettings(queue, change)
                batch.readyQueues.insert(queue)
                outcome = Outcome(line: Reply.queueSettings(id: id, queue: queue, settings))
            case .events(let jobID):
                // The trail as of this request: what the batch recorded before it included.
                try await tx.recordEvents(batch.events)
                batch.events.removeAll()
                let job = try await self.requireJob(jobID, tx).job
                let trail = JobEvent.trail(
                    of: job, recorded: try await tx.events(of: jobID),
                    followUps: job.state == .completed ? try await tx.followUps(of: jobID) : [])
                let holder = job.state == .running ? job.peer?.uid : nil
                outcome = Outcome(line: Reply.events(
                    id: id, of: jobID, trail, showsTokens: self.access.showsTokens(of: job, holder: holder, to: submission.connection.peer)))
            case .metrics(let json):
                let health = try await self.health(&batch, tx)
                let snapshot = MetricsSnapshot(
                    serverWide: self.metrics.exposition(), queues: batch.view.queueMetrics, jobs: batch.counts ?? [:],
                    limits: try await self.limitUses(batch, tx), health: health)
                outcome = Outcome(render: { snapshot.reply(id: id, json: json) })
            case .health:
                let report = try await self.health(&batch, tx)
                outcome = Outcome(line: Reply.success(id: id) { $0.health(report) })
            case .workers:
                let held = batch.view.held.jobsByConnection
                let running = try await tx.runningHere(held.values.flatMap { $0 }, host: self.host)
                let jobs = held.mapValues { $0.filter(running.contains) }
                let hosts = try await tx.hosts(seenWithin: Self.hostAliveMilliseconds)
                outcome = Outcome(line: Reply.workers(
                    id: id, batch.view.workers.all.map { ($0, (jobs[$0.connection.number] ?? []).sorted()) }, hosts: hosts))
            case .stats:
                try await self.flushCounts(&batch, tx)
                outcome = Outcome(line: try await self.stats(id: id, batch, tx))
            case .backup:
                throw BatonError(
                    .invalidArgument,
                    "backup copies a SQLite store; this batond shares a PostgreSQL store: back it up with pg_dump or the database's own backups")
            case .claim, .heartbeat:
                // Taken by the segment; never here.
                throw BatonError(.internal, "\(submission.request.op) was not applied set-wise")
            }
            batch.reply(submission, outcome)
        } catch let error as BatonError {
            batch.reply(submission, error)
        } catch let error as InvalidTransition {
            batch.reply(submission, BatonError(.invalidTransition, error.description, state: error.from))
        }
    }

    /// Adds the batch's moves so far to the job counts, for a read of them in the same batch.
    private func flushCounts(_ batch: inout FleetBatch, _ tx: PostgresTransaction) async throws {
        try await tx.addToCounts(host: self.host, lane: batch.lane, Self.deltas(batch.changes[batch.countedChanges...], pruned: batch.pruned))
        // Counted: the metrics still see the changes, the counts must not take them twice.
        batch.pruned.removeAll()
        batch.countedChanges = batch.changes.count
    }

    private func requireJob(_ jobID: Int64, _ tx: PostgresTransaction, locking: Bool = false) async throws -> PostgresTransaction.LeasedJob {
        guard let job = try await tx.leasedJob(id: jobID, locking: locking) else { throw LeaseRefusal.notFound(jobID) }
        return job
    }

    func newJob(_ request: EnqueueRequest, parent: Int64?, now: Int64) -> NewJob {
        request.newJob(parent: parent, now: now, defaults: self.defaults)
    }

    /// Adds one job, or finds the unfinished job holding its unique key; with dependencies.
    private func enqueueOne(
        _ request: EnqueueRequest, parent: Int64?, _ batch: inout FleetBatch, _ tx: PostgresTransaction
    ) async throws -> (jobID: Int64, duplicate: Bool) {
        let plan = DependencyPlan(after: request.after, states: try await tx.states(of: request.after))
        if case .missing(let missing) = plan {
            throw BatonError.invalidArgument("after", "names job \(missing), which does not exist")
        }
        let job = self.newJob(request, parent: parent, now: batch.now)
        let (jobID, inserted) = try await tx.insert(job)
        guard inserted else { return (jobID, true) }
        batch.note(JobEvent(.enqueued, at: batch.now, state: .queued), job: jobID, queue: request.queue, from: nil, recorded: false)
        switch plan {
        case .cancelled(let reason):
            _ = try await tx.markCancelled(id: jobID, from: .queued, reason: reason)
            batch.note(JobEvent(.cancelled, at: batch.now, state: .cancelled, detail: reason), job: jobID, queue: request.queue, from: .queued)
        case .waiting(let unfinished):
            try await tx.addDependencies(job: jobID, on: unfinished)
        default:
            batch.waiting(queue: request.queue, runAt: job.runAt)
        }
        return (jobID, false)
    }

    /// Runs `body` all or nothing: a savepoint in the transaction, and the batch's notes
    /// restored with it.
    private func atomically<T: Sendable>(
        _ batch: inout FleetBatch, _ tx: PostgresTransaction, _ body: (inout FleetBatch) async throws -> T
    ) async throws -> T {
        var inner = batch
        let value = try await tx.atomically { try await body(&inner) }
        batch = inner
        return value
    }

    /// A completion with follow-ups: the completion and its follow-up jobs commit together,
    /// or none of it does; then the next claim, if asked.
    private func completeWithFollowUps(
        _ request: CompleteRequest, submission: Submission, _ batch: inout FleetBatch, _ tx: PostgresTransaction
    ) async throws -> Outcome {
        let reference = request.lease
        let followUps = try await self.atomically(&batch, tx) { batch -> [(jobID: Int64, duplicate: Bool)]? in
            guard let job = try await tx.complete([(reference.jobID, reference.token, request.result)])[0] else {
                let facts = try await tx.leaseFacts(of: [reference.jobID])[reference.jobID]
                if let facts, facts.state == .completed, facts.token == reference.token { return nil }
                throw self.refusal(reference, facts, ending: "completed")
            }
            batch.note(
                JobEvent(.completed, at: batch.now, state: .completed, token: reference.token), job: reference.jobID, queue: job.queue,
                from: .running, milliseconds: job.startedAt.map { max(batch.now - $0, 0) }, recorded: false)
            batch.stopped(reference.jobID, limits: job.limits)
            if job.breakerHears || job.limitBreakerHears {
                try await self.breakersHeard(
                    [(job.breakerHears ? job.queue : nil, reference.jobID, job.limitBreakerHears ? job.limits : [], true)], &batch, tx)
            }
            for dependent in try await tx.dependenciesCompleted(job.hasDependents ? [reference.jobID] : []) {
                batch.waiting(queue: dependent.queue, runAt: dependent.runAt)
            }
            var results: [(jobID: Int64, duplicate: Bool)] = []
            for followUp in request.followUps {
                results.append(try await self.enqueueOne(followUp, parent: reference.jobID, &batch, tx))
            }
            return results
        }
        var next: PostgresTransaction.Claim?
        if let claim = request.next {
            next = try await self.lease([claim], connections: [submission.connection], &batch, tx)[0]
        }
        return Outcome.completed(request, followUps: followUps, next: next.map { ($0.job, $0.token, $0.deadline) }, id: submission.id)
    }

    private func fail(_ request: FailRequest, id: String?, _ batch: inout FleetBatch, _ tx: PostgresTransaction) async throws -> [UInt8] {
        let reference = request.lease
        let job = try await self.requireJob(reference.jobID, tx).job
        let decision = RetryDecision.afterUnsuccessfulAttempt(
            job.attempts, maxAttempts: job.maxAttempts, retryAllowed: request.retry, retryInMilliseconds: request.retryInMilliseconds,
            backoff: job.backoff, jitter: Double.random(in: 0..<1), now: batch.now)
        guard try await tx.markUnsuccessful(id: reference.jobID, token: reference.token, decision: decision, error: request.error) else {
            throw self.refusal(reference, try await tx.leaseFacts(of: [reference.jobID])[reference.jobID], ending: "failed")
        }
        try await self.breakersHeard([(job.queue, reference.jobID, job.limits, false)], &batch, tx)
        batch.note(
            JobEvent(.failed, at: batch.now, state: decision.state, token: reference.token, detail: request.error), job: reference.jobID,
            queue: job.queue, from: .running, milliseconds: job.startedAt.map { max(batch.now - $0, 0) })
        batch.stopped(reference.jobID, limits: job.limits)
        switch decision {
        case .retry(let runAt): batch.waiting(queue: job.queue, runAt: runAt)
        case .fail: try await self.cancelDependents(of: reference.jobID, because: "failed", &batch, tx)
        }
        return Reply.success(id: id) { reply in
            reply.member("state", decision.state.rawValue)
            if case .retry(let runAt) = decision { reply.member("run_at", runAt) }
        }
    }

    /// Cancels an unfinished job; a running job's lease ends with it, and its worker learns
    /// at its next heartbeat (`cancelled`).
    private func cancel(_ jobID: Int64, reason: String, id: String?, _ batch: inout FleetBatch, _ tx: PostgresTransaction) async throws -> [UInt8] {
        try await self.cancel(try await self.requireJob(jobID, tx, locking: true).job, reason: reason, &batch, tx)
        return Reply.success(id: id) { $0.member("state", JobState.cancelled.rawValue) }
    }

    /// Cancels `job`, read and locked by the caller.
    private func cancel(_ job: Job, reason: String, _ batch: inout FleetBatch, _ tx: PostgresTransaction) async throws {
        let jobID = job.id
        guard try await tx.markCancelled(id: jobID, from: job.state, reason: reason) else {
            throw InvalidTransition(from: job.state, to: .cancelled)
        }
        batch.note(
            JobEvent(.cancelled, at: batch.now, state: .cancelled, token: job.state == .running ? job.leaseToken : nil, detail: reason),
            job: jobID, queue: job.queue, from: job.state)
        if job.state == .running { batch.stopped(jobID, limits: job.limits) }
        try await self.cancelDependents(of: jobID, because: "was cancelled", &batch, tx)
    }

    private func retry(
        _ jobID: Int64, from state: JobState, reason: String? = nil, _ batch: inout FleetBatch, _ tx: PostgresTransaction
    ) async throws {
        guard state == .failed || state == .cancelled, let queue = try await tx.markRetried(id: jobID, from: state) else {
            throw InvalidTransition(from: state, to: .queued)
        }
        batch.note(JobEvent(.retried, at: batch.now, state: .queued, detail: reason), job: jobID, queue: queue, from: state)
        batch.waiting(queue: queue, runAt: batch.now)
    }

    /// One step of a bulk change (``BulkChange``): the matching jobs of its next id range,
    /// each changed as the single-job op changes it. Rows another host changed meanwhile
    /// are passed over.
    private func step(_ progress: BulkChange.Progress, _ batch: inout FleetBatch, _ tx: PostgresTransaction) async throws -> BulkChange.Progress {
        let change = progress.change
        let step = progress.nextStep
        let matched = try await tx.bulkMatches(change, after: step.after, through: step.through, limit: step.limit)
        var changed = 0
        // Each statement moves only the rows still in the filter's state: another host may
        // have moved some since the match.
        switch change.action {
        case .retry:
            for (jobID, queue) in try await tx.markRetried(ids: matched, from: change.state) {
                batch.note(JobEvent(.retried, at: batch.now, state: .queued), job: jobID, queue: queue, from: change.state)
                batch.waiting(queue: queue, runAt: batch.now)
                changed += 1
            }
        case .cancel:
            let reason = change.reason ?? "cancelled"
            for (jobID, queue, hasDependents) in try await tx.markCancelled(ids: matched, from: change.state, reason: reason) {
                batch.note(JobEvent(.cancelled, at: batch.now, state: .cancelled, detail: reason), job: jobID, queue: queue, from: change.state)
                if hasDependents { try await self.cancelDependents(of: jobID, because: "was cancelled", &batch, tx) }
                changed += 1
            }
        case .purge:
            let purged = try await tx.deleteFinishedJobs(matched)
            batch.pruned += purged
            changed = purged.count
        }
        var progress = progress
        progress.stepped(matched: matched, changed: changed)
        return progress
    }

    /// A job ended without completing: everything waiting on it, directly or not, is cancelled.
    private func cancelDependents(of jobID: Int64, because outcome: String, _ batch: inout FleetBatch, _ tx: PostgresTransaction) async throws {
        var ended = [(jobID, outcome)]
        while let (id, how) = ended.popLast() {
            for dependent in try await tx.unfinishedDependents(of: id) {
                let reason = "dependency \(id) \(how)"
                guard try await tx.markCancelled(id: dependent.id, from: dependent.state, reason: reason) else { continue }
                batch.note(
                    JobEvent(.cancelled, at: batch.now, state: .cancelled, detail: reason), job: dependent.id, queue: dependent.queue,
                    from: dependent.state)
                if dependent.state == .running { batch.stopped(dependent.id) }
                ended.append((dependent.id, "was cancelled"))
            }
        }
    }

    /// Attempts that ended with an outcome, heard by the breakers of their queues (where
    /// `queue` is given) and of the named limits they used.
    private func breakersHeard(
        _ outcomes: [(queue: String?, job: Int64, limits: [String], succeeded: Bool)], _ batch: inout FleetBatch, _ tx: PostgresTransaction
    ) async throws {
        for change in try await tx.limitBreakersHeard(outcomes.map { ($0.limits, $0.job, $0.succeeded) }) {
            batch.breakerMoves.append((change.name, .limit, change.transition, false))
        }
        for move in try await tx.breakersHeard(outcomes.compactMap { outcome in outcome.queue.map { ($0, outcome.job, outcome.succeeded) } }) {
            batch.breakerMoves.append((move.queue, .queue, move.transition, false))
            if case .opened(let until) = move.transition {
                // Its waiting claims look again once the cooldown has passed.
                batch.nextDue = min(batch.nextDue ?? .max, until)
            }
        }
    }

    // MARK: Reads

    private func stats(id: String?, _ batch: FleetBatch, _ tx: PostgresTransaction) async throws -> [UInt8] {
        let counts = try await tx.jobCounts()
        let oldestReady = try await tx.oldestReady(queues: Array(counts.keys)).mapValues(\.runAt)
        let settings = try await tx.queueAdmission()
        let now = try await tx.now()
        return Reply.stats(
            id: id, counts: counts, oldestReady: oldestReady, now: now, pausedQueues: settings.paused, limits: settings.limits,
            breakers: try await tx.openBreakers(), namedLimits: try await self.limitUses(batch, tx), pruned: try await tx.prunedCount(), leases: counts.values.reduce(0) { $0 + ($1[.running] ?? 0) },
            parkedClaims: batch.view.parkedClaims)
    }

    /// The named limits set and in use, fleet-wide, each `holding` where it holds back a
    /// claim of this host (which claims it holds back elsewhere, each host keeps for itself).
    private func limitUses(_ batch: FleetBatch, _ tx: PostgresTransaction) async throws -> [NamedLimits.Use] {
        try await tx.limitUses(limit: Reply.maximumLimitsShown).map { use in
            var use = use
            use.holding = batch.view.limitHolds.holds(use.name)
            return use
        }
    }

    /// The breakers of queues and of named limits that are not closed, fleet-wide, counted
    /// in the metrics.
    @discardableResult
    private func countOpenBreakers(
        _ tx: PostgresTransaction
    ) async throws -> (queues: [(queue: String, state: CircuitBreaker.State)], limits: [(name: String, state: CircuitBreaker.State)]) {
        let (queues, limits) = (try await tx.openBreakers(), try await tx.openLimitBreakers())
        self.metrics.openBreakers.set(queues.count + limits.count)
        return (queues, limits)
    }

    /// The health checks, fleet-wide where the store is shared, from the database.
    private func health(_ batch: inout FleetBatch, _ tx: PostgresTransaction) async throws -> HealthReport {
        try await self.flushCounts(&batch, tx)
        var report = HealthReport()
        let thresholds = self.healthThresholds
        let counts = try await tx.jobCounts()
        batch.counts = counts
        report.parkedClaims = batch.view.parkedClaims
        report.lastCommitAgeMilliseconds = batch.view.lastCommitAt.map { max(self.clock.wallMilliseconds() - $0, 0) }
        report.expirySweepLagMilliseconds = try await tx.expiryLag()
        let (breakers, limitBreakers) = try await self.countOpenBreakers(tx)
        for (queue, state) in breakers {
            report.flag(.degraded, "the circuit breaker of queue \(queue) is \(state.name)")
        }
        for (limit, state) in limitBreakers {
            report.flag(.degraded, "the circuit breaker of limit \(limit) is \(state.name)")
        }
        if report.expirySweepLagMilliseconds > 1_000 + Self.sweepIntervalMilliseconds {
            report.flag(.failing, "the lease-expiry sweep is \(report.expirySweepLagMilliseconds) ms late")
        }
        var waiting: [String] = []
        for (queue, states) in counts {
            let queueWaiting = (states[.queued] ?? 0) + (states[.retrying] ?? 0)
            report.waiting += queueWaiting
            report.running += states[.running] ?? 0
            if queueWaiting > 0 { waiting.append(queue) }
        }
        report.judgeReady(try await tx.oldestReady(queues: waiting), now: batch.now, threshold: thresholds.maximumReadyAgeMilliseconds)
        let long = try await tx.runningSince(before: batch.now - thresholds.maximumRunningMilliseconds, limit: 100)
        report.longRunningJobs = long.map(\.id)
        if let longest = long.first {
            let named = long.prefix(3).map { "\($0.id) in \($0.queue)" }
            let more = long.count > 3 ? " and \(long.count - 3)\(long.count == 100 ? "+" : "") more" : ""
            report.flag(
                .degraded,
                "\(long.count == 1 ? "job" : "jobs") \(named.joined(separator: ", "))\(more) running longer than "
                    + "\(HealthReport.span(thresholds.maximumRunningMilliseconds)) (the longest for \(HealthReport.span(batch.now - longest.startedAt)))")
        }
        return report
    }
}
