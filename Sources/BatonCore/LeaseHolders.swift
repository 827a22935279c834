/// Who holds each lease a server granted: the connection of its claim or last renewal, and
/// the process whose death ends it.
///
/// A lease is bound to the process that claimed it, unless the claim was `detached` (a
/// script that claims with one command and completes with another) or the process is not
/// known. When a bound lease's connection closes and its process has exited, nobody can
/// finish the job, and the server ends the lease at once instead of waiting out its period.
///
/// A renewal moves the lease to the renewing connection: a worker that reconnected holds
/// its jobs on the new one. A renewal from another process unbinds it, since whether that
/// process's death abandons the job cannot be known; so does a server restart, which keeps
/// no holders (the first renewal after it records an unbound holder).
///
/// Both ways are indexed, so a closed connection finds its leases in O(its leases).
public struct LeaseHolders: Sendable {
    public struct Holder: Hashable, Sendable {
        public var connection: UInt64
        /// The process whose exit ends the lease; `nil` when it is bound to none.
        public var process: Int32?
        public var token: FencingToken
    }

    private var holders: [Int64: Holder] = [:]
    private var jobs: [UInt64: Held] = [:]

    /// A connection's leases: most workers hold one job at a time, which needs no set (and
    /// so no allocation per claim).
    private enum Held: Sendable {
        case one(Int64)
        case many(Set<Int64>)

        var all: [Int64] {
            switch self {
            case .one(let job): [job]
            case .many(let jobs): jobs.sorted()
            }
        }

        mutating func insert(_ job: Int64) {
            switch self {
            case .one(let held) where held == job: return
            case .one(let held): self = .many([held, job])
            case .many(var jobs):
                self = .one(job)  // lets `jobs` be the only reference while it grows
                jobs.insert(job)
                self = .many(jobs)
            }
        }

        /// Removes `job`; whether none is left.
        mutating func remove(_ job: Int64) -> Bool {
            switch self {
            case .one(let held): return held == job
            case .many(var jobs):
                self = .one(job)
                jobs.remove(job)
                self = .many(jobs)
                return jobs.isEmpty
            }
        }
    }

    public init() {}

    public subscript(job: Int64) -> Holder? { self.holders[job] }

    public var count: Int { self.holders.count }

    /// Records a claim's lease, bound to process `process` unless that is `nil`.
    public mutating func claimed(_ job: Int64, token: FencingToken, connection: UInt64, process: Int32?) {
        self.set(job, Holder(connection: connection, process: process, token: token))
    }

    /// Records a renewal heard on `connection` from process `process` (see the type's rules).
    public mutating func renewed(_ job: Int64, token: FencingToken, connection: UInt64, process: Int32?) {
        let bound = self.holders[job].flatMap { $0.token == token && $0.process == process ? process : nil }
        self.set(job, Holder(connection: connection, process: bound, token: token))
    }

    public mutating func ended(_ job: Int64) {
        guard let holder = self.holders.removeValue(forKey: job) else { return }
        self.unindex(job, from: holder.connection)
    }

    /// The leases that end with process `process`, held on `connection`, which has closed.
    public func bound(to process: Int32, on connection: UInt64) -> [(id: Int64, token: FencingToken)] {
        (self.jobs[connection]?.all ?? []).compactMap { job in
            self.holders[job].flatMap { $0.process == process ? (job, $0.token) : nil }
        }
    }

    /// The error an attempt ends with when its process exited: its `last_error`, and the
    /// `error` of its `expired` event.
    public static func exitReason(pid: Int32) -> String {
        "worker process \(pid) exited"
    }

    /// The ids of the jobs each connection holds, in increasing order.
    public var jobsByConnection: [UInt64: [Int64]] {
        self.jobs.mapValues(\.all)
    }

    private mutating func set(_ job: Int64, _ holder: Holder) {
        if let previous = self.holders.updateValue(holder, forKey: job), previous.connection != holder.connection {
            self.unindex(job, from: previous.connection)
        }
        if let index = self.jobs.index(forKey: holder.connection) {
            self.jobs.values[index].insert(job)
        } else {
            self.jobs[holder.connection] = .one(job)
        }
    }

    private mutating func unindex(_ job: Int64, from connection: UInt64) {
        guard let index = self.jobs.index(forKey: connection) else { return }
        if self.jobs.values[index].remove(job) { self.jobs.remove(at: index) }
    }
}
