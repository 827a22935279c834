import BatonCore

/// Who is connected and leasing: for each connection that named itself (`hello`) or
/// claimed, its process, its name, the jobs it holds and its last heartbeat.
///
/// Kept by the authority next to the lease table and told of every lease it grants, renews
/// or ends, so listing it reads memory only. A connection that closes is forgotten at once:
/// its worker shows as gone, while its leases run on until they expire or a reconnected
/// worker renews them (which moves them to its new connection).
struct WorkerRegistry {
    struct Worker {
        var connection: ConnectionIdentity
        var name: String?
        /// Wall-clock milliseconds of its first request that made it a worker.
        var since: Int64
        var lastHeartbeatAt: Int64?
        var jobs: Set<Int64> = []
    }

    private var workers: [UInt64: Worker] = [:]
    /// Each running job: the connection holding it (if one is known) and when it started.
    private var running: [Int64: (connection: UInt64?, since: Int64)] = [:]

    /// Records a connection as a worker, with the name it gave, if any.
    mutating func seen(_ connection: ConnectionIdentity, name: String?, now: Int64) {
        if self.workers[connection.number] == nil {
            self.workers[connection.number] = Worker(connection: connection, name: name, since: now)
        } else if let name {
            self.workers[connection.number]!.name = name
        }
    }

    /// A job started running under a lease granted or renewed on `connection`.
    mutating func holds(_ job: Int64, on connection: ConnectionIdentity, since: Int64) {
        self.running[job] = (connection.number, since)
        self.workers.modifyValue(forKey: connection.number) { $0.jobs.insert(job) }
    }

    /// A running job recovered after a restart: no connection holds it yet.
    mutating func recovered(_ job: Int64, since: Int64) {
        self.running[job] = (nil, since)
    }

    /// A heartbeat or checkpoint for `job` came on `connection`, which now holds it.
    mutating func renewed(_ job: Int64, on connection: ConnectionIdentity, now: Int64) {
        self.seen(connection, name: nil, now: now)
        if let holder = self.running[job] {
            if let previous = holder.connection, previous != connection.number {
                self.workers.modifyValue(forKey: previous) { $0.jobs.remove(job) }
            }
            self.running[job] = (connection.number, holder.since)
        }
        self.workers.modifyValue(forKey: connection.number) { worker in
            worker.jobs.insert(job)
            worker.lastHeartbeatAt = now
        }
    }

    /// When a running job's attempt started (wall-clock milliseconds).
    func startedAt(of job: Int64) -> Int64? {
        self.running[job]?.since
    }

    /// A job stopped running, however it ended.
    mutating func ended(_ job: Int64) {
        guard let holder = self.running.removeValue(forKey: job), let connection = holder.connection else { return }
        self.workers.modifyValue(forKey: connection) { $0.jobs.remove(job) }
    }

    mutating func disconnected(_ connection: ConnectionIdentity) {
        self.workers.removeValue(forKey: connection.number)
    }

    /// The connected workers, in the order they connected.
    var all: [Worker] {
        self.workers.values.sorted { $0.connection.number < $1.connection.number }
    }

    /// The running jobs that started before `cutoff` (wall-clock milliseconds), longest first.
    func running(startedBefore cutoff: Int64) -> [(job: Int64, since: Int64)] {
        self.running.compactMap { job, holder in holder.since < cutoff ? (job, holder.since) : nil }.sorted { $0.since < $1.since }
    }
}
