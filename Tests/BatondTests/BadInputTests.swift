import BatonTestSupport
import Foundation
import Testing

@Suite("Bad input gets a clear error and harms nothing")
struct BadInputTests {
    @Test(
        "malformed requests are answered with the right code",
        arguments: [
            (#"{"op":"enqueue","queue":"q""#, "bad_request"),
            ("not json at all", "bad_request"),
            (#"[{"op":"stats"}]"#, "bad_request"),
            (#""stats""#, "bad_request"),
            (#"{"queue":"q"}"#, "bad_request"),
            (#"{"op":"teleport"}"#, "unknown_op"),
            (#"{"op":"enqueue","payload":1}"#, "invalid_argument"),
            (#"{"op":"enqueue","queue":"q"}"#, "invalid_argument"),
            (#"{"op":"enqueue","queue":7,"payload":1}"#, "invalid_argument"),
            (#"{"op":"enqueue","queue":"","payload":1}"#, "invalid_argument"),
            (#"{"op":"enqueue","queue":"q","payload":1,"priority":"high"}"#, "invalid_argument"),
            (#"{"op":"enqueue","queue":"q","payload":1,"delay_ms":-5}"#, "invalid_argument"),
            (#"{"op":"enqueue","queue":"q","payload":1,"delay_ms":5,"run_at":5}"#, "invalid_argument"),
            (#"{"op":"enqueue","queue":"q","payload":1,"max_attempts":0}"#, "invalid_argument"),
            (#"{"op":"enqueue","queue":"q","payload":1,"backoff":{"initial_ms":500,"max_ms":100}}"#, "invalid_argument"),
            (#"{"op":"claim","queues":"q"}"#, "invalid_argument"),
            (#"{"op":"claim","queues":[]}"#, "invalid_argument"),
            (#"{"op":"claim","queues":["q"],"wait_ms":99999999}"#, "invalid_argument"),
            (#"{"op":"heartbeat","job":1}"#, "invalid_argument"),
            (#"{"op":"heartbeat","job":"1","token":1}"#, "invalid_argument"),
            (#"{"op":"heartbeat","job":1,"token":1,"progress":{"percent":140}}"#, "invalid_argument"),
            (#"{"op":"fail","job":1,"token":1}"#, "invalid_argument"),
            (#"{"op":"checkpoint","job":1,"token":1}"#, "invalid_argument"),
            (#"{"op":"get","job":424242}"#, "not_found"),
            (#"{"op":"complete","job":424242,"token":3}"#, "not_found"),
            (#"{"op":"stats","id":{"nested":true}}"#, "invalid_argument"),
            (#"{"op":"enqueue","queue":"q","payload":"\ud800"}"#, "bad_request"),
        ]
    )
    func rejected(line: String, code: String) throws {
        let server = try TestServer()
        let client = try server.connect()
        let reply = try client.requestRaw(line)
        #expect(!reply.ok)
        #expect(reply.errorCode == code, "\(line) → \(reply)")
        #expect(!(reply.errorMessage ?? "").isEmpty)
        // The connection and the store are fine afterwards, and nothing was half-applied.
        let stats = try client.request(["op": "stats"])
        #expect(stats.ok)
        #expect((stats.object("queues") ?? [:]).isEmpty, "\(stats)")
    }

    @Test("a reply echoes the id of a request it rejects, when the id could be read")
    func echoesID() throws {
        let server = try TestServer()
        let reply = try server.connect().requestRaw(#"{"op":"enqueue","id":"req-9","queue":5}"#)
        #expect(reply.string("id") == "req-9")
        #expect(reply.errorMessage?.contains("queue") == true)
    }

    @Test("JSON nested deeper than the limit is refused as too_large")
    func tooDeep() throws {
        let server = try TestServer()
        let client = try server.connect()
        let deep = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        let reply = try client.requestRaw(#"{"op":"enqueue","queue":"q","payload":\#(deep)}"#)
        #expect(reply.errorCode == "too_large")
        let fine = String(repeating: "[", count: 30) + String(repeating: "]", count: 30)
        #expect(try client.requestRaw(#"{"op":"enqueue","queue":"q","payload":\#(fine)}"#).ok)
    }

    @Test("an oversized line is answered, then its connection closed; other clients go on")
    func oversizedLine() throws {
        let server = try TestServer(arguments: ["--max-line-bytes", "4096"])
        let bystander = try server.connect()
        let id = try bystander.enqueue(payload: "before")
        let offender = try server.connect()
        let huge = #"{"op":"enqueue","queue":"q","payload":""# + String(repeating: "x", count: 20_000) + #""}"#
        try? offender.connection.send(huge + "\n")
        let reply = try offender.readReply()
        #expect(reply.errorCode == "bad_request")
        #expect(reply.errorMessage?.contains("4096") == true)
        #expect(try offender.connection.waitForClose())
        #expect(try bystander.get(id)["state"] as? String == "queued")
        #expect(try bystander.request(["op": "stats"]).object("queues")?["q"] == nil)
        // A line just within the limit is fine.
        let fits = #"{"op":"enqueue","queue":"q","payload":""# + String(repeating: "y", count: 4000) + #""}"#
        #expect(try bystander.requestRaw(fits).ok)
    }

    @Test("a client that disconnects mid-line leaves nothing behind")
    func disconnectMidLine() throws {
        let server = try TestServer()
        do {
            let quitter = try server.connect()
            try quitter.connection.send(#"{"op":"enqueue","queue":"q","payl"#)
            quitter.connection.shutdownWrite()
            #expect(try quitter.connection.waitForClose())
        }
        let client = try server.connect()
        #expect(try client.request(["op": "stats"]).object("queues")?["q"] == nil)
    }

    @Test("a client that never reads its replies does not stall anyone else")
    func neverReads() throws {
        let server = try TestServer()
        let hog = try server.connect(timeoutSeconds: 1)
        // Pipelined requests whose replies are never read, until the server stops reading
        // them and the hog's own send blocks (and times out).
        let line = #"{"op":"hello","client":"\#(String(repeating: "h", count: 200))"}"# + "\n"
        let burst = String(repeating: line, count: 2_000)
        var sent = 0
        while sent < 200, (try? hog.connection.send(burst)) != nil {
            sent += 1
        }
        #expect(sent < 200, "the server kept reading a client that never reads")
        let client = try server.connect(timeoutSeconds: 10)
        let id = try client.enqueue(payload: "still served")
        #expect(try client.claim()?.id == id)
        _ = hog
    }
}
