import BatonClient
import BatonCore
import BatonProtocol
import BatonTestSupport
import Foundation
import Testing

struct Document: Codable, Equatable {
    var file: String
    var pages: Int
}

struct Stage: Codable, Equatable {
    var stage: String
}

/// Runs `body` with a client of `server`, and closes the client afterwards.
func withClient(of server: TestServer, _ body: (BatonClient) async throws -> Void) async throws {
    let client = BatonClient(socketPath: server.socketPath)
    do {
        try await body(client)
    } catch {
        await client.close()
        throw error
    }
    await client.close()
}

@Suite("The Swift client against the real batond")
struct BatonClientTests {
    @Test("a job's whole life through the client, with typed payload, checkpoint and result")
    func lifecycle() async throws {
        let server = try TestServer()
        try await withClient(of: server) { client in

            let info = try await client.hello(client: "tests")
            #expect(info.protocolVersion == 1)

            let enqueued = try await client.enqueue(queue: "docs", payload: Document(file: "novel.epub", pages: 512))
            #expect(!enqueued.duplicate)
            let lease = try #require(try await client.claim(queues: ["docs"], wait: .seconds(5), worker: "swift-worker"))
            #expect(lease.jobID == enqueued.jobID)
            #expect(lease.attempt == 1)
            #expect(try lease.payload(as: Document.self) == Document(file: "novel.epub", pages: 512))
            #expect(try lease.checkpoint(as: Stage.self) == nil)

            let expires = try await lease.heartbeat(progress: Progress(percent: 40, message: "chunking"))
            #expect(expires >= lease.expiresAt)
            try await lease.saveCheckpoint(Stage(stage: "chunked"))

            let running = try await client.job(lease.jobID)
            #expect(running.state == .running)
            #expect(running.worker == "swift-worker")
            #expect(running.peerPID != nil)

            try await lease.complete(result: ["chunks": 61])
            let done = try await client.job(lease.jobID)
            #expect(done.state == .completed)
            #expect(try done.result(as: [String: Int].self) == ["chunks": 61])
            #expect(try await client.stats()["docs"]?.counts[.completed] == 1)
        }
    }

    @Test("completing can lease the next job in the same request, and says when none is ready")
    func completeAndClaim() async throws {
        let server = try TestServer()
        try await withClient(of: server) { client in
            let first = try await client.enqueue(queue: "docs", payload: 1).jobID
            let second = try await client.enqueue(queue: "docs", payload: 2).jobID
            let lease = try #require(try await client.claim(queues: ["docs"]))
            #expect(lease.jobID == first)
            let next = try #require(try await lease.complete(result: ["pages": 3], claimingNextFrom: ["docs"], worker: "w"))
            #expect(next.jobID == second)
            #expect(try next.payload(as: Int.self) == 2)
            let done = try await client.job(first)
            #expect(done.state == .completed)
            #expect(try done.result(as: [String: Int].self) == ["pages": 3])
            let running = try await client.job(second)
            #expect(running.state == .running)
            #expect(running.worker == "w")
            #expect(running.startedAt == done.finishedAt, "leased in the completion's own commit")
            #expect(try await next.complete(claimingNextFrom: ["docs"]) == nil)
            #expect(try await client.job(second).state == .completed)
        }
    }

    @Test("a long-polling claim does not hold up other requests on the same connection")
    func multiplexing() async throws {
        let server = try TestServer()
        try await withClient(of: server) { client in
            async let waiting = client.claim(queues: ["later"], wait: .seconds(30))
            // While the claim waits, the same client enqueues the job it is waiting for.
            try await Task.sleep(for: .milliseconds(200))
            let enqueued = try await client.enqueue(queue: "later", payload: 1)
            let lease = try #require(try await waiting)
            #expect(lease.jobID == enqueued.jobID)
        }
    }

    @Test("server refusals arrive as BatonError with the protocol's code")
    func typedErrors() async throws {
        let server = try TestServer()
        try await withClient(of: server) { client in
            await #expect(throws: BatonError.self) { try await client.job(424_242) }
            do {
                _ = try await client.job(424_242)
            } catch let error as BatonError {
                #expect(error.code == .notFound)
            }

            _ = try await client.enqueue(queue: "q", payload: "x", options: EnqueueOptions(backoff: BackoffPolicy(initialMilliseconds: 0, factor: 1, maximumMilliseconds: 0), leaseDuration: .milliseconds(200)))
            let stale = try #require(try await client.claim(queues: ["q"]))
            let fresh = try #require(try await client.claim(queues: ["q"], wait: .seconds(10)))
            #expect(fresh.token > stale.token)
            do {
                try await stale.complete()
                Issue.record("a stale lease completed its job")
            } catch let error as BatonError {
                #expect(error.code == .leaseLost)
            }
            try await fresh.complete()
        }
    }

    @Test("named limits and groups through the client: setLimit, enqueue options, limits")
    func namedLimits() async throws {
        let server = try TestServer()
        try await withClient(of: server) { client in
            let rate = LimitSettings.Rate(count: 100, perMilliseconds: 1_000)
            let settings = try await client.setLimit("gpu", LimitSettings.Change(maxRunning: 1, rate: .some(rate)))
            #expect(settings == LimitSettings(maxRunning: 1, rate: rate))
            for queue in ["extract", "embed"] {
                _ = try await client.enqueue(queue: queue, payload: queue, options: EnqueueOptions(limits: ["gpu"], group: "tenant-1"))
            }
            let first = try #require(try await client.claim(queues: ["extract", "embed"]))
            #expect(try await client.claim(queues: ["extract", "embed"]) == nil, "gpu runs one job, across queues")
            let gpu = try #require(try await client.limits().first { $0.name == "gpu" })
            #expect(gpu.running == 1 && gpu.startedInWindow == 1 && gpu.waiting == 1 && gpu.rule == "gpu")
            #expect(gpu.holding, "it held the second claim back")
            try await first.complete()
            #expect(try await client.claim(queues: ["extract", "embed"]) != nil)
        }
    }

    @Test("a failed attempt is retried with its checkpoint, then fails for good")
    func failAndRetry() async throws {
        let server = try TestServer()
        try await withClient(of: server) { client in
            _ = try await client.enqueue(
                queue: "embed", payload: 42,
                options: EnqueueOptions(maxAttempts: 2, backoff: BackoffPolicy(initialMilliseconds: 0, factor: 1, maximumMilliseconds: 0))
            )
            let first = try #require(try await client.claim(queues: ["embed"]))
            try await first.saveCheckpoint(Stage(stage: "embedded"))
            guard case .retrying = try await first.fail("rate limited") else {
                Issue.record("the first failure did not retry")
                return
            }
            let second = try #require(try await client.claim(queues: ["embed"], wait: .seconds(5)))
            #expect(second.attempt == 2)
            #expect(try second.checkpoint(as: Stage.self) == Stage(stage: "embedded"))
            #expect(try await second.fail("rate limited again") == .failed)
            #expect(try await client.job(second.jobID).lastError == "rate limited again")
        }
    }

    @Test("the client reconnects when batond restarts, and its lease still holds")
    func reconnects() async throws {
        let server = try TestServer()
        try await withClient(of: server) { client in
            _ = try await client.enqueue(queue: "r", payload: "survives", options: EnqueueOptions(leaseDuration: .seconds(30)))
            let lease = try #require(try await client.claim(queues: ["r"]))
            try server.restart()
            // The old connection is gone; the heartbeat goes out on a new one and the lease,
            // kept across the restart, is renewed.
            try await lease.heartbeat()
            try await lease.complete()
            #expect(try await client.job(lease.jobID).state == .completed)
        }
    }

    @Test("a socket path with no socket fails at once, naming the path")
    func noSocket() async throws {
        let path = "/tmp/no-such-baton-\(getpid()).sock"
        let client = BatonClient(socketPath: path)  // the default 30 s of reconnecting is not spent
        do {
            _ = try await client.stats()
            Issue.record("stats succeeded without a server")
        } catch let error as BatonConnectionError {
            #expect(error.code == .unavailable)
            #expect(error.description.contains("no batond socket at \(path)"), "\(error)")
        }
    }

    @Test("a socket that refuses connections, as while batond restarts, is retried until the reconnect timeout")
    func refusingSocket() async throws {
        let path = "/tmp/refusing-baton-\(getpid()).sock"
        unlink(path)
        // Bound but never listening: connect(2) is refused, as between two batond processes.
        let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(descriptor); unlink(path) }
        #expect(withUnixSocketAddress(path, { bind(descriptor, $0, $1) }) == 0)
        let client = BatonClient(configuration: BatonClient.Configuration(socketPath: path, reconnectTimeout: .milliseconds(300)))
        do {
            _ = try await client.stats()
            Issue.record("stats succeeded without a server")
        } catch let error as BatonConnectionError {
            #expect(error.code == .unavailable)
            #expect(error.description.contains("cannot connect to batond at \(path): connection refused"), "\(error)")
        }
    }
}


@Suite(
    "The Swift client while the PostgreSQL store is away",
    .enabled(if: ProcessInfo.processInfo.environment["BATON_TEST_POSTGRES"] != nil, "needs PostgreSQL (scripts/test installs it)")
)
struct UnavailableStoreTests {
    @Test("reads wait while the store is unreachable and are answered once it is back; other ops say unavailable")
    func readsWaitOthersAreTold() async throws {
        let postgres = try ThrowawayPostgres.start()
        defer { postgres.remove() }
        let server = try TestServer(store: postgres.url)
        try await withClient(of: server) { client in
            _ = try await client.stats()
            try postgres.down()
            // An enqueue may not be sent twice: the caller is told, and decides.
            await #expect {
                try await client.enqueue(queue: "q", payload: 1)
            } throws: { error in
                (error as? BatonError)?.code == .unavailable
            }
            async let reading = client.stats()
            try await Task.sleep(for: .milliseconds(500))
            try postgres.up()
            // Answered once the store is back (it throws `unavailable` if it was not resent).
            _ = try await reading
        }
    }
}
