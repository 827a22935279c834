import BatonTestSupport
import Foundation
import Testing

/// A worker in a process of its own: it connects, claims one job, prints the reply, and
/// then holds the connection open until it is killed.
private final class WorkerProcess {
    let process = Process()
    private let output = Pipe()

    init(socket: String, detached: Bool) throws {
        self.process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        let claim = #"{"op":"claim","id":1,"queues":["docs"],"lease_ms":60000,"detached":\#(detached)}"#
        self.process.arguments = [
            "python3", "-c",
            """
            import socket, sys, time
            s = socket.socket(socket.AF_UNIX)
            s.connect(sys.argv[1])
            s.sendall(sys.argv[2].encode() + b"\\n")
            print(s.makefile().readline(), end="", flush=True)
            time.sleep(600)
            """,
            socket, claim,
        ]
        self.process.standardOutput = self.output
        try self.process.run()
    }

    deinit {
        if self.process.isRunning { self.kill() }
    }

    /// The claim's reply.
    func reply() throws -> [String: Any] {
        var line = Data()
        while line.last != UInt8(ascii: "\n") {
            let chunk = self.output.fileHandleForReading.availableData
            guard !chunk.isEmpty else { throw TestServerError("the worker exited before its claim was answered") }
            line += chunk
        }
        return try #require(try JSONSerialization.jsonObject(with: line) as? [String: Any])
    }

    func kill() {
        Foundation.kill(self.process.processIdentifier, SIGKILL)
        self.process.waitUntilExit()
    }
}

@Suite("A worker process that dies")
struct ProcessExitTests {
    @Test("a worker killed with SIGKILL has its job leased again at once, not after its lease period")
    func killedWorkerLosesItsLeases() throws {
        let server = try TestServer()
        let client = try server.connect()
        let id = try client.enqueue(queue: "docs", payload: 1, ["backoff": ["initial_ms": 0]])
        let worker = try WorkerProcess(socket: server.socketPath, detached: false)
        let claimed = try #require(try worker.reply()["job"] as? [String: Any])
        #expect(claimed["id"] as? Int == id)
        let pid = worker.process.processIdentifier

        let killedAt = ContinuousClock.now
        worker.kill()
        // The lease has 60 s to run: a claim waiting 5 s gets the job only if the server
        // ended it because its process died.
        let again = try #require(try client.claim(queues: ["docs"], ["wait_ms": 5_000]), "the dead worker's lease was not ended")
        let elapsed = ContinuousClock.now - killedAt
        #expect(again.id == id && again.attempt == 2)
        print("re-leased \(elapsed) after SIGKILL")

        let events = try #require(try client.request(["op": "events", "job": id]).fields["events"] as? [[String: Any]])
        let expired = try #require(events.first { $0["event"] as? String == "expired" })
        #expect(expired["error"] as? String == "worker process \(pid) exited")
        #expect(expired["state"] as? String == "retrying")
    }

    @Test("a detached claim's lease outlives its process; a closed connection's lease outlives the connection")
    func livingLeases() throws {
        let server = try TestServer()
        let client = try server.connect()
        let detachedJob = try client.enqueue(queue: "docs", payload: 1)
        let worker = try WorkerProcess(socket: server.socketPath, detached: true)
        #expect((try worker.reply()["job"] as? [String: Any])?["id"] as? Int == detachedJob)
        worker.kill()

        // This process lives on after its connection closes: a reconnect, not a death.
        let closedJob = try client.enqueue(queue: "docs", payload: 2)
        do {
            let other = try server.connect()
            #expect(try other.claim(queues: ["docs"], ["lease_ms": 60_000])?.id == closedJob)
        }
        // Nothing to wait for but time: past the server's last look at a closed
        // connection's process (PeerProcess.looks, under a second), both still run.
        Thread.sleep(forTimeInterval: 1.5)
        #expect(try client.get(detachedJob)["state"] as? String == "running")
        #expect(try client.get(closedJob)["state"] as? String == "running")
    }
}
