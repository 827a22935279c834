import BatonTestSupport
import Foundation
import Testing

@Suite("Running under systemd")
struct SystemdTests {
    @Test("READY=1 once serving, earned WATCHDOG=1 pings with a status line, STOPPING=1 on SIGTERM")
    func notifications() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("notify-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let notify = try NotifySocket(path: directory.appendingPathComponent("n.sock").path)
        let server = try TestServer(environment: ["NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"])
        _ = try server.connect().enqueue(queue: "q", payload: 1)
        let messages = notify.collect(for: 10) { messages in messages.filter { $0.contains("WATCHDOG=1") }.count >= 3 }
        let ready = try #require(messages.first { $0.contains("READY=1") }, "\(messages)")
        #expect(ready.contains("STATUS="))
        let pings = messages.filter { $0.contains("WATCHDOG=1") }
        #expect(pings.count >= 3, "\(messages)")
        // The status line follows the pings: the health verdict, a job waiting, the test's connection open.
        #expect(messages.contains { $0.contains("STATUS=ok: 1 waiting") && $0.contains("connections") }, "\(messages)")
        #expect(messages.firstIndex { $0.contains("READY=1") }! < messages.firstIndex { $0.contains("WATCHDOG=1") }!)

        #expect(server.stop() == 0)
        let stopping = notify.collect(for: 2) { $0.contains { $0.contains("STOPPING=1") } }
        #expect(stopping.contains { $0.contains("STOPPING=1") }, "\(stopping)")
    }

    @Test("with the store loop stalled, the watchdog pings stop while the process lives on")
    func stalledAuthorityStopsPings() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("stall-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let notify = try NotifySocket(path: directory.appendingPathComponent("n.sock").path)
        let server = try TestServer(
            environment: ["NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000", "BATOND_TEST_FAULTS": "1"]
        )
        let before = notify.collect(for: 10) { $0.filter { $0.contains("WATCHDOG=1") }.count >= 2 }
        #expect(before.filter { $0.contains("WATCHDOG=1") }.count >= 2, "\(before)")

        // The debug build's fault switch blocks the authority's thread, as a hung fsync would.
        let pid = try #require(server.pid)
        kill(pid, SIGUSR2)
        // A ping already on its way may still land within the first interval.
        _ = notify.collect(for: 0.4)
        let after = notify.collect(for: 1.2)
        #expect(!after.contains { $0.contains("WATCHDOG=1") }, "\(after)")
        #expect(kill(pid, 0) == 0, "the process is still alive; only systemd would kill it")
    }

    @Test(
        "socket activation: batond serves the socket systemd hands it",
        .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-socket-activate"), "systemd-socket-activate is not installed")
    )
    func socketActivation() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("activate-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let socket = directory.appendingPathComponent("a.sock").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/systemd-socket-activate")
        process.arguments = [
            "-l", socket, TestServer.binaryPath,
            // A socket path that is never bound: batond must use the inherited one.
            "--socket", directory.appendingPathComponent("unused.sock").path,
            "--store", directory.appendingPathComponent("s.sqlite").path,
        ]
        let log = Pipe()
        process.standardError = log
        process.standardOutput = log
        try process.run()
        defer {
            process.terminate()
            process.waitUntilExit()
        }
        var client: JSONLineClient?
        for _ in 0..<250 where client == nil {
            client = try? JSONLineClient(connection: LineConnection(path: socket, timeoutSeconds: 20))
            if client == nil { usleep(20_000) }
        }
        let connected = try #require(client)
        // The first connection is what makes systemd-socket-activate start batond.
        let hello = try connected.request(["op": "hello"])
        #expect(hello.string("server") == "batond")
        let id = try connected.enqueue(queue: "q", payload: "activated")
        #expect(try connected.claim(queues: ["q"])?.id == id)
        #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent("unused.sock").path))
    }

    @Test("log lines carry syslog priorities when standard error is the journal")
    func journalPriorities() throws {
        let server = try TestServer()
        server.stop()
        // Point JOURNAL_STREAM at the log file batond writes to, as systemd does with the journal.
        let log = server.directory.appendingPathComponent("batond.log").path
        var status = stat()
        #expect(stat(log, &status) == 0)
        server.environment = ["JOURNAL_STREAM": "\(status.st_dev):\(status.st_ino)"]
        try server.start()
        server.stop()
        let lines = server.log.split(separator: "\n")
        #expect(lines.contains { $0.hasPrefix("<6>batond ready") }, "\(lines)")
        #expect(lines.contains { $0.hasPrefix("<6>batond stopped") })
        #expect(lines.contains { $0.contains("durability=full") })
    }

    @Test(
        "the units pass systemd-analyze verify, and the service rates 2.0 or lower for exposure",
        .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-analyze"), "systemd-analyze is not installed")
    )
    func units() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("units-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        // verify checks that ExecStart's binary exists: point it at the one just built.
        let service = try String(contentsOf: root.appendingPathComponent("systemd/baton.service"), encoding: .utf8)
            .replacingOccurrences(of: "/usr/local/bin/batond", with: TestServer.binaryPath)
        try service.write(to: directory.appendingPathComponent("baton.service"), atomically: true, encoding: .utf8)
        try FileManager.default.copyItem(
            at: root.appendingPathComponent("systemd/baton.socket"), to: directory.appendingPathComponent("baton.socket")
        )
        try self.verifyUnits(in: directory, "")

        // With the access policy's drop-ins (appended: a unit may repeat its sections), the
        // units still verify, and the service still rates 2.0 or lower.
        let dropIn = try String(contentsOf: root.appendingPathComponent("systemd/baton.service.d/policy.conf"), encoding: .utf8)
            .replacingOccurrences(of: "/usr/local/bin/batond", with: TestServer.binaryPath)
        let socketDropIn = try String(contentsOf: root.appendingPathComponent("systemd/baton.socket.d/policy.conf"), encoding: .utf8)
        let socket = try String(contentsOf: directory.appendingPathComponent("baton.socket"), encoding: .utf8)
        try (service + "\n" + dropIn).write(to: directory.appendingPathComponent("baton.service"), atomically: true, encoding: .utf8)
        try (socket + "\n" + socketDropIn).write(to: directory.appendingPathComponent("baton.socket"), atomically: true, encoding: .utf8)
        try self.verifyUnits(in: directory, " with the policy")
    }

    /// The units in `directory` pass `systemd-analyze verify`, and the service rates 2.0 or lower.
    private func verifyUnits(in directory: URL, _ setup: String) throws {
        let verify = try run("/usr/bin/systemd-analyze", ["verify", "baton.socket", "baton.service"], in: directory)
        #expect(verify.status == 0, "\(verify.output)")
        let security = try run("/usr/bin/systemd-analyze", ["security", "--offline=true", "baton.service"], in: directory)
        let level = try #require(
            security.output.split(separator: "\n").last { $0.contains("Overall exposure level") }?
                .split(separator: " ").compactMap { Double($0) }.first,
            "\(security.output)"
        )
        #expect(level <= 2.0, "exposure\(setup) \(level)")
    }

    private func run(_ tool: String, _ arguments: [String], in directory: URL) throws -> (status: Int32, output: String) {
        let run = try CommandRun.run(tool, arguments, in: directory, mergingErrors: true)
        return (run.status, run.output)
    }
}
