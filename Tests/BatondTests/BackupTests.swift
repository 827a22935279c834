import BatonTestSupport
import Foundation
import Testing

/// Tracks what a background producer had acknowledged, and stops it.
private final class Producer: @unchecked Sendable {
    private let lock = NSLock()
    private var acknowledged: [Int] = []
    private var stopped = false
    private var failure: String?

    var ids: [Int] { self.lock.withLock { self.acknowledged } }
    var error: String? { self.lock.withLock { self.failure } }
    func stop() { self.lock.withLock { self.stopped = true } }

    /// Enqueues 2 KB jobs one after another until stopped.
    func run(_ client: JSONLineClient) {
        let payload = String(repeating: "p", count: 2_000)
        while !self.lock.withLock({ self.stopped }) {
            do {
                let id = try client.enqueue(queue: "load", payload: ["blob": payload])
                self.lock.withLock { self.acknowledged.append(id) }
            } catch {
                self.lock.withLock { self.failure = "\(error)" }
                return
            }
        }
    }
}

@Suite("Online backup")
struct BackupTests {
    @Test(
        "a backup taken under load holds every job acknowledged before it began, and the copy serves",
        .disabled(if: TestStore.current.isPostgres, "backup copies a SQLite store; PostgreSQL has pg_dump")
    )
    func backupUnderLoadThenRestore() throws {
        let server = try TestServer()
        let client = try server.connect()
        // Enough data for the copy to take many steps of the authority's loop.
        let blob = String(repeating: "x", count: 4_000)
        for _ in 0..<50 {
            let reply = try client.request(["op": "enqueue_batch", "jobs": (0..<200).map { _ in ["queue": "bulk", "payload": ["blob": blob]] }])
            #expect(reply.ok, "\(reply)")
        }
        // A worker holds a short lease and heartbeats through the backup.
        let worker = try server.connect()
        _ = try client.enqueue(queue: "work", payload: 1, ["lease_ms": 3_000])
        let held = try #require(try worker.claim(queues: ["work"]))

        let producer = Producer()
        let producing = Thread { producer.run((try? server.connect())!) }
        producing.start()
        #expect(waitUntil { producer.ids.count >= 50 }, "the producer is under way")
        let acknowledgedBefore = producer.ids

        let copy = server.directory.appendingPathComponent("copy.sqlite").path
        let backup = try server.connect()
        try backup.send(["op": "backup", "id": 1, "path": copy])
        // Meanwhile the server answers the worker: the copy is made between requests.
        var reply: ReplyObject?
        while reply == nil {
            #expect(try worker.fenced("heartbeat", held).ok)
            let ready = try backup.connection.readAvailableLines()
            if let line = ready.first { reply = try ReplyObject(line: line) }
        }
        producer.stop()
        #expect(waitUntil { producer.ids.count > acknowledgedBefore.count })
        let done = try #require(reply)
        #expect(done.ok && done.string("path") == copy, "\(done)")
        #expect((done.int("bytes") ?? 0) > 40_000_000, "\(done)")
        #expect(producer.error == nil, "\(producer.error ?? "")")
        let attributes = try FileManager.default.attributesOfItem(atPath: copy)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)

        // Refused: a file that exists, a relative path.
        #expect(try client.request(["op": "backup", "path": copy]).errorCode == "invalid_argument")
        #expect(try client.request(["op": "backup", "path": "relative.sqlite"]).errorCode == "invalid_argument")

        // Restore as documented: stop batond, put the copy in the store's place, start it.
        #expect(server.stop() == 0)
        for suffix in ["", "-wal", "-shm"] {
            try? FileManager.default.removeItem(atPath: server.storePath + suffix)
        }
        try FileManager.default.copyItem(atPath: copy, toPath: server.storePath)
        try server.start()
        let restored = try server.connect()
        let stats = try restored.request(["op": "stats"])
        let bulk = stats.object("queues")?["bulk"] as? [String: Any]
        #expect(bulk?["queued"] as? Int == 10_000, "\(stats)")
        for id in acknowledgedBefore {
            #expect(try restored.request(["op": "get", "job": id]).ok, "job \(id), acknowledged before the backup, is in the copy")
        }
        // The lease held at the backup is live in the copy: the worker can finish.
        #expect(try restored.fenced("complete", held).ok)
    }
}
