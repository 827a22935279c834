import BatonTestSupport
import Foundation
import Testing

@Suite("Dependencies between jobs")
struct DependencyTests {
    @Test("a job runs only once every job it names in after has completed; a waiting claim gets it then")
    func waitsForAll() throws {
        let server = try TestServer()
        let client = try server.connect()
        let chunk = try client.enqueue(queue: "chunk", payload: 1)
        let embed = try client.enqueue(queue: "embed", payload: 2)
        let detect = try client.enqueue(queue: "detect", payload: 3, ["after": [chunk, embed]])
        #expect(try client.claim(queues: ["detect"]) == nil)

        let first = try #require(try client.claim(queues: ["chunk"]))
        #expect(try client.fenced("complete", first).ok)
        #expect(try client.claim(queues: ["detect"]) == nil, "one dependency is still running")

        let worker = try server.connect()
        try worker.send(["op": "claim", "id": "w", "queues": ["detect"], "wait_ms": 20_000])
        try client.waitForParkedClaims(1)
        let second = try #require(try client.claim(queues: ["embed"]))
        #expect(try client.fenced("complete", second).ok)
        #expect(try worker.readReply().object("job")?["id"] as? Int == detect)
    }

    @Test("a failed dependency cancels its dependents, and theirs, naming it")
    func failureCascades() throws {
        let server = try TestServer()
        let client = try server.connect()
        let parse = try client.enqueue(queue: "parse", payload: 1, ["max_attempts": 1])
        let embed = try client.enqueue(queue: "embed", payload: 2, ["after": [parse]])
        let detect = try client.enqueue(queue: "detect", payload: 3, ["after": [embed]])
        let lease = try #require(try client.claim(queues: ["parse"]))
        #expect(try client.fenced("fail", lease, ["error": "unreadable"]).string("state") == "failed")
        let embedJob = try client.get(embed)
        #expect(embedJob["state"] as? String == "cancelled")
        #expect(embedJob["last_error"] as? String == "dependency \(parse) failed")
        let detectJob = try client.get(detect)
        #expect(detectJob["state"] as? String == "cancelled")
        #expect(detectJob["last_error"] as? String == "dependency \(embed) was cancelled")
    }

    @Test("after names existing jobs only; completed ones count as done, failed ones cancel the new job")
    func atEnqueue() throws {
        let server = try TestServer()
        let client = try server.connect()
        let refused = try client.request(["op": "enqueue", "queue": "q", "payload": 1, "after": [424_242]])
        #expect(refused.errorCode == "invalid_argument")
        #expect(refused.errorMessage?.contains("424242") == true)
        #expect(try client.request(["op": "stats"]).object("queues")?["q"] == nil)

        let done = try client.enqueue(queue: "a", payload: 1)
        let lease = try #require(try client.claim(queues: ["a"]))
        #expect(try client.fenced("complete", lease).ok)
        let ready = try client.enqueue(queue: "b", payload: 2, ["after": [done]])
        #expect(try client.claim(queues: ["b"])?.id == ready)

        let doomed = try client.enqueue(queue: "c", payload: 3, ["max_attempts": 1])
        let failing = try #require(try client.claim(queues: ["c"]))
        _ = try client.fenced("fail", failing, ["error": "x"])
        let late = try client.enqueue(queue: "d", payload: 4, ["after": [doomed]])
        #expect(try client.get(late)["state"] as? String == "cancelled")
    }

    @Test("cancelling a job cancels what waits on it")
    func cancelCascades() throws {
        let server = try TestServer()
        let client = try server.connect()
        let first = try client.enqueue(queue: "a", payload: 1)
        let second = try client.enqueue(queue: "b", payload: 2, ["after": [first]])
        #expect(try client.request(["op": "cancel", "job": first]).ok)
        #expect(try client.get(second)["state"] as? String == "cancelled")
    }
}
