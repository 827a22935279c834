import BatonProtocol
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle
import Tracing

/// Runs a handler on jobs from some queues, up to a number at a time, and does the lease
/// bookkeeping that makes that safe.
///
/// - It claims with long-poll only when it has room for another job.
/// - It heartbeats each lease at a third of its period, and cancels the handler's task the
///   moment a heartbeat says the lease is gone (expired, or the job cancelled or paused): the
///   handler sees ordinary task cancellation, and its late result is not reported.
/// - It completes the job when the handler returns and fails it when the handler throws,
///   with the error's description as the job's `last_error` (``PermanentFailure``: for
///   good, without retries). A handler built with `completing:` returns a ``Completion``:
///   its result and follow-up jobs commit with the completion. A completion also leases
///   the slot's next job (`complete` with `claim`): a busy worker makes one request per job.
/// - As a swift-service-lifecycle `Service`, on graceful shutdown it stops claiming, lets
///   running handlers finish within ``Configuration/shutdownGracePeriod``, then cancels
///   and releases what is left: no attempt is spent and no job waits for a lease to expire.
///
/// ```swift
/// let worker = Worker(client: client, configuration: .init(queues: ["embed"], concurrency: 4)) { job in
///     let document = try job.payload(as: Document.self)
///     try await embed(document)
/// }
/// try await ServiceGroup(services: [worker], gracefulShutdownSignals: [.sigterm], logger: logger).run()
/// ```
public struct Worker<WorkerClock: Clock<Duration>>: Service {
    /// How the worker claims and looks after its jobs.
    public struct Configuration: Sendable {
        /// The queues to take jobs from.
        public var queues: [String]
        /// Jobs run at once, at most.
        public var concurrency: Int
        /// A name for this worker, shown by `get`.
        public var name: String?
        /// The lease period to ask for; by default each job's own.
        public var leaseDuration: Duration?
        /// How long one claim waits for a job before asking again.
        public var claimWait: Duration
        /// How often to heartbeat; by default a third of the lease.
        public var heartbeatInterval: Duration?
        /// How long running handlers may go on after a graceful shutdown begins.
        public var shutdownGracePeriod: Duration

        /// A configuration; see each property for its default.
        public init(
            queues: [String], concurrency: Int = 1, name: String? = nil, leaseDuration: Duration? = nil,
            claimWait: Duration = .seconds(30), heartbeatInterval: Duration? = nil,
            shutdownGracePeriod: Duration = .seconds(30)
        ) {
            self.queues = queues
            self.concurrency = max(concurrency, 1)
            self.name = name
            self.leaseDuration = leaseDuration
            self.claimWait = claimWait
            self.heartbeatInterval = heartbeatInterval
            self.shutdownGracePeriod = shutdownGracePeriod
        }
    }

    /// The work to do for one job.
    public typealias Handler = @Sendable (JobContext) async throws -> Void
    /// The work to do for one job, ending with its result and follow-ups.
    public typealias CompletingHandler = @Sendable (JobContext) async throws -> Completion

    /// The client the worker claims through.
    public let client: BatonClient
    /// How the worker claims and looks after its jobs.
    public let configuration: Configuration
    private let clock: WorkerClock
    private let logger: Logger
    private let handler: CompletingHandler

    /// A worker that measures heartbeat intervals and the shutdown grace on `clock`.
    /// 
    /// - Parameters:
    ///   - client: the connection to claim through.
    ///   - configuration: queues, concurrency, timings.
    ///   - clock: the clock for heartbeats and grace periods.
    ///   - logger: for failures and lost leases.
    ///   - completing: the work to do for one job, returning its result and follow-ups;
    ///     throw to fail the attempt.
    @_disfavoredOverload  // a trailing closure that returns nothing is a `handler`
    public init(
        client: BatonClient, configuration: Configuration, clock: WorkerClock,
        logger: Logger = Logger(label: "baton.worker"), completing: @escaping CompletingHandler
    ) {
        self.client = client
        self.configuration = configuration
        self.clock = clock
        self.logger = logger
        self.handler = completing
    }

    /// A worker whose handler completes its job with no result when it returns.
    public init(
        client: BatonClient, configuration: Configuration, clock: WorkerClock,
        logger: Logger = Logger(label: "baton.worker"), handler: @escaping Handler
    ) {
        self.init(client: client, configuration: configuration, clock: clock, logger: logger) { job in
            try await handler(job)
            return .done
        }
    }

    /// Claims and runs jobs until graceful shutdown (or cancellation), then returns once
    /// every job it held is completed, failed or released.
    public func run() async throws {
        let slots = Slots(self.configuration.concurrency)
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                // Claim only when there is room for another job.
                while !Task.isCancelled, await slots.acquire() {
                    guard let lease = await self.claim() else {
                        slots.release()
                        continue
                    }
                    group.addTask {
                        // Each completion brings the slot's next job when one is ready; the
                        // slot goes back to waiting claims only when none was.
                        var next: Lease? = lease
                        while let lease = next {
                            next = await self.process(lease, claimingNext: !slots.isClosed)
                            if let unwanted = next, slots.isClosed {
                                // Shutdown began while the completion was on its way.
                                try? await unwanted.release()
                                next = nil
                            }
                        }
                        slots.release()
                    }
                }
            }
        } onGracefulShutdown: {
            slots.close()
        }
    }

    /// Claims one job, or returns `nil` (no job within the wait, an error, or shutdown).
    private func claim() async -> Lease? {
        do {
            // A shutdown cancels a waiting claim at once; a job the server hands out after
            // that is released by the client, not left to its lease.
            return try await cancelWhenGracefulShutdown {
                try await self.client.claim(
                    queues: self.configuration.queues, wait: self.configuration.claimWait,
                    leaseDuration: self.configuration.leaseDuration, worker: self.configuration.name
                )
            }
        } catch is CancellationError {
            return nil
        } catch {
            self.logger.warning("claim failed", metadata: ["error": "\(error)"])
            try? await self.clock.sleep(for: .milliseconds(200))
            return nil
        }
    }

    private enum Ending: Sendable {
        case returned(Completion)
        case threw(String, permanent: Bool)
        case leaseLost(BatonError)
        case shutdown
    }

    /// What `last_error` keeps of a handler's error (PROTOCOL.md): a `PermanentFailure`'s
    /// reason, else `Type: description`, within 2,000 bytes. Swift errors carry no stack.
    static func describeFailure(_ error: any Error) -> String {
        let text = error is PermanentFailure ? String(describing: error) : "\(type(of: error)): \(error)"
        guard text.utf8.count > 2_000 else { return text }
        // A character cut in two decodes as a replacement character: drop it.
        var cut = String(decoding: text.utf8.prefix(1_995), as: UTF8.self)
        while cut.last == "\u{FFFD}" { cut.removeLast() }
        return cut + "\n..."
    }

    /// Runs the handler under the lease, then reports how it ended.
    ///
    /// - Returns: the next job, leased with the completion when `claimingNext` is set.
    private func process(_ lease: Lease, claimingNext: Bool) async -> Lease? {
        let ending = await withTaskGroup(of: Ending?.self) { group -> Ending in
            group.addTask {
                do {
                    return .returned(try await self.handleInSpan(lease))
                } catch {
                    return .threw(Self.describeFailure(error), permanent: error is PermanentFailure)
                }
            }
            group.addTask { await self.keepAlive(lease) }
            group.addTask { await self.shutdownDeadline() }
            var ending = Ending.returned(.done)
            while let next = await group.next() {
                if let next {
                    ending = next
                    break
                }
            }
            // The first to end decides; the others (the handler, if the lease was lost) are
            // cancelled and their results ignored.
            group.cancelAll()
            return ending
        }
        let metadata: Logger.Metadata = ["job.id": "\(lease.jobID)", "lease.token": "\(lease.token)"]
        do {
            if Task.isCancelled, case .threw = ending {
                // The worker itself was cancelled, not the job's fault: hand it back.
                try await lease.release()
                return nil
            }
            switch ending {
            case .returned(let completion) where claimingNext && !Task.isCancelled:
                return try await lease.complete(
                    completion, claimingNextFrom: self.configuration.queues, leaseDuration: self.configuration.leaseDuration,
                    worker: self.configuration.name
                )
            case .returned(let completion):
                try await lease.complete(completion)
            case .threw(let error, let permanent):
                try await lease.fail(error, retry: !permanent)
                self.logger.info("handler failed", metadata: metadata.merging(["error": "\(error)", "permanent": "\(permanent)"]) { $1 })
            case .leaseLost(let error):
                self.logger.info("lease lost or job cancelled; handler cancelled", metadata: metadata.merging(["error": "\(error)"]) { $1 })
            case .shutdown:
                try await lease.release()
                self.logger.info("released at shutdown", metadata: metadata)
            }
        } catch let error as BatonError where ClientContract.leaseEndingCodes.contains(error.code) {
            // Cancelled, paused or expired before the handler's end could be reported: being
            // stopped is not a failure, and there is nothing left to report.
            self.logger.info("the job was no longer this worker's to report", metadata: metadata.merging(["error": "\(error)"]) { $1 })
        } catch {
            self.logger.warning("could not report the job's end", metadata: metadata.merging(["error": "\(error)"]) { $1 })
        }
        return nil
    }

    /// Runs the handler in a consumer span whose parent is the producer's trace context,
    /// current while it runs; a thrown error is recorded on the span.
    private func handleInSpan(_ lease: Lease) async throws -> Completion {
        try await withSpan("process \(lease.queue)", context: JobTracing.context(of: lease.trace), ofKind: .consumer) { span in
            span.attributes["messaging.system"] = "baton"
            span.attributes["messaging.operation.type"] = "process"
            span.attributes["messaging.destination.name"] = lease.queue
            span.attributes["messaging.message.id"] = "\(lease.jobID)"
            span.attributes["baton.job.attempt"] = lease.attempt
            span.attributes["baton.lease.token"] = Int(lease.token.rawValue)
            let trace = JobTracing.recorded() ?? lease.trace
            return try await JobTracing.$handling.withValue(trace) {
                // Follow-ups are sent after the span ends: they name it now.
                try await self.handler(JobContext(lease: lease)).fixingTraces()
            }
        }
    }

    /// Heartbeats until cancelled; returns when the lease is found lost.
    private func keepAlive(_ lease: Lease) async -> Ending? {
        let interval = self.configuration.heartbeatInterval ?? lease.leaseDuration / 3
        while true {
            do {
                try await self.clock.sleep(for: interval)
            } catch {
                return nil
            }
            do {
                try await lease.heartbeat()
            } catch let error as BatonError where ClientContract.leaseEndingCodes.contains(error.code) {
                return .leaseLost(error)
            } catch is CancellationError {
                return nil
            } catch {
                // The connection is down; the client is reconnecting. Try again next beat.
                self.logger.debug("heartbeat failed", metadata: ["job.id": "\(lease.jobID)", "error": "\(error)"])
            }
        }
    }

    /// Ends the job's run once a graceful shutdown has lasted the grace period.
    private func shutdownDeadline() async -> Ending? {
        do {
            try await gracefulShutdown()
            try await self.clock.sleep(for: self.configuration.shutdownGracePeriod)
            return .shutdown
        } catch {
            return nil
        }
    }
}

extension Worker where WorkerClock == ContinuousClock {
    /// A worker on the continuous clock.
    public init(
        client: BatonClient, configuration: Configuration,
        logger: Logger = Logger(label: "baton.worker"), handler: @escaping Handler
    ) {
        self.init(client: client, configuration: configuration, clock: ContinuousClock(), logger: logger, handler: handler)
    }

    /// A worker on the continuous clock whose handler returns each job's ``Completion``.
    @_disfavoredOverload  // a trailing closure that returns nothing is a `handler`
    public init(
        client: BatonClient, configuration: Configuration,
        logger: Logger = Logger(label: "baton.worker"), completing: @escaping CompletingHandler
    ) {
        self.init(client: client, configuration: configuration, clock: ContinuousClock(), logger: logger, completing: completing)
    }
}

extension BatonClient {
    /// Runs `handler` on jobs from `queues`, up to `concurrency` at a time, until the task
    /// is cancelled or a graceful shutdown ends it; see ``Worker``.
    public func work(
        queues: [String], concurrency: Int = 1, handler: @escaping Worker<ContinuousClock>.Handler
    ) async throws {
        try await Worker(client: self, configuration: .init(queues: queues, concurrency: concurrency), handler: handler).run()
    }
}

/// Room for jobs: a counting semaphore that can be closed, which wakes every waiter.
private final class Slots: Sendable {
    private struct State {
        var free: Int
        var closed = false
        var waiters: [CheckedContinuation<Bool, Never>] = []
    }

    private let state: NIOLockedValueBox<State>

    init(_ count: Int) {
        self.state = NIOLockedValueBox(State(free: count))
    }

    /// Waits for a free slot; `false` once the slots are closed.
    func acquire() async -> Bool {
        await withCheckedContinuation { continuation in
            let answer = self.state.withLockedValue { state -> Bool? in
                if state.closed { return false }
                if state.free > 0 {
                    state.free -= 1
                    return true
                }
                state.waiters.append(continuation)
                return nil
            }
            if let answer { continuation.resume(returning: answer) }
        }
    }

    func release() {
        let waiter = self.state.withLockedValue { state -> CheckedContinuation<Bool, Never>? in
            if state.waiters.isEmpty {
                state.free += 1
                return nil
            }
            return state.waiters.removeFirst()
        }
        waiter?.resume(returning: true)
    }

    /// Whether a graceful shutdown has closed the slots.
    var isClosed: Bool {
        self.state.withLockedValue { $0.closed }
    }

    func close() {
        let waiters = self.state.withLockedValue { state -> [CheckedContinuation<Bool, Never>] in
            state.closed = true
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(returning: false) }
    }
}
