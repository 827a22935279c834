/// A `batond` of a fleet sharing one store, as it last reported itself: the hosts table's
/// row on PostgreSQL, the one host itself on SQLite.
public struct FleetHost: Hashable, Sendable {
    public var name: String
    /// When this `batond` started, in milliseconds since the epoch.
    public var startedAt: Int64
    /// When it last said it was alive, in milliseconds since the epoch.
    public var seenAt: Int64

    public init(name: String, startedAt: Int64, seenAt: Int64) {
        self.name = name
        self.startedAt = startedAt
        self.seenAt = seenAt
    }
}
