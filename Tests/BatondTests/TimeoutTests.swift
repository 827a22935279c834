import BatonTestSupport
import Foundation
import Testing

@Suite("Time limits on attempts")
struct TimeoutTests {
    /// Heartbeats `job` every 50 ms until the server refuses one; that refusal.
    private func heartbeatUntilRefused(_ client: JSONLineClient, _ job: ClaimedJob) throws -> ReplyObject {
        while true {
            let beat = try client.fenced("heartbeat", job)
            if !beat.ok { return beat }
            Thread.sleep(forTimeInterval: 0.05)
        }
    }

    /// The job once its attempt has ended. SQLite ends it as it refuses the worker's call;
    /// on PostgreSQL the sweep may end it a moment after (the refusal says `running` then).
    private func ended(_ id: Int, _ client: JSONLineClient) throws -> [String: Any] {
        var job = try client.get(id)
        while job["state"] as? String == "running" {
            Thread.sleep(forTimeInterval: 0.02)
            job = try client.get(id)
        }
        return job
    }

    @Test("a heartbeating attempt is stopped at its timeout_ms, told timed_out, and retried")
    func heartbeatsDoNotOutlastTheLimit() throws {
        let server = try TestServer()
        let client = try server.connect()
        let id = try client.enqueue(queue: "embed", payload: 1, ["timeout_ms": 300, "backoff": ["initial_ms": 0]])
        let first = try #require(try client.claim(queues: ["embed"], ["lease_ms": 60_000]))
        let refused = try self.heartbeatUntilRefused(client, first)
        #expect(refused.errorCode == "timed_out", "\(refused)")
        // Every later call of that attempt hears the same.
        #expect(try client.fenced("complete", first).errorCode == "timed_out")

        let job = try self.ended(id, client)
        #expect(job["state"] as? String == "retrying")
        #expect(job["last_error"] as? String == "timed out after 300 ms")
        #expect(job["timeout_ms"] as? Int == 300)
        let events = try #require(try client.request(["op": "events", "job": id]).fields["events"] as? [[String: Any]])
        #expect(events.contains { $0["event"] as? String == "expired" && $0["error"] as? String == "timed out after 300 ms" })

        let second = try #require(try client.claim(queues: ["embed"], ["wait_ms": 5_000]))
        #expect(second.id == id && second.attempt == 2)
        #expect(try client.fenced("complete", second).ok)
    }

    @Test("a queue's timeout_ms applies to its jobs without one; set_queue changes only what it names")
    func queueDefault() throws {
        let server = try TestServer()
        let client = try server.connect()
        let limited = try client.request(["op": "set_queue", "queue": "ocr", "max_running": 2])
        #expect(limited.int("max_running") == 2 && limited.isNull("timeout_ms"))
        let timed = try client.request(["op": "set_queue", "queue": "ocr", "timeout_ms": 200])
        #expect(timed.int("max_running") == 2 && timed.int("timeout_ms") == 200, "\(timed)")

        let short = try client.enqueue(queue: "ocr", payload: 1, ["max_attempts": 1])
        let own = try client.enqueue(queue: "ocr", payload: 2, ["timeout_ms": 600_000])
        #expect(try client.claim(queues: ["ocr"], ["lease_ms": 60_000])?.id == short)
        #expect(try client.claim(queues: ["ocr"], ["lease_ms": 60_000])?.id == own)
        var job = try client.get(short)
        while job["state"] as? String == "running" {
            Thread.sleep(forTimeInterval: 0.05)
            job = try client.get(short)
        }
        #expect(job["state"] as? String == "failed" && job["last_error"] as? String == "timed out after 200 ms")
        #expect(try client.get(own)["state"] as? String == "running", "a job's own limit wins over its queue's")

        let removed = try client.request(["op": "set_queue", "queue": "ocr", "timeout_ms": NSNull()])
        #expect(removed.int("max_running") == 2 && removed.isNull("timeout_ms"))
        let empty = try client.request(["op": "set_queue", "queue": "ocr"])
        #expect(empty.errorCode == "invalid_argument")
    }

    @Test("the limit keeps counting across a restart")
    func acrossARestart() throws {
        let server = try TestServer()
        var client = try server.connect()
        let id = try client.enqueue(queue: "embed", payload: 1, ["timeout_ms": 3_000, "max_attempts": 1])
        let job = try #require(try client.claim(queues: ["embed"], ["lease_ms": 60_000]))
        let startedAt = try #require(try client.get(id)["started_at"] as? Int)
        // Time spent before the restart must count: half a second of it, to tell apart.
        Thread.sleep(forTimeInterval: 0.5)
        try server.restart()
        client = try server.connect()
        let beat = try client.fenced("heartbeat", job)
        let expiresAt = try #require(beat.int("lease_expires_at"), "\(beat)")
        #expect(expiresAt <= startedAt + 3_000 + 100, "the lease runs to the limit counted from the claim, not from the restart")
        let refused = try self.heartbeatUntilRefused(client, job)
        #expect(refused.errorCode == "timed_out", "\(refused)")
        #expect(try self.ended(id, client)["last_error"] as? String == "timed out after 3000 ms")
    }
}
