import BatonTestSupport
import Foundation
import Testing

@Suite("Pause, resume, retry, batches and follow-up jobs")
struct JobControlTests {
    @Test("a running job paused: its worker is told, its attempt comes back, and it resumes from its checkpoint")
    func pauseRunningThenResume() throws {
        let server = try TestServer()
        let worker = try server.connect()
        let operator_ = try server.connect()
        let id = try worker.enqueue(queue: "p", payload: "long")
        let first = try #require(try worker.claim(queues: ["p"]))
        #expect(try worker.fenced("checkpoint", first, ["state": ["stage": "chunked"]]).ok)

        #expect(try operator_.request(["op": "pause", "job": id]).string("state") == "paused")
        #expect(try worker.fenced("heartbeat", first).errorCode == "paused")
        var job = try operator_.get(id)
        #expect(job["state"] as? String == "paused")
        #expect(job["attempts"] as? Int == 0)
        #expect(try worker.claim(queues: ["p"]) == nil, "nothing claims a paused job")

        #expect(try operator_.request(["op": "resume", "job": id]).string("state") == "queued")
        let second = try #require(try worker.claim(queues: ["p"]))
        #expect(second.attempt == 1)
        #expect((second.checkpoint as? [String: Any])?["stage"] as? String == "chunked")
        #expect(try worker.fenced("complete", first).errorCode == "lease_lost", "the old token holds nothing")
        #expect(try worker.fenced("complete", second).ok)
        job = try operator_.get(id)
        #expect(job["state"] as? String == "completed")
    }

    @Test("a queued job paused is skipped until resumed; only paused jobs resume")
    func pauseQueued() throws {
        let server = try TestServer()
        let client = try server.connect()
        let held = try client.enqueue(queue: "p", payload: 1, ["priority": 9])
        let other = try client.enqueue(queue: "p", payload: 2)
        #expect(try client.request(["op": "pause", "job": held]).ok)
        #expect(try client.claim(queues: ["p"])?.id == other)
        #expect(try client.request(["op": "resume", "job": other]).errorCode == "invalid_transition")
        #expect(try client.request(["op": "resume", "job": held]).ok)
        #expect(try client.claim(queues: ["p"])?.id == held)
    }

    @Test("retry puts a failed job back with its attempts reset and its checkpoint kept")
    func retryFailed() throws {
        let server = try TestServer()
        let client = try server.connect()
        let id = try client.enqueue(queue: "r", payload: 1, ["max_attempts": 1])
        let first = try #require(try client.claim(queues: ["r"]))
        #expect(try client.fenced("checkpoint", first, ["state": "half"]).ok)
        #expect(try client.fenced("fail", first, ["error": "bad key"]).string("state") == "failed")
        #expect(try client.request(["op": "retry", "job": id]).string("state") == "queued")
        let again = try #require(try client.claim(queues: ["r"]))
        #expect(again.attempt == 1)
        #expect(again.checkpoint as? String == "half")
        #expect(try client.request(["op": "retry", "job": id]).errorCode == "invalid_transition", "a running job is not retried")
    }

    @Test("enqueue_batch is all or nothing")
    func batch() throws {
        let server = try TestServer()
        let client = try server.connect()
        let reply = try client.request([
            "op": "enqueue_batch",
            "jobs": [["queue": "b", "payload": 1], ["queue": "b", "payload": 2, "unique_key": "k"], ["queue": "c", "payload": 3]],
        ])
        let jobs = try #require(reply.fields["jobs"] as? [[String: Any]], "\(reply)")
        #expect(jobs.count == 3)
        #expect(jobs.allSatisfy { $0["duplicate"] as? Bool == false })

        let refused = try client.request([
            "op": "enqueue_batch", "jobs": [["queue": "d", "payload": 1], ["queue": "d", "priority": "high", "payload": 2]],
        ])
        #expect(refused.errorCode == "invalid_argument")
        #expect(refused.errorMessage?.contains("jobs[1]") == true, "\(refused)")
        #expect(try client.request(["op": "stats"]).object("queues")?["d"] == nil, "nothing of a refused batch is enqueued")
    }

    @Test("complete with follow-ups enqueues them in the same commit, and a bad one completes nothing")
    func followUps() throws {
        let server = try TestServer()
        let client = try server.connect()
        let id = try client.enqueue(queue: "embed", payload: ["doc": 7])
        let lease = try #require(try client.claim(queues: ["embed"]))

        let bad = try client.fenced("complete", lease, ["enqueue": [["queue": "detect"]]])
        #expect(bad.errorCode == "invalid_argument")
        #expect(try client.get(id)["state"] as? String == "running", "the refused completion changed nothing")

        let done = try client.fenced("complete", lease, [
            "result": "embedded",
            "enqueue": [["queue": "detect", "payload": ["doc": 7], "unique_key": "detect-7"]],
        ])
        let followUps = try #require(done.fields["jobs"] as? [[String: Any]], "\(done)")
        let followUp = try #require(followUps.first?["job"] as? Int)
        #expect(try client.get(id)["state"] as? String == "completed")
        #expect(try client.claim(queues: ["detect"])?.id == followUp)
        // The unique key keeps a second completion path from queueing it twice.
        let again = try client.request(["op": "enqueue", "queue": "detect", "payload": ["doc": 7], "unique_key": "detect-7"])
        #expect(again.bool("duplicate") == true)
    }
}
