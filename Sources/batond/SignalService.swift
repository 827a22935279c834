import Logging
import ServiceLifecycle
import UnixSignals

#if canImport(Glibc)
import Glibc
#endif

/// The signals `batond` gives a meaning to besides SIGTERM and SIGINT (which the service
/// group turns into a graceful shutdown).
///
/// By default SIGHUP and SIGUSR1 end a process, and a stray `kill -HUP` (a log rotator, a
/// terminal closing) would cut every parked claim off with a connection reset. Here SIGHUP
/// calls `reload` (the access policy is read again) and SIGUSR1 is logged and ignored.
struct SignalService: Service {
    let logger: Logger
    let reload: @Sendable () -> Void

    /// Ignores the signals at once, before any service runs, so that one sent while the
    /// server starts cannot end it either.
    static func ignoreUntilHandled() {
        signal(SIGHUP, SIG_IGN)
        signal(SIGUSR1, SIG_IGN)
    }

    func run() async throws {
        for await signal in await UnixSignalsSequence(trapping: .sighup, .sigusr1).cancelOnGracefulShutdown() {
            switch signal {
            case .sighup:
                self.logger.info("SIGHUP: reloading")
                self.reload()
            default:
                self.logger.info("signal ignored", metadata: ["signal": "\(signal)"])
            }
        }
    }
}
