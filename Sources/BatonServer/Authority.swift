import BatonCore
import BatonProtocol
import BatonStore
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// The single writer: it owns the store, the lease table and the parked claims, and
/// applies every request in order.
///
/// All of its state is confined to one dedicated event loop, which is also where SQLite
/// runs; nothing else touches the store. Requests queue up on that loop while a commit is
/// being fsync'd and are then applied together in the next transaction, so one fsync
/// acknowledges a whole batch from many connections (group commit). A reply is released
/// only after the transaction holding its request has committed.
final class Authority: JobAuthority, @unchecked Sendable {
    // @unchecked: every mutable property below is touched only on `loop`.

    let loop: any EventLoop
    let store: JobStore
    let clock: any AuthorityClock
    let defaults: JobDefaults
    let retention: RetentionPolicy
    let limits: ProtocolLimits
    let logger: Logger
    let metrics: ServerMetrics
    let healthThresholds: HealthThresholds
    let changeLog: ChangeLog
    let attemptTracer: AttemptTracer
    let access: AccessControl
    /// This server's name and start, for `workers`.
    let host: String
    let startedAt: Int64
    private let onFatalError: @Sendable (any Error) -> Void

    /// Every running job: its lease, its place in the admission rules, who holds it.
    var running = RunningJobs()
    var parked = ParkedClaims()
    /// Fencing tokens, each greater than every one issued before, across restarts.
    var tokens = ReservedSequence(resumingAfter: 0)
    /// Job ids, increasing and never reused.
    var jobIDs = ReservedSequence(resumingAfter: 0)
    /// The audit trail's event numbers, which order events across jobs.
    var eventNumbers = ReservedSequence(resumingAfter: 0)
    /// Connected workers.
    var workers = WorkerRegistry()
    /// How many jobs each queue holds in each state, as of the last commit.
    var census = JobCensus()
    /// Each queue's counters and histograms; a queue once seen stays, so that its counters
    /// never vanish and its emptied job counts read 0.
    var queueMetrics: [String: QueueMetrics] = [:]
    /// Wall-clock milliseconds of the last successful commit.
    var lastCommitAt: Int64?
    /// Since when (wall-clock milliseconds) commits have failed for lack of disk space;
    /// `nil` once one succeeds again.
    var storageFullSince: Int64?
    /// Queues nothing is claimed from, as the store records them.
    var pausedQueues: Set<String> = []
    /// Each queue's time limit per attempt, for jobs that set none of their own.
    var queueTimeouts: [String: Int64] = [:]
    /// The queues' circuit breakers, and the earliest time an open one admits its trial.
    var breakers: [String: CircuitBreaker] = [:]
    var nextBreakerTrialAt: Int64?
    /// Each queue whose claims rotate across groups, with the group served last ("" at the
    /// turn of a round); see ``bestReadyJob(in:_:)``.
    var groupCursors: [String: String] = [:]
    /// The monotonic time of the next look for finished jobs to prune.
    var nextPruneAt: Int64 = 0
    /// The clock leases run on, which stands still while the authority is stalled.
    var leaseClock = LeaseClock()
    /// Observes the lease clock between batches.
    private var pulse: RepeatedTask?
    /// The earliest `run_at` of a job waiting for its time, if known.
    var nextScheduledRunAt: Int64?
    /// The earliest next slot of any recurring job, wall-clock milliseconds.
    var nextScheduleAt: Int64?
    var random = SystemRandomNumberGenerator()
    /// The `backup` in progress, if any.
    var runningBackup: RunningBackup?

    /// Submissions handed over by the connections, not yet seen by the authority's thread.
    ///
    /// A list under a lock rather than a task per hand-over, so that a batch can take in
    /// the requests that arrived while it was being applied: they join its commit instead
    /// of waiting a whole commit, most of it an fsync, for the next one.
    private let inbox = NIOLockedValueBox(Inbox())
    private struct Inbox {
        var submissions: [Submission] = []
        /// Whether the authority's thread has been asked to collect them.
        var collecting = false
    }
    /// Requests collected for the next batch.
    private var pending: [Submission] = []
    /// Closed connections whose process has exited, for the next batch to end their leases.
    private var exited: [ConnectionIdentity] = []
    /// Bulk changes under way, oldest first: each batch takes one step of the first.
    var bulkRuns: [BulkRun] = []
    private var flushScheduled = false
    private var timer: Scheduled<Void>?
    private var timerDeadline: Int64 = .max
    private(set) var phase = Phase.serving

    enum Phase {
        case serving
        /// Stopping: new requests are refused with `shutting_down`.
        case draining
        /// A commit failed: nothing can be trusted to be durable, every request is refused.
        case failed(String)
    }

    init(
        loop: any EventLoop, store: JobStore, clock: any AuthorityClock, defaults: JobDefaults,
        retention: RetentionPolicy = RetentionPolicy(), limits: ProtocolLimits, logger: Logger,
        metrics: ServerMetrics = ServerMetrics(), healthThresholds: HealthThresholds = HealthThresholds(),
        access: AccessControl = AccessControl(), host: String = ServerConfiguration.defaultHostName,
        attemptTracer: AttemptTracer = AttemptTracer(isEnabled: false), onFatalError: @escaping @Sendable (any Error) -> Void
    ) {
        self.attemptTracer = attemptTracer
        self.access = access
        self.host = host
        self.startedAt = clock.wallMilliseconds()
        self.metrics = metrics
        self.healthThresholds = healthThresholds
        self.changeLog = ChangeLog(logger: logger)
        self.loop = loop
        self.store = store
        self.clock = clock
        self.defaults = defaults
        self.retention = retention
        self.limits = limits
        self.logger = logger
        self.onFatalError = onFatalError
    }

    // MARK: Start and stop

    /// Restores the lease table and token counter from the store.
    ///
    /// Every lease that was live when the last process stopped is given a full lease
    /// period from now: a worker that outlived the restart can reconnect and finish.
    func recover() -> EventLoopFuture<Int> {
        self.loop.submit {
            try self.store.write { tx in
                let running = try self.loadLeaseState(tx)
                // The one count of every job; from here on the census follows the commits.
                self.census = JobCensus(counts: try tx.jobCounts())
                for queue in self.census.counts.keys { self.queueMetrics[queue] = QueueMetrics() }
                return running
            }
        }.always { _ in
            // Recovery is the authority's own work, not a stall.
            self.leaseClock.rest(at: self.clock.monotonicMilliseconds())
            self.scheduleTimer()
            let interval = TimeAmount.milliseconds(self.leaseClock.pulseMilliseconds)
            self.pulse = self.loop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
                self.observeLeaseClock()
            }
        }
    }

    /// Rebuilds, from the store, everything the authority keeps beside it that a batch
    /// changes as it applies: the sequences, the running jobs, the schedule and the paused
    /// queues. Used at start, and after a batch rolled back.
    ///
    /// Every lease live in the store is given a full lease period from now. The connected
    /// workers are not in the store and are kept; after a rollback, a running job stays
    /// with the connection that held it.
    ///
    /// - Returns: the number of running jobs.
    private func loadLeaseState(_ tx: StoreTransaction) throws -> Int {
        let reservations = try tx.sequenceReservations()
        // Resuming after the durable reservations skips whatever the rolled-back batch
        // handed out: none of it was acknowledged, and none of it is ever issued again.
        self.tokens = ReservedSequence(resumingAfter: reservations.token)
        self.jobIDs = ReservedSequence(resumingAfter: reservations.jobID)
        self.eventNumbers = ReservedSequence(resumingAfter: reservations.event)
        let before = self.running
        self.running = RunningJobs()
        self.queueTimeouts = [:]
        let breakers = self.breakers
        self.breakers = [:]
        var ignored = Set<String>()
        for (name, settings) in try tx.limitSettings() {
            self.running.setNamedLimit(name, to: settings, freeing: &ignored)
        }
        for (queue, settings) in try tx.queueSettings() {
            self.running.setLimit(settings.maxRunning, of: queue)
            self.queueTimeouts[queue] = settings.timeoutMilliseconds
            // A breaker's state is the authority's: kept across a rollback, closed at start.
            if let breaker = settings.breaker {
                var kept = breakers[queue] ?? CircuitBreaker(breaker)
                kept.settings = breaker
                self.breakers[queue] = kept
            }
        }
        let now = self.leaseClock.now(monotonic: self.observeLeaseClock())
        let wallNow = self.clock.wallMilliseconds()
        let running = try tx.runningLeases()
        for lease in running {
            // At start, no connection holds it until its worker renews it.
            let holder = before.holders[lease.id].flatMap { $0.token == lease.token ? $0 : nil }
            // The time limit keeps counting across a restart, on the wall clock.
            let timeout = (lease.timeoutMilliseconds ?? self.queueTimeouts[lease.queue]).map { limit in
                (limit: limit, left: max(limit - (wallNow - lease.startedAt), 0))
            }
            self.running.start(
                jobID: lease.id, token: lease.token, duration: lease.leaseMilliseconds, now: now, holder: lease.holder,
                queue: lease.queue, concurrencyKey: lease.concurrencyKey, limits: lease.limits, startedAt: lease.startedAt,
                connection: holder?.connection, process: holder?.process, timeout: timeout
            )
        }
        self.nextScheduledRunAt = try tx.nextScheduledRunAt()
        self.nextScheduleAt = try tx.nextScheduleAt()
        self.pausedQueues = try tx.pausedQueues()
        return running.count
    }

    /// Reads the monotonic clock as the lease clock's observation, and reports a stall.
    @discardableResult
    private func observeLeaseClock() -> Int64 {
        let now = self.clock.monotonicMilliseconds()
        let stall = self.leaseClock.observe(now)
        if stall > 0 {
            self.logger.warning(
                "the authority was stalled; live leases are extended by the stall",
                metadata: ["stall.ms": "\(stall)", "leases": "\(self.running.count)"]
            )
        }
        return now
    }

    /// Stops taking requests: answers parked claims with `job: null`, applies what is
    /// already queued, and completes once the last batch has committed.
    func drain() -> EventLoopFuture<Void> {
        self.loop.flatSubmit {
            if case .serving = self.phase { self.phase = .draining }
            self.pulse?.cancel()
            // Each step is committed; the rest is not done, and the reply says so.
            for run in self.bulkRuns { run.reply.succeed(Outcome(line: Reply.bulk(id: run.id, run.progress, done: false))) }
            self.bulkRuns.removeAll()
            for waiter in self.parked.removeAll() {
                waiter.reply.succeed(Outcome(line: Reply.success(id: waiter.id) { $0.member("job", rawJSON: nil) }))
            }
            self.timer?.cancel()
            self.flush()
            return self.loop.makeSucceededVoidFuture()
        }
    }

    /// Runs on the authority's own thread and judges its health; see ``HealthReport``.
    func health() -> EventLoopFuture<HealthReport> {
        self.loop.submit {
            if case .failed = self.phase {
                var report = HealthReport()
                report.flag(.failing, "the store failed to commit")
                return report
            }
            return try self.store.write { tx in
                let leaseNow = self.leaseClock.now(monotonic: self.observeLeaseClock())
                return try self.health(tx, wallNow: self.clock.wallMilliseconds(), leaseNow: leaseNow)
            }
        }
    }

    /// The health checks, inside a transaction on the authority's thread: one index probe
    /// per queue with waiting jobs, O(queues), never O(jobs).
    func health(_ tx: StoreTransaction, wallNow: Int64, leaseNow: Int64) throws -> HealthReport {
        var report = self.healthChecks(wallNow: wallNow, leaseNow: leaseNow)
        var oldest: [String: (job: Int64, runAt: Int64)] = [:]
        for (queue, counts) in self.census.counts where Self.hasWaiting(counts) {
            if let ready = try tx.oldestReady(queue: queue) { oldest[queue] = ready }
        }
        report.judgeReady(oldest, now: wallNow, threshold: self.healthThresholds.maximumReadyAgeMilliseconds)
        return report
    }

    private static func hasWaiting(_ counts: [JobState: Int]) -> Bool {
        (counts[.queued] ?? 0) + (counts[.retrying] ?? 0) > 0
    }

    /// Every health check but the queues' oldest ready jobs: O(1) but for the running jobs
    /// past their threshold.
    private func healthChecks(wallNow: Int64, leaseNow: Int64) -> HealthReport {
        var report = HealthReport()
        let thresholds = self.healthThresholds
        report.running = self.running.count
        report.parkedClaims = self.parked.count
        report.waiting = self.census.waiting
        report.lastCommitAgeMilliseconds = self.lastCommitAt.map { max(wallNow - $0, 0) }
        if case .failed(let reason) = self.phase {
            report.flag(.failing, reason)
        }
        for (queue, state) in self.breakerStates {
            report.flag(.degraded, "the circuit breaker of queue \(queue) is \(state.name)")
        }
        for (limit, state) in self.running.namedLimits.openBreakers {
            report.flag(.degraded, "the circuit breaker of limit \(limit) is \(state.name)")
        }
        if let since = self.storageFullSince {
            // Degraded, not failing: a restart cannot make room, and must not loop.
            report.flag(.degraded, "the disk is full: writes refused with storage_full for \(max(wallNow - since, 0) / 1_000) s")
        }
        if let deadline = self.running.nextDeadline, deadline < leaseNow {
            report.expirySweepLagMilliseconds = leaseNow - deadline
            // The sweep runs with each batch and on a timer; a second late means it has stopped.
            if report.expirySweepLagMilliseconds > 1_000 {
                report.flag(.failing, "the lease-expiry sweep is \(report.expirySweepLagMilliseconds) ms late")
            }
        }
        let long = self.running.started(before: wallNow - thresholds.maximumRunningMilliseconds)
        report.longRunningJobs = long.map(\.jobID)
        if let longest = long.first {
            // The longest few by name, however many there are.
            let named = long.prefix(3).map { job in "\(job.jobID) in \(job.queue)" }
            let more = long.count > 3 ? " and \(long.count - 3) more" : ""
            report.flag(
                .degraded,
                "\(long.count == 1 ? "job" : "jobs") \(named.joined(separator: ", "))\(more) running longer than "
                    + "\(HealthReport.span(thresholds.maximumRunningMilliseconds)) (the longest for \(HealthReport.span(wallNow - longest.startedAt)))")
        }
        report.freeBytes = HealthReport.freeBytes(at: self.store.path)
        if let free = report.freeBytes, free < thresholds.minimumFreeBytes {
            report.flag(.degraded, "\(free >> 20) MiB free beside the store")
        }
        return report
    }

    /// The metrics for the HTTP endpoint, with the health checks' verdict. The queues'
    /// oldest ready jobs are probed a chunk of queues per turn of the authority's loop, so
    /// that however many queues there are, no request waits behind more than one chunk.
    func scrape() -> EventLoopFuture<MetricsSnapshot> {
        self.loop.submit { self.census.counts }.flatMap { counts in
            self.oldestReady(in: counts, from: counts.startIndex, found: [:])
        }.flatMapThrowing { oldest in
            try self.store.write { tx in
                let wallNow = self.clock.wallMilliseconds()
                var health = self.healthChecks(wallNow: wallNow, leaseNow: self.leaseClock.now(monotonic: self.observeLeaseClock()))
                health.judgeReady(oldest, now: wallNow, threshold: self.healthThresholds.maximumReadyAgeMilliseconds)
                return try self.metricsSnapshot(census: self.census, tx, health: health)
            }
        }
    }

    /// How many queues' oldest ready jobs a scrape probes per turn of the loop.
    static let readyProbesPerTurn = 256

    /// The oldest ready job of each queue of `counts` with waiting jobs, from `start` on,
    /// added to `found`, a chunk per turn of the loop.
    private func oldestReady(
        in counts: [String: [JobState: Int]], from start: Dictionary<String, [JobState: Int]>.Index,
        found: [String: (job: Int64, runAt: Int64)]
    ) -> EventLoopFuture<[String: (job: Int64, runAt: Int64)]> {
        guard start != counts.endIndex else { return self.loop.makeSucceededFuture(found) }
        return self.loop.submit {
            let end = counts.index(start, offsetBy: Self.readyProbesPerTurn, limitedBy: counts.endIndex) ?? counts.endIndex
            var found = found
            try self.store.write { tx in
                for (queue, states) in counts[start..<end] where Self.hasWaiting(states) {
                    if let ready = try tx.oldestReady(queue: queue) { found[queue] = ready }
                }
            }
            return (end, found)
        }.flatMap { end, found in self.oldestReady(in: counts, from: end, found: found) }
    }

    /// The metrics now, with `census` for the job counts and `health` as judged: O(1) on
    /// this thread (the dictionaries are copied on write), O(queues) for whoever writes it out.
    func metricsSnapshot(census: JobCensus, _ tx: StoreTransaction, health: HealthReport) throws -> MetricsSnapshot {
        MetricsSnapshot(
            serverWide: self.metrics.exposition(), queues: self.queueMetrics, jobs: census.counts, limits: try self.limitUses(tx),
            health: health)
    }

    /// Closes the store once everything before it on the loop has run.
    func closeStore() -> EventLoopFuture<Void> {
        self.loop.submit {
            self.timer?.cancel()
            self.pulse?.cancel()
            self.abandonBackup()
            try self.store.close()
        }
    }

    // MARK: Submitting

    /// Queues requests for the next batch. Safe to call from any thread.
    ///
    /// A connection hands over everything it decoded from one read at once, and the
    /// authority's thread is woken only when nothing is waiting for it already, so a busy
    /// server takes one hop per batch, not one per read.
    func submit(_ submissions: [Submission]) {
        let wake = self.inbox.withLockedValue { inbox -> Bool in
            inbox.submissions.append(contentsOf: submissions)
            guard !inbox.collecting else { return false }
            inbox.collecting = true
            return true
        }
        if wake {
            self.loop.execute { self.collect() }
        }
    }

    /// Everything the connections have handed over so far.
    private func takeInbox() -> [Submission] {
        self.inbox.withLockedValue { inbox in
            inbox.collecting = false
            var taken: [Submission] = []
            swap(&taken, &inbox.submissions)
            return taken
        }
    }

    /// Moves what the connections handed over into the next batch, or refuses it when the
    /// server is stopping or has failed.
    private func collect() {
        let submissions = self.takeInbox()
        guard !submissions.isEmpty else { return }
        switch self.phase {
        case .serving:
            self.pending.append(contentsOf: submissions)
            if !self.flushScheduled {
                self.flushScheduled = true
                // Runs after every task already queued on the loop, so requests that
                // arrived during the previous commit all join this batch.
                self.loop.execute { self.flush() }
            }
        case .draining:
            for submission in submissions {
                submission.reply.succeed(
                    Outcome(line: Reply.failure(id: submission.id, BatonError(.shuttingDown, "batond is stopping")))
                )
            }
        case .failed(let reason):
            for submission in submissions {
                submission.reply.succeed(Outcome(line: Reply.failure(id: submission.id, BatonError(.internal, reason))))
            }
        }
    }

    /// Forgets a closed connection's parked claims, and the connection as a worker.
    func connectionClosed(_ connection: ConnectionIdentity) {
        self.loop.execute {
            self.workers.disconnected(connection)
            for waiter in self.parked.removeAll(of: connection) {
                waiter.reply.succeed(Outcome(line: []))
            }
        }
    }

    /// Ends the leases bound to a closed connection's process, which has exited, in the
    /// next batch. Not while stopping: batond closed those connections itself, and a process
    /// that exits because of it (a relay like socat) did not abandon its jobs.
    func processExited(_ connection: ConnectionIdentity) {
        self.loop.execute {
            guard case .serving = self.phase else { return }
            self.exited.append(connection)
            if !self.flushScheduled {
                self.flushScheduled = true
                self.loop.execute { self.flush() }
            }
        }
    }

    // MARK: The batch

    private func flush() {
        self.flushScheduled = false
        let batch = self.pending
        self.pending.removeAll(keepingCapacity: true)
        switch self.phase {
        case .serving, .draining:
            // Requests queued before a drain began are still served.
            self.apply(batch)
        case .failed(let reason):
            for submission in batch {
                submission.reply.succeed(Outcome(line: Reply.failure(id: submission.id, BatonError(.internal, reason))))
            }
        }
    }

    private func apply(_ batch: [Submission]) {
        var batch = batch
        var replies: [PendingReply] = []
        replies.reserveCapacity(batch.count)
        var applied = ContinuousClock.now
        var changes: [ChangeLog.Change] = []
        var traces: [Int64: StoredTrace] = [:]
        var pruned: [(queue: String, state: JobState)] = []
        var backups: [(path: String, id: String?, reply: ReplySink)] = []
        var wrote = false
        var bulkStep: BulkChange.Progress?
        let monotonicNow = self.observeLeaseClock()
        // The time spent on this batch, fsync included, is the authority's own work, not a
        // stall: requests that arrive meanwhile carry their arrival time.
        defer { self.leaseClock.rest(at: self.clock.monotonicMilliseconds()) }
        do {
            try self.store.write { tx in
                let changesBefore = tx.totalChanges
                var context = BatchContext(
                    tx: tx,
                    wallNow: self.clock.wallMilliseconds(),
                    monotonicNow: monotonicNow,
                    leaseNow: self.leaseClock.now(monotonic: monotonicNow)
                )
                try self.promoteDueJobs(&context)
                try self.fireSchedules(&context)
                self.breakersCooled(&context)
                self.limitWindowsOpened(&context)
                try self.pruneFinishedJobs(&context)
                for submission in batch {
                    if let outcome = try self.perform(submission, &context) {
                        replies.append(PendingReply(sink: submission.reply, id: submission.id, outcome: outcome))
                    }
                }
                if case .serving = self.phase {
                    // What arrived while the batch was applied joins its commit (and, should
                    // the commit fail, is answered with the rest of the batch).
                    let late = self.takeInbox()
                    batch += late
                    for submission in late {
                        if let outcome = try self.perform(submission, &context) {
                            replies.append(PendingReply(sink: submission.reply, id: submission.id, outcome: outcome))
                        }
                    }
                }
                // Leases expire only after every request already read has been heard: a
                // heartbeat that waited for this batch renews its lease instead of losing it.
                context.heardAt = context.leaseNow
                if let run = self.bulkRuns.first {
                    bulkStep = try self.step(run.progress, &context)
                }
                try self.expireLeases(&context)
                try self.expireAbandonedLeases(of: self.exited, &context)
                self.exited.removeAll()
                try self.serveParkedClaims(&context, into: &replies)
                self.reportLimitBreakers()
                for waiter in self.parked.removeTimedOut(now: context.monotonicNow) {
                    let outcome = Outcome(line: Reply.success(id: waiter.id) { $0.member("job", rawJSON: nil) })
                    replies.append(PendingReply(sink: waiter.reply, id: waiter.id, outcome: outcome))
                }
                applied = ContinuousClock.now
                wrote = tx.totalChanges != changesBefore
                changes = context.changes
                pruned = context.pruned
                backups = context.backups
                if self.attemptTracer.isEnabled {
                    traces = try tx.traces(of: AttemptTracer.endedAttempts(in: changes))
                }
            }
        } catch where JobStore.isStorageFull(error) {
            return self.refuseForLackOfSpace(batch: batch, replies: replies, error: error)
        } catch {
            return self.fail(batch: batch, replies: replies, error: error)
        }
        // Only a commit that wrote proves there is room again; a read-only one writes nothing.
        if let since = self.storageFullSince, wrote {
            self.storageFullSince = nil
            self.logger.notice(
                "the store commits again: disk space is back",
                metadata: ["storage_full.ms": "\(max(self.clock.wallMilliseconds() - since, 0))"]
            )
        }
        // What is left after the requests were applied is the commit itself: mostly its fsync.
        let commit = ContinuousClock.now - applied
        self.metrics.commitTime.recordNanoseconds(commit.components.seconds * 1_000_000_000 + commit.components.attoseconds / 1_000_000_000)
        if !batch.isEmpty {
            // A batch a timer started (expiries, schedules) is a commit, not a batch of requests.
            self.metrics.batchSize.record(batch.count)
        }
        self.metrics.parkedClaims.set(self.parked.count)
        self.metrics.leases.set(self.running.count)
        self.lastCommitAt = self.clock.wallMilliseconds()
        self.count(changes)
        Self.move(&self.census, by: changes, pruned: pruned)
        self.changeLog.write(changes)
        self.attemptTracer.emit(changes, traces: traces)
        if let progress = bulkStep {
            if progress.isDone {
                let run = self.bulkRuns.removeFirst()
                replies.append(PendingReply(sink: run.reply, id: run.id, outcome: Outcome(line: Reply.bulk(id: run.id, progress, done: true))))
            } else {
                self.bulkRuns[0].progress = progress
            }
        }
        for reply in replies {
            reply.sink.succeed(reply.outcome)
        }
        if !self.bulkRuns.isEmpty, !self.flushScheduled {
            // The next step runs after what is already waiting on the loop: between two
            // steps, the requests that came meanwhile are served.
            self.flushScheduled = true
            self.loop.execute { self.flush() }
        }
        for backup in backups {
            self.startBackup(path: backup.path, id: backup.id, reply: backup.reply)
        }
        self.scheduleTimer()
    }

    /// A reply the batch will send once it has committed.
    struct PendingReply {
        var sink: ReplySink
        var id: String?
        var outcome: Outcome
    }

    /// Answers every request of a failed batch, and of the claims it served, with `error`,
    /// each with its own `id`; claims the batch parked are answered, not left parked.
    private func answerAll(batch: [Submission], replies: [PendingReply], with error: BatonError) {
        var answered = Set<ObjectIdentifier>()
        func answer(_ sink: ReplySink, id: String?) {
            guard answered.insert(ObjectIdentifier(sink.futureResult)).inserted else { return }
            sink.succeed(Outcome(line: Reply.failure(id: id, error)))
        }
        for submission in batch {
            answer(submission.reply, id: submission.id)
        }
        for reply in replies {
            answer(reply.sink, id: reply.id)
        }
        _ = self.parked.remove { answered.contains(ObjectIdentifier($0.reply.futureResult)) }
    }

    /// A commit failed for lack of disk space. SQLite rolled the transaction back whole,
    /// so the store is as before the batch: answer the batch with `storage_full`, rebuild
    /// what the authority keeps beside the store, and go on serving. Reads still work, and
    /// writes do again once space is freed.
    private func refuseForLackOfSpace(batch: [Submission], replies: [PendingReply], error: any Error) {
        if self.storageFullSince == nil {
            self.storageFullSince = self.clock.wallMilliseconds()
            self.logger.error("the disk is full: writes are refused with storage_full", metadata: ["error": "\(error)"])
        }
        self.answerAll(
            batch: batch, replies: replies,
            with: BatonError(.storageFull, "the disk holding the store is full; nothing of this request was applied: retry later")
        )
        do {
            _ = try self.store.write { tx in try self.loadLeaseState(tx) }
        } catch {
            return self.fail(batch: [], replies: [], error: error)
        }
        self.scheduleTimer()
    }

    /// A commit failed: the store's state is unknown, so answer `internal` and stop serving.
    private func fail(batch: [Submission], replies: [PendingReply], error: any Error) {
        let reason = "the store failed to commit: \(error)"
        self.logger.critical("store commit failed", metadata: ["error": "\(error)"])
        self.phase = .failed(reason)
        self.answerAll(batch: batch, replies: replies, with: BatonError(.internal, reason))
        for waiter in self.parked.removeAll() {
            waiter.reply.succeed(Outcome(line: Reply.failure(id: waiter.id, BatonError(.internal, reason))))
        }
        for run in self.bulkRuns { run.reply.succeed(Outcome(line: Reply.failure(id: run.id, BatonError(.internal, reason)))) }
        self.bulkRuns.removeAll()
        self.onFatalError(error)
    }

    // MARK: Housekeeping

    /// Wakes the loop for the next lease deadline, parked-claim timeout or scheduled job.
    private func scheduleTimer() {
        guard case .serving = self.phase else { return }
        let now = self.clock.monotonicMilliseconds()
        var deadline = Int64.max
        if let lease = self.running.nextDeadline { deadline = min(deadline, self.leaseClock.monotonicTime(ofLeaseTime: lease)) }
        if let waiter = self.parked.nextDeadline { deadline = min(deadline, waiter) }
        if let window = self.running.namedLimits.nextWakeup {
            deadline = min(deadline, self.leaseClock.monotonicTime(ofLeaseTime: window))
        }
        if let trial = self.nextBreakerTrialAt {
            deadline = min(deadline, now + max(trial - self.clock.wallMilliseconds(), 0))
        }
        if let slot = self.nextScheduleAt {
            deadline = min(deadline, now + max(slot - self.clock.wallMilliseconds(), 0))
        }
        if let runAt = self.nextScheduledRunAt {
            deadline = min(deadline, now + max(runAt - self.clock.wallMilliseconds(), 0))
        }
        deadline = min(deadline, self.nextPruneAt)
        guard deadline != .max, deadline < self.timerDeadline || self.timer == nil else { return }
        self.timer?.cancel()
        self.timerDeadline = deadline
        self.timer = self.loop.scheduleTask(in: .milliseconds(max(deadline - now, 0))) {
            self.timer = nil
            self.timerDeadline = .max
            if !self.flushScheduled {
                self.flushScheduled = true
                self.flush()
            }
        }
    }
}

/// What one batch knows while it runs: its transaction, its clocks, and what it changed.
struct BatchContext {
    let tx: StoreTransaction
    let wallNow: Int64
    /// For parked claims, schedules and pruning.
    let monotonicNow: Int64
    /// Lease time (see ``LeaseClock``): new deadlines are set from it, expiry is judged by it.
    let leaseNow: Int64
    /// The lease time at which the request being applied arrived; a fenced request is judged
    /// live or not as of then.
    var heardAt: Int64
    /// Queues that gained ready jobs in this batch, for the parked claims.
    var readyQueues: Set<String> = []
    /// State changes to log once the batch has committed.
    var changes: [ChangeLog.Change] = []
    /// Finished jobs retention deleted in this batch, for the census.
    var pruned: [(queue: String, state: JobState)] = []
    /// `backup` requests, started once the batch has committed (a failed batch answers
    /// them with the rest).
    var backups: [(path: String, id: String?, reply: ReplySink)] = []

    init(tx: StoreTransaction, wallNow: Int64, monotonicNow: Int64, leaseNow: Int64) {
        self.tx = tx
        self.wallNow = wallNow
        self.monotonicNow = monotonicNow
        self.leaseNow = leaseNow
        self.heardAt = leaseNow
    }

    /// The wall-clock time of a lease deadline, for replies.
    func wallTime(ofLease deadline: Int64) -> Int64 {
        self.wallNow + (deadline - self.leaseNow)
    }
}

/// A bulk change under way, and who waits for its answer.
struct BulkRun: Sendable {
    var progress: BulkChange.Progress
    var id: String?
    var reply: ReplySink
}

