import ArgumentParser
import BatonTestSupport
import Foundation

/// Drives a running `batond` over its socket and prints what it measured.
///
/// Throughput: P producers enqueue and W workers claim (long-poll) and complete, each on
/// its own connection, each strictly one request at a time unless `--window` says
/// otherwise. The connections are driven by a few threads multiplexing them with `poll`,
/// as a load generator like wrk does, so the client's own thread switching does not
/// swamp a 2-core machine. Every payload carries its enqueue time, so each claim yields
/// one enqueue-to-claim latency.
///
/// Latency: one worker parked on an empty queue, one producer enqueueing a job at a time:
/// the time from sending the enqueue to the worker holding the job.
@main
struct BatonBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "baton-bench",
        abstract: "Measure a running batond: full enqueue → claim → complete cycles, and wake-up latency."
    )

    @Option(
        help: """
            A batond socket; give it once per host to drive a fleet sharing a PostgreSQL store. \
            Connections are spread over the sockets in turn, and the latency run's worker parks \
            on the last socket while its producer enqueues on the first: a wake-up across hosts.
            """)
    var socket: [String] = ["baton-data/baton.sock"]

    @Option(help: "Producer connections.")
    var producers: Int = 8

    @Option(help: "Worker connections.")
    var workers: Int = 8

    @Option(help: "Jobs to push through in the throughput run (0 skips it).")
    var jobs: Int = 50_000

    @Option(help: "Jobs for the idle-worker latency run (0 skips it).")
    var latencyJobs: Int = 2_000

    @Option(help: "The queue to use; it should be empty.")
    var queue: String = "bench"

    @Option(help: "Threads driving the connections.")
    var threads: Int = 1

    @Option(
        help: """
            Requests each connection keeps in flight. 1 is a strict request-reply client; more \\
            lets producers pipeline enqueues and workers send each complete together with \\
            their next claim, as a multiplexing client library does.
            """
    )
    var window: Int = 1

    @Flag(help: "Workers claim their next job with each complete (`complete {claim}`): one request per job.")
    var completeAndClaim = false

    @Option(
        help: """
            Instead of a batond, probe the PostgreSQL store at this URL directly: --jobs jobs in \
            transactions of --batch, each inserting, claiming and completing its batch with one \
            statement apiece, as a host's group commit will.
            """
    )
    var postgresStore: String?

    @Option(help: "Jobs per transaction for --postgres-store.")
    var batch: Int = 64

    @Option(help: "Every job names this limit, set first to a max_running and a rate no run reaches: what admission costs when it holds nothing back.")
    var limit: String?

    @Option(help: "Jobs name one of this many tenants' limits in turn (`tenant:N`), under a `tenant:*` template set first.")
    var tenants: Int = 0

    @Option(help: "Jobs carry one of this many fair-share groups in turn.")
    var groups: Int = 0

    func run() throws {
        if let url = self.postgresStore {
            return try PostgresStoreProbe(url: url, jobs: self.jobs, batch: self.batch).run()
        }
        if self.jobs > 0 {
            try self.throughput()
        }
        if self.latencyJobs > 0 {
            try self.idleWorkerLatency()
        }
    }

    /// What each enqueue adds to its job: its limits and group, by the job's number.
    private var jobFields: @Sendable (Int) -> String {
        let limit = self.limit
        let tenants = self.tenants
        let groups = self.groups
        return { index in
            var fields = ""
            var limits: [String] = []
            if let limit { limits.append(#""\#(limit)""#) }
            if tenants > 0 { limits.append(#""tenant:\#(index % tenants)""#) }
            if !limits.isEmpty { fields += #","limits":[\#(limits.joined(separator: ","))]"# }
            if groups > 0 { fields += #","group":"g\#(index % groups)""# }
            return fields
        }
    }

    /// Sets the limits the jobs name, each far above what a run reaches.
    private func setLimits() throws {
        let names = (self.limit.map { [$0] } ?? []) + (self.tenants > 0 ? ["tenant:*"] : [])
        let connection = try LineConnection(path: self.socket[0])
        for name in names {
            try connection.send(#"{"op":"set_limit","name":"\#(name)","max_running":1000000,"rate":{"count":10000,"per_ms":1}}"# + "\n")
            let reply = try connection.readLine()
            guard contains(#""ok":true"#, in: reply) else { throw BenchError("set_limit failed: \(reply)") }
        }
    }

    private func throughput() throws {
        try self.setLimits()
        let perProducer = self.jobs / self.producers
        let total = perProducer * self.producers
        let shared = SharedProgress(jobs: total)
        var agents: [[Agent]] = Array(repeating: [], count: max(self.threads, 1))
        for index in 0..<self.producers {
            let agent = Producer(
                connection: try LineConnection(path: self.socket[index % self.socket.count]), queue: self.queue, jobs: perProducer,
                window: self.window, fields: self.jobFields, first: index * perProducer)
            agents[index % agents.count].append(agent)
        }
        for index in 0..<self.workers {
            let agent = Worker(
                connection: try LineConnection(path: self.socket[index % self.socket.count]), queue: self.queue,
                pipelined: self.window > 1,
                combined: self.completeAndClaim, progress: shared
            )
            agents[(self.producers + index) % agents.count].append(agent)
        }
        let observers = try self.socket.map { try LineConnection(path: $0) }
        let commitsBefore = try CommitTotals(from: observers)
        let started = monotonicNanoseconds()
        let group = DispatchGroup()
        let failures = Failures()
        for batch in agents where !batch.isEmpty {
            let driver = Driver(agents: batch)
            group.enter()
            Thread {
                do { try driver.run() } catch { failures.record(error) }
                group.leave()
            }.start()
        }
        group.wait()
        let seconds = Double(monotonicNanoseconds() - started) / 1e9
        try failures.check()
        let latencies = agents.joined().compactMap { $0 as? Worker }.flatMap(\.latencies).sorted()
        print(
            "throughput: \(total) jobs, \(self.producers) producers, \(self.workers) workers, window \(self.window)"
                + (self.completeAndClaim ? ", complete-and-claim" : "") + (self.limit.map { ", limit \($0)" } ?? "")
                + (self.tenants > 0 ? ", \(self.tenants) tenants under tenant:*" : "") + (self.groups > 0 ? ", \(self.groups) groups" : "")
        )
        print(String(format: "  %.0f cycles/s (enqueue → claim → complete, %.2f s)", Double(total) / seconds, seconds))
        print("  enqueue-to-claim latency: \(percentiles(latencies))")
        let commits = try CommitTotals(from: observers) - commitsBefore
        if commits.commits > 0, commits.batches > 0 {
            print(
                String(
                    format: "  server: %d commits of %.1f requests, one every %.0f µs, %.0f µs of it writing and syncing",
                    Int(commits.commits), commits.requests / commits.batches, seconds * 1e6 / commits.commits,
                    commits.seconds * 1e6 / commits.commits
                )
            )
        }
    }

    private func idleWorkerLatency() throws {
        let producer = try LineConnection(path: self.socket[0])
        let worker = try LineConnection(path: self.socket[self.socket.count - 1])
        var latencies: [Int64] = []
        latencies.reserveCapacity(self.latencyJobs)
        for _ in 0..<self.latencyJobs {
            try worker.send(#"{"op":"claim","queues":["\#(self.queue)-idle"],"wait_ms":5000}"# + "\n")
            // Let the claim park, so the worker is truly idle when the job arrives.
            usleep(500)
            let sent = monotonicNanoseconds()
            try producer.send(#"{"op":"enqueue","queue":"\#(self.queue)-idle","payload":0}"# + "\n")
            let reply = try worker.readLine()
            let received = monotonicNanoseconds()
            _ = try producer.readLine()
            guard let id = field("id", in: reply, after: #""job":{"#), let token = field("token", in: reply) else {
                throw BenchError("the parked worker got no job: \(reply)")
            }
            latencies.append(received - sent)
            try worker.send(#"{"op":"complete","job":\#(id),"token":\#(token)}"# + "\n")
            _ = try worker.readLine()
        }
        latencies.sort()
        print(
            "idle parked worker: \(self.latencyJobs) jobs, one at a time"
                + (self.socket.count > 1 ? ", parked on another host than the producer's" : ""))
        print("  enqueue-to-claim latency: \(percentiles(latencies))")
    }
}

/// One connection's behaviour: what to send first, and what to send on each reply.
private protocol Agent: AnyObject {
    var connection: LineConnection { get }
    var isDone: Bool { get }
    func start() throws
    func received(_ line: String) throws
}

/// Enqueues its share of jobs, keeping up to `window` enqueues in flight.
private final class Producer: Agent {
    let connection: LineConnection
    private let queue: String
    private let jobs: Int
    private let window: Int
    /// The job's limits and group, by its number.
    private let fields: (Int) -> String
    private let first: Int
    private var sent = 0
    private var answered = 0

    init(connection: LineConnection, queue: String, jobs: Int, window: Int, fields: @escaping (Int) -> String, first: Int) {
        self.connection = connection
        self.queue = queue
        self.jobs = jobs
        self.window = max(window, 1)
        self.fields = fields
        self.first = first
    }

    var isDone: Bool { self.answered == self.jobs }

    func start() throws { try self.fill() }

    func received(_ line: String) throws {
        guard contains(#""ok":true"#, in: line) else { throw BenchError("enqueue failed: \(line)") }
        self.answered += 1
        try self.fill()
    }

    private func fill() throws {
        var lines = ""
        while self.sent < self.jobs, self.sent - self.answered < self.window {
            lines += #"{"op":"enqueue","queue":"\#(self.queue)","payload":{"t":\#(monotonicNanoseconds())}\#(self.fields(self.first + self.sent))}"# + "\n"
            self.sent += 1
        }
        if !lines.isEmpty { try self.connection.send(lines) }
    }
}

/// Claims with long-poll and completes, until every job is done; records latencies.
private final class Worker: Agent {
    let connection: LineConnection
    private let claim: String
    private let queue: String
    private let pipelined: Bool
    /// Each complete also claims the next job.
    private let combined: Bool
    private let progress: SharedProgress
    private(set) var latencies: [Int64] = []
    private var awaitingComplete = false
    private(set) var isDone = false

    init(connection: LineConnection, queue: String, pipelined: Bool, combined: Bool, progress: SharedProgress) {
        self.connection = connection
        self.claim = #"{"op":"claim","queues":["\#(queue)"],"wait_ms":200}"# + "\n"
        self.queue = queue
        self.pipelined = pipelined
        self.combined = combined
        self.progress = progress
    }

    func start() throws { try self.connection.send(self.claim) }

    func received(_ line: String) throws {
        let now = monotonicNanoseconds()
        if self.awaitingComplete {
            guard contains(#""ok":true"#, in: line) else { throw BenchError("complete failed: \(line)") }
            self.awaitingComplete = false
            self.progress.completed()
            if self.combined {
                // The reply carries the next job, or `null` when none was ready.
                guard contains(#""job":{"#, in: line) else { return try self.claimOrStop() }
            } else {
                if !self.pipelined { try self.claimOrStop() }
                return
            }
        }
        guard let id = field("id", in: line, after: #""job":{"#), let token = field("token", in: line),
            let sent = field("t", in: line)
        else {
            return try self.claimOrStop()
        }
        self.latencies.append(now - sent)
        self.awaitingComplete = true
        if self.combined {
            try self.connection.send(#"{"op":"complete","job":\#(id),"token":\#(token),"claim":{"queues":["\#(self.queue)"]}}"# + "\n")
            return
        }
        let complete = #"{"op":"complete","job":\#(id),"token":\#(token)}"# + "\n"
        // Pipelined, the next claim rides with this complete: one round trip per job.
        try self.connection.send(self.pipelined ? complete + self.claim : complete)
    }

    private func claimOrStop() throws {
        if self.progress.isFinished {
            self.isDone = true
        } else {
            try self.connection.send(self.claim)
        }
    }
}

/// Runs a set of agents on one thread with `poll`.
private final class Driver: @unchecked Sendable {
    private let agents: [any Agent]

    init(agents: [any Agent]) {
        self.agents = agents
    }

    func run() throws {
        for agent in self.agents { try agent.start() }
        var descriptors = self.agents.map { pollfd(fd: $0.connection.descriptor, events: Int16(POLLIN), revents: 0) }
        while self.agents.contains(where: { !$0.isDone }) {
            guard poll(&descriptors, nfds_t(descriptors.count), 1_000) >= 0 || errno == EINTR else {
                throw BenchError("poll failed: \(String(cString: strerror(errno)))")
            }
            for index in descriptors.indices where descriptors[index].revents != 0 {
                descriptors[index].revents = 0
                let agent = self.agents[index]
                for line in try agent.connection.readAvailableLines() {
                    try agent.received(line)
                }
            }
        }
    }
}

/// The server's commit histograms, read with the `metrics` op: subtracting two readings
/// gives what a run cost the server, which the client cannot see.
private struct CommitTotals {
    var commits = 0.0
    var seconds = 0.0
    var batches = 0.0
    var requests = 0.0

    init() {}

    /// The totals of every host.
    init(from connections: [LineConnection]) throws {
        for connection in connections {
            try connection.send(#"{"op":"metrics","format":"json"}"# + "\n")
            let reply = try JSONSerialization.jsonObject(with: Data(connection.readLine().utf8)) as? [String: Any]
            for histogram in reply?["histograms"] as? [[String: Any]] ?? [] {
                let count = (histogram["count"] as? NSNumber)?.doubleValue ?? 0
                let sum = (histogram["sum"] as? NSNumber)?.doubleValue ?? 0
                switch histogram["name"] as? String {
                case "baton_commit_seconds": (self.commits, self.seconds) = (self.commits + count, self.seconds + sum)
                case "baton_commit_batch_size": (self.batches, self.requests) = (self.batches + count, self.requests + sum)
                default: break
                }
            }
        }
    }

    static func - (after: CommitTotals, before: CommitTotals) -> CommitTotals {
        var difference = CommitTotals()
        difference.commits = after.commits - before.commits
        difference.seconds = after.seconds - before.seconds
        difference.batches = after.batches - before.batches
        difference.requests = after.requests - before.requests
        return difference
    }
}

/// How many jobs are still to be completed, shared by the workers of every thread.
private final class SharedProgress: @unchecked Sendable {
    private let lock = NSLock()
    private var remaining: Int

    init(jobs: Int) { self.remaining = jobs }

    func completed() { self.lock.withLock { self.remaining -= 1 } }
    var isFinished: Bool { self.lock.withLock { self.remaining <= 0 } }
}

private final class Failures: @unchecked Sendable {
    private let lock = NSLock()
    private var first: (any Error)?

    func record(_ error: any Error) { self.lock.withLock { if self.first == nil { self.first = error } } }
    func check() throws { if let error = self.lock.withLock({ self.first }) { throw error } }
}

private func percentiles(_ sorted: [Int64]) -> String {
    guard !sorted.isEmpty else { return "no samples" }
    func at(_ fraction: Double) -> String {
        let index = min(Int(Double(sorted.count - 1) * fraction), sorted.count - 1)
        return String(format: "%.2f ms", Double(sorted[index]) / 1e6)
    }
    return "p50 \(at(0.50)), p90 \(at(0.90)), p99 \(at(0.99)), max \(at(1.0))"
}

/// The integer after `"name":` in a reply, searching from `marker` if given.
///
/// Replies are searched as bytes: Foundation's `range(of:)` and `contains` on Linux took a
/// fifth of the load generator's CPU, which it shares with the server it measures.
private func field(_ name: String, in line: String, after marker: String? = nil) -> Int64? {
    var line = line
    return line.withUTF8 { bytes -> Int64? in
        var start = 0
        if let marker {
            guard let found = offset(of: marker, in: bytes, from: 0) else { return nil }
            start = found
        }
        let key = "\"\(name)\":"
        guard let found = offset(of: key, in: bytes, from: start) else { return nil }
        var index = found + key.utf8.count
        let negative = index < bytes.count && bytes[index] == UInt8(ascii: "-")
        if negative { index += 1 }
        var value: Int64 = 0
        var digits = 0
        while index < bytes.count, bytes[index] >= UInt8(ascii: "0"), bytes[index] <= UInt8(ascii: "9") {
            value = value * 10 + Int64(bytes[index] - UInt8(ascii: "0"))
            index += 1
            digits += 1
        }
        guard digits > 0 else { return nil }
        return negative ? -value : value
    }
}

private func contains(_ needle: String, in line: String) -> Bool {
    var line = line
    return line.withUTF8 { offset(of: needle, in: $0, from: 0) != nil }
}

/// Where `needle`'s UTF-8 first occurs in `bytes` at or after `start`.
private func offset(of needle: String, in bytes: UnsafeBufferPointer<UInt8>, from start: Int) -> Int? {
    var needle = needle
    return needle.withUTF8 { pattern -> Int? in
        guard let first = pattern.first, bytes.count >= pattern.count else { return nil }
        var index = start
        while index <= bytes.count - pattern.count {
            if bytes[index] == first, pattern.indices.allSatisfy({ bytes[index + $0] == pattern[$0] }) {
                return index
            }
            index += 1
        }
        return nil
    }
}

private func monotonicNanoseconds() -> Int64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
