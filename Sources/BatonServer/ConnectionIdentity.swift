import BatonCore

/// Who sent a request: the connection, and the process behind it.
public struct ConnectionIdentity: Hashable, Sendable {
    /// Unique for the life of the server.
    public var number: UInt64
    /// The peer process, from SO_PEERCRED; `nil` where the platform cannot say.
    public var peer: PeerIdentity?

    public init(number: UInt64, peer: PeerIdentity?) {
        self.number = number
        self.peer = peer
    }
}
