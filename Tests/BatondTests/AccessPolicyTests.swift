import BatonTestSupport
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The access policy, against a real batond with two real uids: root (this test) and a
/// system user the test creates, whose connections are made by `runuser`.
@Suite(
    "Access by peer credentials",
    .serialized,
    .enabled(if: ForeignUser.available, "needs root, useradd and runuser: run the tests as root to cover the access policy")
)
struct PolicyTests {
    static let userName = "baton-policy-test"

    /// The user may work and read `embed`, and (by its group) produce into `parse-*`; root
    /// may do everything everywhere.
    static let policy = """
        [[grant]]
        user = "\(userName)"
        queues = ["embed"]
        roles = ["work", "read"]

        [[grant]]
        group = "\(userName)"
        queues = ["parse-*"]
        roles = ["produce"]

        [[grant]]
        uid = 0
        queues = ["*"]
        roles = ["admin", "read", "produce", "work"]
        """

    /// What each test starts from: a batond under `policy`, its socket open to every local
    /// user (the policy is the gate), and a connection from the test's second user.
    struct Setup {
        let server: TestServer
        let policyPath: String
        let user: ForeignUser
        let foreign: JSONLineClient
    }

    /// Runs `body` with a fresh ``Setup``, and removes the user, the policy file and the
    /// relay afterwards.
    func withPolicyServer(_ body: (Setup) throws -> Void) throws {
        let user = try ForeignUser.ensure(Self.userName)
        defer { user.cleanUp() }
        let policyPath = FileManager.default.temporaryDirectory.appendingPathComponent("policy-\(UUID().uuidString.prefix(8)).toml").path
        try Self.policy.write(toFile: policyPath, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: policyPath) }
        let server = try TestServer(arguments: ["--policy", policyPath])
        chmod(server.directory.path, 0o755)
        chmod(server.socketPath, 0o666)
        let (foreign, relay) = try user.connect(to: server.socketPath)
        defer { relay.terminate() }
        try body(Setup(server: server, policyPath: policyPath, user: user, foreign: foreign))
    }

    @Test("each role is held to its grant, and a refusal says forbidden, naming the op and the queue")
    func rolesAreEnforced() throws {
        try self.withPolicyServer { setup in
            let (server, user, foreign) = (setup.server, setup.user, setup.foreign)
            let root = try server.connect()

            let refused = try foreign.request(["op": "enqueue", "queue": "emails", "payload": 1])
            #expect(refused.errorCode == "forbidden", "\(refused)")
            #expect(refused.errorMessage?.contains("enqueue") == true && refused.errorMessage?.contains("\"emails\"") == true, "\(refused)")
            #expect(refused.errorMessage?.contains("uid \(user.uid)") == true, "\(refused)")
            // Produce by group, not granted by user.
            #expect(try foreign.request(["op": "enqueue", "queue": "parse-pdf", "payload": 1]).ok)
            #expect(try foreign.request(["op": "enqueue", "queue": "embed", "payload": 1]).errorCode == "forbidden")
            // A batch is all or nothing: one queue not granted refuses it whole.
            let batch = try foreign.request(["op": "enqueue_batch", "jobs": [["queue": "parse-a", "payload": 1], ["queue": "emails", "payload": 2]]])
            #expect(batch.errorCode == "forbidden", "\(batch)")

            let job = try root.enqueue(queue: "embed", payload: ["doc": 1])
            #expect(try foreign.request(["op": "get", "job": job]).ok)
            #expect(try foreign.request(["op": "cancel", "job": job]).errorCode == "forbidden")
            #expect(try foreign.request(["op": "pause_queue", "queue": "embed"]).errorCode == "forbidden")
            for op in ["stats", "metrics", "health", "workers", "list"] {
                #expect(try foreign.request(["op": op]).errorCode == "forbidden", "\(op) covers every queue")
            }
            #expect(try foreign.request(["op": "list", "queue": "embed"]).ok)
            #expect(try foreign.request(["op": "claim", "queues": ["parse-pdf"]]).errorCode == "forbidden")
            #expect(try foreign.request(["op": "hello"]).ok, "hello is open to every connection")
            // Nothing refused was applied: one job in parse-pdf, one in embed.
            let stats = try root.request(["op": "stats"])
            let queues = stats.object("queues") ?? [:]
            #expect(Set(queues.keys) == ["parse-pdf", "embed"], "\(stats)")
        }
    }

    @Test("a lease answers only to the uid that claimed it, and only it and an admin see its token")
    func leasesAreBoundToTheirUID() throws {
        try self.withPolicyServer { setup in
            let (server, user, foreign) = (setup.server, setup.user, setup.foreign)
            let root = try server.connect()

            let first = try root.enqueue(queue: "embed", payload: 1)
            let claimed = try #require(try foreign.claim(queues: ["embed"]))
            #expect(claimed.id == first)
            // Root, with the right token, still may not use another uid's lease.
            let stolen = try root.fenced("complete", claimed, ["result": "mine"])
            #expect(stolen.errorCode == "forbidden" && stolen.errorMessage?.contains("uid \(user.uid)") == true, "\(stolen)")
            #expect(try foreign.fenced("heartbeat", claimed).ok)

            // The holder and root see the token; once root holds another job, the user does not see its token.
            func tokens(_ client: JSONLineClient, _ job: Int) throws -> [Int] {
                let reply = try client.request(["op": "events", "job": job])
                let events = try #require(reply.fields["events"] as? [[String: Any]], "\(reply)")
                return events.compactMap { $0["token"] as? Int }
            }
            #expect(try tokens(foreign, first) == [claimed.token])
            #expect(try tokens(root, first) == [claimed.token])
            let second = try root.enqueue(queue: "embed", payload: 2)
            let rootsJob = try #require(try root.claim(queues: ["embed"]))
            #expect(rootsJob.id == second)
            #expect(try tokens(foreign, second) == [], "a token the user does not hold is hidden from it")
            #expect(try tokens(root, second) == [rootsJob.token])
            // The lease's uid outlives a restart: it is read back from the store.
            try server.restart()
            chmod(server.socketPath, 0o666)
            let (again, relayAgain) = try user.connect(to: server.socketPath)
            defer { relayAgain.terminate() }
            #expect(try server.connect().fenced("heartbeat", claimed).errorCode == "forbidden")
            #expect(try again.fenced("complete", claimed, ["result": "done"]).ok)
        }
    }

    @Test("SIGHUP reloads the policy; a file that does not parse is refused at reload, keeping the old one, and at start")
    func reload() throws {
        try self.withPolicyServer { setup in
            let (server, policyPath, foreign) = (setup.server, setup.policyPath, setup.foreign)
            let pid = try #require(server.pid)
            #expect(try foreign.request(["op": "claim", "queues": ["embed"]]).ok)

            // The user loses its grants.
            try Self.policy.replacingOccurrences(of: "user = \"\(Self.userName)\"", with: "uid = 0")
                .write(toFile: policyPath, atomically: true, encoding: .utf8)
            kill(pid, SIGHUP)
            #expect(waitUntil { (try? foreign.request(["op": "claim", "queues": ["embed"]]).errorCode) == "forbidden" })
            #expect(server.log.contains("access policy reloaded"), "\(server.log)")

            // A broken file changes nothing, and says why.
            try "[[grant]]\nuser = \"root\"\nqueues = [\"*\"]\nroles = [\"superuser\"]\n".write(toFile: policyPath, atomically: true, encoding: .utf8)
            kill(pid, SIGHUP)
            #expect(waitUntil { server.log.contains("access policy not reloaded") }, "\(server.log)")
            #expect(server.log.contains("superuser"), "the log names what is wrong")
            #expect(try foreign.request(["op": "claim", "queues": ["embed"]]).errorCode == "forbidden")
            #expect(try server.connect().request(["op": "stats"]).ok, "root keeps its grant")

            // The same file stops a start, before anything is served.
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("batond-badpolicy-\(UUID().uuidString.prefix(8))")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            let start = try CommandRun.run(
                TestServer.binaryPath,
                ["--socket", directory.appendingPathComponent("s").path, "--store", directory.appendingPathComponent("db").path, "--policy", policyPath],
                mergingErrors: true
            )
            #expect(start.status != 0)
            #expect(start.output.contains("unknown role \"superuser\""), "\(start.output)")
            #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent("s").path), "nothing was served")
        }
    }
}
