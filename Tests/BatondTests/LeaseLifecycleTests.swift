import BatonTestSupport
import Foundation
import Testing

@Suite("Leases over the socket")
struct LeaseLifecycleTests {
    @Test("enqueue, claim, heartbeat, checkpoint, complete: the whole life of a job")
    func wholeLifeCycle() throws {
        let server = try TestServer()
        let client = try server.connect()

        let id = try client.enqueue(queue: "docs", payload: ["file": "novel.epub", "pages": 512])
        var job = try client.get(id)
        #expect(job["state"] as? String == "queued")
        #expect(job["attempts"] as? Int == 0)

        let claimed = try #require(try client.claim(queues: ["docs"], ["worker": "parser-1"]))
        #expect(claimed.id == id)
        #expect(claimed.attempt == 1)
        #expect(claimed.token > 0)
        #expect((claimed.payload as? [String: Any])?["file"] as? String == "novel.epub")
        #expect(claimed.checkpoint == nil)

        job = try client.get(id)
        #expect(job["state"] as? String == "running")
        let lease = try #require(job["lease"] as? [String: Any])
        #expect(lease["worker"] as? String == "parser-1")
        #expect(lease["peer_pid"] as? Int == Int(getpid()))
        #expect(lease["peer_uid"] as? Int == Int(getuid()))

        let beat = try client.fenced("heartbeat", claimed, ["progress": ["percent": 40, "message": "chunking"]])
        #expect(beat.ok, "\(beat)")
        #expect((beat.int("lease_expires_at") ?? 0) > Int(Date().timeIntervalSince1970 * 1000))

        #expect(try client.fenced("checkpoint", claimed, ["state": ["stage": "chunked", "chunks": 61]]).ok)
        let done = try client.fenced("complete", claimed, ["result": ["chunks": 61]])
        #expect(done.ok, "\(done)")

        job = try client.get(id)
        #expect(job["state"] as? String == "completed")
        #expect((job["result"] as? [String: Any])?["chunks"] as? Int == 61)
        #expect((job["progress"] as? [String: Any])?["message"] as? String == "chunking")
        #expect(job["finished_at"] as? Int != nil)
        #expect(job["lease"] is NSNull)
    }

    @Test("a repeated complete with the same token answers ok again and changes nothing")
    func completeIsIdempotent() throws {
        let server = try TestServer()
        let client = try server.connect()
        let id = try client.enqueue(payload: 1)
        let claimed = try #require(try client.claim())
        #expect(try client.fenced("complete", claimed, ["result": "first"]).ok)
        let again = try client.fenced("complete", claimed, ["result": "second"])
        #expect(again.ok, "\(again)")
        let job = try client.get(id)
        #expect(job["result"] as? String == "first")
        // A token that never held the job is still refused.
        var forged = claimed
        forged.fields["token"] = claimed.token + 1
        #expect(try client.fenced("complete", forged).errorCode == "lease_lost")
    }

    @Test("two claimers racing for one job: exactly one wins", arguments: 0..<5)
    func racingClaimers(round: Int) throws {
        let server = try TestServer()
        let producer = try server.connect()
        let racers = try (0..<4).map { _ in try server.connect() }
        _ = try producer.enqueue(queue: "race", payload: round)
        // Every racer's request is on the wire before any reply is read.
        for racer in racers {
            try racer.send(["op": "claim", "queues": ["race"]])
        }
        let winners = try racers.map { try $0.readReply() }.filter { $0.object("job") != nil }
        #expect(winners.count == 1)
    }

    @Test("a stale token is refused after the lease expires and the job is claimed again")
    func staleTokenAfterExpiry() throws {
        let server = try TestServer()
        let first = try server.connect()
        let second = try server.connect()
        let id = try first.enqueue(payload: "x", ["lease_ms": 300, "backoff": ["initial_ms": 0]])
        let stale = try #require(try first.claim())

        // The second worker waits; it gets the job once the first lease runs out.
        let fresh = try #require(try second.claim(queues: ["default"], ["wait_ms": 10_000]))
        #expect(fresh.id == id)
        #expect(fresh.attempt == 2)
        #expect(fresh.token > stale.token)

        for op in ["heartbeat", "complete"] {
            let refused = try first.fenced(op, stale)
            #expect(refused.errorCode == "lease_lost", "\(op): \(refused)")
        }
        let checkpoint = try first.fenced("checkpoint", stale, ["state": "late"])
        #expect(checkpoint.errorCode == "lease_lost")
        let job = try second.get(id)
        #expect(job["state"] as? String == "running")
        #expect(job["checkpoint"] is NSNull)
        #expect(job["last_error"] as? String == "lease expired")
        #expect(try second.fenced("complete", fresh).ok)
    }

    @Test("a heartbeat keeps a lease alive past its original deadline")
    func heartbeatExtends() throws {
        let server = try TestServer()
        let worker = try server.connect()
        let watcher = try server.connect()
        let id = try worker.enqueue(payload: 0, ["lease_ms": 1_500, "backoff": ["initial_ms": 0]])
        let claimed = try #require(try worker.claim())
        for _ in 0..<8 {
            usleep(300_000)
            #expect(try worker.fenced("heartbeat", claimed).ok)
        }
        // 2.4 s after the claim, well past the first deadline, the lease still holds.
        #expect(try watcher.get(id)["state"] as? String == "running")
        #expect(try worker.fenced("complete", claimed).ok)
    }

    @Test("a failed attempt retries with backoff, then fails for good")
    func retryThenFail() throws {
        let server = try TestServer()
        let client = try server.connect()
        let id = try client.enqueue(payload: "flaky", ["max_attempts": 2, "backoff": ["initial_ms": 2_000, "factor": 2, "max_ms": 10_000]])

        let first = try #require(try client.claim())
        let before = Int(Date().timeIntervalSince1970 * 1000)
        let failed = try client.fenced("fail", first, ["error": "LLM timeout"])
        let after = Int(Date().timeIntervalSince1970 * 1000)
        #expect(failed.string("state") == "retrying", "\(failed)")
        let runAt = try #require(failed.int("run_at"))
        // Equal jitter: between half the 2 s delay and the whole of it.
        #expect(runAt >= before + 1_000 && runAt <= after + 2_000, "run_at \(runAt - before) ms from the fail")

        var job = try client.get(id)
        #expect(job["state"] as? String == "retrying")
        #expect(job["last_error"] as? String == "LLM timeout")
        #expect(try client.claim() == nil, "not claimable during backoff")

        let second = try #require(try client.claim(queues: ["default"], ["wait_ms": 20_000]))
        #expect(second.attempt == 2)
        let final = try client.fenced("fail", second, ["error": "LLM timeout again"])
        #expect(final.string("state") == "failed")
        job = try client.get(id)
        #expect(job["state"] as? String == "failed")
        #expect(job["last_error"] as? String == "LLM timeout again")
        #expect(job["attempts"] as? Int == 2)
    }

    @Test("fail with retry false fails at once, whatever attempts remain")
    func permanentFailure() throws {
        let server = try TestServer()
        let client = try server.connect()
        let id = try client.enqueue(payload: "bad input")
        let claimed = try #require(try client.claim())
        #expect(try client.fenced("fail", claimed, ["error": "unparseable", "retry": false]).string("state") == "failed")
        #expect(try client.get(id)["state"] as? String == "failed")
    }

    @Test("an expired lease with no attempts left fails the job")
    func expiryExhaustsAttempts() throws {
        let server = try TestServer()
        let client = try server.connect()
        let id = try client.enqueue(payload: 0, ["max_attempts": 1, "lease_ms": 200])
        _ = try #require(try client.claim())
        // Waiting on an empty queue outlasts the lease; the sweep fails the job meanwhile.
        #expect(try client.claim(queues: ["default"], ["wait_ms": 700]) == nil)
        let job = try client.get(id)
        #expect(job["state"] as? String == "failed")
        #expect(job["last_error"] as? String == "lease expired")
    }

    @Test("release hands a job back without spending an attempt")
    func release() throws {
        let server = try TestServer()
        let client = try server.connect()
        let id = try client.enqueue(payload: 0, ["max_attempts": 1])
        let claimed = try #require(try client.claim())
        #expect(try client.fenced("release", claimed).ok)
        var job = try client.get(id)
        #expect(job["state"] as? String == "queued")
        #expect(job["attempts"] as? Int == 0)
        #expect(try client.fenced("heartbeat", claimed).errorCode == "lease_lost")

        let again = try #require(try client.claim())
        #expect(again.attempt == 1)
        #expect(try client.fenced("release", again, ["delay_ms": 60_000]).ok)
        job = try client.get(id)
        #expect(job["state"] as? String == "queued")
        #expect(try client.claim() == nil, "a delayed release is not claimable yet")
    }

    @Test("the next attempt receives the last checkpoint")
    func checkpointResumes() throws {
        let server = try TestServer()
        let client = try server.connect()
        _ = try client.enqueue(payload: ["doc": 7], ["backoff": ["initial_ms": 0]])
        let first = try #require(try client.claim())
        #expect(try client.fenced("checkpoint", first, ["state": ["stage": "extracted"], "progress": ["percent": 25]]).ok)
        #expect(try client.fenced("checkpoint", first, ["state": ["stage": "embedded", "cost_usd": 0.4]]).ok)
        #expect(try client.fenced("fail", first, ["error": "crash after embedding"]).ok)

        let second = try #require(try client.claim(queues: ["default"], ["wait_ms": 2_000]))
        let checkpoint = try #require(second.checkpoint as? [String: Any])
        #expect(checkpoint["stage"] as? String == "embedded")
        #expect((second.fields["progress"] as? [String: Any])?["percent"] as? Int == 25)
    }

    @Test("a unique key returns the unfinished job instead of a second one")
    func uniqueKeys() throws {
        let server = try TestServer()
        let client = try server.connect()
        let first = try client.request(["op": "enqueue", "queue": "embed", "payload": 1, "unique_key": "doc-42"])
        let second = try client.request(["op": "enqueue", "queue": "embed", "payload": 2, "unique_key": "doc-42"])
        #expect(first.bool("duplicate") == false)
        #expect(second.bool("duplicate") == true)
        #expect(second.int("job") == first.int("job"))
        // Keys are per queue.
        let other = try client.request(["op": "enqueue", "queue": "detect", "payload": 3, "unique_key": "doc-42"])
        #expect(other.bool("duplicate") == false)

        let claimed = try #require(try client.claim(queues: ["embed"]))
        #expect(try client.request(["op": "enqueue", "queue": "embed", "payload": 4, "unique_key": "doc-42"]).bool("duplicate") == true)
        #expect(try client.fenced("complete", claimed).ok)
        let after = try client.request(["op": "enqueue", "queue": "embed", "payload": 5, "unique_key": "doc-42"])
        #expect(after.bool("duplicate") == false)
        #expect(after.int("job") != first.int("job"))
    }

    @Test("requests on one connection may be pipelined; each reply carries its id")
    func pipelining() throws {
        let server = try TestServer()
        let client = try server.connect()
        var lines = ""
        for index in 0..<50 {
            lines += #"{"op":"enqueue","id":"r\#(index)","queue":"p","payload":\#(index)}"# + "\n"
        }
        lines += #"{"op":"claim","id":"waiting","queues":["nothing-here"],"wait_ms":300}"# + "\n"
        lines += #"{"op":"stats","id":7}"# + "\n"
        try client.connection.send(lines)
        var ids: [String] = []
        for _ in 0..<52 {
            let reply = try client.readReply()
            #expect(reply.ok, "\(reply)")
            ids.append(reply.fields["id"].map { "\($0)" } ?? "nil")
        }
        #expect(Set(ids) == Set((0..<50).map { "r\($0)" } + ["waiting", "7"]))
        // The parked claim is answered after the stats request sent behind it.
        #expect(ids.last == "waiting")
    }

    @Test("a client that half-closes after sending, as `echo … | socat` does, still gets every reply")
    func halfClose() throws {
        let server = try TestServer()
        let client = try server.connect()
        let setup = try server.connect()
        _ = try setup.enqueue(queue: "h", payload: 1)
        try client.connection.send(#"{"op":"claim","id":1,"queues":["h"]}"# + "\n" + #"{"op":"claim","id":2,"queues":["h"],"wait_ms":300}"# + "\n")
        client.connection.shutdownWrite()
        let first = try client.readReply()
        let second = try client.readReply()
        #expect(first.object("job") != nil)
        #expect(second.isNull("job"))
        #expect(try client.connection.waitForClose())
    }

    @Test("hello names the server, the protocol version and the limits")
    func hello() throws {
        let server = try TestServer(arguments: ["--max-line-bytes", "65536"])
        let reply = try server.connect().request(["op": "hello", "client": "tests"])
        #expect(reply.string("server") == "batond")
        #expect(reply.int("protocol") == 1)
        #expect(reply.string("durability") == "full")
        #expect(reply.object("limits")?["max_line_bytes"] as? Int == 65536)
        #expect(reply.object("limits")?["max_depth"] as? Int == 32)
    }
}
