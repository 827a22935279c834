import BatonTestSupport
import Foundation
import Testing

/// A 20 MB tmpfs to fill, mounted for the test; `nil` where this process may not mount one.
private final class SmallDisk {
    let path: String

    init?() {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("baton-full-\(UUID().uuidString.prefix(8))").path
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        guard getuid() == 0, let run = try? CommandRun.run("/bin/mount", ["-t", "tmpfs", "-o", "size=20m", "tmpfs", path]), run.status == 0 else {
            try? FileManager.default.removeItem(atPath: path)
            return nil
        }
        self.path = path
    }

    deinit {
        _ = try? CommandRun.run("/bin/umount", ["-l", self.path])
        try? FileManager.default.removeItem(atPath: self.path)
    }

    /// Writes a file until the disk has no room left.
    func fill() {
        let filler = self.path + "/filler"
        guard let handle = FileHandle(forWritingAtPath: filler) ?? {
            _ = FileManager.default.createFile(atPath: filler, contents: nil)
            return FileHandle(forWritingAtPath: filler)
        }() else { return }
        let block = Data(count: 64 << 10)
        while (try? handle.write(contentsOf: block)) != nil {}
        let byte = Data(count: 1)
        while (try? handle.write(contentsOf: byte)) != nil {}
        try? handle.close()
    }

    func makeRoom() {
        try? FileManager.default.removeItem(atPath: self.path + "/filler")
    }
}

@Suite("A full disk is a refusal, not a crash")
struct DiskFullTests {
    @Test(
        "writes on a full disk get storage_full with their ids; reads go on; writes resume when space returns, and on a restart",
        .disabled(if: TestStore.current.isPostgres, "the disk beside a SQLite store; PostgreSQL's disk is the database's")
    )
    func fullDisk() throws {
        guard let disk = SmallDisk() else {
            print("skipped: mounting a tmpfs needs root (the test fills a 20 MB disk)")
            return
        }
        let server = try TestServer(arguments: ["--store", disk.path + "/store.sqlite", "--health-min-free-mb", "0"])
        let client = try server.connect()
        var acknowledged: [Int] = []
        for index in 0..<20 { acknowledged.append(try client.enqueue(queue: "q", payload: ["n": index])) }
        let worker = try server.connect()
        #expect(try worker.request(["op": "hello", "client": "indexer-3"]).ok)
        let held = try #require(try worker.claim(queues: ["q"]))
        disk.fill()

        // 200 pipelined writes with large payloads: every one is answered, with its id.
        let payload = String(repeating: "p", count: 20_000)
        for index in 0..<200 {
            try client.send(["op": "enqueue", "id": "w\(index)", "queue": "q", "payload": payload])
        }
        var refused = 0
        for index in 0..<200 {
            let reply = try client.readReply()
            #expect(reply.string("id") == "w\(index)", "\(reply)")
            if reply.ok {
                acknowledged.append(reply.int("job") ?? -1)
            } else {
                #expect(reply.errorCode == "storage_full", "\(reply)")
                refused += 1
            }
        }
        #expect(refused > 0, "the disk never filled")

        // Alive, reading, and saying why.
        #expect(try client.request(["op": "get", "job": acknowledged[0]]).ok)
        let health = try client.request(["op": "health"])
        #expect(health.string("health") == "degraded", "\(health)")
        #expect("\(health)".contains("disk is full"), "\(health)")
        #expect(server.log.contains("the disk is full"))
        // The refused batches rolled back; the connected worker, its name and its job did not go with them.
        let workers = try client.request(["op": "workers"]).fields["workers"] as? [[String: Any]] ?? []
        let listed = workers.first { $0["worker"] as? String == "indexer-3" }
        #expect(listed?["jobs"] as? [Int] == [held.id], "\(workers)")

        // Space returns: writes are accepted again, with no restart.
        disk.makeRoom()
        #expect(waitUntil { (try? client.enqueue(queue: "q", payload: "after")) != nil })
        #expect(try client.request(["op": "health"]).string("health") == "ok")

        // A restart on a full disk comes up and refuses writes instead of dying at the first.
        disk.fill()
        try server.restart()
        let again = try server.connect()
        let write = try again.request(["op": "enqueue", "id": 1, "queue": "q", "payload": payload])
        #expect(write.errorCode == "storage_full" && write.int("id") == 1, "\(write)")
        for id in acknowledged {
            #expect(try again.request(["op": "get", "job": id]).ok, "acknowledged job \(id) is there")
        }
        disk.makeRoom()
        #expect(waitUntil { (try? again.enqueue(queue: "q", payload: "last")) != nil })
    }
}
