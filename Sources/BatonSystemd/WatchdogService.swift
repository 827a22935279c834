import ServiceLifecycle

/// Pings systemd's watchdog, but only while the service can prove it is healthy.
///
/// A timer that pings regardless would keep a hung service alive. Each ping is earned: at
/// half the watchdog interval, `probe` must finish within that half interval and report
/// health. A hung store loop, a stuck fsync or a deadlock makes the probe late or
/// unhealthy, the pings stop, and systemd kills and restarts the service.
public struct WatchdogService<WatchdogClock: Clock<Duration>>: Service {
    /// Asks the service how it is: a one-line status when healthy, `nil` when not.
    public typealias Probe = @Sendable () async -> String?

    private let interval: Duration
    private let clock: WatchdogClock
    private let probe: Probe
    private let ping: @Sendable (_ status: String) -> Void

    /// - Parameters:
    ///   - interval: the watchdog interval systemd set (`WATCHDOG_USEC`).
    ///   - clock: the clock to pace the pings by.
    ///   - probe: proves health; it runs at half the interval and must answer within it.
    ///   - ping: sends `WATCHDOG=1` (and the status) for one earned ping.
    public init(interval: Duration, clock: WatchdogClock, probe: @escaping Probe, ping: @escaping @Sendable (String) -> Void) {
        self.interval = interval
        self.clock = clock
        self.probe = probe
        self.ping = ping
    }

    public func run() async throws {
        let half = self.interval / 2
        while !Task.isCancelled, !Task.isShuttingDownGracefully {
            let deadline = self.clock.now.advanced(by: half)
            if let status = await self.probeWithin(half), !Task.isCancelled {
                self.ping(status)
            }
            do {
                try await cancelWhenGracefulShutdown { [clock] in try await clock.sleep(until: deadline, tolerance: nil) }
            } catch {
                return
            }
        }
    }

    /// The probe's answer, or `nil` if it is unhealthy or does not answer in time.
    private func probeWithin(_ limit: Duration) async -> String? {
        await withTaskGroup(of: String??.self) { group in
            group.addTask { .some(await self.probe()) }
            group.addTask { [clock] in
                try? await clock.sleep(for: limit)
                return .none
            }
            let first = await group.next() ?? .none
            group.cancelAll()
            // A watchdog being stopped proves nothing, whatever the probe said.
            if Task.isCancelled { return nil }
            return first ?? nil
        }
    }
}
