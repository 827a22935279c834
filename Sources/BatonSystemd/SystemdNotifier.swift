import CSystemd

#if canImport(Glibc)
import Glibc
#endif

/// Tells systemd how the service is doing, through `sd_notify`.
///
/// Outside systemd (no `NOTIFY_SOCKET`) every call does nothing, so `batond` runs the same
/// from a terminal.
public struct SystemdNotifier: Sendable {
    public init() {}

    /// Whether a service manager is listening.
    public var isActive: Bool {
        getenv("NOTIFY_SOCKET") != nil
    }

    /// The service is up: the store is open and recovered, and the socket is served.
    public func ready(status: String) {
        self.send("READY=1\nSTATUS=\(status)")
    }

    /// A one-line summary shown by `systemctl status`.
    public func status(_ status: String) {
        self.send("STATUS=\(status)")
    }

    /// The service is shutting down.
    public func stopping() {
        self.send("STOPPING=1\nSTATUS=stopping")
    }

    /// Asks for more time to start (or stop) than the unit's timeout, for a long recovery.
    public func extendTimeout(microseconds: UInt64) {
        self.send("EXTEND_TIMEOUT_USEC=\(microseconds)")
    }

    /// The watchdog ping: the service is healthy.
    public func watchdog() {
        self.send("WATCHDOG=1")
    }

    /// The watchdog interval systemd expects pings within, if it set one for this process.
    public var watchdogInterval: Duration? {
        var microseconds: UInt64 = 0
        guard sd_watchdog_enabled(0, &microseconds) > 0, microseconds > 0 else { return nil }
        return .microseconds(Int64(microseconds))
    }

    private func send(_ state: String) {
        _ = sd_notify(0, state)
    }
}
