import BatonTestSupport
import Foundation
import Testing

@Suite("Circuit breakers")
struct BreakerTests {
    private func openBreakers(_ client: JSONLineClient) throws -> Int? {
        let samples = try client.request(["op": "metrics", "format": "json"]).fields["samples"] as? [[String: Any]]
        return samples?.first { $0["name"] as? String == "baton_breakers_open" }?["value"] as? Int
    }

    private func breaker(_ client: JSONLineClient, _ queue: String) throws -> [String: Any]? {
        try client.request(["op": "stats"]).object("breakers")?[queue] as? [String: Any]
    }

    @Test("a breaker opens after its failures, holds claims through the cooldown, admits one trial, and closes on its success")
    func lifecycle() throws {
        let server = try TestServer()
        let client = try server.connect()
        let set = try client.request(["op": "set_queue", "queue": "llm", "breaker": ["failures": 3, "window_ms": 10_000, "cooldown_ms": 800]])
        #expect((set.object("breaker"))?["failures"] as? Int == 3, "\(set)")
        for i in 0..<6 { _ = try client.enqueue(queue: "llm", payload: i, ["max_attempts": 10, "backoff": ["initial_ms": 0]]) }

        for _ in 0..<3 {
            let job = try #require(try client.claim(queues: ["llm"]))
            #expect(try client.fenced("fail", job, ["error": "HTTP 503"]).ok)
        }
        #expect(try self.breaker(client, "llm")?["state"] as? String == "open")
        #expect(try self.openBreakers(client) == 1)
        #expect(try client.claim(queues: ["llm"]) == nil, "an open breaker holds claims")
        let health = try client.request(["op": "health"])
        #expect(health.string("health") == "degraded", "\(health)")
        #expect((health.fields["reasons"] as? [String])?.contains { $0.contains("breaker of queue llm is open") } == true, "\(health)")

        // The cooldown passes: one claim gets the trial, the next gets nothing while it runs.
        let trial = try #require(try client.claim(queues: ["llm"], ["wait_ms": 5_000]))
        #expect(try self.breaker(client, "llm")?["trial"] as? Int == trial.id)
        #expect(try client.claim(queues: ["llm"]) == nil, "one trial at a time")
        #expect(try client.fenced("complete", trial).ok)
        #expect(try self.breaker(client, "llm") == nil, "a closed breaker is not listed")
        #expect(try self.openBreakers(client) == 0)
        #expect(try client.claim(queues: ["llm"]) != nil)

        let stats = try #require(try client.request(["op": "stats"]).object("queues")?["llm"] as? [String: Any])
        #expect(stats["failed"] as? Int == 0, "jobs wait while the breaker is open; none fails")
    }

    @Test("a failed trial opens it again; resume_queue closes it by hand")
    func failedTrialAndReset() throws {
        let server = try TestServer()
        let client = try server.connect()
        #expect(try client.request(["op": "set_queue", "queue": "ocr", "breaker": ["failures": 1, "window_ms": 1_000, "cooldown_ms": 300]]).ok)
        for i in 0..<3 { _ = try client.enqueue(queue: "ocr", payload: i, ["max_attempts": 10, "backoff": ["initial_ms": 0]]) }
        let first = try #require(try client.claim(queues: ["ocr"]))
        #expect(try client.fenced("fail", first, ["error": "boom"]).ok)
        let trial = try #require(try client.claim(queues: ["ocr"], ["wait_ms": 5_000]))
        #expect(try client.fenced("fail", trial, ["error": "still down"]).ok)
        #expect(try self.breaker(client, "ocr")?["state"] as? String == "open")
        #expect(try client.request(["op": "resume_queue", "queue": "ocr"]).ok)
        #expect(try self.breaker(client, "ocr") == nil)
        #expect(try client.claim(queues: ["ocr"]) != nil)
    }
}
