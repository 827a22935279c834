import BatonSystemd
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle
import Testing

/// Runs a watchdog until it has pinged `enough` times or `duration` has passed, and
/// returns how many pings it sent.
func pings(
    probe: @escaping WatchdogService<ContinuousClock>.Probe, for duration: Duration, orUntil enough: Int = .max
) async throws -> Int {
    let count = NIOLockedValueBox(0)
    let watchdog = WatchdogService(interval: .milliseconds(100), clock: ContinuousClock(), probe: probe) { _ in
        count.withLockedValue { $0 += 1 }
    }
    let group = ServiceGroup(services: [watchdog], logger: Logger(label: "test"))
    try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        let deadline = ContinuousClock.now + duration
        while ContinuousClock.now < deadline, count.withLockedValue({ $0 }) < enough {
            try await Task.sleep(for: .milliseconds(10))
        }
        await group.triggerGracefulShutdown()
        tasks.cancelAll()
    }
    return count.withLockedValue { $0 }
}

@Suite("The watchdog pings only what a probe proves")
struct WatchdogServiceTests {
    @Test("a healthy service is pinged at half the interval")
    func healthy() async throws {
        // Every 50 ms: five pings come well within the generous bound, even on a busy machine.
        let count = try await pings(probe: { "ok" }, for: .seconds(20), orUntil: 5)
        #expect(count >= 5)
    }

    @Test("an unhealthy service is not pinged")
    func unhealthy() async throws {
        #expect(try await pings(probe: { nil }, for: .milliseconds(300)) == 0)
    }

    @Test("a probe that does not answer in time, like a stuck store, earns no ping")
    func stuck() async throws {
        let count = try await pings(probe: {
            try? await Task.sleep(for: .seconds(1))
            return "too late"
        }, for: .milliseconds(300))
        #expect(count == 0)
    }
}
