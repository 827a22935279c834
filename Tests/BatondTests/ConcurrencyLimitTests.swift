import BatonTestSupport
import Foundation
import Testing

@Suite("Queue limits and concurrency keys")
struct ConcurrencyLimitTests {
    @Test("a queue limit holds jobs back until a running one ends; it is persisted and can be lifted")
    func queueLimit() throws {
        let server = try TestServer()
        let client = try server.connect()
        let set = try client.request(["op": "set_queue", "queue": "llm", "max_running": 1])
        #expect(set.ok && set.int("max_running") == 1, "\(set)")
        _ = try client.enqueue(queue: "llm", payload: 1)
        _ = try client.enqueue(queue: "llm", payload: 2)
        let first = try #require(try client.claim(queues: ["llm"]))
        #expect(try client.claim(queues: ["llm"]) == nil, "the limit of 1 is reached")

        // A parked claim gets the held-back job as soon as the running one completes.
        let waiter = try server.connect()
        try waiter.send(["op": "claim", "queues": ["llm"], "wait_ms": 20_000])
        try client.waitForParkedClaims(1)
        #expect(try client.fenced("complete", first).ok)
        let second = ClaimedJob(try #require(waiter.readReply().object("job")))
        #expect(second.id != first.id)

        try server.restart()
        let again = try server.connect()
        let limits = try #require(try again.request(["op": "stats"]).object("queue_limits")?["llm"] as? [String: Any])
        #expect(limits["max_running"] as? Int == 1, "the limit outlives a restart")
        #expect(limits["running"] as? Int == 1, "the running job still counts after a restart")
        _ = try again.enqueue(queue: "llm", payload: 3)
        #expect(try again.claim(queues: ["llm"]) == nil)
        #expect(try again.request(["op": "set_queue", "queue": "llm", "max_running": NSNull()]).isNull("max_running"))
        #expect(try again.claim(queues: ["llm"]) != nil, "without a limit the job starts")
    }

    @Test("set_queue refuses a limit that is not a positive integer", arguments: [0, -1, "2"] as [any Sendable])
    func badLimit(limit: any Sendable) throws {
        let server = try TestServer()
        let client = try server.connect()
        let refused = try client.request(["op": "set_queue", "queue": "q", "max_running": limit])
        #expect(refused.errorCode == "invalid_argument", "\(refused)")
        #expect(try client.request(["op": "set_queue", "queue": "q"]).errorCode == "invalid_argument")
        #expect(try client.request(["op": "stats"]).object("queue_limits")?.isEmpty == true)
    }

    @Test("a job whose concurrency key is held waits, and a job behind it with a free key goes first")
    func keyedJobWaits() throws {
        let server = try TestServer()
        let client = try server.connect()
        let a1 = try client.enqueue(queue: "docs", payload: 1, ["concurrency_key": "doc-7"])
        let a2 = try client.enqueue(queue: "index", payload: 2, ["concurrency_key": "doc-7", "priority": 5])
        let b = try client.enqueue(queue: "docs", payload: 3, ["concurrency_key": "doc-8"])
        let first = try #require(try client.claim(queues: ["docs"]))
        #expect(first.id == a1)
        #expect(try client.claim(queues: ["index"]) == nil, "doc-7 is held, in whatever queue")
        #expect(try client.claim(queues: ["docs", "index"])?.id == b, "passed over, not failed: the next job runs")
        #expect(try client.get(a2)["state"] as? String == "queued")
        #expect(try client.get(a2)["concurrency_key"] as? String == "doc-7")

        let waiter = try server.connect()
        try waiter.send(["op": "claim", "queues": ["index"], "wait_ms": 20_000])
        try client.waitForParkedClaims(1)
        #expect(try client.fenced("fail", first, ["error": "flaky"]).ok)
        let next = ClaimedJob(try #require(waiter.readReply().object("job")))
        #expect(next.id == a2, "the key's release wakes the claim waiting in the other queue")
    }

    @Test("under many workers, two jobs with one concurrency key never run together")
    func keysUnderLoad() throws {
        let server = try TestServer()
        let client = try server.connect()
        let keys = ["doc-a", "doc-b", "doc-c"]
        for index in 0..<60 {
            _ = try client.enqueue(queue: "k", payload: index, ["concurrency_key": keys[index % keys.count]])
        }
        let running = RunningJobs()
        runWorkers(8, socketPath: server.socketPath, queue: "k") { job in
            running.start(job.payload as? Int ?? -1, key: keys[(job.payload as? Int ?? 0) % keys.count])
        } finish: { job in
            running.finish(key: keys[(job.payload as? Int ?? 0) % keys.count])
        }
        #expect(running.overlaps.isEmpty, "jobs ran together under one key: \(running.overlaps)")
        #expect(try completedCount(client, queue: "k") == 60)
        #expect(running.mostAtOnce <= keys.count)
    }

    @Test("under many workers, a queue's limit is never exceeded")
    func limitUnderLoad() throws {
        let server = try TestServer()
        let client = try server.connect()
        #expect(try client.request(["op": "set_queue", "queue": "api", "max_running": 3]).ok)
        for index in 0..<60 {
            _ = try client.enqueue(queue: "api", payload: index)
        }
        let running = RunningJobs()
        runWorkers(8, socketPath: server.socketPath, queue: "api") { _ in
            running.start(0, key: nil)
        } finish: { _ in
            running.finish(key: nil)
        }
        #expect(try completedCount(client, queue: "api") == 60)
        #expect(running.mostAtOnce <= 3, "\(running.mostAtOnce) jobs ran at once under a limit of 3")
    }
}

private func completedCount(_ client: JSONLineClient, queue: String) throws -> Int? {
    (try client.request(["op": "stats"]).object("queues")?[queue] as? [String: Any])?["completed"] as? Int
}

/// Runs `count` workers on their own threads and connections until the queue is empty:
/// each claims, calls `start`, works a little, calls `finish`, then completes.
///
/// `finish` runs before `complete` is sent, so a job counts as running for as long as the
/// server could consider it so, and any overlap the test sees is the server's doing.
private func runWorkers(
    _ count: Int, socketPath: String, queue: String,
    start: @escaping @Sendable (ClaimedJob) -> Void, finish: @escaping @Sendable (ClaimedJob) -> Void
) {
    let threads = (0..<count).map { _ in
        Thread {
            guard let client = try? JSONLineClient(connection: LineConnection(path: socketPath, timeoutSeconds: 30)) else { return }
            while let job = try? client.claim(queues: [queue], ["wait_ms": 500]) {
                start(job)
                usleep(UInt32.random(in: 1_000...5_000))
                finish(job)
                guard (try? client.fenced("complete", job))?.ok == true else { return }
            }
        }
    }
    for thread in threads { thread.start() }
    while threads.contains(where: { !$0.isFinished }) { usleep(10_000) }
}

/// What the workers of a load test saw running, shared between their threads.
private final class RunningJobs: @unchecked Sendable {
    private let lock = NSLock()
    private var heldKeys: Set<String> = []
    private var runningNow = 0
    private(set) var overlaps: [String] = []
    private(set) var mostAtOnce = 0

    func start(_ job: Int, key: String?) {
        self.lock.withLock {
            if let key, !self.heldKeys.insert(key).inserted {
                self.overlaps.append("job \(job) under \(key)")
            }
            self.runningNow += 1
            self.mostAtOnce = max(self.mostAtOnce, self.runningNow)
        }
    }

    func finish(key: String?) {
        self.lock.withLock {
            if let key { self.heldKeys.remove(key) }
            self.runningNow -= 1
        }
    }
}
