import BatonTestSupport
import Foundation
import Testing

@Suite("The audit trail")
struct AuditTrailTests {
    @Test("events tells a job's whole story in order, with tokens, peer and errors, and no heartbeats")
    func wholeStory() throws {
        let server = try TestServer()
        let client = try server.connect()
        let id = try client.enqueue(queue: "a", payload: 1, ["max_attempts": 3, "backoff": ["initial_ms": 1, "max_ms": 1]])
        let first = try #require(try client.claim(queues: ["a"], ["worker": "embedder-1"]))
        #expect(try client.fenced("heartbeat", first).ok)
        #expect(try client.fenced("checkpoint", first, ["state": "chunked"]).ok)
        #expect(try client.fenced("fail", first, ["error": "API timed out"]).ok)
        usleep(20_000)
        let second = try #require(try client.claim(queues: ["a"]))
        #expect(try client.fenced("release", second).ok)
        #expect(try client.request(["op": "pause", "job": id]).ok)
        #expect(try client.request(["op": "resume", "job": id]).ok)
        let third = try #require(try client.claim(queues: ["a"]))
        #expect(try client.fenced("complete", third, ["result": "ok"]).ok)

        let reply = try client.request(["op": "events", "job": id])
        #expect(reply.ok, "\(reply)")
        let events = try #require(reply.fields["events"] as? [[String: Any]])
        #expect(
            events.map { $0["event"] as? String ?? "?" }
                == ["enqueued", "claimed", "checkpointed", "failed", "claimed", "released", "paused", "resumed", "claimed", "completed"]
        )
        #expect(events.map { $0["state"] as? String ?? "?" }
            == ["queued", "running", "running", "retrying", "running", "queued", "paused", "queued", "running", "completed"])
        let times = events.compactMap { $0["at"] as? Int }
        #expect(times.count == events.count && times == times.sorted(), "in order, each with its time")
        #expect(events[1]["token"] as? Int == first.token)
        #expect(events[1]["worker"] as? String == "embedder-1")
        #expect(events[1]["peer_pid"] as? Int == Int(getpid()), "the claim names the process that made it")
        #expect(events[3]["error"] as? String == "API timed out")
        #expect(events[9]["token"] as? Int == third.token)
    }

    @Test("expiry, cancellation and its cascade are recorded with their reasons, and the trail outlives a restart")
    func expiryAndCancel() throws {
        let server = try TestServer()
        let client = try server.connect()
        let id = try client.enqueue(queue: "a", payload: 1, ["lease_ms": 100, "backoff": ["initial_ms": 1, "max_ms": 1]])
        let dependent = try client.enqueue(queue: "b", payload: 2, ["after": [id]])
        let lease = try #require(try client.claim(queues: ["a"]))
        usleep(300_000)
        #expect(try client.fenced("heartbeat", lease).errorCode == "lease_lost")
        #expect(try client.request(["op": "cancel", "job": id, "reason": "wrong file"]).ok)

        try server.restart()
        let again = try server.connect()
        let events = try #require(try again.request(["op": "events", "job": id]).fields["events"] as? [[String: Any]])
        #expect(events.map { $0["event"] as? String ?? "?" } == ["enqueued", "claimed", "expired", "cancelled"])
        #expect(events[2]["state"] as? String == "retrying")
        #expect(events[2]["token"] as? Int == lease.token)
        #expect(events[3]["reason"] as? String == "wrong file")
        let cascade = try #require(try again.request(["op": "events", "job": dependent]).fields["events"] as? [[String: Any]])
        #expect(cascade.map { $0["event"] as? String ?? "?" } == ["enqueued", "cancelled"])
        #expect(cascade[1]["reason"] as? String == "dependency \(id) was cancelled")
        #expect(try again.request(["op": "events", "job": 424_242]).errorCode == "not_found")
    }
}
