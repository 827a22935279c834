import BatonTestSupport
import Foundation
import Testing

@Suite("Retry, cancel and purge by filter")
struct BulkChangeTests {
    /// Enqueues `count` jobs in `queue` that fail for good on their one attempt, with `error`.
    private func failedJobs(_ count: Int, in queue: String, error: (Int) -> String, _ client: JSONLineClient) throws {
        for start in stride(from: 0, to: count, by: 1_000) {
            let jobs = (start..<min(start + 1_000, count)).map { i -> [String: Any] in ["queue": queue, "payload": i, "max_attempts": 1] }
            #expect(try client.request(["op": "enqueue_batch", "jobs": jobs]).ok)
            let n = jobs.count
            for i in 0..<n { try client.send(["op": "claim", "id": i, "queues": [queue]]) }
            let claimed = try (0..<n).map { _ in try client.readReply().object("job")! }
            for (i, job) in claimed.enumerated() {
                try client.send(["op": "fail", "id": i, "job": job["id"]!, "token": job["token"]!, "error": error(job["payload"] as! Int)])
            }
            for _ in 0..<n { #expect(try client.readReply().ok) }
        }
    }

    @Test("a bulk retry of 10,000 failed jobs runs in steps while claims go on, and says how many it changed")
    func bulkRetryWhileClaiming() throws {
        let server = try TestServer()
        let client = try server.connect()
        try self.failedJobs(10_000, in: "parse", error: { _ in "model overloaded" }, client)
        let worker = try server.connect()
        for i in 0..<300 { _ = try worker.enqueue(queue: "live", payload: i) }

        let operatorClient = try server.connect()
        try operatorClient.send(["op": "retry", "queue": "parse", "state": "failed"])
        var latencies: [Duration] = []
        for _ in 0..<300 {
            let started = ContinuousClock.now
            let job = try #require(try worker.claim(queues: ["live"]))
            #expect(try worker.fenced("complete", job).ok)
            latencies.append(ContinuousClock.now - started)
        }
        let reply = try operatorClient.readReply()
        #expect(reply.ok && reply.int("changed") == 10_000 && reply.bool("done") == true, "\(reply)")
        let stats = try #require(try client.request(["op": "stats"]).object("queues")?["parse"] as? [String: Any])
        #expect(stats["queued"] as? Int == 10_000 && stats["failed"] as? Int == 0)
        latencies.sort()
        print("claim+complete during a bulk retry of 10,000 jobs: p50 \(latencies[150]), p99 \(latencies[296]), max \(latencies[299])")
    }

    @Test("a bulk cancel of a job and the job waiting on it cancels each once")
    func cascade() throws {
        let server = try TestServer()
        let client = try server.connect()
        let first = try client.enqueue(queue: "chain", payload: 1)
        let second = try client.enqueue(queue: "chain", payload: 2, ["after": [first]])
        let reply = try client.request(["op": "cancel", "queue": "chain", "state": "queued"])
        #expect(reply.int("changed") == 2 && reply.fields["done"] as? Bool == true, "\(reply)")
        for job in [first, second] {
            let events = try #require(try client.request(["op": "events", "job": job]).fields["events"] as? [[String: Any]])
            #expect(events.filter { $0["event"] as? String == "cancelled" }.count == 1, "job \(job): \(events)")
        }
        let counts = try #require(try client.request(["op": "stats"]).object("queues")?["chain"] as? [String: Any])
        #expect(counts["cancelled"] as? Int == 2 && counts["queued"] as? Int == 0, "\(counts)")
    }

    @Test("cancel by filter takes error_contains and limit; purge deletes finished jobs; the single-job forms still work")
    func filtersAndPurge() throws {
        let server = try TestServer()
        let client = try server.connect()
        try self.failedJobs(30, in: "ocr", error: { $0 % 3 == 0 ? "HTTP 429: rate limited" : "unreadable scan" }, client)
        let retried = try client.request(["op": "retry", "queue": "ocr", "state": "failed", "error_contains": "429"])
        #expect(retried.int("changed") == 10 && retried.bool("done") == true, "\(retried)")

        let cancelled = try client.request(["op": "cancel", "queue": "ocr", "state": "queued", "limit": 4, "reason": "not needed"])
        #expect(cancelled.int("changed") == 4, "\(cancelled)")
        var stats = try #require(try client.request(["op": "stats"]).object("queues")?["ocr"] as? [String: Any])
        #expect(stats["queued"] as? Int == 6 && stats["cancelled"] as? Int == 4 && stats["failed"] as? Int == 20)

        let purged = try client.request(["op": "purge", "queue": "ocr", "state": "failed"])
        #expect(purged.int("changed") == 20, "\(purged)")
        stats = try #require(try client.request(["op": "stats"]).object("queues")?["ocr"] as? [String: Any])
        #expect(stats["failed"] as? Int == 0 && stats["queued"] as? Int == 6)
        let page = try #require(try client.request(["op": "list", "queue": "ocr", "state": "failed"]).fields["jobs"] as? [Any])
        #expect(page.isEmpty)

        let refused = try client.request(["op": "purge", "queue": "ocr", "state": "queued"])
        #expect(refused.errorCode == "invalid_argument", "purge takes only finished jobs")
        let one = try #require(try client.claim(queues: ["ocr"]))
        #expect(try client.request(["op": "cancel", "job": one.id]).string("state") == "cancelled")
    }
}
