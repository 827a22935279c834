import BatonCore
import BatonProtocol
import BatonStore

#if canImport(Glibc)
import Glibc
#endif

/// Everything a ``BatonServer`` needs to know to run, with defaults for a local sidecar.
///
/// Command-line flags and environment variables are mapped onto this in the `batond`
/// executable; the server itself reads neither.
public struct ServerConfiguration: Sendable {
    /// Where the unix socket is bound.
    public var socketPath: String
    /// The store: a SQLite file (a `.lock` file beside it marks its owner), or a
    /// `postgres://` URL for a PostgreSQL store that the `batond` of many hosts share.
    public var storePath: String
    /// This host's name in a fleet sharing a PostgreSQL store: unique in the fleet.
    public var hostName: String
    /// On a PostgreSQL store, how often parked claims look for jobs without a wake-up:
    /// they are woken by LISTEN/NOTIFY, so this only covers a lost notification.
    public var parkedLookMilliseconds: Int64
    /// On a PostgreSQL store, how many transactions this host runs at once.
    public var batchesInFlight: Int
    public var durability: Durability
    public var limits: ProtocolLimits
    public var jobDefaults: JobDefaults
    /// When finished jobs are deleted.
    public var retention: RetentionPolicy
    /// Event-loop threads for connections; the authority has a thread of its own.
    public var connectionThreads: Int
    /// Unanswered requests one connection may have before the server stops reading it.
    public var maximumInFlightPerConnection: Int
    /// A listening unix socket to serve instead of binding `socketPath`, such as the one
    /// systemd passes under socket activation.
    public var inheritedSocket: Int32?
    /// When the server reports itself `degraded`.
    public var health: HealthThresholds
    /// Where to serve HTTP (`host`, `port`), if anywhere: metrics for Prometheus, and the
    /// web console when ``console`` turns it on.
    public var httpListen: (host: String, port: Int)?
    /// Whether the HTTP listener serves the web console, and whether its actions.
    public var console: ConsoleMode
    /// Whether each ended attempt of a job with a trace context makes a span
    /// (``AttemptTracer``): set when batond bootstrapped a tracer that exports them.
    public var tracesAttempts: Bool
    /// Open connections past which new ones are refused with `too_many_connections`.
    public var maximumConnections: Int
    /// Connections beyond ``maximumConnections`` kept for root and for batond's own user,
    /// so that an operator can still look in (`baton top`, `baton health`) when every
    /// other slot is taken.
    public var reservedAdminConnections: Int
    /// How long a request line may stay unfinished before its connection is closed.
    public var partialLineTimeoutMilliseconds: Int64
    /// Bytes of unfinished lines all connections together may hold.
    public var inputBudgetBytes: Int
    /// The access policy's TOML file; `nil` for none (the socket's mode is the only gate).
    public var policyPath: String?

    public init(
        socketPath: String = "baton-data/baton.sock",
        storePath: String = "baton-data/baton.sqlite",
        durability: Durability = .full,
        limits: ProtocolLimits = ProtocolLimits(),
        jobDefaults: JobDefaults = JobDefaults(),
        retention: RetentionPolicy = RetentionPolicy(),
        connectionThreads: Int = 1,
        maximumInFlightPerConnection: Int = 1_024,
        inheritedSocket: Int32? = nil,
        health: HealthThresholds = HealthThresholds(),
        httpListen: (host: String, port: Int)? = nil,
        console: ConsoleMode = .off,
        tracesAttempts: Bool = false,
        maximumConnections: Int = 4_096,
        reservedAdminConnections: Int = 16,
        partialLineTimeoutMilliseconds: Int64 = 30_000,
        inputBudgetBytes: Int = 256 << 20,
        policyPath: String? = nil,
        hostName: String = ServerConfiguration.defaultHostName,
        parkedLookMilliseconds: Int64 = 1_000,
        batchesInFlight: Int = 1
    ) {
        self.batchesInFlight = batchesInFlight
        self.hostName = hostName
        self.parkedLookMilliseconds = parkedLookMilliseconds
        self.policyPath = policyPath
        self.maximumConnections = maximumConnections
        self.reservedAdminConnections = reservedAdminConnections
        self.partialLineTimeoutMilliseconds = partialLineTimeoutMilliseconds
        self.inputBudgetBytes = inputBudgetBytes
        self.health = health
        self.httpListen = httpListen
        self.console = console
        self.tracesAttempts = tracesAttempts
        self.socketPath = socketPath
        self.storePath = storePath
        self.durability = durability
        self.limits = limits
        self.jobDefaults = jobDefaults
        self.retention = retention
        self.connectionThreads = connectionThreads
        self.maximumInFlightPerConnection = maximumInFlightPerConnection
        self.inheritedSocket = inheritedSocket
    }

    /// What the web console serves: nothing, pages to look at, or pages that also act.
    public enum ConsoleMode: Sendable {
        case off
        case readOnly
        /// Cancel, retry, pause and resume, each a POST guarded against cross-site requests.
        case actions
    }

    /// The machine's host name.
    public static var defaultHostName: String {
        var name = [CChar](repeating: 0, count: 256)
        guard gethostname(&name, name.count - 1) == 0 else { return "localhost" }
        return String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
