import BatonCore
import BatonProtocol
import BatonStore

/// Each op, applied inside the batch's transaction.
///
/// An op either returns its reply or throws a ``BatonError`` for the client; any other
/// error is a store failure and aborts the whole batch. Each op writes at most one SQL
/// statement, after all of its checks, so a refused op has changed nothing.
extension Authority {
    /// Applies one request; `nil` when the request was parked to wait for a job.
    func perform(_ submission: Submission, _ context: inout BatchContext) throws -> Outcome? {
        let id = submission.id
        context.heardAt = min(self.leaseClock.leaseTime(ofMonotonic: submission.receivedAt), context.leaseNow)
        do {
            if let policy = self.access.policy, !submission.connection.isWebConsole {
                try self.authorize(submission, under: policy, &context)
            }
            switch submission.request {
            case .hello(let client):
                if client != nil {
                    self.workers.seen(submission.connection, name: client, now: context.wallNow)
                }
                return Outcome(line: self.hello(id: id, client: client))
            case .enqueue(let request):
                return Outcome(line: try self.enqueue(request, id: id, &context))
            case .claim(let request):
                if let outcome = try self.claim(request, id: id, connection: submission.connection, &context) {
                    return outcome
                }
                if request.waitMilliseconds > 0, case .serving = self.phase {
                    self.parked.park(
                        ParkedClaims.Waiter(
                            id: id, request: request, connection: submission.connection,
                            deadline: context.monotonicNow + request.waitMilliseconds, reply: submission.reply
                        )
                    )
                    return nil
                }
                return Outcome(line: Reply.success(id: id) { $0.member("job", rawJSON: nil) })
            case .heartbeat(let request):
                let line = try self.heartbeat(request, id: id, connection: submission.connection, &context)
                self.workers.renewed(on: submission.connection, now: context.wallNow)
                return Outcome(line: line)
            case .checkpoint(let request):
                let line = try self.checkpoint(request, id: id, connection: submission.connection, &context)
                self.workers.renewed(on: submission.connection, now: context.wallNow)
                return Outcome(line: line)
            case .complete(let request):
                return try self.complete(request, id: id, connection: submission.connection, &context)
            case .fail(let request):
                return Outcome(line: try self.fail(request, id: id, &context))
            case .release(let request):
                return Outcome(line: try self.release(request, id: id, &context))
            case .get(let jobID):
                return Outcome(line: try self.get(jobID, id: id, &context))
            case .cancel(let jobID, let reason):
                return Outcome(line: try self.cancel(jobID, reason: reason, id: id, &context))
            case .pause(let jobID, let reason):
                return Outcome(line: try self.pause(jobID, reason: reason, id: id, &context))
            case .resume(let jobID, let reason):
                return Outcome(line: try self.resume(jobID, reason: reason, id: id, &context))
            case .retry(let jobID, let reason):
                return Outcome(line: try self.retry(jobID, reason: reason, id: id, &context))
            case .setPriority(let jobID, let priority):
                guard let state = try context.tx.setPriority(id: jobID, priority: priority) else {
                    throw LeaseRefusal.finished(try self.requireJob(jobID, &context), changing: "priority")
                }
                return Outcome(line: Reply.priority(id: id, state: state, priority: priority))
            case .pauseQueue(let queue):
                try context.tx.setQueuePaused(queue, true)
                self.pausedQueues.insert(queue)
                return Outcome(line: Reply.success(id: id) { $0.member("queue", queue); $0.member("paused", true) })
            case .resumeQueue(let queue):
                try context.tx.setQueuePaused(queue, false)
                self.pausedQueues.remove(queue)
                self.resetBreaker(of: queue)
                // Its ready jobs are claimable again: offer them to waiting claims.
                context.readyQueues.insert(queue)
                return Outcome(line: Reply.success(id: id) { $0.member("queue", queue); $0.member("paused", false) })
            case .setQueue(let queue, let change):
                let settings = try context.tx.changeQueueSettings(queue, change)
                if self.running.setLimit(settings.maxRunning, of: queue) {
                    // Jobs the old limit held back may start: offer them to waiting claims.
                    context.readyQueues.insert(queue)
                }
                self.queueTimeouts[queue] = settings.timeoutMilliseconds
                self.setBreaker(settings.breaker, of: queue, &context)
                return Outcome(line: Reply.queueSettings(id: id, queue: queue, settings))
            case .setLimit(let name, let change):
                return Outcome(line: try self.setLimit(name, change, id: id, &context))
            case .limits:
                return Outcome(line: Reply.limits(id: id, try self.limitUses(context.tx)))
            case .events(let jobID):
                return Outcome(line: try self.events(jobID, id: id, for: submission.connection.peer, &context))
            case .metrics(let json):
                // Taken once this batch has committed, its changes included: the queues'
                // oldest ready jobs are probed a chunk of queues per turn (scrape()).
                let reply = submission.reply
                self.scrape().whenComplete { result in
                    switch result {
                    case .success(let snapshot):
                        // Written out by the connection, off this thread: it grows with the queues.
                        reply.succeed(Outcome(render: { snapshot.reply(id: id, json: json) }))
                    case .failure(let error):
                        reply.succeed(Outcome(line: Reply.failure(id: id, BatonError(.internal, "the metrics could not be read: \(error)"))))
                    }
                }
                return nil
            case .health:
                let report = try self.health(context.tx, wallNow: context.wallNow, leaseNow: context.leaseNow)
                return Outcome(line: Reply.success(id: id) { $0.health(report) })
            case .workers:
                return Outcome(line: self.workersReply(id: id))
            case .list(let request):
                return Outcome(line: try self.list(request, id: id, &context))
            case .enqueueBatch(let requests):
                let results = try self.atomically(&context) { context in
                    try requests.map { try self.enqueueOne($0, &context) }
                }
                return Outcome(line: Reply.success(id: id) { $0.enqueued(results) })
            case .stats:
                return Outcome(line: try self.stats(id: id, &context))
            case .schedule(var schedule):
                schedule.setFirstSlot(now: context.wallNow)
                try context.tx.saveSchedule(schedule)
                self.nextScheduleAt = try context.tx.nextScheduleAt()
                return Outcome(line: Reply.scheduled(id: id, schedule))
            case .unschedule(let name):
                let removed = try context.tx.deleteSchedule(named: name)
                self.nextScheduleAt = try context.tx.nextScheduleAt()
                return Outcome(line: Reply.success(id: id) { $0.member("name", name); $0.member("removed", removed) })
            case .schedules:
                return Outcome(line: Reply.schedules(id: id, try context.tx.schedules()))
            case .bulk(let change):
                // Stepped by the batches from this one on; answered when done (Authority.apply).
                self.bulkRuns.append(BulkRun(progress: BulkChange.Progress(change, lastID: try context.tx.lastJobID()), id: id, reply: submission.reply))
                return nil
            case .backup(let path):
                // Answered when the copy is complete; see Authority+Backup.
                context.backups.append((path, id, submission.reply))
                return nil
            }
        } catch let error as BatonError {
            return Outcome(line: Reply.failure(id: id, error))
        } catch let error as InvalidTransition {
            return Outcome(line: Reply.failure(id: id, BatonError(.invalidTransition, error.description, state: error.from)))
        }
    }

    // MARK: Reads

    private func hello(id: String?, client: String?) -> [UInt8] {
        Reply.hello(id: id, durability: self.store.durability.rawValue, limits: self.limits, defaults: self.defaults)
    }

    private func get(_ jobID: Int64, id: String?, _ context: inout BatchContext) throws -> [UInt8] {
        let job = try self.requireJob(jobID, &context)
        let lease = self.running[jobID].map { LeaseView(expiresAt: context.wallTime(ofLease: $0.lease.deadline)) }
        return Reply.success(id: id) { $0.key("job"); $0.jobDetail(job, lease: lease) }
    }

    private func list(_ listing: JobListing, id: String?, _ context: inout BatchContext) throws -> [UInt8] {
        let (jobs, next) = try context.tx.listJobs(listing)
        return Reply.success(id: id) { reply in
            reply.key("jobs")
            reply.beginArray()
            for job in jobs {
                let lease = self.running[job.id].map { LeaseView(expiresAt: context.wallTime(ofLease: $0.lease.deadline)) }
                reply.jobDetail(job, lease: lease)
            }
            reply.endArray()
            reply.member("next", optional: next)
        }
    }

    /// The job's audit trail, oldest first. The enqueue, the completion and the claim of
    /// the current (or last) attempt come from the job's row, which records them; every
    /// other change from the events table.
    ///
    /// With an access policy, tokens are shown only to an admin of the job's queue and to the
    /// uid that holds its lease.
    private func events(_ jobID: Int64, id: String?, for peer: PeerIdentity?, _ context: inout BatchContext) throws -> [UInt8] {
        let job = try self.requireJob(jobID, &context)
        let trail = JobEvent.trail(
            of: job, recorded: try context.tx.events(of: jobID),
            followUps: job.state == .completed ? try context.tx.followUps(of: jobID) : []
        )
        return Reply.events(id: id, of: jobID, trail, showsTokens: self.showsTokens(of: job, to: peer))
    }

    private func stats(id: String?, _ context: inout BatchContext) throws -> [UInt8] {
        let counts = self.census(including: context).counts
        // One index probe per queue with jobs: O(queues), whatever the backlog.
        var oldestReady: [String: Int64] = [:]
        for queue in counts.keys {
            oldestReady[queue] = try context.tx.oldestReady(queue: queue)?.runAt
        }
        let pruned = try context.tx.prunedCount()
        return Reply.stats(
            id: id, counts: counts, oldestReady: oldestReady, now: context.wallNow, pausedQueues: self.pausedQueues.sorted(),
            limits: self.running.allLimits.sorted(by: { $0.key < $1.key }).map { ($0.key, $0.value, self.running.runningCount(of: $0.key)) },
            breakers: self.breakerStates, namedLimits: try self.limitUses(context.tx),
            pruned: Int64(pruned), leases: self.running.count, parkedClaims: self.parked.count
        )
    }

    // MARK: Enqueue and claim

    private func enqueue(_ request: EnqueueRequest, id: String?, _ context: inout BatchContext) throws -> [UInt8] {
        let result = try self.enqueueOne(request, &context)
        return Reply.success(id: id) { $0.member("job", result.jobID); $0.member("duplicate", result.duplicate) }
    }

    /// Adds one job, or finds the unfinished job holding its unique key.
    ///
    /// - Parameter parent: the job whose completion enqueues this one (a follow-up).
    func enqueueOne(
        _ request: EnqueueRequest, parent: Int64? = nil, _ context: inout BatchContext
    ) throws -> (jobID: Int64, duplicate: Bool) {
        if let key = request.uniqueKey, let existing = try context.tx.unfinishedJob(queue: request.queue, uniqueKey: key) {
            return (existing, true)
        }
        let plan = DependencyPlan(after: request.after, states: try context.tx.states(of: request.after))
        if case .missing(let missing) = plan {
            throw BatonError.invalidArgument("after", "names job \(missing), which does not exist")
        }
        let runAt = request.runAt(now: context.wallNow)
        let (jobID, reservation) = self.jobIDs.next()
        if let reservation {
            try context.tx.saveReservation(.jobID, upTo: reservation)
        }
        try context.tx.insert(
            request.newJob(parent: parent, now: context.wallNow, defaults: self.defaults),
            id: jobID,
            now: context.wallNow
        )
        if case .cancelled(let reason) = plan {
            _ = try context.tx.markCancelled(id: jobID, from: .queued, reason: reason, now: context.wallNow)
            self.noteChange(JobEvent(.enqueued, at: context.wallNow, state: .queued), job: jobID, queue: request.queue, from: nil, &context)
            try self.record(
                JobEvent(.cancelled, at: context.wallNow, state: .cancelled, detail: reason), job: jobID, queue: request.queue, from: .queued,
                &context
            )
            return (jobID, false)
        }
        self.noteChange(JobEvent(.enqueued, at: context.wallNow, state: .queued), job: jobID, queue: request.queue, from: nil, &context)
        if case .waiting(let unfinished) = plan {
            try context.tx.addDependencies(job: jobID, on: unfinished)
        } else {
            self.noteWaiting(queue: request.queue, runAt: runAt, &context)
        }
        return (jobID, false)
    }

    /// A job completed: its dependents waiting on nothing else become claimable.
    func releaseDependents(of jobID: Int64, _ context: inout BatchContext) throws {
        for dependent in try context.tx.dependencyCompleted(jobID, now: context.wallNow) {
            self.noteWaiting(queue: dependent.queue, runAt: dependent.runAt, &context)
        }
    }

    /// A job ended without completing: everything waiting on it, directly or not, is cancelled.
    func cancelDependents(of jobID: Int64, because outcome: String, _ context: inout BatchContext) throws {
        var ended = [(jobID, outcome)]
        while let (id, how) = ended.popLast() {
            for dependent in try context.tx.unfinishedDependents(of: id) {
                let reason = "dependency \(id) \(how)"
                _ = try context.tx.markCancelled(id: dependent.id, from: dependent.state, reason: reason, now: context.wallNow)
                let lease = self.endLease(dependent.id, &context)
                try self.record(
                    JobEvent(.cancelled, at: context.wallNow, state: .cancelled, token: lease?.token, detail: reason),
                    job: dependent.id, queue: dependent.queue, from: dependent.state, &context
                )
                ended.append((dependent.id, "was cancelled"))
            }
        }
    }

    /// Runs several writes all or nothing.
    ///
    /// Sequence reservations written inside are undone with the rest, so they are written
    /// again outside: a value issued from memory must never lack its durable reservation.
    func atomically<T>(_ context: inout BatchContext, _ body: (inout BatchContext) throws -> T) throws -> T {
        do {
            var inner = context
            let value = try context.tx.atomically { try body(&inner) }
            context = inner
            return value
        } catch {
            try context.tx.saveReservation(.jobID, upTo: self.jobIDs.reserved)
            try context.tx.saveReservation(.token, upTo: self.tokens.reserved)
            try context.tx.saveReservation(.event, upTo: self.eventNumbers.reserved)
            throw error
        }
    }

    /// Leases the best ready job across the claim's queues, or returns `nil` when none is ready.
    func claim(
        _ request: ClaimRequest, id: String?, connection: ConnectionIdentity, _ context: inout BatchContext
    ) throws -> Outcome? {
        guard let leased = try self.lease(request, connection: connection, &context) else { return nil }
        let line = Reply.success(id: id) { reply in
            reply.key("job")
            reply.claimedJob(leased.job, token: leased.token, leaseExpiresAt: leased.expiresAt)
        }
        return Outcome(line: line, granted: LeaseReference(jobID: leased.job.id, token: leased.token))
    }

    /// A job leased by a claim, with what its reply shows.
    struct Leased {
        var job: ClaimedJob
        var token: FencingToken
        var expiresAt: Int64
    }

    /// Leases the best ready job across the claim's queues, or returns `nil` when none is
    /// ready (or none may start, by the queues' limits and the concurrency keys).
    func lease(
        _ request: ClaimRequest, connection: ConnectionIdentity, _ context: inout BatchContext
    ) throws -> Leased? {
        var best: (job: StoreTransaction.ReadyJob, queue: String)?
        for queue in request.queues where !self.pausedQueues.contains(queue) && !self.running.isFull(queue) && self.breakerAdmits(queue, &context) {
            guard let candidate = try self.bestReadyJob(in: queue, &context) else { continue }
            if let current = best?.job, (current.priority, -current.id) >= (candidate.priority, -candidate.id) { continue }
            best = (candidate, queue)
        }
        guard let best else { return nil }
        let (value, reservation) = self.tokens.next()
        if let reservation {
            try context.tx.saveReservation(.token, upTo: reservation)
        }
        let token = FencingToken(rawValue: value)
        let event = try self.nextEventNumber(&context)
        guard
            let (job, claimedFrom) = try context.tx.markClaimed(
                id: best.job.id, token: token, leaseMilliseconds: request.leaseMilliseconds,
                worker: request.worker, peer: connection.peer, claimEvent: event, now: context.wallNow
            )
        else {
            return nil
        }
        let lease = self.running.start(
            jobID: job.id, token: token, duration: job.leaseMilliseconds, now: context.leaseNow, holder: connection.peer?.uid,
            queue: best.queue, concurrencyKey: best.job.concurrencyKey, limits: best.job.limits, startedAt: context.wallNow,
            connection: connection.number,
            process: request.detached ? nil : connection.peer?.pid,
            timeout: (job.timeoutMilliseconds ?? self.queueTimeouts[best.queue]).map { ($0, $0) }
        )
        self.breakerStarted(job.id, of: best.queue)
        self.served(best.job, of: best.queue)
        self.workers.seen(connection, name: request.worker, now: context.wallNow)
        // The row records the claim under `event`; see StoreTransaction.markClaimed.
        self.noteChange(
            JobEvent(.claimed, at: context.wallNow, state: .running, token: token, peerPID: connection.peer?.pid, detail: request.worker),
            job: job.id, queue: job.queue, from: claimedFrom, milliseconds: max(context.wallNow - job.dueAt, 0), &context
        )
        return Leased(job: job, token: token, expiresAt: context.wallTime(ofLease: lease.deadline))
    }

    /// Offers the jobs this batch made ready to the parked claims.
    func serveParkedClaims(_ context: inout BatchContext, into replies: inout [PendingReply]) throws {
        guard !self.parked.isEmpty, !context.readyQueues.isEmpty else { return }
        var readyQueues = context.readyQueues
        let served = try self.parked.serve(readyQueues: &readyQueues) { waiter in
            try self.claim(waiter.request, id: waiter.id, connection: waiter.connection, &context)
        }
        for (waiter, outcome) in served {
            replies.append(PendingReply(sink: waiter.reply, id: waiter.id, outcome: outcome))
        }
    }

    // MARK: Fenced ops

    private func heartbeat(
        _ request: HeartbeatRequest, id: String?, connection: ConnectionIdentity, _ context: inout BatchContext
    ) throws -> [UInt8] {
        try self.requireLiveLease(request.lease, &context)
        if let progress = request.progress {
            _ = try context.tx.saveProgress(id: request.lease.jobID, token: request.lease.token, progress: progress)
        }
        let lease = self.running.renew(
            jobID: request.lease.jobID, token: request.lease.token,
            duration: request.leaseMilliseconds, heardAt: context.heardAt, now: context.leaseNow, connection: connection.number,
            process: connection.peer?.pid
        )!
        return Reply.success(id: id) { $0.member("lease_expires_at", context.wallTime(ofLease: lease.deadline)) }
    }

    private func checkpoint(
        _ request: CheckpointRequest, id: String?, connection: ConnectionIdentity, _ context: inout BatchContext
    ) throws -> [UInt8] {
        try self.requireLiveLease(request.lease, &context)
        _ = try context.tx.saveCheckpoint(
            id: request.lease.jobID, token: request.lease.token, state: request.state, progress: request.progress
        )
        try self.record(
            JobEvent(.checkpointed, at: context.wallNow, state: .running, token: request.lease.token),
            job: request.lease.jobID, queue: self.running[request.lease.jobID]?.queue, from: .running, &context
        )
        // A checkpoint is proof of life: it renews the lease like a heartbeat.
        let lease = self.running.renew(
            jobID: request.lease.jobID, token: request.lease.token, heardAt: context.heardAt, now: context.leaseNow,
            connection: connection.number, process: connection.peer?.pid
        )!
        return Reply.success(id: id) { $0.member("lease_expires_at", context.wallTime(ofLease: lease.deadline)) }
    }

    /// Completes a job, with its follow-ups; with `claim`, then leases the worker's next job.
    private func complete(
        _ request: CompleteRequest, id: String?, connection: ConnectionIdentity, _ context: inout BatchContext
    ) throws -> Outcome {
        let reference = request.lease
        if case .notHeld = self.running.check(jobID: reference.jobID, token: reference.token, now: context.heardAt),
            let job = try context.tx.job(id: reference.jobID), job.state == .completed, job.leaseToken == reference.token
        {
            // The same worker again, after losing our first reply: answer as before (and
            // claim again: a job leased with the lost reply expires like any other).
            return try self.completed(request, followUps: nil, id: id, connection: connection, &context)
        }
        try self.requireLiveLease(reference, ending: "completed", &context)
        let finish = { (context: inout BatchContext) throws -> [(jobID: Int64, duplicate: Bool)] in
            if try context.tx.markCompleted(id: reference.jobID, token: reference.token, result: request.result, now: context.wallNow) {
                // The live lease was checked above: the gate and the registry know its job.
                let startedAt = self.running[reference.jobID]?.startedAt ?? context.wallNow
                self.noteChange(
                    JobEvent(.completed, at: context.wallNow, state: .completed, token: reference.token),
                    job: reference.jobID, queue: self.running[reference.jobID]?.queue, from: .running,
                    milliseconds: max(context.wallNow - startedAt, 0), &context
                )
            }
            try self.releaseDependents(of: reference.jobID, &context)
            return try request.followUps.map { try self.enqueueOne($0, parent: reference.jobID, &context) }
        }
        // The completion and its follow-up jobs commit together, or none of it does. A
        // completion alone needs no savepoint: its writes fail only when the store fails,
        // and that rolls back the whole batch.
        let followUps = request.followUps.isEmpty ? try finish(&context) : try self.atomically(&context, finish)
        if let queue = self.running[reference.jobID]?.queue {
            self.breakerHeard(reference.jobID, of: queue, succeeded: true, now: context.wallNow)
            self.running.limitsHeard(reference.jobID, succeeded: true, now: context.leaseNow)
        }
        self.endLease(reference.jobID, &context)
        return try self.completed(request, followUps: followUps, id: id, connection: connection, &context)
    }

    /// The reply to a completion: its follow-ups, and the next job when it claims one.
    private func completed(
        _ request: CompleteRequest, followUps: [(jobID: Int64, duplicate: Bool)]?, id: String?, connection: ConnectionIdentity,
        _ context: inout BatchContext
    ) throws -> Outcome {
        var leased: Leased?
        if let next = request.next {
            leased = try self.lease(next, connection: connection, &context)
        }
        return .completed(request, followUps: followUps, next: leased.map { ($0.job, $0.token, $0.expiresAt) }, id: id)
    }

    private func fail(_ request: FailRequest, id: String?, _ context: inout BatchContext) throws -> [UInt8] {
        try self.requireLiveLease(request.lease, ending: "failed", &context)
        let decision = try self.endAttempt(
            request.lease, error: request.error, retry: request.retry,
            retryInMilliseconds: request.retryInMilliseconds, &context
        )
        return Reply.success(id: id) { reply in
            reply.member("state", decision.state.rawValue)
            if case .retry(let runAt) = decision { reply.member("run_at", runAt) }
        }
    }

    private func release(_ request: ReleaseRequest, id: String?, _ context: inout BatchContext) throws -> [UInt8] {
        try self.requireLiveLease(request.lease, ending: "released", &context)
        let runAt = context.wallNow + request.delayMilliseconds
        let queue = try context.tx.markReleased(
            id: request.lease.jobID, token: request.lease.token, runAt: runAt, now: context.wallNow
        )
        self.endLease(request.lease.jobID, &context)
        if let queue {
            try self.record(
                JobEvent(.released, at: context.wallNow, state: .queued, token: request.lease.token), job: request.lease.jobID, queue: queue,
                from: .running, &context
            )
            self.noteWaiting(queue: queue, runAt: runAt, &context)
        }
        return Reply.success(id: id)
    }

    // MARK: Job control

    /// The job, or `not_found`.
    private func requireJob(_ jobID: Int64, _ context: inout BatchContext) throws -> Job {
        guard let job = try context.tx.job(id: jobID) else {
            throw LeaseRefusal.notFound(jobID)
        }
        return job
    }

    /// Cancels an unfinished job. A running job's lease is revoked at once; its worker
    /// learns at its next heartbeat, which is refused with `cancelled`.
    private func cancel(_ jobID: Int64, reason: String?, id: String?, _ context: inout BatchContext) throws -> [UInt8] {
        try self.cancel(try self.requireJob(jobID, &context), reason: reason ?? "cancelled", &context)
        return Reply.success(id: id) { $0.member("state", JobState.cancelled.rawValue) }
    }

    private func cancel(_ job: Job, reason: String, _ context: inout BatchContext) throws {
        try self.cancel(job.id, from: job.state, of: job.queue, reason: reason, &context)
    }

    /// Cancels job `jobID` of `queue`, which is in `state` (a bulk change's step knows both
    /// from its filter, and reads no job).
    private func cancel(_ jobID: Int64, from state: JobState, of queue: String, reason: String, _ context: inout BatchContext) throws {
        // Not in `state` any more: a job cancelled a moment ago with the one it waited on.
        guard try context.tx.markCancelled(id: jobID, from: state, reason: reason, now: context.wallNow) else { return }
        let lease = self.endLease(jobID, &context)
        try self.record(
            JobEvent(.cancelled, at: context.wallNow, state: .cancelled, token: lease?.token, detail: reason), job: jobID, queue: queue,
            from: state, &context
        )
        try self.cancelDependents(of: jobID, because: "was cancelled", &context)
    }

    /// Holds a job back: nothing claims it until `resume`. A running job's lease is revoked
    /// and its attempt given back; its worker's next call is refused with `paused`.
    private func pause(_ jobID: Int64, reason: String?, id: String?, _ context: inout BatchContext) throws -> [UInt8] {
        let job = try self.requireJob(jobID, &context)
        _ = try context.tx.markPaused(id: jobID, from: job.state)
        let lease = self.endLease(jobID, &context)
        try self.record(
            JobEvent(.paused, at: context.wallNow, state: .paused, token: lease?.token, detail: reason), job: jobID, queue: job.queue, from: job.state, &context
        )
        return Reply.success(id: id) { $0.member("state", JobState.paused.rawValue) }
    }

    /// Lets a paused job be claimed again; it resumes from its checkpoint.
    private func resume(_ jobID: Int64, reason: String?, id: String?, _ context: inout BatchContext) throws -> [UInt8] {
        let job = try self.requireJob(jobID, &context)
        guard job.state == .paused, let resumed = try context.tx.markResumed(id: jobID, now: context.wallNow) else {
            throw InvalidTransition(from: job.state, to: .queued)
        }
        try self.record(JobEvent(.resumed, at: context.wallNow, state: .queued, detail: reason), job: jobID, queue: resumed.queue, from: .paused, &context)
        self.noteWaiting(queue: resumed.queue, runAt: resumed.runAt, &context)
        return Reply.success(id: id) { $0.member("state", JobState.queued.rawValue) }
    }

    /// Runs a failed or cancelled job again from its checkpoint, with its attempts reset.
    private func retry(_ jobID: Int64, reason: String?, id: String?, _ context: inout BatchContext) throws -> [UInt8] {
        let job = try self.requireJob(jobID, &context)
        try self.retry(jobID, from: job.state, reason: reason, &context)
        return Reply.success(id: id) { $0.member("state", JobState.queued.rawValue) }
    }

    private func retry(_ jobID: Int64, from state: JobState, reason: String? = nil, _ context: inout BatchContext) throws {
        guard state == .failed || state == .cancelled, let queue = try context.tx.markRetried(id: jobID, from: state, now: context.wallNow) else {
            throw InvalidTransition(from: state, to: .queued)
        }
        try self.record(JobEvent(.retried, at: context.wallNow, state: .queued, detail: reason), job: jobID, queue: queue, from: state, &context)
        self.noteWaiting(queue: queue, runAt: context.wallNow, &context)
    }

    /// One step of a bulk change (``BulkChange``): the matching jobs of its next id range,
    /// each changed as the single-job op changes it.
    ///
    /// - Returns: the progress after the step, kept by the caller once the batch commits.
    func step(_ progress: BulkChange.Progress, _ context: inout BatchContext) throws -> BulkChange.Progress {
        let change = progress.change
        let step = progress.nextStep
        let matched = try context.tx.bulkMatches(change, after: step.after, through: step.through, limit: step.limit)
        switch change.action {
        case .retry:
            for jobID in matched { try self.retry(jobID, from: change.state, &context) }
        case .cancel:
            for jobID in matched { try self.cancel(jobID, from: change.state, of: change.queue, reason: change.reason ?? "cancelled", &context) }
        case .purge:
            try context.tx.deleteJobs(matched)
            context.pruned += matched.map { _ in (change.queue, change.state) }
        }
        var progress = progress
        progress.stepped(matched: matched, changed: matched.count)
        return progress
    }

    // MARK: Leases

    /// Checks that `reference` holds a live lease; expires it on the spot if its time is up.
    /// A token that does not hold it is refused as ``LeaseRefusal`` says.
    ///
    /// - Throws: those refusals, or `not_found` for an unknown job.
    private func requireLiveLease(_ reference: LeaseReference, ending: String? = nil, _ context: inout BatchContext) throws {
        // Judged when the request arrived: a heartbeat sent in time is in time, however long
        // it waited for the authority (see LeaseClock).
        switch self.running.check(jobID: reference.jobID, token: reference.token, now: context.heardAt) {
        case .live:
            return
        case .expired(let lease):
            // Its deadline passed before the sweep got to it: it is expired now, not later.
            let decision = try self.expire(lease, &context)
            self.metrics.staleTokenRefusals.increment()
            if let reason = lease.timeoutReason(at: context.heardAt) {
                throw LeaseRefusal.timedOut(reference.jobID, reason, state: decision.state)
            }
            throw BatonError(.leaseLost, "the lease on job \(reference.jobID) expired", state: decision.state)
        case .notHeld:
            let job = try self.requireJob(reference.jobID, &context)
            let refusal = LeaseRefusal(reference, state: job.state, leaseToken: job.leaseToken, lastError: job.lastError, ending: ending)
            if refusal.late { self.metrics.lateOutcomes.increment() } else { self.metrics.staleTokenRefusals.increment() }
            throw refusal.error
        }
    }

    /// Expires every lease whose deadline has passed.
    func expireLeases(_ context: inout BatchContext) throws {
        for job in self.running.removeExpired(now: context.leaseNow, freeing: &context.readyQueues) {
            try self.expire(job.lease, &context)
        }
    }

    /// Ends the leases bound to the processes of `connections`, which closed and have
    /// exited: nobody is left to finish those jobs (see ``LeaseHolders``).
    func expireAbandonedLeases(of connections: [ConnectionIdentity], _ context: inout BatchContext) throws {
        for connection in connections {
            guard let pid = connection.peer?.pid else { continue }
            for (job, token) in self.running.holders.bound(to: pid, on: connection.number) {
                guard let lease = self.running[job]?.lease, lease.token == token else { continue }
                try self.expire(lease, because: LeaseHolders.exitReason(pid: pid), &context)
            }
        }
    }

    /// Ends an attempt whose lease ran out (or its time limit), or (`because`) whose process exited.
    @discardableResult
    private func expire(_ lease: LeaseGrant, because reason: String? = nil, _ context: inout BatchContext) throws -> RetryDecision {
        let reason = reason ?? lease.timeoutReason(at: context.leaseNow)
        let reference = LeaseReference(jobID: lease.jobID, token: lease.token)
        let decision = try self.endAttempt(
            reference, error: reason ?? "lease expired", retry: true, retryInMilliseconds: nil, expired: true, detail: reason, &context
        )
        return decision
    }

    /// Ends the running attempt unsuccessfully, by the job's retry rule. Its event is
    /// `failed` with the error, or, when it `expired`, `expired` with `detail`.
    private func endAttempt(
        _ reference: LeaseReference, error: String, retry: Bool, retryInMilliseconds: Int64?, expired: Bool = false,
        detail: String? = nil, _ context: inout BatchContext
    ) throws -> RetryDecision {
        let job = try self.requireJob(reference.jobID, &context)
        let decision = RetryDecision.afterUnsuccessfulAttempt(
            job.attempts,
            maxAttempts: job.maxAttempts,
            retryAllowed: retry,
            retryInMilliseconds: retryInMilliseconds,
            backoff: job.backoff,
            jitter: Double.random(in: 0..<1, using: &self.random),
            now: context.wallNow
        )
        _ = try context.tx.markUnsuccessful(
            id: reference.jobID, token: reference.token, decision: decision, error: error, now: context.wallNow
        )
        self.breakerHeard(reference.jobID, of: job.queue, succeeded: false, now: context.wallNow)
        self.running.limitsHeard(reference.jobID, succeeded: false, now: context.leaseNow)
        self.endLease(reference.jobID, &context)
        try self.record(
            JobEvent(
                expired ? .expired : .failed, at: context.wallNow, state: decision.state, token: reference.token,
                detail: expired ? detail : error
            ),
            job: reference.jobID, queue: job.queue, from: .running, milliseconds: max(context.wallNow - (job.startedAt ?? context.wallNow), 0),
            &context
        )
        switch decision {
        case .retry(let runAt):
            self.noteWaiting(queue: job.queue, runAt: runAt, &context)
        case .fail:
            try self.cancelDependents(of: reference.jobID, because: "failed", &context)
        }
        return decision
    }

    /// Ends a job's lease, however its run ended, and frees its place under the queue's
    /// limit and its concurrency key; waiting claims are offered what that lets start.
    @discardableResult
    func endLease(_ jobID: Int64, _ context: inout BatchContext) -> LeaseGrant? {
        guard let job = self.running.end(jobID: jobID, freeing: &context.readyQueues) else { return nil }
        // After an outcome the trial is settled already; after a release, cancel or pause
        // it gives its place back, and the queue may start another job.
        if self.breakers[job.queue] != nil {
            self.breakerAbandoned(jobID, of: job.queue)
            context.readyQueues.insert(job.queue)
        }
        return job.lease
    }

    /// The census as a request in this batch sees the store: the last commit's, moved by
    /// the batch's changes so far.
    func census(including context: BatchContext) -> JobCensus {
        var census = self.census
        Self.move(&census, by: context.changes, pruned: context.pruned)
        return census
    }

    /// Moves `census` by committed (or, for ``census(including:)``, applied) changes.
    static func move(_ census: inout JobCensus, by changes: [ChangeLog.Change], pruned: [(queue: String, state: JobState)]) {
        for change in changes {
            guard let queue = change.queue else { continue }
            census.move(queue: queue, from: change.from, to: change.event.state)
        }
        for job in pruned {
            census.move(queue: job.queue, from: job.state, to: nil)
        }
    }

    /// The workers op's reply: who is connected, and what they hold.
    func workersReply(id: String?) -> [UInt8] {
        let held = self.running.jobsByConnection
        let me = FleetHost(name: self.host, startedAt: self.startedAt, seenAt: self.clock.wallMilliseconds())
        return Reply.workers(id: id, self.workers.all.map { ($0, held[$0.connection.number] ?? []) }, hosts: [me])
    }

    /// Appends to a job's audit trail, in the same transaction as the change it records,
    /// and notes the change for the metrics and the log.
    func record(
        _ event: JobEvent, job: Int64, queue: String?, from: JobState?, milliseconds: Int64? = nil, _ context: inout BatchContext
    ) throws {
        try context.tx.recordEvent(event, job: job, sequence: try self.nextEventNumber(&context))
        self.noteChange(event, job: job, queue: queue, from: from, milliseconds: milliseconds, &context)
    }

    /// The next audit event number, its reservation made durable first when it needs one.
    func nextEventNumber(_ context: inout BatchContext) throws -> Int64 {
        let (number, reservation) = self.eventNumbers.next()
        if let reservation {
            try context.tx.saveReservation(.event, upTo: reservation)
        }
        return number
    }

    /// Notes a state change in the batch; the enqueue and the completion come here without
    /// an event row. The notes are counted and logged only once the batch has committed,
    /// and a savepoint that rolls back takes its notes with it (``atomically(_:_:)``
    /// restores the context), so the metrics and the log count only what happened.
    func noteChange(
        _ event: JobEvent, job: Int64, queue: String?, from: JobState?, milliseconds: Int64? = nil, _ context: inout BatchContext
    ) {
        context.changes.append(ChangeLog.Change(event: event, job: job, queue: queue, from: from, milliseconds: milliseconds))
    }

    /// Counts a committed batch's changes in the metrics: O(1) each.
    func count(_ changes: [ChangeLog.Change]) {
        for change in changes {
            guard let queue = change.queue else { continue }
            // Changed where it is stored: no copy of the queue's numbers per event.
            self.queueMetrics[queue, default: QueueMetrics()].count(change)
        }
    }

    // MARK: Scheduling

    /// Records that a job in `queue` waits from `runAt`: ready now, or on the schedule.
    private func noteWaiting(queue: String, runAt: Int64, _ context: inout BatchContext) {
        if runAt <= context.wallNow {
            context.readyQueues.insert(queue)
        } else {
            self.nextScheduledRunAt = min(self.nextScheduledRunAt ?? .max, runAt)
        }
    }

    /// Deletes a small batch of finished jobs past their retention, when it is time to look.
    ///
    /// A full batch means more are waiting: the next look comes with the next batch of
    /// requests rather than after the interval, so a backlog drains in small steps that
    /// never hold up claims for long.
    func pruneFinishedJobs(_ context: inout BatchContext) throws {
        guard context.monotonicNow >= self.nextPruneAt else { return }
        let pruned = try context.tx.pruneFinishedJobs(
            completedBefore: context.wallNow - self.retention.completedMilliseconds,
            failedBefore: context.wallNow - self.retention.failedMilliseconds,
            limit: self.retention.batchSize
        )
        context.pruned += pruned
        try context.tx.forgetIdleLimitNames(limit: self.retention.batchSize)
        let deleted = pruned.count
        if deleted > 0 {
            self.logger.info("finished jobs pruned", metadata: ["jobs.pruned": "\(deleted)"])
        }
        self.nextPruneAt = context.monotonicNow + (deleted == self.retention.batchSize ? 10 : self.retention.intervalMilliseconds)
    }

    /// Enqueues the jobs of the recurring schedules whose slots have come (see
    /// ``RecurringSchedule/due(now:previousUnfinished:)``), each with its slot's unique key,
    /// and moves each schedule on to its next slot in the same commit.
    func fireSchedules(_ context: inout BatchContext) throws {
        guard let next = self.nextScheduleAt, next <= context.wallNow else { return }
        for schedule in try context.tx.dueSchedules(now: context.wallNow, limit: 100) {
            guard let slot = schedule.nextAt else { continue }
            let previousUnfinished = try schedule.lastJob.flatMap { try context.tx.states(of: [$0])[$0] }.map { !$0.isFinished } ?? false
            let (fire, nextSlot) = schedule.due(now: context.wallNow, previousUnfinished: previousUnfinished)
            var job: Int64?
            if let fire {
                job = try self.enqueueOne(schedule.job(firing: fire), &context).jobID
            }
            try context.tx.scheduleFired(schedule.name, slot: slot, next: nextSlot, job: job)
        }
        self.nextScheduleAt = try context.tx.nextScheduleAt()
    }

    /// Makes delayed and backing-off jobs whose time has come claimable.
    func promoteDueJobs(_ context: inout BatchContext) throws {
        guard let next = self.nextScheduledRunAt, next <= context.wallNow else { return }
        context.readyQueues.formUnion(try context.tx.promoteDueJobs(now: context.wallNow))
        self.nextScheduledRunAt = try context.tx.nextScheduledRunAt()
    }
}

/// The version `hello` reports.
public let batondVersion = "0.1.0"
