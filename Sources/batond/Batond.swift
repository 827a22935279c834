import ArgumentParser
import BatonCore
import BatonProtocol
import BatonServer
import BatonStore
import BatonSystemd
import Logging
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

/// `batond`: the job-lease authority for one host.
@main
struct Batond: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "batond",
        abstract: "Serve durable, leased background jobs over a unix socket.",
        discussion: """
            Workers on this host connect to the socket and speak line-delimited JSON \
            (see protocol/PROTOCOL.md). Without options, the store and the socket live in \
            ./baton-data/.
            """,
        version: batondVersion
    )

    @Option(name: .long, help: "The unix socket to listen on.")
    var socket: String = "baton-data/baton.sock"

    @Option(name: .long, help: "The SQLite store file.")
    var store: String = "baton-data/baton.sqlite"

    @Option(name: .long, help: "full: fsync every commit (default). normal: survive process crashes, not power loss.")
    var durability: DurabilityOption = .full

    @Option(name: .long, help: "The longest request line accepted, in bytes.")
    var maxLineBytes: Int = ProtocolLimits().maximumLineBytes

    @Option(name: .long, help: "Lease period for jobs that do not name one, in milliseconds.")
    var defaultLeaseMs: Int64 = JobDefaults().leaseMilliseconds

    @Option(name: .long, help: "Attempts for jobs that do not name a number.")
    var defaultMaxAttempts: Int = JobDefaults().maxAttempts

    @Option(name: .long, help: "How long completed jobs are kept, in milliseconds (default 7 days).")
    var retainCompletedMs: Int64 = RetentionPolicy().completedMilliseconds

    @Option(name: .long, help: "How long failed and cancelled jobs are kept, in milliseconds (default 30 days).")
    var retainFailedMs: Int64 = RetentionPolicy().failedMilliseconds

    @Option(name: .long, help: "How often to look for finished jobs past their retention, in milliseconds.")
    var pruneIntervalMs: Int64 = RetentionPolicy().intervalMilliseconds

    @Option(name: .long, help: "Event-loop threads serving connections.")
    var threads: Int = 1

    @Option(name: .long, help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: Logger.Level = .info

    func validate() throws {
        guard self.maxLineBytes >= 1_024 else { throw ValidationError("--max-line-bytes must be at least 1024") }
        guard self.defaultLeaseMs > 0 else { throw ValidationError("--default-lease-ms must be positive") }
        guard self.defaultMaxAttempts > 0 else { throw ValidationError("--default-max-attempts must be positive") }
        guard self.threads > 0 else { throw ValidationError("--threads must be positive") }
        guard self.retainCompletedMs >= 0, self.retainFailedMs >= 0 else {
            throw ValidationError("retention periods cannot be negative")
        }
        guard self.pruneIntervalMs > 0 else { throw ValidationError("--prune-interval-ms must be positive") }
    }

    func run() async throws {
        let level = self.logLevel
        let toJournal = JournalLogHandler.standardErrorIsJournal
        LoggingSystem.bootstrap { label in
            if toJournal { return JournalLogHandler(logLevel: level) }
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "batond")
        let inherited: Int32?
        do {
            inherited = try ListenSockets.inheritedUnixSocket()
        } catch {
            logger.critical("cannot use the socket systemd passed", metadata: ["error": "\(error)"])
            throw ExitCode(1)
        }
        if inherited == nil {
            try Self.createParentDirectory(of: self.socket)
        }
        try Self.createParentDirectory(of: self.store)
        let notifier = SystemdNotifier()

        let server = BatonServer(
            configuration: ServerConfiguration(
                socketPath: self.socket,
                storePath: self.store,
                durability: self.durability.durability,
                limits: ProtocolLimits(maximumLineBytes: self.maxLineBytes),
                jobDefaults: JobDefaults(maxAttempts: self.defaultMaxAttempts, leaseMilliseconds: self.defaultLeaseMs),
                retention: RetentionPolicy(
                    completedMilliseconds: self.retainCompletedMs, failedMilliseconds: self.retainFailedMs,
                    intervalMilliseconds: self.pruneIntervalMs
                ),
                connectionThreads: self.threads,
                inheritedSocket: inherited
            ),
            logger: logger,
            events: BatonServer.ServerEvents(
                // Recovery replays nothing, but reads every running lease: give it time.
                recovering: { notifier.extendTimeout(microseconds: 120_000_000) },
                ready: { status in notifier.ready(status: status) },
                stopping: { notifier.stopping() }
            )
        )
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: server)]
        if let interval = notifier.watchdogInterval {
            // Pings are earned by a probe of the authority; see WatchdogService.
            services.append(
                .init(
                    service: WatchdogService(interval: interval, clock: ContinuousClock(), probe: { await server.probe() }) { status in
                        notifier.watchdog()
                        notifier.status(status)
                    }
                )
            )
        } else if notifier.isActive {
            // No watchdog, but keep `systemctl status` current.
            services.append(
                .init(
                    service: WatchdogService(interval: .seconds(20), clock: ContinuousClock(), probe: { await server.probe() }) { status in
                        notifier.status(status)
                    }
                )
            )
        }
        #if BATON_FAULT_INJECTION
        if getenv("BATOND_TEST_FAULTS").map({ String(cString: $0) }) == "1" {
            services.append(.init(service: FaultSwitch(server: server)))
        }
        #endif
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: services,
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        do {
            try await group.run()
        } catch {
            logger.critical("batond failed", metadata: ["error": "\(error)"])
            throw ExitCode(1)
        }
    }

    /// Creates the directory a default path lives in, so a first run needs no set-up.
    private static func createParentDirectory(of path: String) throws {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return }
        let directory = String(path[..<slash])
        if mkdir(directory, 0o750) != 0, errno != EEXIST {
            throw ValidationError("cannot create \(directory): \(String(cString: strerror(errno)))")
        }
    }
}

/// `--durability`, as the command line spells it.
enum DurabilityOption: String, ExpressibleByArgument, CaseIterable {
    case full
    case normal

    var durability: Durability {
        switch self {
        case .full: .full
        case .normal: .normal
        }
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
