import BatonTestSupport
import Foundation
import Testing

/// Runs the built `baton` command and returns its exit status and output.
func baton(_ arguments: [String], environment: [String: String] = [:], input: String? = nil) throws -> CommandRun {
    try CommandRun.run(TestServer.builtExecutable(named: "baton"), arguments, environment: environment, input: input)
}

@Suite("The baton command")
struct CommandLineTests {
    @Test("a script's whole job: enqueue, claim --json, complete, get")
    func scriptedLifecycle() throws {
        let server = try TestServer()
        let socket = ["--socket", server.socketPath]
        let enqueued = try baton(["enqueue", "emails", #"{"to":"ada@example.com"}"#, "--priority", "3"] + socket)
        #expect(enqueued.status == 0, "\(enqueued.errors)")
        let id = try #require(Int(enqueued.output.trimmingCharacters(in: .whitespacesAndNewlines)))

        let claimed = try baton(["claim", "emails", "--json", "--worker", "cron"] + socket)
        #expect(claimed.status == 0)
        let job = try #require(try JSONSerialization.jsonObject(with: Data(claimed.output.utf8)) as? [String: Any])
        #expect(job["id"] as? Int == id)
        #expect((job["payload"] as? [String: Any])?["to"] as? String == "ada@example.com")
        let token = try #require(job["token"] as? Int)

        #expect(try baton(["heartbeat", "\(id)", "\(token)"] + socket).status == 0)
        let completed = try baton(["complete", "\(id)", "\(token)", "-"] + socket, input: #"{"sent":true}"#)
        #expect(completed.status == 0, "\(completed.errors)")

        let shown = try baton(["get", "\(id)"] + socket)
        #expect(shown.output.contains("completed"))
        #expect(shown.output.contains(#"{"sent":true}"#))
        let json = try baton(["get", "\(id)", "--json"] + socket)
        let detail = try #require(try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any])
        #expect(detail["state"] as? String == "completed")
    }

    @Test("exit codes scripts can rely on: refused 1, no job 2, unreachable 3, usage 64")
    func exitCodes() throws {
        let server = try TestServer()
        let socket = ["--socket", server.socketPath]
        let refused = try baton(["complete", "999", "1"] + socket)
        #expect(refused.status == 1)
        #expect(refused.errors.contains("not_found"))
        #expect(try baton(["claim", "empty"] + socket).status == 2)
        #expect(try baton(["claim", "empty", "--wait-ms", "200", "--json"] + socket).status == 2)
        let unreachable = try baton(["stats", "--socket", server.directory.appendingPathComponent("nothing.sock").path])
        #expect(unreachable.status == 3)
        #expect(!unreachable.errors.isEmpty)
        let badJSON = try baton(["enqueue", "q", "{not json"] + socket)
        #expect(badJSON.status == 64)
        #expect(badJSON.errors.contains("not valid JSON"))
    }

    @Test("a stale token is refused with lease_lost and exit status 1")
    func staleToken() throws {
        let server = try TestServer()
        let socket = ["--socket", server.socketPath]
        _ = try baton(["enqueue", "q", "1", "--lease-ms", "200"] + socket)
        let first = try baton(["claim", "q", "--json"] + socket)
        let job = try #require(try JSONSerialization.jsonObject(with: Data(first.output.utf8)) as? [String: Any])
        let (id, token) = (job["id"] as? Int ?? 0, job["token"] as? Int ?? 0)
        Thread.sleep(forTimeInterval: 0.4)
        let late = try baton(["complete", "\(id)", "\(token)"] + socket)
        #expect(late.status == 1)
        #expect(late.errors.contains("lease_lost"))
    }

    @Test("list, pause-queue and resume-queue")
    func listAndQueues() throws {
        let server = try TestServer()
        let socket = ["--socket", server.socketPath]
        for _ in 0..<3 { _ = try baton(["enqueue", "docs", "{}"] + socket) }
        let page = try baton(["list", "--limit", "2"] + socket)
        #expect(page.status == 0, "\(page.errors)")
        #expect(page.output.contains("JOB"))
        #expect(page.output.contains("next page: --after 2"), "\(page.output)")
        let rest = try baton(["list", "--after", "2", "--json"] + socket)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(rest.output.utf8)) as? [String: Any])
        #expect((json["jobs"] as? [[String: Any]])?.compactMap { $0["id"] as? Int } == [1])
        #expect(try baton(["pause-queue", "docs"] + socket).status == 0)
        #expect(try baton(["claim", "docs"] + socket).status == 2)
        #expect(try baton(["resume-queue", "docs"] + socket).status == 0)
        #expect(try baton(["claim", "docs"] + socket).status == 0)
    }

    @Test("set-queue limits a queue, enqueue takes a concurrency key, events shows the trail")
    func limitsAndEvents() throws {
        let server = try TestServer()
        let socket = ["--socket", server.socketPath]
        #expect(try baton(["set-queue", "llm", "--max-running", "1"] + socket).status == 0)
        #expect(try baton(["set-queue", "llm"] + socket).status == 64, "a limit or --no-limit is required")
        let first = try baton(["enqueue", "llm", "1", "--concurrency-key", "doc-1"] + socket)
        let id = try #require(Int(first.output.trimmingCharacters(in: .whitespacesAndNewlines)))
        _ = try baton(["enqueue", "llm", "2"] + socket)
        _ = try baton(["enqueue", "follow-up", "3", "--after", "\(id)"] + socket)
        #expect(try baton(["claim", "llm", "--worker", "cron"] + socket).status == 0)
        #expect(try baton(["claim", "llm"] + socket).status == 2, "the limit holds the second job back")
        #expect(try baton(["claim", "follow-up"] + socket).status == 2, "the follow-up waits for the first job")
        #expect(try baton(["set-queue", "llm", "--no-limit"] + socket).status == 0)
        #expect(try baton(["claim", "llm"] + socket).status == 0)
        let events = try baton(["events", "\(id)"] + socket)
        #expect(events.status == 0, "\(events.errors)")
        let lines = events.output.split(separator: "\n")
        #expect(lines.count == 2)
        #expect(lines.first?.contains("enqueued") == true)
        #expect(lines.last?.contains("claimed") == true && lines.last?.contains("cron") == true, "\(events.output)")
    }

    @Test("stats prints a table; BATON_SOCKET names the socket")
    func statsTable() throws {
        let server = try TestServer()
        let environment = ["BATON_SOCKET": server.socketPath]
        for _ in 0..<3 { _ = try baton(["enqueue", "docs", "{}"], environment: environment) }
        _ = try baton(["claim", "docs"], environment: environment)
        let stats = try baton(["stats"], environment: environment)
        #expect(stats.status == 0, "\(stats.errors)")
        let lines = stats.output.split(separator: "\n")
        #expect(lines.first?.contains("QUEUED") == true)
        let row = try #require(lines.first { $0.hasPrefix("docs") })
        #expect(row.split(separator: " ").prefix(3) == ["docs", "2", "1"])
    }

    @Test("stats and top show paused queues and queue limits; top --json is refused")
    func admissionState() throws {
        let server = try TestServer()
        let socket = ["--socket", server.socketPath]
        _ = try baton(["enqueue", "docs", "{}"] + socket)
        #expect(try baton(["pause-queue", "docs"] + socket).status == 0)
        #expect(try baton(["set-queue", "llm", "--max-running", "2"] + socket).status == 0)

        let table = try baton(["stats"] + socket)
        #expect(table.status == 0, "\(table.errors)")
        let lines = table.output.split(separator: "\n")
        #expect(lines.first?.hasSuffix("ADMISSION") == true, "\(table.output)")
        #expect(lines.first { $0.hasPrefix("docs") }?.hasSuffix("paused") == true, "\(table.output)")
        #expect(lines.first { $0.hasPrefix("llm") }?.hasSuffix("max 2 running") == true, "a limited queue with no jobs: \(table.output)")

        let json = try baton(["stats", "--json"] + socket)
        let queues = try #require(try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: [String: Any]])
        #expect(queues["docs"]?["paused"] as? Bool == true)
        #expect(queues["docs"]?["max_running"] is NSNull)
        #expect(queues["llm"]?["max_running"] as? Int == 2)
        #expect(queues["llm"]?["paused"] as? Bool == false)

        let frame = try baton(["top", "--iterations", "1"] + socket)
        #expect(frame.status == 0, "\(frame.errors)")
        #expect(frame.output.contains("ADMISSION") && frame.output.contains("paused") && frame.output.contains("max 2 running"), "\(frame.output)")
        #expect(try baton(["set-limit", "openai", "--max-running", "3"] + socket).status == 0)
        let withLimits = try baton(["top", "--iterations", "1"] + socket)
        #expect(withLimits.output.split(separator: "\n").contains { $0.hasPrefix("openai ") && $0.contains("0/3") }, "top shows the limits: \(withLimits.output)")
        let refused = try baton(["top", "--json"] + socket)
        #expect(refused.status == 64)
        #expect(refused.errors.contains("stats --json"), "\(refused.errors)")
    }

    @Test("cancel, pause, resume and retry print the job's new state")
    func controlPrintsTheNewState() throws {
        let server = try TestServer()
        let socket = ["--socket", server.socketPath]
        let id = try #require(Int(try baton(["enqueue", "docs", "1"] + socket).output.trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(try baton(["pause", "\(id)"] + socket).output == "\(id) paused\n")
        #expect(try baton(["resume", "\(id)"] + socket).output == "\(id) queued\n")
        #expect(try baton(["cancel", "\(id)", "--reason", "not needed"] + socket).output == "\(id) cancelled\n")
        let retried = try baton(["retry", "\(id)", "--json"] + socket)
        #expect(retried.output == #"{"job":\#(id),"state":"queued"}"# + "\n", "\(retried.output)")
    }

    @Test("set-priority moves a queued job ahead in the claim order, negative priorities included")
    func setPriorityReorders() throws {
        let server = try TestServer()
        let socket = ["--socket", server.socketPath]
        func enqueue() throws -> Int { try #require(Int(try baton(["enqueue", "docs", "1"] + socket).output.trimmingCharacters(in: .whitespacesAndNewlines))) }
        let older = try enqueue()
        let newer = try enqueue()
        #expect(try baton(["set-priority", "\(older)", "--priority", "-3"] + socket).output == "\(older) queued\n")
        let claimed = try baton(["claim", "docs", "--json"] + socket)
        let job = try #require(try JSONSerialization.jsonObject(with: Data(claimed.output.utf8)) as? [String: Any])
        #expect(job["id"] as? Int == newer)
        let detail = try #require(try JSONSerialization.jsonObject(with: Data(try baton(["get", "\(older)", "--json"] + socket).output.utf8)) as? [String: Any])
        #expect(detail["priority"] as? Int == -3)
    }

    @Test("retry, cancel and purge by filter print how many jobs they changed")
    func bulkByFilter() throws {
        let server = try TestServer()
        let socket = ["--socket", server.socketPath]
        for _ in 0..<3 { #expect(try baton(["enqueue", "docs", "1"] + socket).status == 0) }
        let cancelled = try baton(["cancel", "--queue", "docs", "--state", "queued", "--limit", "2", "--reason", "superseded"] + socket)
        #expect(cancelled.output == "2 cancelled\n", "\(cancelled.output)\(cancelled.errors)")
        let retried = try baton(["retry", "--queue", "docs", "--state", "cancelled", "--json"] + socket)
        #expect(retried.output == #"{"changed":2,"done":true}"# + "\n", "\(retried.output)\(retried.errors)")
        #expect(try baton(["cancel", "--queue", "docs", "--state", "queued"] + socket).output == "3 cancelled\n")
        #expect(try baton(["purge", "--queue", "docs", "--state", "cancelled"] + socket).output == "3 purged\n")
        #expect(try baton(["purge"] + socket).status == 64)
        #expect(try baton(["retry", "7", "--queue", "docs"] + socket).status == 64)
    }

    @Test("schedule, schedules and unschedule")
    func schedules() throws {
        let server = try TestServer()
        let socket = ["--socket", server.socketPath]
        let made = try baton(["schedule", "nightly", "reports", #"{"kind":"nightly"}"#, "--cron", "0 2 * * *", "--timezone", "Europe/Berlin"] + socket)
        #expect(made.status == 0 && made.output.hasPrefix("nightly next 20"), "\(made.output)\(made.errors)")
        let listed = try baton(["schedules"] + socket)
        #expect(listed.output.contains("nightly") && listed.output.contains("cron 0 2 * * * (Europe/Berlin)"), "\(listed.output)")
        #expect(try baton(["schedule", "x", "q", "1", "--cron", "* * * * *", "--every-ms", "100"] + socket).status == 64)
        let refused = try baton(["schedule", "x", "q", "1", "--cron", "0 2 * *"] + socket)
        #expect(refused.status == 1 && refused.errors.contains("invalid_argument"), "\(refused.errors)")
        #expect(try baton(["unschedule", "nightly"] + socket).status == 0)
        #expect(try baton(["unschedule", "nightly"] + socket).status == 1)
    }

    @Test("set-queue sets and removes a circuit breaker")
    func breakerFlags() throws {
        let server = try TestServer()
        let socket = ["--socket", server.socketPath]
        let flags = ["--breaker-failures", "3", "--breaker-window-ms", "60000", "--breaker-cooldown-ms", "30000"]
        let set = try baton(["set-queue", "llm"] + flags + socket)
        #expect(set.status == 0, "\(set.errors)")
        #expect(try baton(["set-queue", "llm", "--breaker-failures", "3"] + socket).status == 64)
        #expect(try baton(["set-queue", "llm", "--breaker-failures", "1", "--breaker-window-ms", "60000", "--breaker-cooldown-ms", "60000"] + socket).status == 0)
        _ = try baton(["enqueue", "llm", "1"] + socket)
        let claimed = try baton(["claim", "llm", "--json"] + socket)
        let job = try #require(try JSONSerialization.jsonObject(with: Data(claimed.output.utf8)) as? [String: Any])
        #expect(try baton(["fail", "\(job["id"]!)", "\(job["token"]!)", "HTTP 503"] + socket).status == 0)
        let table = try baton(["stats"] + socket)
        #expect(table.output.split(separator: "\n").first { $0.hasPrefix("llm") }?.hasSuffix("breaker open") == true, "\(table.output)")
        #expect(try baton(["set-queue", "llm", "--no-breaker"] + socket).status == 0)
    }

    @Test("set-limit, enqueue --limit and --group, and limits")
    func limits() throws {
        let server = try TestServer()
        let socket = ["--socket", server.socketPath]
        let set = try baton(["set-limit", "tenant:*", "--max-running", "1", "--rate", "10", "--per-ms", "60000"] + socket)
        #expect(set.status == 0, "\(set.errors)")
        #expect(try baton(["set-limit", "openai", "--rate", "10"] + socket).status == 64, "--rate needs --per-ms")
        for _ in 0..<2 { #expect(try baton(["enqueue", "q", "1", "--limit", "tenant:7", "--group", "tenant-7"] + socket).status == 0) }
        #expect(try baton(["claim", "q"] + socket).status == 0)
        #expect(try baton(["claim", "q"] + socket).status == 2, "tenant:7's quota of one is running")
        let table = try baton(["limits"] + socket)
        let row = table.output.split(separator: "\n").first { $0.hasPrefix("tenant:7 ") }.map(String.init) ?? ""
        #expect(row.contains("tenant:*") && row.contains("1/1") && row.contains("1/10 per 60000 ms"), "\(table.output)")
        #expect(row.hasSuffix("yes"), "holding the claim it refused: \(table.output)")
        let json = try baton(["limits", "--json"] + socket)
        #expect(json.output.contains(#""name":"tenant:*""#) && json.output.contains(#""running":1"#), "\(json.output)")
        #expect(try baton(["set-limit", "openai", "--breaker-failures", "3"] + socket).status == 64, "a breaker needs all three flags")
        let breaker = ["--breaker-failures", "3", "--breaker-window-ms", "60000", "--breaker-cooldown-ms", "1000"]
        #expect(try baton(["set-limit", "openai"] + breaker + socket).status == 0)
        let withBreaker = try baton(["limits"] + socket)
        #expect(withBreaker.output.split(separator: "\n").contains { $0.hasPrefix("openai ") && $0.contains("closed") }, "\(withBreaker.output)")
        #expect(try baton(["set-limit", "tenant:*", "--no-max-running", "--no-rate"] + socket).status == 0)
        #expect(try baton(["claim", "q"] + socket).status == 0, "with the template removed the job starts")
    }

    @Test("list shows progress as a person reads it")
    func listShowsProgress() throws {
        let server = try TestServer()
        let client = try server.connect()
        _ = try client.enqueue(queue: "docs", payload: 1)
        let lease = try #require(try client.claim(queues: ["docs"]))
        #expect(try client.fenced("heartbeat", lease, ["progress": ["percent": 33, "message": "extract"]]).ok == true)
        let listed = try baton(["list", "--socket", server.socketPath])
        #expect(listed.output.contains("33% extract"), "\(listed.output)")
        #expect(!listed.output.contains("percent"), "\(listed.output)")
    }

    @Test("usage errors: enqueue without a payload, and unknown values listed with the valid ones")
    func usageErrors() throws {
        let server = try TestServer()
        let socket = ["--socket", server.socketPath]
        let noPayload = try baton(["enqueue", "docs"] + socket)
        #expect(noPayload.status == 64)
        #expect(noPayload.errors.contains("payload"), "\(noPayload.errors)")
        #expect(try baton(["list", "--json"] + socket).output.contains(#""jobs":[]"#), "nothing was enqueued")
        let badState = try baton(["list", "--state", "done"] + socket)
        #expect(badState.status == 64)
        #expect(badState.errors.contains(#"unknown state "done"; the states are queued, running"#), "\(badState.errors)")
    }

    @Test("an unreachable socket is one plain sentence naming the path and the cause")
    func unreachableSocket() throws {
        let server = try TestServer()
        // A socket file with no server behind it: what a crashed batond leaves.
        let path = server.directory.appendingPathComponent("stale.sock").path
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        #expect(withUnixSocketAddress(path, { bind(fd, $0, $1) }) == 0)
        close(fd)
        for (socketPath, cause) in [
            (path, "cannot connect to batond at \(path): connection refused, so batond is stopped or restarting"),
            (path + ".missing", "no batond socket at \(path).missing: is batond running? Pass the path, or set BATON_SOCKET"),
        ] {
            let run = try baton(["stats", "--socket", socketPath])
            #expect(run.status == 3)
            #expect(run.errors == "baton: \(cause)\n", "\(run.errors)")
        }
    }
}
