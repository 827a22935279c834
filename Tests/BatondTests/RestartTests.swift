import BatonTestSupport
import Foundation
import Testing

@Suite("Restarts, crashes and ownership of the store")
struct RestartTests {
    @Test("a lease live at a graceful restart is kept: the worker heartbeats and completes after it")
    func leasesSurviveRestart() throws {
        let server = try TestServer()
        let id = try server.connect().enqueue(payload: "long job", ["lease_ms": 10_000])
        let claimed = try #require(try server.connect().claim())
        #expect(server.stop() == 0, "graceful stop exits 0:\n\(server.log)")
        try server.start()

        let worker = try server.connect()
        let job = try worker.get(id)
        #expect(job["state"] as? String == "running")
        let beat = try worker.fenced("heartbeat", claimed)
        #expect(beat.ok, "\(beat)")
        #expect(try worker.fenced("complete", claimed).ok)
        #expect(try worker.get(id)["state"] as? String == "completed")
    }

    @Test("SIGTERM answers a parked claim with job null, closes the connection and exits 0")
    func gracefulStopWakesParkedClaims() throws {
        let server = try TestServer()
        let worker = try server.connect()
        try worker.send(["op": "claim", "id": "parked", "queues": ["idle"], "wait_ms": 60_000])
        try server.connect().waitForParkedClaims(1)
        #expect(server.stop() == 0, "\(server.log)")
        let reply = try worker.readReply()
        #expect(reply.string("id") == "parked")
        #expect(reply.ok)
        #expect(reply.isNull("job"))
        #expect(try worker.connection.waitForClose())
        #expect(server.log.contains("batond stopped"))
    }

    @Test("tokens keep growing across a kill -9 and a restart")
    func tokensSurviveCrash() throws {
        let server = try TestServer()
        let client = try server.connect()
        _ = try client.enqueue(payload: 1)
        let before = try #require(try client.claim())
        server.kill()
        try server.start()
        let after = try server.connect()
        _ = try after.enqueue(payload: 2)
        let next = try #require(try after.claim())
        #expect(next.token > before.token)
    }

    @Test(
        "a second batond on the same store fails fast and says why",
        .disabled(if: TestStore.current.isPostgres, "many batond sharing one PostgreSQL store is the point of it")
    )
    func secondInstanceRefused() throws {
        let server = try TestServer()
        let otherSocket = server.directory.appendingPathComponent("other.sock").path
        let started = Date()
        let (status, output) = try server.runSecondInstance(socketPath: otherSocket)
        #expect(status != 0)
        #expect(output.contains("already in use"), "\(output)")
        #expect(!output.contains("Fatal error") && !output.contains("Cannot schedule"), "\(output)")
        #expect(Date().timeIntervalSince(started) < 10)
        // The first one is unharmed.
        #expect(try server.connect().request(["op": "stats"]).ok)
    }

    @Test("batond refuses to take over a socket a live server answers on")
    func liveSocketRefused() throws {
        let server = try TestServer()
        let other = try TestServer()
        let (status, output) = try other.runSecondInstanceOnStore(
            storePath: other.directory.appendingPathComponent("second.sqlite").path,
            socketPath: server.socketPath
        )
        #expect(status != 0)
        #expect(output.contains("another server is answering"), "\(output)")
        #expect(!output.contains("Fatal error") && !output.contains("Cannot schedule"), "\(output)")
        #expect(try server.connect().request(["op": "stats"]).ok)
    }

    @Test(
        "stopped under load, by kill -9 or SIGTERM: every acknowledged enqueue survives, no acknowledged completion runs again",
        // `normal` skips the fsync but still promises to survive a crash of the process.
        arguments: [(true, "full"), (true, "normal"), (false, "full")]
    )
    func stopUnderLoad(crash: Bool, durability: String) throws {
        let server = try TestServer(arguments: ["--durability", durability])
        let acknowledged = Acknowledged()
        let socketPath = server.socketPath
        var threads: [Thread] = []
        for producer in 0..<3 {
            threads.append(
                Thread {
                    guard let client = try? JSONLineClient(connection: LineConnection(path: socketPath, timeoutSeconds: 5)) else { return }
                    var index = 0
                    while let id = try? client.enqueue(queue: "crash", payload: ["producer": producer, "index": index]) {
                        acknowledged.enqueued(id)
                        index += 1
                    }
                }
            )
        }
        for _ in 0..<3 {
            threads.append(
                Thread {
                    guard let client = try? JSONLineClient(connection: LineConnection(path: socketPath, timeoutSeconds: 5)) else { return }
                    while let job = try? client.claim(queues: ["crash"], ["wait_ms": 1_000]) {
                        guard (try? client.fenced("complete", job))?.ok == true else { return }
                        acknowledged.completed(job.id)
                    }
                }
            )
        }
        for thread in threads { thread.start() }
        // Let work flow, then pull the plug in the middle of it.
        while acknowledged.completedCount < 200 { usleep(10_000) }
        if crash {
            server.kill()
        } else {
            #expect(server.stop() == 0, "a graceful stop under load exits 0")
        }
        while threads.contains(where: { !$0.isFinished }) { usleep(10_000) }

        try server.start()
        let client = try server.connect()
        let (enqueued, completed) = acknowledged.snapshot
        #expect(enqueued.count >= 200)
        for id in enqueued {
            let reply = try client.request(["op": "get", "job": id])
            #expect(reply.ok, "acknowledged job \(id) is gone: \(reply)")
        }
        for id in completed {
            #expect(try client.get(id)["state"] as? String == "completed", "acknowledged completion of \(id) was lost")
        }
        // Whatever is left to run (including jobs whose lease the crash interrupted) is
        // never a job whose completion was acknowledged.
        while let job = try client.claim(queues: ["crash"], ["lease_ms": 60_000]) {
            #expect(!completed.contains(job.id), "job \(job.id) runs again after its completion was acknowledged")
            #expect(try client.fenced("complete", job).ok)
        }
    }
}

/// What the crash test's clients were told, shared between their threads.
private final class Acknowledged: @unchecked Sendable {
    private let lock = NSLock()
    private var enqueuedIDs: [Int] = []
    private var completedIDs: Set<Int> = []

    func enqueued(_ id: Int) { self.lock.withLock { self.enqueuedIDs.append(id) } }
    func completed(_ id: Int) { self.lock.withLock { _ = self.completedIDs.insert(id) } }
    var completedCount: Int { self.lock.withLock { self.completedIDs.count } }
    var snapshot: ([Int], Set<Int>) { self.lock.withLock { (self.enqueuedIDs, self.completedIDs) } }
}
