import BatonCore
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// The kernel's `struct ucred`, laid out by hand: Glibc hides it behind `_GNU_SOURCE`.
private struct PeerCredentials: Sendable {
    var pid: Int32 = 0
    var uid: UInt32 = 0
    var gid: UInt32 = 0
}

extension Channel {
    /// The process at the other end of a unix socket, as SO_PEERCRED reports it.
    ///
    /// Resolves to `nil` on platforms or channels that cannot say; a connection is served
    /// all the same, it just shows no peer.
    func peerIdentity() -> EventLoopFuture<PeerIdentity?> {
        #if os(Linux)
        guard let provider = self as? any SocketOptionProvider else {
            return self.eventLoop.makeSucceededFuture(nil)
        }
        let credentials: EventLoopFuture<PeerCredentials> = provider.unsafeGetSocketOption(
            level: SocketOptionLevel(SOL_SOCKET),
            name: SocketOptionName(SO_PEERCRED)
        )
        return credentials.map { Optional(PeerIdentity(pid: $0.pid, uid: $0.uid, gid: $0.gid)) }.recover { _ in nil }
        #else
        return self.eventLoop.makeSucceededFuture(nil)
        #endif
    }
}
