import BatonTestSupport
import Foundation
import Testing

@Suite("Hardening: what a hostile or careless client cannot do")
struct HardeningTests {
    @Test(
        "names holding a control character are refused, not cut short",
        arguments: [0x00, 0x0A, 0x1B, 0x7F, 0x85] as [UInt32]
    )
    func controlCharactersInNames(scalar: UInt32) throws {
        let name = "q\(Character(Unicode.Scalar(scalar)!))x"
        let server = try TestServer()
        let client = try server.connect()
        for (op, fields) in [
            ("enqueue", ["queue": name, "payload": 1] as [String: Any]),
            ("enqueue", ["queue": "q", "payload": 1, "unique_key": name]),
            ("enqueue", ["queue": "q", "payload": 1, "concurrency_key": name]),
            ("claim", ["queues": [name]]),
            ("claim", ["queues": ["q"], "worker": name]),
            ("pause_queue", ["queue": name]),
            ("hello", ["client": name]),
        ] {
            let reply = try client.request(fields.merging(["op": op]) { $1 })
            #expect(reply.errorCode == "invalid_argument", "\(op) \(fields) → \(reply)")
            #expect(reply.errorMessage?.contains("control characters") == true)
        }
        // Nothing was stored under a shortened name.
        let stats = try client.request(["op": "stats"])
        #expect((stats.object("queues") ?? [:]).isEmpty, "\(stats)")
        // Printable Unicode is still a name.
        let id = try client.enqueue(queue: "émails-✉️", payload: 1)
        #expect(try client.get(id)["queue"] as? String == "émails-✉️")
    }

    @Test("a newline or an ANSI escape in a client's text cannot forge a log line")
    func logLinesCannotBeForged() throws {
        let server = try TestServer()
        let client = try server.connect()
        let cancelled = try client.enqueue(queue: "q", payload: 1)
        let forged = "oops\n2026-12-05T00:00:00+0000 critical batond: store corrupted \u{1B}[2J"
        #expect(try client.request(["op": "cancel", "job": cancelled, "reason": forged]).ok)
        _ = try client.enqueue(queue: "q", payload: 2, ["max_attempts": 1])
        let job = try #require(try client.claim(queues: ["q"]))
        #expect(try client.fenced("fail", job, ["error": "bad\r\ncritical batond: forged too"]).ok)
        #expect(waitUntil { server.log.contains("job failed") }, "\(server.log)")
        let lines = server.log.split(separator: "\n")
        #expect(!lines.contains { $0.contains("critical") && !$0.contains("job cancelled") && !$0.contains("job failed") }, "\(server.log)")
        #expect(!server.log.contains("\u{1B}"), "no terminal escape reaches the log")
        let cancelLine = try #require(lines.first { $0.contains("job cancelled") })
        #expect(cancelLine.contains(#"reason=oops\n2026-12-05"#), "\(cancelLine)")
        #expect(cancelLine.contains(#"\u{1b}[2J"#), "\(cancelLine)")
    }

    @Test("a job enqueued for a time long past waits from its enqueue, not from 1970")
    func runAtInThePast() throws {
        let server = try TestServer()
        let client = try server.connect()
        let before = Int(Date().timeIntervalSince1970 * 1_000)
        let id = try client.enqueue(queue: "old", payload: 1, ["run_at": 0])
        let job = try client.get(id)
        #expect((job["run_at"] as? Int ?? 0) >= before, "\(job)")
        let health = try client.request(["op": "health"])
        #expect(health.string("health") == "ok", "\(health)")
        #expect((health.int("oldest_ready_age_ms") ?? 0) < 60_000, "\(health)")
        _ = try #require(try client.claim(queues: ["old"]))
        let metrics = try client.request(["op": "metrics", "format": "json"])
        let histograms = try #require(metrics.fields["histograms"] as? [[String: Any]])
        let wait = try #require(histograms.first { $0["name"] as? String == "baton_job_wait_seconds" })
        #expect((wait["sum"] as? NSNumber)?.doubleValue ?? .infinity < 60, "\(wait)")
    }

    @Test("SIGHUP and SIGUSR1 do not stop batond: a parked claim still gets its answer")
    func hangupIsNotFatal() throws {
        let server = try TestServer()
        let waiting = try server.connect()
        try waiting.send(["op": "claim", "queues": ["q"], "wait_ms": 3_000, "id": "parked"])
        try server.connect().waitForParkedClaims(1)
        let pid = try #require(server.pid)
        kill(pid, SIGHUP)
        kill(pid, SIGUSR1)
        #expect(waitUntil { server.log.contains("SIGHUP") }, "\(server.log)")
        let reply = try waiting.readReply()
        #expect(reply.string("id") == "parked" && reply.isNull("job"), "\(reply)")
        #expect(try server.connect().request(["op": "stats"]).ok)
    }

    @Test(
        "a worker heartbeating on time keeps its 3 s lease through a 5 s SIGSTOP of batond",
        .disabled(
            if: TestStore.current.isPostgres,
            "on PostgreSQL the database's clock decides leases, never a host's: a stopped host cannot stretch them")
    )
    func stallIsNotChargedToWorkers() throws {
        let server = try TestServer()
        let client = try server.connect()
        let id = try client.enqueue(queue: "q", payload: 1)
        let job = try #require(try client.claim(queues: ["q"], ["lease_ms": 3_000]))
        let pid = try #require(server.pid)
        let resumed = DispatchSemaphore(value: 0)
        DispatchQueue.global().asyncAfter(deadline: .now() + 1.5) {
            kill(pid, SIGSTOP)
            Thread.sleep(forTimeInterval: 5)
            kill(pid, SIGCONT)
            resumed.signal()
        }
        // A heartbeat every second, as a worker on a 3 s lease does; the ones sent while
        // batond is stopped wait in its socket.
        var replies: [String] = []
        let start = Date()
        while Date().timeIntervalSince(start) < 9 {
            let reply = try client.fenced("heartbeat", job)
            replies.append(reply.ok ? "ok" : reply.errorCode ?? "?")
            Thread.sleep(forTimeInterval: 1)
        }
        resumed.wait()
        #expect(!replies.contains { $0 != "ok" }, "\(replies)")
        #expect(try client.get(id)["state"] as? String == "running")
        let events = try client.request(["op": "events", "job": id])
        #expect(!"\(events)".contains("expired"), "\(events)")
        #expect(server.log.contains("the authority was stalled"), "\(server.log)")
        #expect(try client.fenced("complete", job).ok)
    }

    @Test("4,000 new queues and two scrapes while a worker heartbeats on a 3 s lease: every heartbeat is answered promptly")
    func manyQueuesDoNotStallTheAuthority() throws {
        let server = try TestServer()
        let client = try server.connect(timeoutSeconds: 120)
        _ = try client.enqueue(queue: "work", payload: 1)
        let job = try #require(try client.claim(queues: ["work"], ["lease_ms": 3_000]))
        let heartbeats = HeartbeatLoop(server: server, job: job)
        let thread = Thread { heartbeats.run() }
        thread.start()
        for round in 0..<4 {
            let jobs = (0..<1_000).map { ["queue": "tenant-\(round)-\($0)", "payload": $0] as [String: Any] }
            #expect(try client.request(["op": "enqueue_batch", "jobs": jobs]).ok)
        }
        let text = try #require(try client.request(["op": "metrics"]).string("text"))
        #expect(text.contains(#"baton_jobs_enqueued_total{queue="tenant-3-999"} 1"#))
        #expect(text.contains(#"baton_jobs{queue="tenant-0-0",state="queued"} 1"#))
        let json = try client.request(["op": "metrics", "format": "json"])
        #expect((json.fields["samples"] as? [Any])?.count ?? 0 > 4_000 * 7)
        heartbeats.stop()
        #expect(waitUntil { heartbeats.finished })
        let results = heartbeats.results
        #expect(results.count >= 2, "\(results)")
        #expect(results.allSatisfy { $0.ok }, "\(results)")
        // The target (50 ms) is measured on a release build in BENCHMARKS.md; a debug build
        // on a loaded CI machine is held to a bound that still catches a stalled authority.
        let slowest = results.map(\.seconds).max() ?? 0
        #expect(slowest < 1.0, "the slowest heartbeat took \(slowest) s")
    }

    @Test("a line left unfinished past the timeout is answered and its connection closed; complete lines are never timed")
    func partialLineTimeout() throws {
        let server = try TestServer(arguments: ["--partial-line-timeout-ms", "300"])
        let slow = try LineConnection(path: server.socketPath)
        try slow.send(#"{"op":"stats"}"# + "\n")
        _ = try slow.readLine()
        try slow.send(#"{"op":"enqueue","queue":"q","#)
        let reply = try ReplyObject(line: try slow.readLine())
        #expect(reply.errorCode == "bad_request" && reply.errorMessage?.contains("unfinished") == true, "\(reply)")
        #expect(try slow.waitForClose())
        // A connection that only idles between complete lines stays open.
        let idle = try server.connect()
        Thread.sleep(forTimeInterval: 0.6)
        #expect(try idle.request(["op": "stats"]).ok)
    }

    @Test("unfinished lines across connections are held to the input budget; the connection over it is closed")
    func inputBudget() throws {
        let server = try TestServer(arguments: ["--input-budget-bytes", "2500000", "--max-line-bytes", "1048576"])
        let chunk = #"{"op":"enqueue","queue":"q","payload":""# + String(repeating: "x", count: 1_000_000)
        let first = try LineConnection(path: server.socketPath)
        let second = try LineConnection(path: server.socketPath)
        try first.send(chunk)
        try second.send(chunk)
        // Wait until the server holds both: a stats call on a third connection proves the
        // reads were taken in, in order on its one connection thread.
        #expect(try server.connect().request(["op": "stats"]).ok)
        let third = try LineConnection(path: server.socketPath)
        // The server may hang up before it has read the whole chunk: the send can fail.
        try? third.send(chunk)
        let reply = try ReplyObject(line: try third.readLine())
        #expect(reply.errorCode == "too_large" && reply.errorMessage?.contains("input buffers are full") == true, "\(reply)")
        #expect(try third.waitForClose())
        // The first two finish their lines and are served; the budget is free again.
        try first.send("\"}\n")
        #expect(try ReplyObject(line: try first.readLine()).ok)
        try second.send("\"}\n")
        #expect(try ReplyObject(line: try second.readLine()).ok)
        let fourth = try LineConnection(path: server.socketPath)
        try fourth.send(chunk + "\"}\n")
        #expect(try ReplyObject(line: try fourth.readLine()).ok)
    }

    @Test("a payload is stored as written however many values it holds; other fields are held to max_values")
    func parserWorkingMemory() throws {
        let server = try TestServer(arguments: ["--max-line-bytes", "4194304"])
        let client = try server.connect()
        let limit = try #require(try client.request(["op": "hello"]).object("limits")?["max_values"] as? Int)
        // A payload of 400,000 numbers: far more values than the limit, kept as its text.
        let numbers = "[" + Array(repeating: "1", count: 400_000).joined(separator: ", ") + "]"
        let connection = try LineConnection(path: server.socketPath)
        try connection.send(#"{"op":"enqueue","id":1,"queue":"big","payload":"# + numbers + "}\n")
        let enqueued = try ReplyObject(line: try connection.readLine())
        let id = try #require(enqueued.int("job"), "\(enqueued)")
        try connection.send(#"{"op":"get","id":2,"job":\#(id)}"# + "\n")
        let got = try connection.readLine()
        #expect(got.contains(numbers), "the payload comes back as it was written")
        // The same values in a field the request builds are refused, and the connection stays.
        let junk = "[" + Array(repeating: "1", count: limit).joined(separator: ",") + "]"
        try connection.send(#"{"op":"enqueue","id":3,"queue":"big","payload":1,"junk":"# + junk + "}\n")
        let refused = try ReplyObject(line: try connection.readLine())
        #expect(refused.errorCode == "too_large" && refused.errorMessage?.contains("\(limit) JSON values") == true, "\(refused)")
        try connection.send(#"{"op":"stats","id":4}"# + "\n")
        #expect(try ReplyObject(line: try connection.readLine()).ok)
    }

    @Test("past the connection limit a client is refused with too_many_connections and a log line; root keeps a reserve")
    func connectionLimit() throws {
        let server = try TestServer(arguments: ["--max-connections", "2", "--admin-connections", "1"])
        // The first client waits until it is the only connection (the start-up probe closed).
        let first = try server.connect()
        #expect(waitUntil {
            let samples = (try? first.request(["op": "metrics", "format": "json"]).fields["samples"]) as? [[String: Any]]
            let open = samples?.first { $0["name"] as? String == "baton_connections" }?["value"] as? Int
            return open == 1
        })
        let second = try server.connect()
        #expect(try second.request(["op": "stats"]).ok)
        // This test runs as root (or as batond's own user): it gets the reserved slot.
        var admin: JSONLineClient? = try server.connect()
        #expect(try admin?.request(["op": "health"]).ok == true)
        let refused = try LineConnection(path: server.socketPath)
        let reply = try ReplyObject(line: try refused.readLine())
        #expect(reply.errorCode == "too_many_connections", "\(reply)")
        #expect(try refused.waitForClose())
        #expect(waitUntil { server.log.contains("connection refused: at the connection limit") }, "\(server.log)")
        // A slot freed is a slot served.
        admin = nil
        #expect(waitUntil { (try? server.connect().request(["op": "stats"]).ok) == true })
    }

    @Test(
        "store files are created readable by batond's user alone, whatever the umask",
        .disabled(if: TestStore.current.isPostgres, "a PostgreSQL store has no files of batond's")
    )
    func storeFilesArePrivate() throws {
        let server = try TestServer()
        _ = try server.connect().enqueue(queue: "q", payload: "secret")
        for suffix in ["", "-wal", ".lock"] {
            let path = server.storePath + suffix
            guard FileManager.default.fileExists(atPath: path) else { continue }
            let mode = try #require(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int)
            #expect(mode & 0o077 == 0, "\(path) has mode \(String(mode, radix: 8))")
        }
    }
}

/// Heartbeats a lease every second on its own connection, recording each reply and its time.
private final class HeartbeatLoop: @unchecked Sendable {
    // @unchecked: the fields are guarded by `lock`.
    private let lock = NSLock()
    private let server: TestServer
    private let job: ClaimedJob
    private var stopped = false
    private var done = false
    private var recorded: [(ok: Bool, seconds: Double)] = []

    init(server: TestServer, job: ClaimedJob) {
        self.server = server
        self.job = job
    }

    var results: [(ok: Bool, seconds: Double)] { self.lock.withLock { self.recorded } }
    var finished: Bool { self.lock.withLock { self.done } }
    func stop() { self.lock.withLock { self.stopped = true } }

    func run() {
        defer { self.lock.withLock { self.done = true } }
        guard let client = try? self.server.connect() else { return }
        while !self.lock.withLock({ self.stopped }) {
            let start = Date()
            let ok = (try? client.fenced("heartbeat", self.job).ok) ?? false
            self.lock.withLock { self.recorded.append((ok, Date().timeIntervalSince(start))) }
            Thread.sleep(forTimeInterval: 1)
        }
    }
}
