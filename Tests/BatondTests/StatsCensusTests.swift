import BatonTestSupport
import Foundation
import Testing

@Suite("Counts by state")
struct StatsCensusTests {
    /// Each queue's counts by state, as `stats` reports them.
    func counts(_ client: JSONLineClient) throws -> [String: [String: Int]] {
        let queues = try #require(try client.request(["op": "stats"]).fields["queues"] as? [String: [String: Any]])
        return queues.mapValues { states in states.compactMapValues { $0 as? Int }.filter { $0.key != "oldest_ready_age_ms" } }
    }

    @Test("stats and the gauges follow every kind of change, and agree with a fresh count after a restart")
    func countsAgreeWithTheStore() throws {
        let server = try TestServer(arguments: ["--retain-completed-ms", "0", "--prune-interval-ms", "50"])
        let client = try server.connect()
        // Completed (then pruned), failed for good, retried by the operator, cancelled
        // while queued and while running, paused and resumed, released, expired and
        // retrying, a dependency cascade, and jobs still queued and running.
        let done = try client.enqueue(queue: "a", payload: 1)
        let doomed = try client.enqueue(queue: "a", payload: 2, ["max_attempts": 1])
        let parent = try client.enqueue(queue: "b", payload: 3, ["max_attempts": 1])
        _ = try client.enqueue(queue: "b", payload: 4, ["after": [parent]])
        let idle = try client.enqueue(queue: "b", payload: 5)
        let expiring = try client.enqueue(queue: "c", payload: 6, ["lease_ms": 100, "backoff": ["initial_ms": 60_000]])
        _ = try client.enqueue(queue: "c", payload: 7, ["delay_ms": 60_000])

        let first = try #require(try client.claim(queues: ["a"]))
        #expect(first.id == done)
        #expect(try client.fenced("complete", first).ok)
        let second = try #require(try client.claim(queues: ["a"]))
        #expect(second.id == doomed)
        #expect(try client.fenced("fail", second, ["error": "bad input"]).ok)
        #expect(try client.request(["op": "retry", "job": doomed]).ok)
        let third = try #require(try client.claim(queues: ["b"]))
        #expect(third.id == parent)
        #expect(try client.fenced("fail", third, ["error": "gone", "retry": false]).ok)
        #expect(try client.request(["op": "pause", "job": idle]).ok)
        #expect(try client.request(["op": "resume", "job": idle]).ok)
        let running = try #require(try client.claim(queues: ["b"]))
        #expect(try client.fenced("release", running).ok)
        let again = try #require(try client.claim(queues: ["b"]))
        #expect(try client.request(["op": "cancel", "job": again.id]).ok)
        #expect(try client.claim(queues: ["c"])?.id == expiring)
        let stillRunning = try client.enqueue(queue: "d", payload: 8)
        #expect(try client.claim(queues: ["d"])?.id == stillRunning)
        let stillQueued = try client.enqueue(queue: "d", payload: 9)
        #expect(try client.request(["op": "cancel", "job": stillQueued]).ok)
        usleep(400_000)  // the lease on queue c expires; the completed job is pruned

        let expected: [String: [String: Int]] = [
            "a": ["queued": 1],
            "b": ["failed": 1, "cancelled": 2],
            "c": ["queued": 1, "retrying": 1],
            "d": ["running": 1, "cancelled": 1],
        ]
        func nonZero(_ counts: [String: [String: Int]]) -> [String: [String: Int]] {
            counts.mapValues { $0.filter { $0.value != 0 } }.filter { !$0.value.isEmpty }
        }
        #expect(nonZero(try self.counts(client)) == expected)
        #expect(try client.request(["op": "get", "job": done]).errorCode == "not_found", "pruned")
        let samples = try #require(try client.request(["op": "metrics", "format": "json"]).fields["samples"] as? [[String: Any]])
        let gauge = samples.first {
            $0["name"] as? String == "baton_jobs" && ($0["labels"] as? [String: String]) == ["queue": "d", "state": "running"]
        }
        #expect(gauge?["value"] as? Int == 1, "the job-count gauges read the same numbers")

        // After a restart the counts come from a fresh pass over the store.
        try server.restart()
        let fresh = try server.connect()
        #expect(nonZero(try self.counts(fresh)) == expected)
    }
}
