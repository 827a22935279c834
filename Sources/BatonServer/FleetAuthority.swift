import BatonCore
import BatonPostgres
import BatonProtocol
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// The authority of one host in a fleet whose `batond` processes share a PostgreSQL store.
///
/// Where the SQLite ``Authority`` keeps leases, admission and sequences in memory as the one
/// writer, this one keeps nothing that must agree between hosts: tokens, ids and lease
/// deadlines come from the database, claims take rows with `FOR UPDATE SKIP LOCKED`, and
/// every fenced write is guarded by the token and the deadline on the database's clock. What
/// it keeps is this host's own: its connections' parked claims, its workers, its metrics.
///
/// Group commit works as on SQLite: requests that arrive while a transaction is in flight
/// are applied together in the next one, one commit answering them all, and no reply leaves
/// before its transaction has committed. The hot requests of a batch (enqueues, heartbeats,
/// completions, claims) are applied set-wise, one statement per kind for the whole batch.
///
/// All mutable state is confined to one driver task (``drive()``), which takes letters from
/// a mailbox: requests, closed connections, health and metrics requests, wake-ups that other
/// hosts announce over LISTEN/NOTIFY, and timers.
final class FleetAuthority: JobAuthority, @unchecked Sendable {
    // @unchecked: every `var` below is touched only by the driver task, one letter at a time.

    let loop: any EventLoop
    let clock: any AuthorityClock
    let store: PostgresStore
    /// This host's name in the fleet: on its leases, its job counts and the hosts table.
    let host: String
    let defaults: JobDefaults
    let retention: RetentionPolicy
    let limits: ProtocolLimits
    let logger: Logger
    let metrics: ServerMetrics
    let healthThresholds: HealthThresholds
    let changeLog: ChangeLog
    let attemptTracer: AttemptTracer
    let access: AccessControl
    /// How long one transaction may take before the database counts as unreachable: long
    /// enough for a slow disk's fsync, since a commit given up on is in doubt.
    let transactionTimeout: Duration
    let startedAt: Int64
    /// How often parked claims look for jobs without a wake-up: they are woken by
    /// announcements, so this only covers a lost one (or a listener reconnecting).
    let parkedLookMilliseconds: Int64
    /// Transactions this host runs at once, each on its own pooled connection: while one
    /// commits, the next applies. Each costs its statements whatever its size, so where
    /// the database shares the machine's cores, one (bigger) batch at a time goes further;
    /// across a network, a second overlaps one batch's round trips with the next's.
    let batchesInFlight: Int

    private let mailbox = FleetMailbox()
    private lazy var announcer = ReadyAnnouncer(store: self.store, logger: self.logger)
    private var driver: Task<Void, Never>?
    private var listener: Task<Void, Never>?

    var parked = ParkedClaims()
    var workers = WorkerRegistry()
    /// The jobs this host leased, by the connection that holds each; a read checks them
    /// against the store, since a lease may have run out and gone to another host.
    var held = LeaseHolders()
    /// Leases bound to processes that exited, for the next batch to end, by process.
    var abandoned: [Int32: [(id: Int64, token: FencingToken)]] = [:]
    /// Bulk changes under way, oldest first, and whether a batch takes a step of the first now:
    /// one step at a time, each in a batch of its own commit.
    var bulkRuns: [BulkRun] = []
    var bulkInFlight = false
    /// Connections whose process exited while batches ran, with its pid: a claim in one of
    /// those batches may have leased them a job, which is abandoned too.
    var exitedMeanwhile: [UInt64: Int32] = [:]
    var queueMetrics: [String: QueueMetrics] = [:]
    /// The job counts as of the last commit that read them, for the metrics endpoint.
    var lastCounts: [String: [JobState: Int]] = [:]
    var lastCommitAt: Int64?
    var phase = Phase.serving
    /// Since when (wall-clock milliseconds) the database has been unreachable, and why.
    var unreachable: (since: Int64, reason: String)?
    /// While unreachable: when (monotonic) to try the database again, and the wait after that.
    var retryAt: Int64 = 0
    var retryBackoff: Int64 = 50
    /// Queues other hosts announced ready jobs in, not yet offered to the parked claims.
    var announced: Set<String> = []
    /// The named limits that held this host's claims back, and the queues they held: offered
    /// again when a limit gives a place back (announced by whichever host freed it) or its
    /// window opens (on this host's monotonic clock). Each hold lasts until one of those,
    /// so they are bounded by the limits that hold jobs back now.
    var limitHolds = LimitHolds()
    /// Whether the listener hears announcements; while not, parked claims look more often.
    var listening = false
    /// Monotonic times of the next chores.
    var nextSweepAt: Int64 = 0
    var nextHeartbeatAt: Int64 = 0
    var nextPruneAt: Int64 = 0
    var nextParkedLookAt: Int64 = .max
    /// Requests not yet in a batch.
    var waiting: [Submission] = []
    var reports: [EventLoopPromise<HealthReport>] = []
    var scrapes: [EventLoopPromise<MetricsSnapshot>] = []
    var drained: [EventLoopPromise<Void>] = []
    var closing: EventLoopPromise<Void>?
    /// The lanes of job counts no batch running now holds (``FleetWork/lane``): one per
    /// batch that may yet start, and one more for the chores alone, so that a sweep with
    /// nothing else to do never holds up the requests that arrive while it runs.
    var freeLanes: [Int]
    /// How many batches run now.
    var inFlight: Int { self.batchesInFlight + 1 - self.freeLanes.count }
    /// Whether a batch of chores alone (no requests, parked claims or reports) runs now.
    var choresAloneInFlight = false
    /// Whether a batch with requests may start: fewer than `batchesInFlight` of them run.
    var requestsMayStart: Bool { self.inFlight - (self.choresAloneInFlight ? 1 : 0) < self.batchesInFlight }
    /// The connections with requests in the batches running now, with how many.
    var busyConnections: [UInt64: Int] = [:]
    /// Connections that closed while batches ran, whose lent parked claims are not taken back.
    var closedMeanwhile: Set<UInt64> = []
    /// Whether a batch running now does the chores, which one batch at a time does.
    var choresInFlight = false
    private var timer: Scheduled<Void>?
    private var timerDeadline: Int64 = .max

    enum Phase {
        case serving
        /// Stopping: new requests are refused with `shutting_down`.
        case draining
    }

    /// How often a host looks for overdue leases and due jobs when it knows of none sooner:
    /// the bound on how late a dead host's leases expire.
    static let sweepIntervalMilliseconds: Int64 = 250
    /// How often a host records that it is alive.
    static let heartbeatIntervalMilliseconds: Int64 = 5_000
    /// How long a host counts as alive after its last heartbeat.
    static let hostAliveMilliseconds: Int64 = 15_000
    /// The most overdue leases one batch expires.
    static let sweepLimit = 256

    init(
        loop: any EventLoop, store: PostgresStore, host: String, clock: any AuthorityClock, defaults: JobDefaults,
        retention: RetentionPolicy, limits: ProtocolLimits, logger: Logger, metrics: ServerMetrics,
        healthThresholds: HealthThresholds, access: AccessControl, parkedLookMilliseconds: Int64 = 1_000,
        batchesInFlight: Int = 1, transactionTimeout: Duration = .seconds(15), attemptTracer: AttemptTracer = AttemptTracer(isEnabled: false)
    ) {
        self.attemptTracer = attemptTracer
        self.batchesInFlight = max(batchesInFlight, 1)
        self.freeLanes = Array(0...self.batchesInFlight)
        self.parkedLookMilliseconds = parkedLookMilliseconds
        self.loop = loop
        self.store = store
        self.host = host
        self.clock = clock
        self.defaults = defaults
        self.retention = retention
        self.limits = limits
        self.logger = logger
        self.metrics = metrics
        self.healthThresholds = healthThresholds
        self.changeLog = ChangeLog(logger: logger)
        self.access = access
        self.transactionTimeout = transactionTimeout
        self.startedAt = clock.wallMilliseconds()
    }

    // MARK: JobAuthority

    /// Registers this host, starts the driver and the listener; the number of running jobs
    /// this host's leases hold (none survive a restart here: their workers renew them).
    func recover() -> EventLoopFuture<Int> {
        let promise = self.loop.makePromise(of: Int.self)
        promise.completeWithTask {
            let (host, startedAt) = (self.host, self.startedAt)
            let running = try await self.store.write(timeout: self.transactionTimeout) { tx in
                try await tx.hostSeen(host, startedAt: startedAt)
                return try await tx.jobCounts()
            }
            self.lastCounts = running
            for queue in running.keys { self.queueMetrics[queue] = QueueMetrics() }
            self.driver = Task(executorPreference: self.store.executor) { await self.drive() }
            self.listener = Task(executorPreference: self.store.executor) { await self.listen() }
            return running.values.reduce(0) { $0 + ($1[.running] ?? 0) }
        }
        return promise.futureResult
    }

    func submit(_ submissions: [Submission]) {
        self.mailbox.post(.submissions(submissions))
    }

    func connectionClosed(_ connection: ConnectionIdentity) {
        self.mailbox.post(.closed(connection))
    }

    func processExited(_ connection: ConnectionIdentity) {
        self.mailbox.post(.exited(connection))
    }

    func drain() -> EventLoopFuture<Void> {
        let promise = self.loop.makePromise(of: Void.self)
        self.mailbox.post(.drain(promise))
        return promise.futureResult
    }

    func health() -> EventLoopFuture<HealthReport> {
        let promise = self.loop.makePromise(of: HealthReport.self)
        self.mailbox.post(.health(promise))
        return promise.futureResult
    }

    func scrape() -> EventLoopFuture<MetricsSnapshot> {
        let promise = self.loop.makePromise(of: MetricsSnapshot.self)
        self.mailbox.post(.scrape(promise))
        return promise.futureResult
    }

    func closeStore() -> EventLoopFuture<Void> {
        let promise = self.loop.makePromise(of: Void.self)
        guard self.driver != nil else {
            promise.completeWithTask { await self.store.close() }
            return promise.futureResult
        }
        self.mailbox.post(.close(promise))
        return promise.futureResult
    }

    // MARK: The driver

    /// Takes the mailbox's letters and starts batches for what they ask, up to
    /// `batchesInFlight` at a time, until the store is closed.
    private func drive() async {
        while true {
            for letter in await self.mailbox.take() {
                switch letter {
                case .submissions(let submissions):
                    if case .serving = self.phase {
                        self.waiting += submissions
                    } else {
                        for submission in submissions {
                            submission.reply.succeed(
                                Outcome(line: Reply.failure(id: submission.id, BatonError(.shuttingDown, "batond is stopping"))))
                        }
                    }
                case .finished(let finished):
                    self.finished(finished)
                case .closed(let connection):
                    self.workers.disconnected(connection)
                    for waiter in self.parked.removeAll(of: connection) {
                        waiter.reply.succeed(Outcome(line: []))
                    }
                    if self.inFlight > 0 { self.closedMeanwhile.insert(connection.number) }
                case .exited(let connection):
                    // Not while stopping: batond closed those connections itself (see Authority).
                    guard case .serving = self.phase, let pid = connection.peer?.pid else { break }
                    self.abandoned[pid, default: []] += self.held.bound(to: pid, on: connection.number)
                    if self.inFlight > 0 { self.exitedMeanwhile[connection.number] = pid }
                case .health(let promise):
                    self.reports.append(promise)
                case .scrape(let promise):
                    self.scrapes.append(promise)
                case .announced(.ready(let queue)):
                    self.announced.insert(queue)
                case .announced(.limitFreed(let name)):
                    self.limitHolds.freed(name, into: &self.announced)
                case .listening(let listening):
                    self.listening = listening
                    // Announcements made while nobody listened are lost: look now. The
                    // look finds again what the limits hold back; what they held may be stale.
                    if listening {
                        self.nextParkedLookAt = 0
                        self.limitHolds.removeAll()
                    }
                case .tick:
                    self.timer = nil
                    self.timerDeadline = .max
                case .drain(let promise):
                    self.phase = .draining
                    // Each step is committed; the rest is not done, and the reply says so.
                    // The one whose step runs now is answered when that step has committed.
                    let stepping = self.bulkInFlight ? 1 : 0
                    for run in self.bulkRuns.dropFirst(stepping) {
                        run.reply.succeed(Outcome(line: Reply.bulk(id: run.id, run.progress, done: false)))
                    }
                    self.bulkRuns.removeLast(self.bulkRuns.count - min(stepping, self.bulkRuns.count))
                    for waiter in self.parked.removeAll() {
                        waiter.reply.succeed(Outcome(line: Reply.success(id: waiter.id) { $0.member("job", rawJSON: nil) }))
                    }
                    self.drained.append(promise)
                case .close(let promise):
                    self.closing = promise
                    // A change whose step never committed (the database was lost while
                    // stopping) is answered all the same: not done.
                    for run in self.bulkRuns { run.reply.succeed(Outcome(line: Reply.bulk(id: run.id, run.progress, done: false))) }
                    self.bulkRuns.removeAll()
                }
            }
            while !self.freeLanes.isEmpty, self.startBatch() {}
            if self.inFlight == 0 {
                self.closedMeanwhile.removeAll()
                self.exitedMeanwhile.removeAll()
                if self.waiting.isEmpty {
                    // Everything taken before the drain has committed and been answered.
                    for promise in self.drained { promise.succeed(()) }
                    self.drained.removeAll()
                }
                if let closing = self.closing {
                    self.timer?.cancel()
                    self.listener?.cancel()
                    await self.listener?.value
                    await self.store.close()
                    closing.succeed(())
                    return
                }
            }
            self.scheduleTimer()
        }
    }

    /// Starts a batch if anything asks for one: requests, a health or metrics request, a
    /// chore that is due, or jobs announced where claims are parked.
    ///
    /// A connection's requests never run in two batches at once: one that has requests in
    /// a batch in flight waits for it, so its requests apply in the order it sent them.
    /// The parked claims are lent to the batch, which serves what it can and hands the rest
    /// back.
    ///
    /// - Returns: whether it started one.
    private func startBatch() -> Bool {
        let now = self.clock.monotonicMilliseconds()
        for waiter in self.parked.removeTimedOut(now: now) {
            waiter.reply.succeed(Outcome(line: Reply.success(id: waiter.id) { $0.member("job", rawJSON: nil) }))
        }
        // A stopping host leaves the chores to the others: the drain waits for no chore.
        let serving = if case .serving = self.phase { true } else { false }
        let chores = serving && !self.choresInFlight
            && (now >= self.nextSweepAt || now >= self.nextHeartbeatAt || now >= self.nextPruneAt)
        guard self.requestsMayStart else {
            // Every lane for requests is taken: the chores may still start, alone.
            guard chores, self.unreachable == nil || now >= self.retryAt else { return false }
            self.launch(batch: [], reports: [], scrapes: [], lookFor: [], chores: true, now: now)
            return true
        }
        var batch: [Submission] = []
        var deferred: [Submission] = []
        for submission in self.waiting {
            if self.busyConnections[submission.connection.number] != nil {
                deferred.append(submission)
            } else {
                batch.append(submission)
            }
        }
        self.limitHolds.wake(now: now, into: &self.announced)
        var lookFor = self.announced.filter { queue in self.parked.waiters.contains { $0.request.queues.contains(queue) } }
        if !self.parked.isEmpty, now >= self.nextParkedLookAt {
            // The slow look: every parked queue, in case an announcement was lost.
            for waiter in self.parked.waiters { lookFor.formUnion(waiter.request.queues) }
        }
        let bulkDue = !self.bulkRuns.isEmpty && !self.bulkInFlight
        guard !batch.isEmpty || !self.reports.isEmpty || !self.scrapes.isEmpty || chores || !lookFor.isEmpty || !self.abandoned.isEmpty
            || bulkDue
        else { return false }
        self.waiting = deferred
        let (reports, scrapes) = (self.reports, self.scrapes)
        self.reports.removeAll()
        self.scrapes.removeAll()
        if let unreachable = self.unreachable, now < self.retryAt {
            // Not yet time to try the database again: answer at once, and start nothing.
            self.refuse(batch, reports: reports, scrapes: scrapes, reason: unreachable.reason)
            return false
        }
        self.announced.removeAll()
        self.launch(batch: batch, reports: reports, scrapes: scrapes, lookFor: lookFor, chores: chores, now: now)
        return true
    }

    /// Starts a batch of `batch`, with the chores that are due if `chores`, and the parked
    /// claims lent to it unless it is chores alone, on a free lane.
    private func launch(
        batch: [Submission], reports: [EventLoopPromise<HealthReport>], scrapes: [EventLoopPromise<MetricsSnapshot>],
        lookFor: Set<String>, chores: Bool, now: Int64
    ) {
        let serving = if case .serving = self.phase { true } else { false }
        var work = FleetWork(
            batch: batch, reports: reports.count, scrape: !scrapes.isEmpty, lookFor: lookFor,
            // Left for a batch with requests: a chores-alone batch must stay only that.
            parked: [], abandoned: self.requestsMayStart ? self.abandoned : [:],
            bulk: self.requestsMayStart && !self.bulkInFlight && serving ? self.bulkRuns.first?.progress : nil,
            sweep: chores && now >= self.nextSweepAt, heartbeat: chores && now >= self.nextHeartbeatAt,
            prune: chores && now >= self.nextPruneAt,
            policy: self.access.policy,
            view: DriverView(
                serving: { if case .serving = self.phase { true } else { false } }(), held: self.held, workers: self.workers,
                queueMetrics: self.queueMetrics, parkedClaims: 0,
                lastCommitAt: self.lastCommitAt, limitHolds: self.limitHolds),
            lane: self.freeLanes.removeLast()
        )
        if work.isChoresAlone {
            // It serves no parked claim: they stay parked for the next batch.
            self.choresAloneInFlight = true
        } else {
            work.parked = self.parked.removeAll()
            work.view.parkedClaims = work.parked.count
        }
        if chores { self.choresInFlight = true }
        // Ended in this batch, or, should it fail, when their leases run out as before.
        if !work.abandoned.isEmpty { self.abandoned.removeAll() }
        if work.bulk != nil { self.bulkInFlight = true }
        for submission in batch { self.busyConnections[submission.connection.number, default: 0] += 1 }
        let started = ContinuousClock.now
        let mailbox = self.mailbox
        let launched = work
        Task(executorPreference: self.store.executor) {
            var outcome: FinishedBatch.Outcome
            var attempt = 1
            var work = launched
            var choresFailed: String?
            while true {
                do {
                    let attempted = work
                    outcome = .committed(try await self.store.write(timeout: self.transactionTimeout) { tx in try await self.apply(attempted, tx) })
                } catch let error as PostgresUnavailable {
                    outcome = .unreachable(error.description)
                } catch where PostgresStore.isConflict(error) && attempt < 3 {
                    // Rolled back whole, as if never sent: run it again.
                    attempt += 1
                    continue
                } catch {
                    // PostgreSQL's errors describe themselves only when reflected.
                    let description = String(reflecting: error)
                    if work.hasChores && !work.isChoresAlone {
                        // A chore's failure never fails the requests: they run again without it.
                        choresFailed = description
                        work.withoutChores()
                        continue
                    }
                    outcome = .failed(description)
                }
                break
            }
            mailbox.post(
                .finished(
                    FinishedBatch(
                        work: launched, reports: reports, scrapes: scrapes, started: started, outcome: outcome,
                        choresFailed: choresFailed)))
        }
    }

    /// A batch has committed, or failed: answer it, and keep what it changed.
    private func finished(_ finished: FinishedBatch) {
        let work = finished.work
        self.freeLanes.append(work.lane)
        if work.hasChores { self.choresInFlight = false }
        if work.isChoresAlone { self.choresAloneInFlight = false }
        if work.bulk != nil { self.bulkInFlight = false }
        for submission in work.batch {
            let connection = submission.connection.number
            self.busyConnections[connection]! -= 1
            if self.busyConnections[connection] == 0 { self.busyConnections.removeValue(forKey: connection) }
        }
        switch finished.outcome {
        case .committed(let done):
            if let error = finished.choresFailed {
                self.logger.error("the chores failed and were rolled back; the requests ran without them", metadata: ["error": "\(error)"])
            }
            if let unreachable = self.unreachable {
                self.logger.notice(
                    "PostgreSQL answers again",
                    metadata: ["unreachable.ms": "\(max(self.clock.wallMilliseconds() - unreachable.since, 0))"])
                self.unreachable = nil
                self.retryBackoff = 50
            }
            self.committed(done, started: finished.started, work: work, reports: finished.reports, scrapes: finished.scrapes)
        case .unreachable(let reason):
            self.giveBack(work.parked)
            self.lostTheDatabase(reason)
            self.refuse(work.batch, reports: finished.reports, scrapes: finished.scrapes, reason: reason)
        case .failed(let error):
            // The transaction rolled back whole: nothing of the batch applied. Say so, and go on.
            self.giveBack(work.parked)
            self.logger.error("a batch failed and was rolled back", metadata: ["error": "\(error)"])
            // A chore that failed is tried again when it is next due, not at once.
            self.choresTried(work, now: self.clock.monotonicMilliseconds())
            let refusal = BatonError(.internal, "the batch failed and was rolled back, nothing of it applied: \(error)")
            if let progress = work.bulk, !self.bulkRuns.isEmpty {
                // Its step may be what failed: end the change rather than fail every batch.
                let run = self.bulkRuns.removeFirst()
                let message = "a step failed and was rolled back after \(progress.changed) jobs were changed: \(error)"
                run.reply.succeed(Outcome(line: Reply.failure(id: run.id, BatonError(.internal, message))))
            }
            for submission in work.batch {
                submission.reply.succeed(Outcome(line: Reply.failure(id: submission.id, refusal)))
            }
            let report = self.unreachableReport("a batch failed: \(error)")
            for promise in finished.reports { promise.succeed(report) }
            for promise in finished.scrapes { promise.succeed(self.metricsSnapshot(health: report)) }
        }
    }

    /// Parks again the claims a batch was lent and did not serve, ahead of newer ones;
    /// those whose connection closed meanwhile are dropped, and all are answered `job: null`
    /// once batond is stopping.
    private func giveBack(_ waiters: [ParkedClaims.Waiter]) {
        let kept = waiters.filter { waiter in
            guard case .serving = self.phase, !self.closedMeanwhile.contains(waiter.connection.number) else {
                waiter.reply.succeed(Outcome(line: Reply.success(id: waiter.id) { $0.member("job", rawJSON: nil) }))
                return false
            }
            return true
        }
        self.parked.restore(kept)
    }

    /// What a committed batch leaves behind: replies, parked claims, workers, metrics.
    private func committed(
        _ done: FleetBatch, started: ContinuousClock.Instant, work: FleetWork,
        reports: [EventLoopPromise<HealthReport>], scrapes: [EventLoopPromise<MetricsSnapshot>]
    ) {
        let now = self.clock.monotonicMilliseconds()
        if let progress = done.bulkProgress, !self.bulkRuns.isEmpty {
            let draining = if case .draining = self.phase { true } else { false }
            if progress.isDone || draining {
                let run = self.bulkRuns.removeFirst()
                run.reply.succeed(Outcome(line: Reply.bulk(id: run.id, progress, done: progress.isDone)))
            } else {
                self.bulkRuns[0].progress = progress
            }
        }
        if case .serving = self.phase {
            self.bulkRuns += done.bulkStarted
        } else {
            for run in done.bulkStarted { run.reply.succeed(Outcome(line: Reply.bulk(id: run.id, run.progress, done: false))) }
        }
        let commit = ContinuousClock.now - started
        self.metrics.commitTime.recordNanoseconds(commit.components.seconds * 1_000_000_000 + commit.components.attoseconds / 1_000_000_000)
        if !work.batch.isEmpty { self.metrics.batchSize.record(work.batch.count) }
        self.lastCommitAt = self.clock.wallMilliseconds()
        if let counts = done.counts { self.lastCounts = counts }
        // The database's clock, read by the batch, turned into this host's monotonic time.
        let monotonic = { (databaseTime: Int64) in now + max(databaseTime - done.now, 0) }
        self.choresTried(work, now: now, prunedFull: done.prunedFull)
        if let due = done.nextDue {
            self.nextSweepAt = min(self.nextSweepAt, monotonic(due))
        }
        if !work.lookFor.isEmpty || self.nextParkedLookAt == 0 {
            self.nextParkedLookAt = now + (self.listening ? self.parkedLookMilliseconds : self.parkedLookMilliseconds / 4)
        }
        for (connection, name) in done.workersSeen {
            self.workers.seen(connection, name: name, now: done.now)
        }
        for connection in done.workersRenewed {
            self.workers.renewed(on: connection, now: done.now)
        }
        for grant in done.granted {
            if grant.claimed {
                self.held.claimed(grant.job, token: grant.token, connection: grant.connection, process: grant.process)
                if let pid = grant.process, self.exitedMeanwhile[grant.connection] == pid {
                    self.abandoned[pid, default: []].append((grant.job, grant.token))
                }
            } else {
                self.held.renewed(grant.job, token: grant.token, connection: grant.connection, process: grant.process)
            }
        }
        for job in done.ended { self.held.ended(job) }
        for move in done.breakerMoves {
            CircuitBreaker.report(move.transition, of: move.name, kind: move.kind, byHand: move.byHand, to: self.logger, metrics: self.metrics)
        }
        let served = Set(done.servedParked.map { ObjectIdentifier($0.reply.futureResult) })
        self.giveBack(work.parked.filter { !served.contains(ObjectIdentifier($0.reply.futureResult)) })
        for waiter in done.parking {
            if case .serving = self.phase {
                self.parked.park(waiter)
            } else {
                waiter.reply.succeed(Outcome(line: Reply.success(id: waiter.id) { $0.member("job", rawJSON: nil) }))
            }
        }
        if self.parked.count > 0, self.nextParkedLookAt == .max {
            self.nextParkedLookAt = now + self.parkedLookMilliseconds
        }
        for hold in done.limitHolds {
            self.limitHolds.hold(LimitHolds.Hold(name: hold.name, queues: hold.queues, wakeAt: hold.wakeAt.map(monotonic)))
        }
        for name in done.freedLimits { self.limitHolds.freed(name, into: &self.announced) }
        self.metrics.parkedClaims.set(self.parked.count)
        self.metrics.leases.set(self.held.count)
        for change in done.changes {
            guard let queue = change.queue else { continue }
            self.queueMetrics[queue, default: QueueMetrics()].count(change)
        }
        self.changeLog.write(done.changes)
        self.attemptTracer.emit(done.changes, traces: done.traces)
        // This host's claims parked meanwhile look at once; every other host's when told.
        self.announced.formUnion(done.readyQueues)
        self.announcer.announce(done.readyQueues, freedLimits: done.freedLimits)
        for reply in done.replies {
            reply.sink.succeed(reply.outcome)
        }
        for (promise, report) in zip(reports, done.reports) {
            var report = report
            report.parkedClaims = self.parked.count
            report.lastCommitAgeMilliseconds = 0
            promise.succeed(report)
        }
        for promise in scrapes { promise.succeed(self.metricsSnapshot(health: done.health, limits: done.limits)) }
    }

    /// Schedules the next round of the chores `work` did, or tried.
    private func choresTried(_ work: FleetWork, now: Int64, prunedFull: Bool = false) {
        if work.sweep { self.nextSweepAt = now + Self.sweepIntervalMilliseconds }
        if work.heartbeat { self.nextHeartbeatAt = now + Self.heartbeatIntervalMilliseconds }
        if work.prune { self.nextPruneAt = now + (prunedFull ? 10 : self.retention.intervalMilliseconds) }
    }

    /// The database could not be reached: health turns `failing` and requests are answered
    /// `unavailable` until a retry, with backoff, reaches it again.
    private func lostTheDatabase(_ reason: String) {
        let now = self.clock.monotonicMilliseconds()
        if self.unreachable == nil {
            self.unreachable = (self.clock.wallMilliseconds(), reason)
            self.logger.error("PostgreSQL is unreachable: requests are answered unavailable", metadata: ["error": "\(reason)"])
        } else {
            self.unreachable?.reason = reason
            self.retryBackoff = min(self.retryBackoff * 2, 2_000)
        }
        self.retryAt = now + self.retryBackoff
    }

    /// Answers a batch the database cannot take now.
    private func refuse(
        _ batch: [Submission], reports: [EventLoopPromise<HealthReport>], scrapes: [EventLoopPromise<MetricsSnapshot>], reason: String
    ) {
        let refusal = BatonError(
            .unavailable,
            "the job store cannot be reached (\(reason)); the request was not applied, unless the store was lost as it committed: "
                + "retry later, as after a lost connection")
        for submission in batch {
            if case .health = submission.request {
                // The health op answers, and its answer is that batond is failing.
                let report = self.unreachableReport(reason)
                submission.reply.succeed(Outcome(line: Reply.success(id: submission.id) { $0.health(report) }))
                continue
            }
            submission.reply.succeed(Outcome(line: Reply.failure(id: submission.id, refusal)))
        }
        for promise in reports { promise.succeed(self.unreachableReport(reason)) }
        for promise in scrapes { promise.succeed(self.metricsSnapshot(health: self.unreachableReport(reason))) }
    }

    private func unreachableReport(_ reason: String) -> HealthReport {
        var report = HealthReport()
        let since = self.unreachable.map { max(self.clock.wallMilliseconds() - $0.since, 0) / 1_000 } ?? 0
        report.flag(.failing, "PostgreSQL is unreachable for \(since) s: \(reason)")
        report.parkedClaims = self.parked.count
        report.lastCommitAgeMilliseconds = self.lastCommitAt.map { max(self.clock.wallMilliseconds() - $0, 0) }
        return report
    }

    /// The metrics as of the last commit, with `health` as the batch that took them judged
    /// it and the named limits it read.
    func metricsSnapshot(health: HealthReport?, limits: [NamedLimits.Use] = []) -> MetricsSnapshot {
        MetricsSnapshot(
            serverWide: self.metrics.exposition(), queues: self.queueMetrics, jobs: self.lastCounts, limits: limits, health: health)
    }

    /// Wakes the driver for the next parked-claim timeout or chore.
    ///
    /// Everything a timer is for starts a batch, so what cannot start now (the chores while
    /// they run, the rest while every lane for requests is taken) waits for the commit that
    /// frees it: a timer already due would only wake the driver again and again until then.
    private func scheduleTimer() {
        guard case .serving = self.phase else { return }
        let now = self.clock.monotonicMilliseconds()
        var deadline = self.choresInFlight ? Int64.max : min(self.nextSweepAt, self.nextHeartbeatAt, self.nextPruneAt)
        if self.requestsMayStart {
            if let waiter = self.parked.nextDeadline { deadline = min(deadline, waiter) }
            if !self.parked.isEmpty { deadline = min(deadline, self.nextParkedLookAt, self.limitHolds.nextWakeup ?? .max) }
        }
        // While the database is unreachable, nothing starts before the next try.
        if self.unreachable != nil { deadline = max(deadline, self.retryAt) }
        guard deadline < self.timerDeadline || self.timer == nil else { return }
        self.timer?.cancel()
        self.timerDeadline = deadline
        let mailbox = self.mailbox
        self.timer = self.loop.scheduleTask(in: .milliseconds(max(deadline - now, 0))) {
            mailbox.post(.tick)
        }
    }

    // MARK: Wake-ups from other hosts

    /// Listens for the queues other hosts (and this one) announce ready jobs in, and hands
    /// them to the driver; reconnects with backoff when the connection is lost.
    private func listen() async {
        var backoff: Duration = .milliseconds(50)
        let mailbox = self.mailbox
        while !Task.isCancelled {
            do {
                try await self.store.listenForWakeups(listening: { mailbox.post(.listening(true)) }) { wakeup in
                    mailbox.post(.announced(wakeup))
                }
                backoff = .milliseconds(50)
            } catch {
                if Task.isCancelled { break }
                self.logger.debug("the listener lost PostgreSQL; parked claims look on a timer meanwhile", metadata: ["error": "\(error)"])
            }
            mailbox.post(.listening(false))
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, .seconds(2))
        }
    }
}

/// Letters to the fleet authority's driver.
final class FleetMailbox: Sendable {
    enum Letter: Sendable {
        case submissions([Submission])
        case closed(ConnectionIdentity)
        /// A closed connection's process has exited.
        case exited(ConnectionIdentity)
        case health(EventLoopPromise<HealthReport>)
        case scrape(EventLoopPromise<MetricsSnapshot>)
        case drain(EventLoopPromise<Void>)
        case close(EventLoopPromise<Void>)
        /// Another host (or this one) made jobs ready in a queue, or freed a named limit.
        case announced(PostgresStore.Wakeup)
        case listening(Bool)
        /// A timer: something may be due.
        case tick
        /// A batch committed or failed.
        case finished(FinishedBatch)
    }

    private struct State {
        var letters: [Letter] = []
        var waiter: CheckedContinuation<[Letter], Never>?
    }

    private let state = NIOLockedValueBox(State())

    /// Posts a letter; safe from any thread.
    func post(_ letter: Letter) {
        let waiter = self.state.withLockedValue { state -> CheckedContinuation<[Letter], Never>? in
            state.letters.append(letter)
            guard let waiter = state.waiter else { return nil }
            state.waiter = nil
            return waiter
        }
        if let waiter {
            waiter.resume(returning: self.takeAll())
        }
    }

    /// Every letter posted so far, waiting for one if there are none.
    func take() async -> [Letter] {
        await withCheckedContinuation { continuation in
            let ready = self.state.withLockedValue { state -> Bool in
                if state.letters.isEmpty {
                    state.waiter = continuation
                    return false
                }
                return true
            }
            if ready { continuation.resume(returning: self.takeAll()) }
        }
    }

    private func takeAll() -> [Letter] {
        self.state.withLockedValue { state in
            defer { state.letters.removeAll(keepingCapacity: true) }
            return state.letters
        }
    }
}

/// A batch that has run, with what it was given and how it ended.
struct FinishedBatch: Sendable {
    enum Outcome: Sendable {
        case committed(FleetBatch)
        case unreachable(String)
        case failed(String)
    }

    var work: FleetWork
    var reports: [EventLoopPromise<HealthReport>]
    var scrapes: [EventLoopPromise<MetricsSnapshot>]
    var started: ContinuousClock.Instant
    var outcome: Outcome
    /// Why the chores failed, when the batch ran again without them.
    var choresFailed: String?
}

/// Sends the wake-ups of committed batches to every host, one statement at a time: queues
/// that gain jobs while one is on its way go together in the next.
final class ReadyAnnouncer: Sendable {
    private let store: PostgresStore
    private let logger: Logger
    private struct State {
        var readyQueues: Set<String> = []
        var freedLimits: Set<String> = []
        var sending = false
    }
    private let state = NIOLockedValueBox(State())

    init(store: PostgresStore, logger: Logger) {
        self.store = store
        self.logger = logger
    }

    func announce(_ queues: Set<String>, freedLimits: Set<String>) {
        guard !queues.isEmpty || !freedLimits.isEmpty else { return }
        let start = self.state.withLockedValue { state -> Bool in
            state.readyQueues.formUnion(queues)
            state.freedLimits.formUnion(freedLimits)
            guard !state.sending else { return false }
            state.sending = true
            return true
        }
        guard start else { return }
        Task(executorPreference: self.store.executor) {
            while true {
                let (queues, limits) = self.state.withLockedValue { state -> (Set<String>, Set<String>) in
                    defer {
                        state.readyQueues.removeAll()
                        state.freedLimits.removeAll()
                    }
                    if state.readyQueues.isEmpty && state.freedLimits.isEmpty { state.sending = false }
                    return (state.readyQueues, state.freedLimits)
                }
                guard !queues.isEmpty || !limits.isEmpty else { return }
                do {
                    try await self.store.announce(readyQueues: queues, freedLimits: limits)
                } catch {
                    // Parked claims elsewhere find the jobs by their slow look instead.
                    self.logger.debug("a wake-up was not sent", metadata: ["error": "\(error)"])
                }
            }
        }
    }
}
