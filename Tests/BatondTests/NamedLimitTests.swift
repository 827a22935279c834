import BatonTestSupport
import Foundation
import Testing

@Suite("Named limits and fair groups")
struct NamedLimitTests {
    private func limitStats(_ client: JSONLineClient, _ name: String) throws -> [String: Any]? {
        try client.request(["op": "stats"]).object("limits")?[name] as? [String: Any]
    }

    @Test("a rate limit of 20 per second holds under 16 workers, and a parked claim starts when the window opens")
    func rateUnderLoad() throws {
        let server = try TestServer()
        let client = try server.connect()
        let set = try client.request(["op": "set_limit", "name": "openai", "rate": ["count": 20, "per_ms": 1_000]])
        #expect((set.object("rate"))?["count"] as? Int == 20, "\(set)")
        var ids: [Int] = []
        for index in 0..<60 { ids.append(try client.enqueue(queue: "extract", payload: index, ["limits": ["openai"]])) }

        let socketPath = server.socketPath
        let threads = (0..<16).map { _ in
            Thread {
                guard let worker = try? JSONLineClient(connection: LineConnection(path: socketPath, timeoutSeconds: 30)) else { return }
                while let job = try? worker.claim(queues: ["extract"], ["wait_ms": 3_000]) {
                    guard (try? worker.fenced("complete", job))?.ok == true else { return }
                }
            }
        }
        for thread in threads { thread.start() }
        while threads.contains(where: { !$0.isFinished }) { usleep(10_000) }

        let starts = try ids.map { try #require(try client.get($0)["started_at"] as? Int) }.sorted()
        #expect(starts.count == 60, "every job ran")
        for index in 0..<(starts.count - 20) {
            // 21 starts need more than a second between the first and the last.
            #expect(starts[index + 20] - starts[index] >= 995, "starts \(index)...\(index + 20) within \(starts[index + 20] - starts[index]) ms")
        }
        #expect(starts[20] - starts[0] < 2_500, "the 21st start waited for the window (\(starts[20] - starts[0]) ms), not for its 3 s claim to time out")
        let stats = try #require(try client.request(["op": "stats"]).object("queues")?["extract"] as? [String: Any])
        #expect(stats["completed"] as? Int == 60 && stats["failed"] as? Int == 0)
    }

    @Test("a max_running on a shared limit holds across two queues, wakes a parked claim, and outlives a restart")
    func sharedAcrossQueues() throws {
        let server = try TestServer()
        let client = try server.connect()
        #expect(try client.request(["op": "set_limit", "name": "gpu", "max_running": 2]).int("max_running") == 2)
        for index in 0..<3 {
            _ = try client.enqueue(queue: "extract", payload: index, ["limits": ["gpu"]])
            _ = try client.enqueue(queue: "embed", payload: index, ["limits": ["gpu"]])
        }
        let extract = try #require(try client.claim(queues: ["extract"]))
        #expect(try client.claim(queues: ["embed"]) != nil)
        #expect(try client.claim(queues: ["extract", "embed"]) == nil, "two jobs naming gpu run, in whichever queues")
        let gpu = try #require(try self.limitStats(client, "gpu"))
        #expect(gpu["running"] as? Int == 2 && gpu["max_running"] as? Int == 2, "\(gpu)")
        #expect(gpu["holding"] as? Bool == true, "the claim it held back: \(gpu)")
        #expect(gpu["waiting"] as? Int == 4, "six jobs name gpu, two run: \(gpu)")
        #expect((try client.get(extract.id)["limits"] as? [String]) == ["gpu"])
        let samples = try client.request(["op": "metrics", "format": "json"]).fields["samples"] as? [[String: Any]] ?? []
        let gauge = samples.first { $0["name"] as? String == "baton_limit_running" && ($0["labels"] as? [String: String])?["limit"] == "gpu" }
        #expect(gauge?["value"] as? Int == 2, "\(String(describing: gauge))")

        let waiter = try server.connect()
        try waiter.send(["op": "claim", "queues": ["embed"], "wait_ms": 20_000])
        try client.waitForParkedClaims(1)
        #expect(try client.fenced("complete", extract).ok)
        let woken = try waiter.readReply()
        #expect(woken.object("job")?["queue"] as? String == "embed", "the freed slot goes to the claim waiting in the other queue: \(woken)")

        try server.restart()
        let again = try server.connect()
        let kept = try #require(try self.limitStats(again, "gpu"))
        #expect(kept["max_running"] as? Int == 2 && kept["running"] as? Int == 2, "the setting and the running jobs outlive a restart: \(kept)")
        #expect(kept["waiting"] as? Int == 3, "one completed, one more started: \(kept)")
        #expect(try again.claim(queues: ["extract", "embed"]) == nil)
        let listed = try #require(try again.request(["op": "limits"]).fields["limits"] as? [[String: Any]])
        #expect(listed.map { $0["name"] as? String } == ["gpu"], "\(listed)")
        #expect(try again.request(["op": "set_limit", "name": "gpu", "max_running": NSNull()]).isNull("max_running"))
        #expect(try again.claim(queues: ["extract", "embed"]) != nil, "without the limit the job starts")
        let stats = try #require(try again.request(["op": "stats"]).object("queues")?["extract"] as? [String: Any])
        #expect(stats["failed"] as? Int == 0, "held-back jobs wait, never fail")
    }

    @Test("a tenant:* template gives each tenant its own quota; a tenant's own setting overrides it")
    func template() throws {
        let server = try TestServer()
        let client = try server.connect()
        #expect(try client.request(["op": "set_limit", "name": "tenant:*", "max_running": 1]).ok)
        var jobs: [String: [Int]] = [:]
        for tenant in ["tenant:1", "tenant:2"] {
            for index in 0..<3 { jobs[tenant, default: []].append(try client.enqueue(queue: "q", payload: index, ["limits": [tenant]])) }
        }
        #expect(try client.claim(queues: ["q"])?.id == jobs["tenant:1"]![0])
        #expect(try client.claim(queues: ["q"])?.id == jobs["tenant:2"]![0], "tenant:1's quota is full; tenant:2 has its own")
        #expect(try client.claim(queues: ["q"]) == nil)
        let tenant1 = try #require(try self.limitStats(client, "tenant:1"))
        #expect(tenant1["rule"] as? String == "tenant:*" && tenant1["running"] as? Int == 1 && tenant1["waiting"] as? Int == 2, "\(tenant1)")
        let samples = try client.request(["op": "metrics", "format": "json"]).fields["samples"] as? [[String: Any]] ?? []
        let waiting = samples.first { $0["name"] as? String == "baton_limit_waiting" && ($0["labels"] as? [String: String])?["limit"] == "tenant:2" }
        #expect(waiting?["value"] as? Int == 2, "\(String(describing: waiting))")

        #expect(try client.request(["op": "set_limit", "name": "tenant:2", "max_running": 2]).ok)
        #expect(try client.claim(queues: ["q"])?.id == jobs["tenant:2"]![1], "tenant:2's own limit of 2 overrides the template")
        #expect(try client.claim(queues: ["q"]) == nil)
    }

    @Test("a limit's breaker opens on failures in any queue, holds every queue's jobs naming it, and closes on its trial's success")
    func limitBreaker() throws {
        let server = try TestServer()
        let client = try server.connect()
        let breaker = ["failures": 2, "window_ms": 60_000, "cooldown_ms": 600]
        #expect(try client.request(["op": "set_limit", "name": "openai", "breaker": breaker]).object("breaker")?["failures"] as? Int == 2)
        for queue in ["extract", "embed"] {
            for i in 0..<3 { _ = try client.enqueue(queue: queue, payload: i, ["limits": ["openai"], "max_attempts": 10, "backoff": ["initial_ms": 0]]) }
        }
        _ = try client.enqueue(queue: "extract", payload: "free", ["priority": -1])
        for queue in ["extract", "embed"] {
            let job = try #require(try client.claim(queues: [queue]))
            #expect(try client.fenced("fail", job, ["error": "HTTP 503"]).ok)
        }
        #expect(try self.limitStats(client, "openai")?["breaker_state"] as? String == "open")
        let health = try client.request(["op": "health"])
        #expect((health.fields["reasons"] as? [String])?.contains { $0.contains("breaker of limit openai is open") } == true, "\(health)")
        let free = try #require(try client.claim(queues: ["extract", "embed"]))
        #expect(free.payload as? String == "free", "jobs not naming the limit still start")
        #expect(try client.claim(queues: ["extract", "embed"]) == nil, "no job naming openai starts while its breaker is open")

        // After the cooldown a parked claim gets the one trial; its success closes the breaker.
        let trial = try #require(try client.claim(queues: ["extract", "embed"], ["wait_ms": 5_000]))
        #expect(try self.limitStats(client, "openai")?["breaker_state"] as? String == "half_open")
        #expect(try client.claim(queues: ["extract", "embed"]) == nil, "one trial at a time")
        #expect(try client.fenced("complete", trial).ok)
        #expect(try self.limitStats(client, "openai")?["breaker_state"] as? String == "closed")
        #expect(try client.claim(queues: ["extract", "embed"]) != nil)
        let stats = try #require(try client.request(["op": "stats"]).object("queues")?["embed"] as? [String: Any])
        #expect(stats["failed"] as? Int == 0, "held-back jobs wait, never fail")
    }

    @Test("claims rotate across groups: a 10-job group is served within the first claims beside a 10,000-job group")
    func fairRotation() throws {
        let server = try TestServer()
        let client = try server.connect()
        for batch in 0..<10 {
            let jobs = (0..<1_000).map { ["queue": "parse", "payload": batch * 1_000 + $0, "group": "zeta"] as [String: Any] }
            #expect(try client.request(["op": "enqueue_batch", "jobs": jobs]).ok)
        }
        var small: Set<Int> = []
        // The small group sorts first and its jobs are the newest: neither name nor age helps it.
        for index in 0..<10 { small.insert(try client.enqueue(queue: "parse", payload: -index, ["group": "alpha"])) }

        var order: [String] = []
        for _ in 0..<40 {
            let job = try #require(try client.claim(queues: ["parse"]))
            order.append(small.contains(job.id) ? "small" : "big")
        }
        let lastSmall = try #require(order.lastIndex(of: "small"))
        #expect(order.filter { $0 == "small" }.count == 10, "\(order)")
        #expect(lastSmall < 22, "the small group's jobs all start within the first claims: \(order)")
        #expect(try client.get(small.first!)["group"] as? String == "alpha")

        // Three groups take turns, whatever their names and ages.
        for group in ["m", "m", "m", "b", "b", "b", "x", "x", "x"] { _ = try client.enqueue(queue: "three", payload: group, ["group": group]) }
        var turns: [String] = []
        for _ in 0..<6 { turns.append(try #require(try client.claim(queues: ["three"])?.payload as? String)) }
        #expect(turns == ["m", "x", "b", "m", "x", "b"], "\(turns)")
    }

    @Test("limits and groups refuse what they cannot hold", arguments: [
        ["op": "set_limit", "name": "x"],
        ["op": "set_limit", "name": "x", "rate": ["count": 0, "per_ms": 1_000]],
        ["op": "set_limit", "name": "x", "rate": ["count": 5]],
        ["op": "set_limit", "name": "x", "max_running": 0],
        ["op": "enqueue", "queue": "q", "payload": 1, "limits": ["a", "b", "c", "d", "e"]],
        ["op": "enqueue", "queue": "q", "payload": 1, "limits": ["tenant:*"]],
        ["op": "enqueue", "queue": "q", "payload": 1, "limits": "openai"],
        ["op": "enqueue", "queue": "q", "payload": 1, "group": ""],
    ] as [[String: any Sendable]])
    func badInput(request: [String: any Sendable]) throws {
        let server = try TestServer()
        let client = try server.connect()
        let reply = try client.request(request)
        #expect(reply.errorCode == "invalid_argument", "\(reply)")
        #expect(try client.request(["op": "limits"]).fields["limits"] as? [Any] != nil)
        #expect(try client.request(["op": "stats"]).object("queues")?["q"] == nil, "nothing was enqueued")
    }
}
