import BatonTestSupport
import Foundation
import Testing

@Suite("Retention")
struct RetentionTests {
    @Test("finished jobs are pruned after their retention, failed ones kept longer; stats counts them")
    func prunes() throws {
        let server = try TestServer(arguments: [
            "--retain-completed-ms", "0", "--retain-failed-ms", "3600000", "--prune-interval-ms", "50",
        ])
        let client = try server.connect()
        let done = try client.enqueue(queue: "r", payload: 1)
        let failing = try client.enqueue(queue: "r", payload: 2, ["max_attempts": 1])
        let waiting = try client.enqueue(queue: "later", payload: 3)
        let first = try #require(try client.claim(queues: ["r"]))
        #expect(try client.fenced("complete", first).ok)
        let second = try #require(try client.claim(queues: ["r"]))
        #expect(try client.fenced("fail", second, ["error": "x"]).string("state") == "failed")

        var gone = false
        for _ in 0..<500 where !gone {
            gone = try client.request(["op": "get", "job": done]).errorCode == "not_found"
            if !gone { usleep(20_000) }
        }
        #expect(gone, "the completed job was pruned")
        #expect(try client.get(failing)["state"] as? String == "failed", "a failed job is kept for its own, longer period")
        #expect(try client.get(waiting)["state"] as? String == "queued", "unfinished jobs are never pruned")
        #expect(try client.request(["op": "stats"]).int("pruned") == 1)
    }
}
