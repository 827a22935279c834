import ArgumentParser
import BatonTestSupport
import Foundation

/// Drives a running `batond` over its socket and prints what it measured.
///
/// Throughput: P producers enqueue and W workers claim (long-poll) and complete, each on
/// its own connection and thread, the way co-located workers would. Every payload carries
/// its enqueue time, so each claim yields one enqueue-to-claim latency.
///
/// Latency: one worker parked on an empty queue, one producer enqueueing a job at a time:
/// the time from sending the enqueue to the worker holding the job.
@main
struct BatonBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "baton-bench",
        abstract: "Measure a running batond: full enqueue → claim → complete cycles, and wake-up latency."
    )

    @Option(help: "The batond socket.")
    var socket: String = "baton-data/baton.sock"

    @Option(help: "Producer connections.")
    var producers: Int = 8

    @Option(help: "Worker connections.")
    var workers: Int = 8

    @Option(help: "Jobs to push through in the throughput run.")
    var jobs: Int = 50_000

    @Option(help: "Jobs for the idle-worker latency run (0 skips it).")
    var latencyJobs: Int = 2_000

    @Option(help: "The queue to use; it should be empty.")
    var queue: String = "bench"

    @Option(
        help: """
            Requests each connection keeps in flight. 1 is a strict request-reply client; more \
            lets producers pipeline enqueues and workers send each complete together with \
            their next claim, as a multiplexing client library does.
            """
    )
    var window: Int = 1

    func run() throws {
        if self.jobs > 0 {
            try self.throughput()
        }
        if self.latencyJobs > 0 {
            try self.idleWorkerLatency()
        }
    }

    private func throughput() throws {
        let recorder = Recorder()
        let perProducer = self.jobs / self.producers
        let total = perProducer * self.producers
        let remaining = Counter(total)
        let started = monotonicNanoseconds()
        var threads: [Thread] = []
        let window = max(self.window, 1)
        for _ in 0..<self.producers {
            threads.append(Thread { [socket, queue] in
                recorder.run {
                    let connection = try LineConnection(path: socket)
                    var sent = 0
                    var answered = 0
                    while answered < perProducer {
                        while sent < perProducer, sent - answered < window {
                            try connection.send(#"{"op":"enqueue","queue":"\#(queue)","payload":{"t":\#(monotonicNanoseconds())}}"# + "\n")
                            sent += 1
                        }
                        let reply = try connection.readLine()
                        guard reply.contains(#""ok":true"#) else { throw BenchError("enqueue failed: \(reply)") }
                        answered += 1
                    }
                }
            })
        }
        let pipelined = window > 1
        for _ in 0..<self.workers {
            threads.append(Thread { [socket, queue] in
                recorder.run {
                    let connection = try LineConnection(path: socket)
                    let claim = #"{"op":"claim","queues":["\#(queue)"],"wait_ms":200}"# + "\n"
                    var latencies: [Int64] = []
                    try connection.send(claim)
                    while true {
                        let reply = try connection.readLine()
                        let received = monotonicNanoseconds()
                        guard let id = field("id", in: reply, after: #""job":{"#),
                            let token = field("token", in: reply),
                            let sent = field("t", in: reply)
                        else {
                            if remaining.value <= 0 { break }
                            try connection.send(claim)
                            continue
                        }
                        latencies.append(received - sent)
                        let complete = #"{"op":"complete","job":\#(id),"token":\#(token)}"# + "\n"
                        if pipelined {
                            // The next claim rides with this complete: one round trip per job.
                            try connection.send(complete + claim)
                        } else {
                            try connection.send(complete)
                        }
                        let done = try connection.readLine()
                        guard done.contains(#""ok":true"#) else { throw BenchError("complete failed: \(done)") }
                        remaining.decrement()
                        if !pipelined {
                            if remaining.value <= 0 { break }
                            try connection.send(claim)
                        }
                    }
                    recorder.add(latencies)
                }
            })
        }
        for thread in threads { thread.start() }
        recorder.waitFor(threads.count)
        let seconds = Double(monotonicNanoseconds() - started) / 1e9
        try recorder.check()
        let latencies = recorder.latencies.sorted()
        print("throughput: \(total) jobs, \(self.producers) producers, \(self.workers) workers, window \(window)")
        print(String(format: "  %.0f cycles/s (enqueue → claim → complete, %.2f s)", Double(total) / seconds, seconds))
        print("  enqueue-to-claim latency: \(percentiles(latencies))")
    }

    private func idleWorkerLatency() throws {
        let producer = try LineConnection(path: self.socket)
        let worker = try LineConnection(path: self.socket)
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
        print("idle parked worker: \(self.latencyJobs) jobs, one at a time")
        print("  enqueue-to-claim latency: \(percentiles(latencies))")
    }
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
private func field(_ name: String, in line: String, after marker: String? = nil) -> Int64? {
    var text = Substring(line)
    if let marker {
        guard let range = text.range(of: marker) else { return nil }
        text = text[range.lowerBound...]
    }
    guard let range = text.range(of: "\"\(name)\":") else { return nil }
    let digits = text[range.upperBound...].prefix { $0.isNumber || $0 == "-" }
    return Int64(digits)
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

/// Collects the threads' latencies and first error, and counts them finishing.
private final class Recorder: @unchecked Sendable {
    private let condition = NSCondition()
    private var finished = 0
    private var samples: [Int64] = []
    private var error: (any Error)?

    func run(_ body: () throws -> Void) {
        do { try body() } catch {
            self.condition.withLock { if self.error == nil { self.error = error } }
        }
        self.condition.withLock {
            self.finished += 1
            self.condition.broadcast()
        }
    }

    func add(_ latencies: [Int64]) {
        self.condition.withLock { self.samples.append(contentsOf: latencies) }
    }

    func waitFor(_ count: Int) {
        self.condition.withLock {
            while self.finished < count { self.condition.wait() }
        }
    }

    func check() throws {
        if let error = self.condition.withLock({ self.error }) { throw error }
    }

    var latencies: [Int64] { self.condition.withLock { self.samples } }
}

/// Jobs not yet completed, shared by the workers.
private final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var remaining: Int

    init(_ value: Int) { self.remaining = value }

    var value: Int { self.lock.withLock { self.remaining } }
    func decrement() { self.lock.withLock { self.remaining -= 1 } }
}
