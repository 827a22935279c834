import BatonTestSupport
import Foundation
import Testing

/// Several `batond`, each on its own socket as on its own host, sharing one PostgreSQL
/// database: a fleet.
final class Fleet {
    let server: String
    /// The shared store's URL.
    let store: String
    let hosts: [TestServer]

    /// Starts `count` hosts named `host-0`… on a fresh database of `server` (by default the
    /// one `BATON_TEST_POSTGRES` names).
    init(_ count: Int = 3, arguments: [String] = [], server: String? = nil) throws {
        guard let server = server ?? ProcessInfo.processInfo.environment["BATON_TEST_POSTGRES"] else {
            throw TestServerError("no PostgreSQL server: set BATON_TEST_POSTGRES")
        }
        self.server = server
        let store = try TestStore.postgres(server: server).makeStore(in: FileManager.default.temporaryDirectory)
        self.store = store
        self.hosts = try (0..<count).map { index in
            try TestServer(arguments: ["--host-name", "host-\(index)"] + arguments, store: store)
        }
    }

    deinit {
        for host in self.hosts { host.kill() }
        TestStore.postgres(server: self.server).removeStore(self.store)
    }

    subscript(_ index: Int) -> TestServer { self.hosts[index] }
}

/// Things workers on many threads saw, under a lock.
private final class Tally: @unchecked Sendable {
    // @unchecked: every field is guarded by `lock`.
    private let lock = NSLock()
    private var _completed: [Int] = []
    private var _enqueued: [Int: Int] = [:]
    private var _intervals: [(start: UInt64, end: UInt64)] = []
    private var _refusals: [String] = []
    private var _stopped = false

    func completed(_ id: Int) { self.lock.withLock { self._completed.append(id) } }
    func enqueued(_ id: Int, index: Int) { self.lock.withLock { self._enqueued[index] = id } }
    func ran(from start: UInt64, to end: UInt64) { self.lock.withLock { self._intervals.append((start, end)) } }
    func refused(_ code: String) { self.lock.withLock { self._refusals.append(code) } }

    func stop() { self.lock.withLock { self._stopped = true } }
    var isStopped: Bool { self.lock.withLock { self._stopped } }

    var completions: [Int] { self.lock.withLock { self._completed } }
    var enqueues: [Int: Int] { self.lock.withLock { self._enqueued } }
    var refusals: [String] { self.lock.withLock { self._refusals } }

    /// The most intervals that overlapped at any moment.
    var mostAtOnce: Int {
        self.lock.withLock {
            // Ends sort before starts at the same instant: touching is not overlapping.
            let edges = self._intervals.flatMap { [($0.start, 1), ($0.end, -1)] }.sorted { ($0.0, $0.1) < ($1.0, $1.1) }
            var now = 0
            var most = 0
            for (_, step) in edges {
                now += step
                most = max(most, now)
            }
            return most
        }
    }
}

/// Runs `body` on `count` threads at once, and returns when all have.
private func runThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    let done = DispatchGroup()
    for index in 0..<count {
        done.enter()
        Thread {
            body(index)
            done.leave()
        }.start()
    }
    done.wait()
}

@Suite(
    "Many hosts, one PostgreSQL store",
    .enabled(if: ProcessInfo.processInfo.environment["BATON_TEST_POSTGRES"] != nil, "set BATON_TEST_POSTGRES (scripts/test starts a server)")
)
struct FleetTests {
    @Test("three hosts sharing a schedule fire each of its slots once")
    func scheduleFiresOncePerSlotAcrossHosts() throws {
        let fleet = try Fleet(3)
        let client = try fleet[0].connect()
        #expect(try client.request(["op": "schedule", "name": "beat", "queue": "beat", "payload": 1, "every_ms": 100]).ok)
        var keys: [String] = []
        let deadline = Date().addingTimeInterval(20)
        while keys.count < 20, Date() < deadline {
            Thread.sleep(forTimeInterval: 0.1)
            let jobs = try #require(try client.request(["op": "list", "queue": "beat", "limit": 1_000]).fields["jobs"] as? [[String: Any]])
            keys = jobs.compactMap { $0["unique_key"] as? String }
        }
        #expect(keys.count >= 20, "the schedule fired \(keys.count) times")
        #expect(Set(keys).count == keys.count, "a slot fired twice: \(keys.sorted())")
    }

    @Test(
        "a breaker, on a queue or on a named limit, opened by failures on one host holds claims on every host, and lets exactly one trial through across them",
        arguments: ["queue", "limit"])
    func breakerAcrossHosts(on guarded: String) throws {
        let fleet = try Fleet(3)
        let client = try fleet[0].connect()
        let breaker = ["failures": 2, "window_ms": 60_000, "cooldown_ms": 500]
        let set = guarded == "queue" ? ["op": "set_queue", "queue": "llm", "breaker": breaker] : ["op": "set_limit", "name": "llm", "breaker": breaker]
        #expect(try client.request(set).ok)
        let named: [String: Any] = guarded == "queue" ? [:] : ["limits": ["llm"]]
        for i in 0..<10 { _ = try client.enqueue(queue: "llm", payload: i, named.merging(["max_attempts": 10, "backoff": ["initial_ms": 0]]) { $1 }) }
        /// The breaker's state as `stats` shows it on a host (`nil` while closed, for a queue's).
        func state(_ host: JSONLineClient) throws -> String? {
            let stats = try host.request(["op": "stats"])
            if guarded == "queue" { return (stats.object("breakers")?["llm"] as? [String: Any])?["state"] as? String }
            return (stats.object("limits")?["llm"] as? [String: Any])?["breaker_state"] as? String
        }
        for host in 0..<2 {
            let worker = try fleet[host].connect()
            let job = try #require(try worker.claim(queues: ["llm"]))
            #expect(try worker.fenced("fail", job, ["error": "HTTP 503"]).ok)
        }
        let third = try fleet[2].connect()
        #expect(try third.claim(queues: ["llm"]) == nil, "failures heard on two hosts opened it for the third")
        #expect(try state(third) == "open")
        let health = try third.request(["op": "health"])
        #expect((health.fields["reasons"] as? [String])?.contains { $0.contains("breaker of \(guarded) llm is open") } == true, "\(health)")

        // After the cooldown, waiting claims on all three hosts race: one gets the trial.
        let workers = try (0..<3).map { try fleet[$0].connect() }
        for worker in workers { try worker.send(["op": "claim", "queues": ["llm"], "wait_ms": 2_500]) }
        let got = try workers.map { try $0.readReply().object("job") }.compactMap { $0 }
        #expect(got.count == 1, "exactly one trial across the hosts: \(got)")
        let trial = ClaimedJob(try #require(got.first))
        #expect(try fleet[1].connect().fenced("complete", trial).ok, "its success, heard on another host, closes it")
        #expect(try state(third) == (guarded == "queue" ? nil : "closed"))
        #expect(try third.claim(queues: ["llm"]) != nil)
    }

    @Test("a job enqueued on one host is claimed on another and completed on a third; tokens rise across hosts")
    func acrossHosts() throws {
        let fleet = try Fleet()
        let producer = try fleet[0].connect()
        let ids = try (0..<6).map { try producer.enqueue(queue: "q", payload: ["n": $0]) }
        var tokens: [Int] = []
        var claimed: [Int] = []
        for round in 0..<6 {
            let host = fleet[(round + 1) % 3]
            let job = try #require(try host.connect().claim(queues: ["q"]), "host \((round + 1) % 3) got no job")
            tokens.append(job.token)
            claimed.append(job.id)
            // The fenced call goes to yet another host: the lease lives in the database.
            let done = try fleet[(round + 2) % 3].connect().fenced("complete", job, ["result": ["by": round]])
            #expect(done.ok, "\(done)")
        }
        #expect(tokens == tokens.sorted() && Set(tokens).count == tokens.count, "tokens rise across hosts: \(tokens)")
        #expect(Set(claimed) == Set(ids))
        for id in ids {
            #expect(try fleet[1].connect().get(id)["state"] as? String == "completed")
        }
        let workers = try fleet[2].connect().request(["op": "workers"])
        let hosts = (workers.fields["hosts"] as? [[String: Any]])?.compactMap { $0["host"] as? String }
        #expect(hosts == ["host-0", "host-1", "host-2"], "\(workers)")
    }

    @Test("workers on three hosts, each with two transactions in flight, drain a thousand jobs: each completed exactly once, and counted once")
    func drainOnce() throws {
        let fleet = try Fleet(arguments: ["--batches-in-flight", "2"])
        let producer = try fleet[0].connect()
        for batch in 0..<10 {
            let jobs = (0..<100).map { ["queue": "drain", "payload": ["n": batch * 100 + $0]] as [String: Any] }
            let reply = try producer.request(["op": "enqueue_batch", "jobs": jobs])
            #expect(reply.ok, "\(reply)")
        }
        let tally = Tally()
        let sockets = fleet.hosts.map(\.socketPath)
        runThreads(6) { index in
            guard let client = try? JSONLineClient(connection: LineConnection(path: sockets[index % 3], timeoutSeconds: 20)) else { return }
            while let job = try? client.claim(queues: ["drain"], ["wait_ms": 500]) {
                guard let done = try? client.fenced("complete", job), done.ok else {
                    tally.refused("complete")
                    continue
                }
                tally.completed(job.id)
            }
        }
        let completions = tally.completions
        #expect(tally.refusals.isEmpty)
        #expect(completions.count == 1_000, "\(completions.count) completions; \(fleet.hosts.map(\.log).joined(separator: "\n"))")
        #expect(Set(completions).count == 1_000, "no job completed twice")
        let stats = try fleet[2].connect().request(["op": "stats"])
        let drain = (stats.object("queues")?["drain"]) as? [String: Any]
        #expect(drain?["completed"] as? Int == 1_000, "\(stats)")
        #expect(drain?["running"] as? Int == 0 && drain?["queued"] as? Int == 0, "\(stats)")
    }

    @Test("a claim parked on one host is woken by an enqueue on another, by notification, not by a poll")
    func wakeAcrossHosts() throws {
        // Parked claims look on their own only every ten minutes here: only a notification wakes them in time.
        let fleet = try Fleet(arguments: ["--parked-look-ms", "600000"])
        let waiter = try fleet[2].connect()
        try waiter.send(["op": "claim", "queues": ["wake"], "wait_ms": 30_000, "id": "parked"])
        try fleet[2].connect().waitForParkedClaims(1)
        let id = try fleet[0].connect().enqueue(queue: "wake", payload: "go")
        let reply = try waiter.readReply()
        #expect(reply.string("id") == "parked")
        #expect((reply.object("job")?["id"]) as? Int == id, "\(reply)")
    }

    @Test("a claim a named limit holds back on one host is woken when the limit frees a place on another, and when its window opens: not by a poll")
    func limitWakesAcrossHosts() throws {
        // Parked claims look on their own only every ten minutes here: only a notification or a timer wakes them in time.
        let fleet = try Fleet(2, arguments: ["--parked-look-ms", "600000"])
        let admin = try fleet[0].connect()
        #expect(try admin.request(["op": "set_limit", "name": "gpu", "max_running": 1]).ok)
        _ = try admin.enqueue(queue: "extract", payload: 1, ["limits": ["gpu"]])
        let embed = try admin.enqueue(queue: "embed", payload: 2, ["limits": ["gpu"]])
        let running = try #require(try admin.claim(queues: ["extract"]))
        let waiter = try fleet[1].connect()
        try waiter.send(["op": "claim", "queues": ["embed"], "wait_ms": 20_000, "id": "held"])
        try fleet[1].connect().waitForParkedClaims(1)
        #expect(try admin.fenced("complete", running).ok)
        let woken = try waiter.readReply()
        #expect(woken.string("id") == "held" && (woken.object("job")?["id"]) as? Int == embed, "the place freed on host-0 went to host-1's claim: \(woken)")

        #expect(try admin.request(["op": "set_limit", "name": "api", "rate": ["count": 1, "per_ms": 1_500]]).ok)
        _ = try admin.enqueue(queue: "rated", payload: 1, ["limits": ["api"]])
        let second = try admin.enqueue(queue: "rated", payload: 2, ["limits": ["api"]])
        #expect(try admin.claim(queues: ["rated"]) != nil)
        try waiter.send(["op": "claim", "queues": ["rated"], "wait_ms": 20_000, "id": "window"])
        let opened = try waiter.readReply()
        #expect(opened.string("id") == "window" && (opened.object("job")?["id"]) as? Int == second, "the window opened and the parked claim took its start: \(opened)")
    }

    @Test("groups take turns in one rotation across hosts: claims alternating between two hosts rotate as one host's would")
    func groupsRotateAcrossHosts() throws {
        let fleet = try Fleet(2)
        let hosts = try (0..<2).map { try fleet[$0].connect() }
        for group in ["m", "m", "m", "b", "b", "b", "x", "x", "x"] { _ = try hosts[0].enqueue(queue: "three", payload: group, ["group": group]) }
        var turns: [String] = []
        for claim in 0..<6 { turns.append(try #require(try hosts[claim % 2].claim(queues: ["three"])?.payload as? String)) }
        #expect(turns == ["m", "x", "b", "m", "x", "b"], "\(turns)")
        let job = try #require(try hosts[1].request(["op": "list", "queue": "three", "limit": 1]).fields["jobs"] as? [[String: Any]]).first
        #expect(job?["group"] as? String != nil, "a job's group is kept and shown: \(String(describing: job))")
    }

    @Test("a rate limit holds across hosts: no second holds more than its count of starts, whichever host claimed")
    func rateAcrossHosts() throws {
        let fleet = try Fleet(3)
        let admin = try fleet[0].connect()
        #expect(try admin.request(["op": "set_limit", "name": "api", "rate": ["count": 10, "per_ms": 1_000]]).ok)
        let ids = try (0..<30).map { try admin.enqueue(queue: "rated", payload: $0, ["limits": ["api"]]) }
        let sockets = fleet.hosts.map(\.socketPath)
        runThreads(6) { index in
            guard let client = try? JSONLineClient(connection: LineConnection(path: sockets[index % 3], timeoutSeconds: 20)) else { return }
            while let job = try? client.claim(queues: ["rated"], ["wait_ms": 2_500]) {
                _ = try? client.fenced("complete", job)
            }
        }
        // started_at is the database's clock, the one the window is kept on.
        let starts = try ids.map { try #require(try admin.get($0)["started_at"] as? Int) }.sorted()
        for index in 0..<(starts.count - 10) {
            #expect(starts[index + 10] - starts[index] >= 1_000, "starts \(index)...\(index + 10) within \(starts[index + 10] - starts[index]) ms")
        }
    }

    @Test("a queue limit, a concurrency key and a named limit hold across hosts under load, with two transactions in flight on each")
    func admissionAcrossHosts() throws {
        let fleet = try Fleet(arguments: ["--batches-in-flight", "2"])
        let admin = try fleet[0].connect()
        #expect(try admin.request(["op": "set_queue", "queue": "limited", "max_running": 2]).ok)
        #expect(try admin.request(["op": "set_limit", "name": "gpu", "max_running": 2]).ok)
        for index in 0..<30 {
            _ = try admin.enqueue(queue: "limited", payload: index)
            _ = try admin.enqueue(queue: "keyed", payload: index, ["concurrency_key": "tenant-7"])
            _ = try admin.enqueue(queue: "named", payload: index, ["limits": ["gpu"]])
        }
        let sockets = fleet.hosts.map(\.socketPath)
        for (queue, most) in [("limited", 2), ("keyed", 1), ("named", 2)] {
            let tally = Tally()
            runThreads(6) { index in
                guard let client = try? JSONLineClient(connection: LineConnection(path: sockets[index % 3], timeoutSeconds: 20)) else { return }
                while let job = try? client.claim(queues: [queue], ["wait_ms": 1_000]) {
                    let start = DispatchTime.now().uptimeNanoseconds
                    usleep(15_000)
                    let end = DispatchTime.now().uptimeNanoseconds
                    guard (try? client.fenced("complete", job))?.ok == true else {
                        tally.refused("complete")
                        continue
                    }
                    tally.ran(from: start, to: end)
                    tally.completed(job.id)
                }
            }
            #expect(tally.completions.count == 30, "\(queue): \(tally.completions.count) of 30 completed")
            #expect(tally.mostAtOnce <= most, "\(queue): \(tally.mostAtOnce) ran at once, at most \(most) may")
            #expect(tally.mostAtOnce == most, "\(queue): six workers keep it full")
            #expect(tally.refusals.isEmpty)
        }
    }

    @Test("kill -9 of a host holding leases: they run out by their deadlines, another host leases the jobs, the dead host's tokens are refused everywhere")
    func hostDies() throws {
        let fleet = try Fleet()
        let ids = try (0..<3).map { try fleet[1].connect().enqueue(queue: "q", payload: $0) }
        let doomed = try fleet[0].connect()
        let held = try (0..<3).map { _ in try #require(try doomed.claim(queues: ["q"], ["lease_ms": 1_500])) }
        let deadlines = held.map { $0.fields["lease_expires_at"] as? Int ?? 0 }
        fleet[0].kill()
        let rescuer = try fleet[1].connect()
        var again: [ClaimedJob] = []
        for _ in 0..<3 {
            again.append(try #require(try rescuer.claim(queues: ["q"], ["wait_ms": 10_000]), "the jobs come back"))
        }
        #expect(Set(again.map(\.id)) == Set(ids))
        #expect(again.allSatisfy { $0.attempt == 2 })
        #expect(again.map(\.token).min()! > held.map(\.token).max()!, "the new tokens are larger")
        for (job, deadline) in zip(held, deadlines) {
            let events = try rescuer.request(["op": "events", "job": job.id]).fields["events"] as? [[String: Any]] ?? []
            let expired = events.first { $0["event"] as? String == "expired" }
            let at = try #require(expired?["at"] as? Int, "\(events)")
            #expect(at >= deadline, "expired at \(at), not before its deadline \(deadline)")
            for host in [fleet[1], fleet[2]] {
                let beat = try host.connect().fenced("heartbeat", job)
                #expect(beat.errorCode == "lease_lost", "\(beat)")
            }
        }
        for job in again {
            #expect(try rescuer.fenced("complete", job).ok)
        }
    }

    @Test("a chore that fails every time fails no request, is tried again when next due rather than at once, and holds up no stop")
    func failingChore() throws {
        let fleet = try Fleet(1, arguments: ["--prune-interval-ms", "200", "--retain-completed-ms", "0"])
        // Retention's deletes fail from now on; each try counts in a sequence, which the rollback leaves alone.
        try TestStore.psql(
            fleet.store,
            """
            CREATE SEQUENCE prune_tries;
            CREATE FUNCTION refuse_prune() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN PERFORM nextval('prune_tries'); RAISE EXCEPTION 'no pruning today'; END $$;
            CREATE TRIGGER refuse_prune BEFORE DELETE ON jobs FOR EACH ROW EXECUTE FUNCTION refuse_prune();
            """)
        let tries = { Int(try TestStore.psql(fleet.store, "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM prune_tries")) ?? -1 }
        let client = try fleet[0].connect()
        _ = try client.enqueue(queue: "q")
        let job = try #require(try client.claim(queues: ["q"]))
        #expect(try client.fenced("complete", job).ok)
        // The finished job is past its retention at once: every prune from now on fails.
        #expect(try waitUntil { try tries() >= 1 }, "\(fleet[0].log)")
        let firstTry = Date()
        var failures: [String] = []
        while try tries() < 6, Date().timeIntervalSince(firstTry) < 20 {
            let reply = try client.request(["op": "enqueue", "queue": "other", "payload": [String: Any]()])
            if !reply.ok { failures.append("\(reply)") }
        }
        #expect(failures.isEmpty, "requests failed with the chores: \(failures.prefix(3))")
        // Five more tries, each due 200 ms after the one before: not a loop.
        #expect(Date().timeIntervalSince(firstTry) >= 0.8, "the failing prune ran again at once")
        #expect(fleet[0].stop(within: 10) == 0, "batond did not stop while its chores failed: \(fleet[0].log)")
    }

    @Test("PostgreSQL restarted under load: every batond reconnects, nothing acknowledged is lost or applied twice")
    func databaseRestarts() throws {
        let postgres = try ThrowawayPostgres.start()
        defer { postgres.remove() }
        let fleet = try Fleet(server: postgres.url)
        let sockets = fleet.hosts.map(\.socketPath)
        let tally = Tally()
        let load = Thread {
            runThreads(6) { index in
                var client: JSONLineClient?
                var next = index * 1_000_000
                while !tally.isStopped {
                    if client == nil {
                        client = try? JSONLineClient(connection: LineConnection(path: sockets[index % 3], timeoutSeconds: 10))
                        if client == nil { usleep(50_000); continue }
                    }
                    do {
                        if index < 3 {
                            next += 1
                            let reply = try client!.request(["op": "enqueue", "queue": "restart", "payload": ["n": next]])
                            if reply.ok, let id = reply.int("job") { tally.enqueued(id, index: next) } else if let code = reply.errorCode { tally.refused(code) }
                        } else {
                            let reply = try client!.request(["op": "claim", "queues": ["restart"], "wait_ms": 200])
                            guard let fields = reply.object("job") else {
                                if let code = reply.errorCode { tally.refused(code); usleep(20_000) }
                                continue
                            }
                            let job = ClaimedJob(fields)
                            let done = try client!.fenced("complete", job)
                            if done.ok { tally.completed(job.id) } else if let code = done.errorCode { tally.refused(code) }
                        }
                    } catch {
                        client = nil
                    }
                }
            }
        }
        load.start()
        #expect(waitUntil { tally.completions.count >= 50 })
        try postgres.down()
        #expect(waitUntil { tally.refusals.contains("unavailable") }, "requests are answered unavailable meanwhile")
        let health = try fleet[1].connect().request(["op": "health"])
        #expect(health.string("health") == "failing", "\(health)")
        try postgres.up()
        let before = tally.completions.count
        #expect(waitUntil { tally.completions.count >= before + 50 }, "work goes on on every host")
        for host in fleet.hosts {
            #expect(waitUntil { (try? host.connect().request(["op": "health"]).string("health")) == "ok" }, "\(host.log)")
        }
        tally.stop()
        while !load.isFinished { usleep(20_000) }
        let reader = try fleet[2].connect()
        for (index, id) in tally.enqueues {
            let job = try reader.get(id)
            #expect((job["payload"] as? [String: Any])?["n"] as? Int == index, "acknowledged enqueue \(id) kept")
        }
        for id in tally.completions {
            #expect(try reader.get(id)["state"] as? String == "completed", "acknowledged completion of \(id) kept")
        }
        #expect(Set(tally.completions).count == tally.completions.count, "no job completed twice")
        // No acknowledged enqueue is stored twice: every payload number appears once at most.
        var seen: [Int: Int] = [:]
        var cursor: Int?
        repeat {
            var request: [String: Any] = ["op": "list", "queue": "restart", "limit": 1_000]
            if let cursor { request["after"] = cursor }
            let page = try reader.request(request)
            for job in page.fields["jobs"] as? [[String: Any]] ?? [] {
                if let n = (job["payload"] as? [String: Any])?["n"] as? Int { seen[n, default: 0] += 1 }
            }
            cursor = page.int("next")
        } while cursor != nil
        #expect(seen.values.allSatisfy { $0 == 1 }, "an enqueue stored twice")
    }
}
