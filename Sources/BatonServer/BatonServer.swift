import BatonCore
import BatonPostgres
import BatonProtocol
import BatonStore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOExtras
import NIOPosix
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

/// `batond` as a service: the store, the authority and the unix-socket listener.
///
/// Run it in a `ServiceGroup`. On graceful shutdown it stops accepting connections,
/// refuses new requests with `shutting_down`, answers parked claims with `job: null`,
/// lets every request already taken commit and be answered, then closes the store.
public final class BatonServer: Service {
    public let configuration: ServerConfiguration
    private let clock: any AuthorityClock
    private let logger: Logger
    private let fatalError = NIOLockedValueBox<(any Error)?>(nil)
    private let running = NIOLockedValueBox<(any JobAuthority)?>(nil)
    /// Open client connections, for the status line.
    private let openConnections = NIOLockedValueBox(0)
    private let events: ServerEvents
    /// The server's metrics, which ``metricsExposition()`` and the `metrics` op read.
    public let metrics = ServerMetrics()
    /// The access policy in force, read from `configuration.policyPath` at start.
    public let access = AccessControl()

    /// What the server tells its supervisor (systemd, in `batond`) as it starts and stops.
    public struct ServerEvents: Sendable {
        /// Before recovery, which can take a while on a large store.
        public var recovering: @Sendable () -> Void
        /// The store is open and recovered and the socket is served; with a status line.
        public var ready: @Sendable (String) -> Void
        /// A graceful shutdown has begun.
        public var stopping: @Sendable () -> Void

        public init(
            recovering: @escaping @Sendable () -> Void = {},
            ready: @escaping @Sendable (String) -> Void = { _ in },
            stopping: @escaping @Sendable () -> Void = {}
        ) {
            self.recovering = recovering
            self.ready = ready
            self.stopping = stopping
        }
    }

    public init(
        configuration: ServerConfiguration, clock: any AuthorityClock = SystemClock(), logger: Logger,
        events: ServerEvents = ServerEvents()
    ) {
        self.configuration = configuration
        self.clock = clock
        self.logger = logger
        self.events = events
    }

    #if BATON_FAULT_INJECTION
    /// Test builds only: blocks the authority's thread for good, as a hung store would,
    /// so that tests can check that the watchdog stops pinging. Release builds do not
    /// contain it.
    public func stallAuthorityForTesting() {
        guard let authority = self.running.withLockedValue({ $0 }) else { return }
        authority.loop.execute {
            while true { sleep(3_600) }
        }
    }
    #endif

    /// The server's health, judged on the authority's own thread (see ``HealthReport``);
    /// `nil` before the server is ready. A stuck authority never answers, so a caller must
    /// bound the wait (the watchdog does).
    public func health() async -> HealthReport? {
        guard let authority = self.running.withLockedValue({ $0 }) else { return nil }
        return try? await authority.health().get()
    }

    /// What the watchdog asks: a status line while the server is `ok` or `degraded`, `nil`
    /// when it is `failing` or does not answer.
    public func probe() async -> String? {
        guard let report = await self.health(), report.verdict != .failing else { return nil }
        return report.summary + ", \(self.openConnections.withLockedValue { $0 }) connections"
    }

    /// Reads the policy file again and puts it in force (batond does this on SIGHUP). A file
    /// that cannot be used is refused with a log line, and the policy in force stays.
    public func reloadPolicy() {
        guard let path = self.configuration.policyPath else {
            self.logger.notice("nothing to reload: batond runs without an access policy")
            return
        }
        do {
            let policy = try AccessPolicy.load(contentsOf: path)
            self.access.replace(with: policy)
            self.logger.notice("access policy reloaded", metadata: ["policy": "\(path)", "grants": "\(policy.grants.count)"])
        } catch {
            self.logger.error(
                "access policy not reloaded: the one in force stays", metadata: ["policy": "\(path)", "error": "\(error)"])
        }
    }

    public func run() async throws {
        let configuration = self.configuration
        if let path = configuration.policyPath {
            // A policy that does not parse stops the start: running open would be worse.
            let policy = try AccessPolicy.load(contentsOf: path)
            self.access.replace(with: policy)
            self.logger.info("access policy in force", metadata: ["policy": "\(path)", "grants": "\(policy.grants.count)"])
        }
        if configuration.inheritedSocket == nil {
            try Self.checkSocketPath(configuration.socketPath)
        }
        let authorityGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let connectionGroup = MultiThreadedEventLoopGroup(numberOfThreads: max(configuration.connectionThreads, 1))
        do {
            try await self.serve(authorityGroup: authorityGroup, connectionGroup: connectionGroup)
        } catch {
            try? await connectionGroup.shutdownGracefully()
            try? await authorityGroup.shutdownGracefully()
            throw error
        }
        try await connectionGroup.shutdownGracefully()
        try await authorityGroup.shutdownGracefully()
        if let error = self.fatalError.withLockedValue({ $0 }) {
            throw error
        }
        self.logger.info("batond stopped")
    }

    /// The authority over the configured store: a PostgreSQL fleet's host for a
    /// `postgres://` location, else the single writer over a SQLite file.
    private func makeAuthority(
        loop: any EventLoop, onFatalError: @escaping @Sendable (any Error) -> Void
    ) async throws -> (authority: any JobAuthority, durability: String) {
        let configuration = self.configuration
        if PostgresLocation.isLocation(configuration.storePath) {
            // The authority's loop carries the store's connections: a batch and its statements share a thread.
            let store = try await PostgresStore.open(try PostgresLocation(configuration.storePath), on: loop, logger: self.logger)
            let authority = FleetAuthority(
                loop: loop, store: store, host: configuration.hostName, clock: self.clock, defaults: configuration.jobDefaults,
                retention: configuration.retention, limits: configuration.limits, logger: self.logger, metrics: self.metrics,
                healthThresholds: configuration.health, access: self.access,
                parkedLookMilliseconds: configuration.parkedLookMilliseconds, batchesInFlight: configuration.batchesInFlight,
                attemptTracer: AttemptTracer(isEnabled: configuration.tracesAttempts)
            )
            return (authority, store.durability)
        }
        // The store holds every payload and live token: whatever the umask, the files
        // SQLite creates (the database, its WAL and shared memory) and the owner lock are
        // readable by batond's user alone. No other thread runs yet, so the process-wide
        // mask is set only around the opening.
        let umaskBefore = umask(0o077)
        let store: JobStore
        do {
            store = try JobStore(path: configuration.storePath, durability: configuration.durability)
            umask(umaskBefore)
        } catch {
            umask(umaskBefore)
            throw error
        }
        let authority = Authority(
            loop: loop, store: store, clock: self.clock, defaults: configuration.jobDefaults,
            retention: configuration.retention, limits: configuration.limits, logger: self.logger,
            metrics: self.metrics, healthThresholds: configuration.health, access: self.access, host: configuration.hostName,
            attemptTracer: AttemptTracer(isEnabled: configuration.tracesAttempts), onFatalError: onFatalError
        )
        return (authority, configuration.durability.rawValue)
    }

    private func serve(authorityGroup: MultiThreadedEventLoopGroup, connectionGroup: MultiThreadedEventLoopGroup) async throws {
        let configuration = self.configuration
        let quiesce = ServerQuiescingHelper(group: connectionGroup)
        // The authority reaches the helper only through this box, emptied on the way out,
        // so the helper never outlives the event loops it completes its promise on.
        let shutdownOnFatalError = NIOLockedValueBox<ServerQuiescingHelper?>(quiesce)
        defer { shutdownOnFatalError.withLockedValue { $0 = nil } }
        let (authority, durability) = try await self.makeAuthority(loop: authorityGroup.next()) { [fatalError] error in
            fatalError.withLockedValue { $0 = error }
            shutdownOnFatalError.withLockedValue { $0 }?.initiateShutdown(promise: nil)
        }
        self.events.recovering()
        let recovered = try await authority.recover().get()

        let channel: any Channel
        do {
            channel = try await self.bind(authority: authority, quiesce: quiesce, group: connectionGroup)
        } catch {
            // Stop the authority's timer too, so nothing holds on to it past the event loops.
            try? await authority.closeStore().get()
            throw error
        }
        var endpoint: HTTPEndpoint?
        if let listen = configuration.httpListen {
            let console = configuration.console == .off ? nil : Console(
                authority: authority, mode: configuration.console, host: configuration.hostName,
                store: PostgresLocation.isLocation(configuration.storePath) ? "PostgreSQL" : "SQLite", listeningOn: listen.host,
                logger: self.logger
            )
            do {
                endpoint = try await HTTPEndpoint.start(
                    host: listen.host, port: listen.port, group: connectionGroup, authority: authority, console: console, logger: self.logger
                )
            } catch {
                try? await channel.close()
                try? await authority.closeStore().get()
                throw BatonServerError("cannot serve HTTP on \(listen.host):\(listen.port): \(error)")
            }
            let address = endpoint?.localAddress.map { "\($0)" } ?? ""
            self.logger.info("metrics served over HTTP", metadata: ["address": "\(address)"])
            if let console {
                self.logger.notice(
                    "web console served over HTTP", metadata: ["address": "\(address)", "actions": "\(console.pages.actionsEnabled)"])
            }
        }
        self.running.withLockedValue { $0 = authority }
        defer { self.running.withLockedValue { $0 = nil } }
        self.events.ready((try? await authority.health().get())?.summary ?? "ready")
        self.logger.info(
            "batond ready",
            metadata: [
                "socket": "\(configuration.socketPath)", "store": "\(Self.describe(store: configuration.storePath))",
                "durability": "\(durability)", "leases.recovered": "\(recovered)",
            ]
        )

        try await withGracefulShutdownHandler {
            try await channel.closeFuture.get()
        } onGracefulShutdown: {
            self.logger.info("batond stopping")
            self.events.stopping()
            // Refuse new requests first, so nothing new starts while connections wind down.
            authority.drain().whenComplete { _ in
                quiesce.initiateShutdown(promise: nil)
            }
        }
        // The listener is closed; let in-flight requests be answered and connections close.
        await endpoint?.close()
        try await authority.drain().get()
        let closed = connectionGroup.next().makePromise(of: Void.self)
        quiesce.initiateShutdown(promise: closed)
        try? await closed.futureResult.get()
        try await authority.closeStore().get()
    }

    /// The store for the log: a PostgreSQL location without its password.
    static func describe(store: String) -> String {
        guard PostgresLocation.isLocation(store) else { return store }
        return (try? PostgresLocation(store)).map { "\($0)" } ?? "a PostgreSQL URL that does not parse"
    }

    /// Refuses a socket path that is not a socket, or that a live server answers on; a
    /// socket file left by a dead server is replaced when binding.
    private static func checkSocketPath(_ path: String) throws {
        guard SocketPath.exists(path) else { return }
        guard SocketPath.isSocket(path) else {
            throw BatonServerError("\(path) exists and is not a socket; refusing to replace it")
        }
        guard !SocketPath.hasLiveServer(at: path) else {
            throw BatonServerError("another server is answering on \(path)")
        }
    }

    private func bind(authority: any JobAuthority, quiesce: ServerQuiescingHelper, group: any EventLoopGroup) async throws -> any Channel {
        let path = self.configuration.socketPath
        let decoder = RequestDecoder(limits: self.configuration.limits)
        let maximumLine = self.configuration.limits.maximumLineBytes
        let maximumInFlight = self.configuration.maximumInFlightPerConnection
        let logger = self.logger
        let connectionNumbers = ManagedAtomicCounter()
        let openConnections = self.openConnections
        let metrics = self.metrics
        let budget = InputBudget(limit: self.configuration.inputBudgetBytes)
        let partialLineTimeout = self.configuration.partialLineTimeoutMilliseconds
        let admission = ConnectionAdmission(
            maximum: self.configuration.maximumConnections, reserved: self.configuration.reservedAdminConnections,
            logger: logger
        )
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1_024)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiesce.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                channel.peerIdentity().flatMapThrowing { peer in
                    let open = openConnections.withLockedValue { open in
                        open += 1
                        return open
                    }
                    metrics.connections.increment()
                    channel.closeFuture.whenComplete { _ in
                        openConnections.withLockedValue { $0 -= 1 }
                        metrics.connections.decrement()
                    }
                    if let refusal = admission.refusal(open: open, peer: peer) {
                        // Told why, then closed: a client that cannot connect is never left hanging.
                        channel.writeAndFlush(channel.allocator.buffer(bytes: refusal)).whenComplete { _ in
                            channel.close(promise: nil)
                        }
                        return
                    }
                    let connection = ConnectionIdentity(number: connectionNumbers.next(), peer: peer)
                    let process = peer.flatMap { PeerProcess(pid: $0.pid) }
                    do {
                        try channel.pipeline.syncOperations.addHandlers(
                            BackPressureHandler(),
                            InputGuard(budget: budget, timeoutMilliseconds: partialLineTimeout),
                            // One byte of slack for the newline itself.
                            ByteToMessageHandler(LineBasedFrameDecoder(), maximumBufferSize: maximumLine + 2),
                            RequestHandler(
                                authority: authority, decoder: decoder, connection: connection, process: process,
                                maximumInFlight: maximumInFlight, logger: logger
                            )
                        )
                    } catch {
                        process?.close()
                        throw error
                    }
                }
            }
        if let inherited = self.configuration.inheritedSocket {
            // systemd owns the socket file; it stays bound while batond restarts, and
            // connections made meanwhile wait in its backlog.
            return try await bootstrap.withBoundSocket(inherited).get()
        }
        return try await bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).get()
    }
}

/// A server that cannot start, with the reason for the operator.
public struct BatonServerError: Error, CustomStringConvertible {
    public var description: String

    init(_ description: String) {
        self.description = description
    }
}

/// Numbers connections for the life of the server.
private final class ManagedAtomicCounter: Sendable {
    private let value = NIOLockedValueBox<UInt64>(0)

    func next() -> UInt64 {
        self.value.withLockedValue { value in
            value += 1
            return value
        }
    }
}
