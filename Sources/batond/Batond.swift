import ArgumentParser
import BatonCore
import BatonPostgres
import BatonProtocol
import BatonServer
import BatonStore
import BatonSystemd
import CMalloc
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

    @Option(
        name: .long,
        help: """
            The SQLite store file, or a postgres://USER@HOST:PORT/DB URL for a PostgreSQL store \
            that the batond of many hosts share (?host=/dir for a unix socket, ?sslmode=require).
            """)
    var store: String = "baton-data/baton.sqlite"

    @Option(name: .long, help: "This host's name in a fleet sharing a PostgreSQL store; unique in the fleet. Default: the host name.")
    var hostName: String = ServerConfiguration.defaultHostName

    @Option(
        name: .long,
        help: "PostgreSQL store: how often parked claims look for jobs without a wake-up (LISTEN/NOTIFY wakes them; this covers a lost one).")
    var parkedLookMs: Int64 = 1_000

    @Option(
        name: .long,
        help: """
            PostgreSQL store: transactions this host runs at once. 1 (the default) makes the biggest batches, the \
            least work for a database on the same machine; 2 overlaps round trips to one across a network.
            """)
    var batchesInFlight: Int = 1

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

    @Option(name: .long, help: "text (default) or json: one JSON object per line, for log shippers. Under journald, journald's own fields.")
    var logFormat: LogFormat = .text

    @Option(
        name: [.customLong("http-listen"), .customLong("metrics-listen")],
        help: "Serve HTTP at [HOST:]PORT: Prometheus metrics (GET /metrics), and the web console with --console. Off by default; HOST defaults to 127.0.0.1. (--metrics-listen is the old name.)"
    )
    var httpListen: String?

    @Flag(name: .long, help: "Serve the web console on --http-listen: queues, workers and jobs, read-only. Whoever reaches the address sees every job's payload.")
    var console = false

    @Flag(name: .long, help: "Let the web console cancel, retry, pause and resume jobs and queues (implies --console). Each action is a POST guarded against cross-site requests.")
    var consoleActions = false

    @Option(
        name: .long,
        help: "Export a span for each attempt of a job that carries a trace context, over OTLP/HTTP to URL/v1/traces (as OTEL_EXPORTER_OTLP_ENDPOINT, which is read too). Needs a batond built with --traits OTel."
    )
    var otelEndpoint: String?

    @Option(name: .long, help: "Health turns degraded when a ready job has waited longer than this, in milliseconds.")
    var healthMaxReadyAgeMs: Int64 = HealthThresholds().maximumReadyAgeMilliseconds

    @Option(name: .long, help: "Health turns degraded when a job has run longer than this, in milliseconds.")
    var healthMaxRunningMs: Int64 = HealthThresholds().maximumRunningMilliseconds

    @Option(name: .long, help: "Health turns degraded when less than this many MiB are free beside the store.")
    var healthMinFreeMb: Int64 = HealthThresholds().minimumFreeBytes >> 20

    @Option(name: .long, help: "Open connections past which new ones are refused with too_many_connections.")
    var maxConnections: Int = ServerConfiguration().maximumConnections

    @Option(name: .long, help: "Connections beyond --max-connections kept for root and batond's own user.")
    var adminConnections: Int = ServerConfiguration().reservedAdminConnections

    @Option(name: .long, help: "How long a request line may stay unfinished before its connection is closed, in milliseconds.")
    var partialLineTimeoutMs: Int64 = ServerConfiguration().partialLineTimeoutMilliseconds

    @Option(name: .long, help: "Bytes of unfinished request lines all connections together may hold.")
    var inputBudgetBytes: Int = ServerConfiguration().inputBudgetBytes

    @Option(
        name: .long,
        help: "An access policy (TOML): which users and groups may produce, work, read or administer which queues. SIGHUP reads it again. Without one, whoever can open the socket may do anything."
    )
    var policy: String?

    func validate() throws {
        guard self.maxConnections > 0, self.adminConnections >= 0 else {
            throw ValidationError("--max-connections must be positive and --admin-connections not negative")
        }
        guard self.partialLineTimeoutMs > 0 else { throw ValidationError("--partial-line-timeout-ms must be positive") }
        guard self.inputBudgetBytes >= self.maxLineBytes else {
            throw ValidationError("--input-budget-bytes must hold at least one line of --max-line-bytes")
        }
        guard self.maxLineBytes >= 1_024 else { throw ValidationError("--max-line-bytes must be at least 1024") }
        guard self.defaultLeaseMs > 0 else { throw ValidationError("--default-lease-ms must be positive") }
        guard self.defaultMaxAttempts > 0 else { throw ValidationError("--default-max-attempts must be positive") }
        guard self.threads > 0 else { throw ValidationError("--threads must be positive") }
        guard self.retainCompletedMs >= 0, self.retainFailedMs >= 0 else {
            throw ValidationError("retention periods cannot be negative")
        }
        guard self.pruneIntervalMs > 0 else { throw ValidationError("--prune-interval-ms must be positive") }
        guard self.healthMaxReadyAgeMs > 0, self.healthMaxRunningMs > 0, self.healthMinFreeMb >= 0 else {
            throw ValidationError("health thresholds must be positive")
        }
        _ = try self.httpAddress
        if self.otelEndpoint != nil, !Telemetry.isBuiltIn {
            throw ValidationError("--otel-endpoint needs a batond built with OpenTelemetry: swift build --traits OTel")
        }
        if self.console || self.consoleActions, self.httpListen == nil {
            throw ValidationError("--console serves on --http-listen: name an address, such as --http-listen 9464")
        }
    }

    /// `--http-listen`, split: a bare port listens on loopback only.
    var httpAddress: (host: String, port: Int)? {
        get throws {
            guard let text = self.httpListen else { return nil }
            let host: String
            let portText: Substring
            if let colon = text.lastIndex(of: ":") {
                // `[::1]:9464` names an IPv6 host.
                host = String(text[..<colon].drop { $0 == "[" }.reversed().drop { $0 == "]" }.reversed())
                portText = text[text.index(after: colon)...]
            } else {
                host = "127.0.0.1"
                portText = Substring(text)
            }
            guard let port = Int(portText), (0...65_535).contains(port), !host.isEmpty else {
                throw ValidationError("--http-listen must be PORT or HOST:PORT, such as 127.0.0.1:9464")
            }
            return (host, port)
        }
    }

    func run() async throws {
        Self.keepFreedMemory()
        SignalService.ignoreUntilHandled()
        let level = self.logLevel
        let format = self.logFormat
        let toJournal = TextLogHandler.standardErrorIsJournal
        LoggingSystem.bootstrap { label in
            if toJournal { return TextLogHandler(style: .journal, logLevel: level) }
            if format == .json { return JSONLineLogHandler(label: label, logLevel: level) }
            return TextLogHandler(style: .terminal(label: label), logLevel: level)
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
        if !PostgresLocation.isLocation(self.store) {
            try Self.createParentDirectory(of: self.store)
        }
        let notifier = SystemdNotifier()
        let connections = Self.fitConnections(self.maxConnections, reserved: self.adminConnections, logger: logger)

        let telemetry = try Telemetry.start(endpoint: self.otelEndpoint, logger: logger)
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
                inheritedSocket: inherited,
                health: HealthThresholds(
                    maximumReadyAgeMilliseconds: self.healthMaxReadyAgeMs, maximumRunningMilliseconds: self.healthMaxRunningMs,
                    minimumFreeBytes: self.healthMinFreeMb << 20
                ),
                httpListen: try self.httpAddress,
                console: self.consoleActions ? .actions : self.console ? .readOnly : .off,
                tracesAttempts: telemetry != nil,
                maximumConnections: connections,
                reservedAdminConnections: self.adminConnections,
                partialLineTimeoutMilliseconds: self.partialLineTimeoutMs,
                inputBudgetBytes: self.inputBudgetBytes,
                policyPath: self.policy,
                hostName: self.hostName,
                parkedLookMilliseconds: max(self.parkedLookMs, 10),
                batchesInFlight: min(max(self.batchesInFlight, 1), 8)
            ),
            logger: logger,
            events: BatonServer.ServerEvents(
                // Recovery replays nothing, but reads every running lease: give it time.
                recovering: { notifier.extendTimeout(microseconds: 120_000_000) },
                ready: { status in notifier.ready(status: status) },
                stopping: { notifier.stopping() }
            )
        )
        // Services stop in the reverse order: the exporter last, with the server's last spans.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = telemetry.map { [.init(service: $0)] } ?? []
        services += [
            .init(service: server),
            .init(service: SignalService(logger: logger, reload: { server.reloadPolicy() })),
        ]
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

    /// Tells glibc's allocator to keep memory it gets back instead of returning the top of
    /// the heap to the kernel at every `free`.
    ///
    /// Each batch allocates and frees a few hundred kilobytes; with the default 128 KiB
    /// trim threshold the heap shrank and grew again batch after batch, and the authority
    /// faulted in fresh pages for memory it had just given away: 86,000 page faults in a
    /// 5-second benchmark run, against 900 with this. Keeping up to 64 MiB spare costs at
    /// most that much resident memory.
    private static func keepFreedMemory() {
        _ = mallopt(M_TRIM_THRESHOLD, 64 << 20)
        _ = mallopt(M_TOP_PAD, 16 << 20)
    }

    /// Raises the open-file limit to its hard maximum and fits the connection limit under
    /// it, leaving room for the store, the listeners and the reserve: a connection the
    /// kernel cannot accept would hang its client with nothing logged. Each connection
    /// takes two descriptors: its socket, and the pidfd of the process behind it.
    private static func fitConnections(_ wanted: Int, reserved: Int, logger: Logger) -> Int {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return wanted }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
            _ = getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        }
        let available = (Int(clamping: limit.rlim_cur) - 64) / 2 - reserved
        guard wanted > available else { return wanted }
        let fitted = max(available, 1)
        logger.warning(
            "--max-connections lowered to fit the open-file limit",
            metadata: ["connections.max": "\(fitted)", "files.limit": "\(limit.rlim_cur)"]
        )
        return fitted
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

/// `--log-format`.
enum LogFormat: String, ExpressibleByArgument, CaseIterable {
    case text
    case json
}
