import BatonClient
import BatonCore
import BatonProtocol
import BatonTestSupport
import Foundation
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle
import Testing

/// Counts handlers running at once, and the most there ever were.
final class Concurrency: Sendable {
    private let state = NIOLockedValueBox((now: 0, most: 0, done: [Int64]()))

    func enter() { self.state.withLockedValue { $0.now += 1; $0.most = max($0.most, $0.now) } }
    func leave(_ job: Int64) { self.state.withLockedValue { $0.now -= 1; $0.done.append(job) } }
    var most: Int { self.state.withLockedValue { $0.most } }
    var done: [Int64] { self.state.withLockedValue { $0.done } }
}

/// Runs `worker` in a service group until `until` returns, then shuts the group down gracefully.
func serve<C: Clock<Duration>>(_ worker: Worker<C>, until: @escaping @Sendable () async throws -> Void) async throws {
    let group = ServiceGroup(services: [worker], logger: Logger(label: "test"))
    try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        try await until()
        await group.triggerGracefulShutdown()
        try await tasks.waitForAll()
    }
}

/// Polls `condition` every 20 ms for up to `seconds`.
func eventually(_ seconds: Double = 20, _ condition: () async throws -> Bool) async throws -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: .milliseconds(20))
    }
    return false
}

@Suite("The worker runtime against the real batond")
struct WorkerTests {
    @Test("many jobs with concurrency 3: all done, never more than 3 at once")
    func boundedConcurrency() async throws {
        let server = try TestServer()
        try await withClient(of: server) { client in
            var enqueued: [Int64] = []
            for index in 0..<30 {
                enqueued.append(try await client.enqueue(queue: "many", payload: index).jobID)
            }
            let ids = enqueued
            let concurrency = Concurrency()
            let worker = Worker(client: client, configuration: .init(queues: ["many"], concurrency: 3, claimWait: .seconds(1))) { job in
                concurrency.enter()
                try await Task.sleep(for: .milliseconds(50))
                concurrency.leave(job.jobID)
            }
            try await serve(worker) { () async throws in
                #expect(try await eventually { concurrency.done.count == 30 })
            }
            #expect(Set(concurrency.done) == Set(ids))
            #expect(concurrency.most <= 3)
            #expect(concurrency.most >= 2, "jobs should overlap when there is room")
            for id in ids {
                #expect(try await client.job(id).state == .completed)
            }
        }
    }

    @Test("a busy worker leases each next job with the completion of the last: one request per job")
    func completionsClaimTheNextJob() async throws {
        let server = try TestServer()
        try await withClient(of: server) { client in
            var ids: [Int64] = []
            for index in 0..<5 {
                ids.append(try await client.enqueue(queue: "chain", payload: index).jobID)
            }
            let concurrency = Concurrency()
            let worker = Worker(client: client, configuration: .init(queues: ["chain"], claimWait: .seconds(1))) { job in
                concurrency.enter()
                concurrency.leave(job.jobID)
            }
            try await serve(worker) { () async throws in
                #expect(try await eventually { concurrency.done.count == 5 })
            }
            #expect(concurrency.done == ids)
            var jobs: [JobInfo] = []
            for id in ids { jobs.append(try await client.job(id)) }
            // A job leased by the completion before it starts in the very commit that
            // finished its predecessor; a separate claim would come one commit later.
            for (previous, next) in zip(jobs, jobs.dropFirst()) {
                #expect(next.startedAt == previous.finishedAt, "job \(next.id)")
            }
        }
    }

    @Test("a handler that throws is retried, and resumes from its checkpoint")
    func throwsThenResumes() async throws {
        let server = try TestServer()
        try await withClient(of: server) { client in
            let id = try await client.enqueue(
                queue: "stages", payload: "doc",
                options: EnqueueOptions(backoff: BackoffPolicy(initialMilliseconds: 0, factor: 1, maximumMilliseconds: 0))
            ).jobID
            let seen = NIOLockedValueBox<[String?]>([])
            struct Flaky: Error, CustomStringConvertible { var description: String { "embedding API timed out" } }
            let worker = Worker(client: client, configuration: .init(queues: ["stages"], claimWait: .seconds(1))) { job in
                let resume = try job.resumeState(as: String.self)
                seen.withLockedValue { $0.append(resume) }
                if resume == nil {
                    try await job.checkpoint("extracted")
                    throw Flaky()
                }
            }
            try await serve(worker) { () async throws in
                #expect(try await eventually { try await client.job(id).state == .completed })
            }
            #expect(seen.withLockedValue { $0 } == [nil, "extracted"])
            let job = try await client.job(id)
            #expect(job.attempts == 2)
            #expect(job.lastError == nil && job.earlierError == "Flaky: embedding API timed out", "the error's type, then its description")
        }
    }

    @Test("a completing handler's result and follow-ups commit with the completion; PermanentFailure fails for good")
    func completionsAndPermanentFailures() async throws {
        let server = try TestServer()
        try await withClient(of: server) { client in
            let parsed = try await client.enqueue(queue: "parse", payload: "good.pdf").jobID
            let broken = try await client.enqueue(queue: "parse", payload: "broken.pdf").jobID
            let worker = Worker(client: client, configuration: .init(queues: ["parse"], claimWait: .seconds(1)), completing: { job in
                #expect(job.queue == "parse" && job.id == job.jobID && job.attempt == 1)
                let file = try job.payload(as: String.self)
                guard file == "good.pdf" else { throw PermanentFailure("\(file) is not a PDF") }
                return try Completion(
                    result: ["pages": 3],
                    followUps: try [1, 2].map { page in try .init(queue: "embed", payload: "\(file)#\(page)") }
                )
            })
            try await serve(worker) { () async throws in
                #expect(try await eventually {
                    let first = try await client.job(parsed).state
                    let second = try await client.job(broken).state
                    return first == .completed && second == .failed
                })
            }
            #expect(try await client.job(parsed).result == .object(["pages": .integer(3)]))
            let failed = try await client.job(broken)
            #expect(failed.attempts == 1 && failed.maxAttempts > 1, "failed at once, attempts left")
            #expect(failed.lastError == "broken.pdf is not a PDF")
            let stats = try await client.stats()
            #expect(stats["embed"]?.counts[.queued] == 2, "the follow-ups were enqueued with the completion")
            // Each follow-up knows its parent, and the parent's completion lists them.
            let embeds = try await client.list(queue: "embed", limit: 10, oldestFirst: true).jobs
            #expect(embeds.map(\.parent) == [parsed, parsed])
            let completed = try #require(try await client.events(of: parsed).last)
            #expect(completed.event == "completed" && completed.followUps == embeds.map(\.id))
            #expect(try await client.events(of: embeds[0].id).first?.parent == parsed)
            let shown = try baton(["get", "\(embeds[0].id)", "--socket", server.socketPath])
            let line = shown.output.split(separator: "\n").first { $0.hasPrefix("parent ") }
            #expect(line?.hasSuffix(" \(parsed) (enqueued by its completion)") == true, "\(shown.output)")
        }
    }

    @Test("a handler that outlives its lease is cancelled, and its late result is not reported")
    func leaseLostCancelsHandler() async throws {
        let server = try TestServer()
        try await withClient(of: server) { client in
            let id = try await client.enqueue(
                queue: "slow", payload: 0,
                options: EnqueueOptions(backoff: BackoffPolicy(initialMilliseconds: 60_000, factor: 1, maximumMilliseconds: 60_000), leaseDuration: .milliseconds(300))
            ).jobID
            let cancelled = NIOLockedValueBox(false)
            // Heartbeats far apart: the 300 ms lease runs out before the first one.
            let worker = Worker(client: client, configuration: .init(queues: ["slow"], claimWait: .seconds(1), heartbeatInterval: .seconds(1))) { _ in
                do {
                    try await Task.sleep(for: .seconds(30))
                } catch {
                    cancelled.withLockedValue { $0 = true }
                    throw error
                }
            }
            try await serve(worker) { () async throws in
                #expect(try await eventually(10) { cancelled.withLockedValue { $0 } })
            }
            let job = try await client.job(id)
            // Expired and waiting out its backoff; not completed and not failed by the worker.
            #expect(job.state == .retrying)
            #expect(job.lastError == "lease expired")
        }
    }

    @Test("graceful shutdown lets a short handler finish, keeps a long one's checkpoint from the grace period, and releases it unspent")
    func shutdownDrainsAndReleases() async throws {
        let server = try TestServer()
        try await withClient(of: server) { client in
            let quick = try await client.enqueue(queue: "drain", payload: "quick", options: EnqueueOptions(priority: 2)).jobID
            let long = try await client.enqueue(queue: "drain", payload: "long", options: EnqueueOptions(priority: 1)).jobID
            let started = NIOLockedValueBox(Set<Int64>())
            let worker = Worker(
                client: client,
                configuration: .init(queues: ["drain"], concurrency: 2, claimWait: .seconds(30), shutdownGracePeriod: .milliseconds(500))
            ) { job in
                started.withLockedValue { _ = $0.insert(job.jobID) }
                let kind = try job.payload(as: String.self)
                try await Task.sleep(for: .milliseconds(200))
                if kind == "quick" { return }
                // In the grace period: the stage that ends now is kept.
                try await job.checkpoint("saved in the grace period")
                try await Task.sleep(for: .seconds(60))
            }
            let began = ContinuousClock.now
            try await serve(worker) { () async throws in
                #expect(try await eventually { started.withLockedValue { $0.count } == 2 })
            }
            // The shutdown took the grace period, not the long handler's minute.
            #expect(ContinuousClock.now - began < .seconds(20))
            #expect(try await client.job(quick).state == .completed)
            let released = try await client.job(long)
            #expect(released.state == .queued)
            #expect(released.attempts == 0)
            #expect(released.checkpoint == .string("saved in the grace period"))
        }
    }

    @Test("a claim cancelled while waiting gives back the job the server hands out late")
    func cancelledClaimReleases() async throws {
        let server = try TestServer()
        try await withClient(of: server) { client in
            let waiting = Task { try await client.claim(queues: ["late"], wait: .seconds(30)) }
            try await Task.sleep(for: .milliseconds(200))
            waiting.cancel()
            await #expect(throws: CancellationError.self) { _ = try await waiting.value }
            // The server still has the parked claim: this job goes to it, and the client
            // gives it straight back.
            let id = try await client.enqueue(queue: "late", payload: 1).jobID
            #expect(try await eventually(10) {
                let job = try await client.job(id)
                return job.state == .queued && job.attempts == 0
            })
            let lease = try #require(try await client.claim(queues: ["late"], wait: .seconds(5)))
            #expect(lease.jobID == id)
            #expect(lease.attempt == 1)
        }
    }

    @Test("batond restarting under a running worker: it carries on, nothing lost or done twice")
    func survivesRestart() async throws {
        let server = try TestServer()
        try await withClient(of: server) { client in
            var enqueued: [Int64] = []
            for index in 0..<10 {
                enqueued.append(try await client.enqueue(queue: "restart", payload: index).jobID)
            }
            let ids = enqueued
            let runs = NIOLockedValueBox([Int64: Int]())
            let worker = Worker(client: client, configuration: .init(queues: ["restart"], concurrency: 2, claimWait: .seconds(1))) { job in
                runs.withLockedValue { $0[job.jobID, default: 0] += 1 }
                try await Task.sleep(for: .milliseconds(150))
            }
            try await serve(worker) { () async throws in
                #expect(try await eventually { runs.withLockedValue { $0.count } >= 3 })
                try server.restart()
                #expect(try await eventually(30) {
                    var finished = 0
                    for id in ids where try await client.job(id).state == .completed { finished += 1 }
                    return finished == ids.count
                })
            }
            // Every job ran exactly once: leases kept across the restart let running
            // handlers complete, and no completed job was handed out again.
            #expect(runs.withLockedValue { $0 }.values.allSatisfy { $0 == 1 }, "\(runs.withLockedValue { $0 })")
        }
    }
}

@Suite("Cancelling under a worker")
struct WorkerCancelTests {
    @Test("cancelling a running job from another client cancels the handler within one heartbeat")
    func cancelFromAnotherClient() async throws {
        let server = try TestServer()
        try await withClient(of: server) { client in
            let id = try await client.enqueue(queue: "long", payload: 0, options: EnqueueOptions(leaseDuration: .milliseconds(900))).jobID
            let started = NIOLockedValueBox<ContinuousClock.Instant?>(nil)
            let stopped = NIOLockedValueBox<ContinuousClock.Instant?>(nil)
            let worker = Worker(client: client, configuration: .init(queues: ["long"], claimWait: .seconds(1))) { _ in
                started.withLockedValue { $0 = .now }
                do {
                    try await Task.sleep(for: .seconds(60))
                } catch {
                    stopped.withLockedValue { $0 = .now }
                    throw error
                }
            }
            try await serve(worker) { () async throws in
                #expect(try await eventually { started.withLockedValue { $0 } != nil })
                let operatorClient = BatonClient(socketPath: server.socketPath)
                try await operatorClient.cancel(id, reason: "wrong document")
                let cancelledAt = ContinuousClock.now
                await operatorClient.close()
                #expect(try await eventually(10) { stopped.withLockedValue { $0 } != nil })
                // Heartbeats come every 300 ms (a third of the 900 ms lease): the handler
                // stops at the next one, not at the end of its minute of work. The bound
                // leaves room for a loaded CI machine.
                let reaction = try #require(stopped.withLockedValue { $0 }) - cancelledAt
                #expect(reaction < .seconds(5), "the handler stopped \(reaction) after the cancel")
            }
            let job = try await client.job(id)
            #expect(job.state == .cancelled)
            #expect(job.lastError == "wrong document")
            let reports = try await client.metrics().value("baton_late_outcomes_total")
            #expect(reports == 0, "the worker reported nothing for the cancelled attempt")
        }
    }
}

@Suite("Time limits under a worker")
struct WorkerTimeoutTests {
    @Test("an attempt past its timeout is cancelled though the worker heartbeats, and the job retried")
    func timeoutCancelsTheHandler() async throws {
        let server = try TestServer()
        try await withClient(of: server) { client in
            let options = EnqueueOptions(
                backoff: BackoffPolicy(initialMilliseconds: 0, factor: 2, maximumMilliseconds: 0),
                leaseDuration: .milliseconds(300), timeout: .milliseconds(800))
            let id = try await client.enqueue(queue: "hung", payload: 0, options: options).jobID
            let cancelled = NIOLockedValueBox(false)
            let worker = Worker(client: client, configuration: .init(queues: ["hung"], claimWait: .seconds(1))) { context in
                guard context.attempt == 1 else { return }
                do {
                    try await Task.sleep(for: .seconds(60))
                } catch {
                    cancelled.withLockedValue { $0 = true }
                    throw error
                }
            }
            try await serve(worker) { () async throws in
                #expect(try await eventually { try await client.job(id).state == .completed })
            }
            #expect(cancelled.withLockedValue { $0 }, "the first attempt's handler was cancelled")
            let job = try await client.job(id)
            #expect(job.attempts == 2 && job.earlierError == "timed out after 800 ms")
        }
    }
}

@Suite("Pausing under a worker")
struct WorkerPauseTests {
    @Test("pausing a running job stops its handler; resumed, the worker runs it again from its checkpoint")
    func pauseAndResume() async throws {
        let server = try TestServer()
        try await withClient(of: server) { client in
            let id = try await client.enqueue(queue: "pausable", payload: 0, options: EnqueueOptions(leaseDuration: .milliseconds(900))).jobID
            let runs = NIOLockedValueBox([String?]())
            let worker = Worker(client: client, configuration: .init(queues: ["pausable"], claimWait: .seconds(1))) { job in
                let resume = try job.resumeState(as: String.self)
                runs.withLockedValue { $0.append(resume) }
                if resume == nil {
                    try await job.checkpoint("stage one")
                    try await Task.sleep(for: .seconds(60))
                }
            }
            try await serve(worker) { () async throws in
                #expect(try await eventually { runs.withLockedValue { $0.count } == 1 })
                #expect(try await eventually { try await client.job(id).checkpoint != nil })
                try await client.pause(id)
                #expect(try await client.job(id).state == .paused)
                try await client.resume(id)
                #expect(try await eventually { try await client.job(id).state == .completed })
            }
            #expect(runs.withLockedValue { $0 } == [nil, "stage one"])
            #expect(try await client.job(id).attempts == 1, "the paused attempt was given back")
        }
    }
}

@Suite("Trace context")
struct TraceContextTests {
    static let producer = TraceContext(traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", tracestate: "vendor=abc")!

    @Test("a job carries the context it was enqueued with to its lease, its handler, and what the handler enqueues")
    func carried() async throws {
        let server = try TestServer()
        try await withClient(of: server) { client in
            let traced = try await client.enqueue(queue: "ocr", payload: 1, options: EnqueueOptions(trace: .context(Self.producer))).jobID
            let untraced = try await client.enqueue(queue: "plain", payload: 2, options: EnqueueOptions(trace: .none)).jobID
            #expect(try await client.job(traced).trace == Self.producer)
            #expect(try await client.job(untraced).trace == nil)

            let seen = NIOLockedValueBox<(trace: TraceContext?, enqueued: Int64?)>((nil, nil))
            let worker = Worker(client: client, configuration: .init(queues: ["ocr"], claimWait: .seconds(1))) { job in
                // Without a tracer the handler's context is the producer's, and it travels on.
                let enqueued = try await client.enqueue(queue: "notify", payload: job.id).jobID
                seen.withLockedValue { $0 = (job.trace, enqueued) }
                return try Completion(result: "ok", followUps: [try .init(queue: "embed", payload: job.id)])
            }
            try await serve(worker) { () async throws in
                #expect(try await eventually { try await client.job(traced).state == .completed })
            }
            let (trace, enqueued) = seen.withLockedValue { $0 }
            #expect(trace == Self.producer)
            #expect(try await client.job(try #require(enqueued)).trace == Self.producer)
            let followUp = try #require(try await client.list(queue: "embed").jobs.first)
            #expect(followUp.trace == Self.producer)
        }
    }
}
