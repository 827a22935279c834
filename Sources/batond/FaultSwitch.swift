#if BATON_FAULT_INJECTION
import BatonServer
import ServiceLifecycle
import UnixSignals

/// Test builds only, and only with `BATOND_TEST_FAULTS=1`: SIGUSR2 stalls the authority,
/// so a test can watch the watchdog pings stop. Release builds do not contain it.
struct FaultSwitch: Service {
    let server: BatonServer

    func run() async throws {
        for await _ in await UnixSignalsSequence(trapping: .sigusr2).cancelOnGracefulShutdown() {
            self.server.stallAuthorityForTesting()
        }
    }
}
#endif
