import BatonTestSupport
import Foundation
import Testing

@Suite("Cancelling a job")
struct CancelTests {
    @Test("a queued job cancelled is never claimed, and says why")
    func cancelQueued() throws {
        let server = try TestServer()
        let client = try server.connect()
        let id = try client.enqueue(queue: "c", payload: "wrong file")
        let reply = try client.request(["op": "cancel", "job": id, "reason": "parsing the wrong file"])
        #expect(reply.ok, "\(reply)")
        #expect(reply.string("state") == "cancelled")
        #expect(try client.claim(queues: ["c"]) == nil)
        let job = try client.get(id)
        #expect(job["state"] as? String == "cancelled")
        #expect(job["last_error"] as? String == "parsing the wrong file")
        #expect(job["finished_at"] as? Int != nil)
    }

    @Test("a running job cancelled: its worker's heartbeat and checkpoint are refused with cancelled, its complete as an invalid transition")
    func cancelRunning() throws {
        let server = try TestServer()
        let worker = try server.connect()
        let operator_ = try server.connect()
        let id = try worker.enqueue(queue: "c", payload: 1)
        let claimed = try #require(try worker.claim(queues: ["c"]))
        #expect(try operator_.request(["op": "cancel", "job": id]).ok)
        for (op, extra) in [("heartbeat", [String: Any]()), ("checkpoint", ["state": 1])] {
            let refused = try worker.fenced(op, claimed, extra)
            #expect(refused.errorCode == "cancelled", "\(op): \(refused)")
            #expect(refused.errorState == "cancelled")
        }
        for (op, extra) in [("complete", [String: Any]()), ("fail", ["error": "x"]), ("release", [:])] {
            let refused = try worker.fenced(op, claimed, extra)
            #expect(refused.errorCode == "invalid_transition", "\(op): \(refused)")
            #expect(refused.errorState == "cancelled", "\(op): \(refused)")
        }
        #expect(try worker.get(id)["state"] as? String == "cancelled")
        #expect(try worker.get(id)["lease"] is NSNull)
    }

    @Test("a finished job cannot be cancelled", arguments: ["complete", "fail"])
    func cancelFinished(ending: String) throws {
        let server = try TestServer()
        let client = try server.connect()
        let id = try client.enqueue(queue: "c", payload: 1)
        let claimed = try #require(try client.claim(queues: ["c"]))
        _ = try client.fenced(ending, claimed, ["error": "x", "retry": false])
        let refused = try client.request(["op": "cancel", "job": id])
        #expect(refused.errorCode == "invalid_transition", "\(refused)")
        #expect(try client.request(["op": "cancel", "job": 999_999]).errorCode == "not_found")
    }
}
