import BatonTestSupport
import Foundation
import Testing

/// Two parties acting on one job at the same moment. Each round sends both requests on
/// separate connections before reading either reply, so the authority may apply them in
/// either order, in one batch or two; the outcome must be one of the orders, whole.
@Suite("Races between workers and operators")
struct RaceTests {
    @Test("cancel while the worker completes: exactly one wins, and the other is told the job's state", arguments: 0..<8)
    func cancelVersusComplete(round: Int) throws {
        let server = try TestServer()
        let worker = try server.connect()
        let operator_ = try server.connect()
        let id = try worker.enqueue(queue: "race", payload: round)
        let job = try #require(try worker.claim(queues: ["race"]))

        try worker.send(["op": "complete", "job": job.id, "token": job.token, "result": "done"])
        try operator_.send(["op": "cancel", "job": id, "reason": "wrong file"])
        let completed = try worker.readReply()
        let cancelled = try operator_.readReply()

        #expect(completed.ok != cancelled.ok, "exactly one wins: \(completed) / \(cancelled)")
        let state = try worker.get(id)["state"] as? String
        if completed.ok {
            #expect(state == "completed")
            #expect(cancelled.errorCode == "invalid_transition" && cancelled.errorState == "completed", "\(cancelled)")
        } else {
            #expect(state == "cancelled")
            #expect(completed.errorCode == "invalid_transition" && completed.errorState == "cancelled", "\(completed)")
            #expect(try worker.get(id)["result"] is NSNull, "the losing completion left no result")
        }
    }

    @Test("pause during a checkpoint: the job ends paused, keeping the checkpoint only if it was accepted", arguments: 0..<8)
    func pauseDuringCheckpoint(round: Int) throws {
        let server = try TestServer()
        let worker = try server.connect()
        let operator_ = try server.connect()
        let id = try worker.enqueue(queue: "race", payload: round)
        let job = try #require(try worker.claim(queues: ["race"]))
        #expect(try worker.fenced("checkpoint", job, ["state": "extracted"]).ok)

        try worker.send(["op": "checkpoint", "job": job.id, "token": job.token, "state": "chunked"])
        try operator_.send(["op": "pause", "job": id])
        let checkpointed = try worker.readReply()
        let paused = try operator_.readReply()

        #expect(paused.ok, "pausing a running job always succeeds: \(paused)")
        if !checkpointed.ok {
            #expect(checkpointed.errorCode == "paused" && checkpointed.errorState == "paused", "\(checkpointed)")
        }
        let held = try worker.get(id)
        #expect(held["state"] as? String == "paused")
        #expect(held["checkpoint"] as? String == (checkpointed.ok ? "chunked" : "extracted"))

        #expect(try operator_.request(["op": "resume", "job": id]).ok)
        let resumed = try #require(try worker.claim(queues: ["race"]))
        #expect(resumed.checkpoint as? String == (checkpointed.ok ? "chunked" : "extracted"))
        #expect(resumed.attempt == 1, "a pause gives the attempt back")
    }

    @Test("a dependency failing while its dependent waits: the waiting claim gets nothing, the dependent is cancelled naming it")
    func dependencyFailsWhileDependentWaits() throws {
        let server = try TestServer()
        let worker = try server.connect()
        let parse = try worker.enqueue(queue: "parse", payload: 1, ["max_attempts": 1])
        let embed = try worker.enqueue(queue: "embed", payload: 2, ["after": [parse]])
        let lease = try #require(try worker.claim(queues: ["parse"]))

        let embedder = try server.connect()
        try embedder.send(["op": "claim", "queues": ["embed"], "wait_ms": 1_500])
        try worker.waitForParkedClaims(1)
        #expect(try worker.fenced("fail", lease, ["error": "unreadable"]).string("state") == "failed")
        #expect(try embedder.readReply().isNull("job"), "the waiting claim never gets the cancelled dependent")
        let dependent = try worker.get(embed)
        #expect(dependent["state"] as? String == "cancelled")
        #expect(dependent["last_error"] as? String == "dependency \(parse) failed")
    }

    @Test("follow-ups with a unique key, completed by the live lease and again by a stale one, are enqueued once")
    func followUpsFromStaleLease() throws {
        let server = try TestServer()
        let client = try server.connect()
        let embed = try client.enqueue(queue: "embed", payload: "doc-1", ["lease_ms": 200])
        let stale = try #require(try client.claim(queues: ["embed"]))
        // The first worker stalls past its lease; a second one takes the job over.
        var live: ClaimedJob?
        for _ in 0..<100 where live == nil {
            usleep(50_000)
            live = try client.claim(queues: ["embed"])
        }
        let current = try #require(live, "the expired job is claimed again")
        #expect(current.id == embed)

        let followUp: [String: Any] = ["queue": "connections", "payload": "doc-1", "unique_key": "connections:doc-1"]
        let first = try client.fenced("complete", current, ["enqueue": [followUp]])
        #expect(first.ok, "\(first)")
        let repeated = try client.fenced("complete", current, ["enqueue": [followUp]])
        #expect(repeated.ok, "the same completion again (a lost reply) is answered ok")
        let late = try client.fenced("complete", stale, ["enqueue": [followUp]])
        #expect(late.errorCode == "lease_lost" && late.errorState == "completed", "\(late)")

        let queued = try client.request(["op": "list", "queue": "connections"])
        #expect((queued.fields["jobs"] as? [Any])?.count == 1, "one follow-up, however often completion was sent: \(queued)")
    }
}

@Suite("Transitions the state machine refuses")
struct InvalidTransitionTests {
    @Test("resume a completed job, pause a failed one, retry a running one: refused with the job's state, nothing changed")
    func refusedWithState() throws {
        let server = try TestServer()
        let client = try server.connect()
        let done = try client.enqueue(queue: "t", payload: 1)
        let doneLease = try #require(try client.claim(queues: ["t"]))
        #expect(try client.fenced("complete", doneLease, ["result": 42]).ok)
        let failed = try client.enqueue(queue: "t", payload: 2, ["max_attempts": 1])
        let failedLease = try #require(try client.claim(queues: ["t"]))
        #expect(try client.fenced("fail", failedLease, ["error": "bad input"]).string("state") == "failed")
        let running = try client.enqueue(queue: "t", payload: 3)
        _ = try #require(try client.claim(queues: ["t"]))

        let cases: [(op: String, job: Int, state: String)] = [
            ("resume", done, "completed"), ("pause", done, "completed"), ("cancel", done, "completed"),
            ("retry", done, "completed"), ("pause", failed, "failed"), ("resume", failed, "failed"),
            ("cancel", failed, "failed"), ("retry", running, "running"), ("resume", running, "running"),
        ]
        for (op, job, state) in cases {
            // A running job's `lease.expires_at` is its monotonic deadline shown on the wall
            // clock, which may read a millisecond apart from one request to the next.
            let before = try client.get(job).filter { $0.key != "lease" }
            let refused = try client.request(["op": op, "job": job])
            #expect(refused.errorCode == "invalid_transition", "\(op) \(state): \(refused)")
            #expect(refused.errorState == state, "\(op) \(state): \(refused)")
            let after = try client.get(job).filter { $0.key != "lease" }
            #expect(NSDictionary(dictionary: before).isEqual(to: after), "\(op) on a \(state) job changed it")
        }
    }
}
