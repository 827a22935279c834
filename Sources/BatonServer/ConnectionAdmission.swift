import BatonCore
import BatonProtocol
import Logging
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#endif

/// Decides whether a new connection is served: every connection up to the limit, then
/// only root's and batond's own user's, up to a small reserve.
///
/// Past the process's file-descriptor limit the kernel's accept fails and a client just
/// hangs with nothing logged; refusing below it, with a reply and a log line, says what
/// happened on both ends.
final class ConnectionAdmission: Sendable {
    let maximum: Int
    let reserved: Int
    private let logger: Logger
    /// When a refusal was last logged, in seconds: at most one line a second.
    private let lastLogged = NIOLockedValueBox<Int>(0)
    private let ownUID = getuid()

    init(maximum: Int, reserved: Int, logger: Logger) {
        self.maximum = maximum
        self.reserved = reserved
        self.logger = logger
    }

    /// The reply that refuses the `open`th open connection (this one counted), or `nil`
    /// when it is served.
    func refusal(open: Int, peer: PeerIdentity?) -> [UInt8]? {
        if open <= self.maximum { return nil }
        let isAdmin = peer.map { $0.uid == 0 || $0.uid == self.ownUID } ?? false
        if isAdmin, open <= self.maximum + self.reserved { return nil }
        let now = time(nil)
        let log = self.lastLogged.withLockedValue { last -> Bool in
            guard now > last else { return false }
            last = now
            return true
        }
        if log {
            self.logger.warning(
                "connection refused: at the connection limit",
                metadata: [
                    "connections.max": "\(self.maximum)", "connections.reserved": "\(self.reserved)",
                    "peer.pid": "\(peer?.pid ?? 0)", "peer.uid": "\(peer?.uid ?? 0)",
                ]
            )
        }
        return Reply.failure(
            id: nil,
            BatonError(.tooManyConnections, "batond serves at most \(self.maximum) connections; try again later")
        )
    }
}
