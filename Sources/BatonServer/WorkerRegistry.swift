import BatonCore

/// Who is connected: each connection that named itself (`hello`), claimed or renewed a
/// lease, with its process, its name and its last heartbeat. The jobs each one holds are
/// in the authority's ``RunningJobs``, which records the holding connection.
///
/// A connection that closes is forgotten at once: its worker shows as gone, while its
/// leases run on until they expire or a reconnected worker renews them (which moves them
/// to its new connection).
struct WorkerRegistry {
    struct Worker {
        var connection: ConnectionIdentity
        var name: String?
        /// Wall-clock milliseconds of its first request that made it a worker.
        var since: Int64
        var lastHeartbeatAt: Int64?
    }

    private var workers: [UInt64: Worker] = [:]

    /// Records a connection as a worker, with the name it gave, if any.
    mutating func seen(_ connection: ConnectionIdentity, name: String?, now: Int64) {
        if self.workers[connection.number] == nil {
            self.workers[connection.number] = Worker(connection: connection, name: name, since: now)
        } else if let name {
            self.workers[connection.number]!.name = name
        }
    }

    /// A heartbeat or checkpoint came on `connection`.
    mutating func renewed(on connection: ConnectionIdentity, now: Int64) {
        self.seen(connection, name: nil, now: now)
        self.workers[connection.number]!.lastHeartbeatAt = now
    }

    mutating func disconnected(_ connection: ConnectionIdentity) {
        self.workers.removeValue(forKey: connection.number)
    }

    /// The connected workers, in the order they connected.
    var all: [Worker] {
        self.workers.values.sorted { $0.connection.number < $1.connection.number }
    }
}
