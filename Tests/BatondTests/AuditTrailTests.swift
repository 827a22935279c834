import BatonTestSupport
import Foundation
import Testing

@Suite("The audit trail")
struct AuditTrailTests {
    @Test("every state change is an event, in order, with its particulars; heartbeats are not")
    func events() throws {
        let server = try TestServer()
        let client = try server.connect()
        let id = try client.enqueue(queue: "a", payload: 1, ["lease_ms": 300, "backoff": ["initial_ms": 0]])
        let first = try #require(try client.claim(queues: ["a"], ["worker": "w1"]))
        #expect(try client.fenced("heartbeat", first).ok)
        #expect(try client.fenced("checkpoint", first, ["state": 1]).ok)
        #expect(try client.fenced("fail", first, ["error": "timeout"]).ok)
        let second = try #require(try client.claim(queues: ["a"], ["wait_ms": 5_000]))
        // The second lease runs out; the next claim sees it expired.
        let third = try #require(try client.claim(queues: ["a"], ["wait_ms": 5_000]))
        #expect(try client.request(["op": "pause", "job": id]).ok)
        #expect(try client.request(["op": "resume", "job": id]).ok)
        #expect(try client.request(["op": "cancel", "job": id, "reason": "enough"]).ok)
        #expect(try client.request(["op": "retry", "job": id]).ok)
        let fourth = try #require(try client.claim(queues: ["a"]))
        #expect(try client.fenced("complete", fourth).ok)

        let reply = try client.request(["op": "events", "job": id])
        let events = try #require(reply.fields["events"] as? [[String: Any]], "\(reply)")
        #expect(events.compactMap { $0["event"] as? String } == [
            "enqueued", "claimed", "checkpointed", "failed", "claimed", "expired", "claimed",
            "paused", "resumed", "cancelled", "retried", "claimed", "completed",
        ])
        let claimed = try #require(events[1]["detail"] as? [String: Any])
        #expect(claimed["token"] as? Int == first.token)
        #expect(claimed["worker"] as? String == "w1")
        #expect(claimed["peer_pid"] as? Int == Int(getpid()))
        #expect((events[3]["detail"] as? [String: Any])?["error"] as? String == "timeout")
        #expect((events[5]["detail"] as? [String: Any])?["token"] as? Int == second.token)
        #expect((events[9]["detail"] as? [String: Any])?["reason"] as? String == "enough")
        #expect(third.token > second.token)
        let times = events.compactMap { $0["at"] as? Int }
        #expect(times == times.sorted())
        #expect(try client.request(["op": "events", "job": 999_999]).errorCode == "not_found")
    }
}
