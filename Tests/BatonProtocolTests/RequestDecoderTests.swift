import BatonCore
import Foundation
import BatonProtocol
import Testing

@Suite("Decoding requests")
struct RequestDecoderTests {
    let decoder = RequestDecoder()

    func decode(_ line: String) -> Result<RequestDecoder.Decoded, RequestDecoder.Rejection> {
        Array(line.utf8).withUnsafeBufferPointer { buffer in
            Result { () throws(RequestDecoder.Rejection) in try self.decoder.decode(buffer) }
        }
    }

    func rejection(_ line: String) -> RequestDecoder.Rejection? {
        if case .failure(let rejection) = self.decode(line) { return rejection }
        return nil
    }

    @Test("an enqueue with every option")
    func fullEnqueue() throws {
        let line = #"{"op":"enqueue","id":"e1","queue":"embed","payload":{"doc":1},"priority":3,"delay_ms":500,"#
            + #""max_attempts":5,"backoff":{"initial_ms":100,"factor":3,"max_ms":900},"lease_ms":60000,"unique_key":"doc-1"}"#
        let decoded = try self.decode(line).get()
        #expect(decoded.id == #""e1""#)
        guard case .enqueue(let request) = decoded.request else {
            Issue.record("not an enqueue")
            return
        }
        #expect(request.queue == "embed")
        #expect(request.payload == #"{"doc":1}"#)
        #expect(request.priority == 3)
        #expect(request.schedule == .delay(milliseconds: 500))
        #expect(request.maxAttempts == 5)
        #expect(request.backoff == BackoffPolicy(initialMilliseconds: 100, factor: 3, maximumMilliseconds: 900))
        #expect(request.leaseMilliseconds == 60_000)
        #expect(request.uniqueKey == "doc-1")
    }

    @Test("an unknown op's error lists the ops, and every op listed is known")
    func opList() throws {
        let rejection = try #require(self.rejection(#"{"op":"teleport","id":1}"#))
        #expect(rejection.error.code == .unknownOp)
        #expect(rejection.error.message.contains("enqueue_batch, events"))
        for op in RequestDecoder.ops {
            #expect(self.rejection(#"{"op":"\#(op)","id":1}"#)?.error.code != .unknownOp, "\(op)")
        }
        let schemas = URL(filePath: #filePath).deletingLastPathComponent().appending(path: "../../protocol/schema").standardized
        let documented = try FileManager.default.contentsOfDirectory(atPath: schemas.path)
            .filter { $0.hasPrefix("request.") }.map { String($0.dropFirst("request.".count).dropLast(".json".count)) }
        #expect(documented.sorted() == RequestDecoder.ops)
    }

    @Test("a claim removes repeated queue names and defaults to not waiting")
    func claim() throws {
        guard case .claim(let request) = try self.decode(#"{"op":"claim","queues":["a","b","a"]}"#).get().request else {
            Issue.record("not a claim")
            return
        }
        #expect(request.queues == ["a", "b"])
        #expect(request.waitMilliseconds == 0)
    }

    @Test("errors name the field at fault")
    func namedField() {
        let rejection = self.rejection(#"{"op":"heartbeat","id":9,"job":1,"token":"abc"}"#)
        #expect(rejection?.error.code == .invalidArgument)
        #expect(rejection?.error.message.contains("token") == true)
        #expect(rejection?.id == "9")
    }

    @Test("the progress object is checked and written canonically")
    func progress() throws {
        let decoded = try self.decode(#"{"op":"heartbeat","job":1,"token":2,"progress":{"message":"embedding","percent":50.0}}"#).get()
        guard case .heartbeat(let request) = decoded.request else {
            Issue.record("not a heartbeat")
            return
        }
        #expect(request.progress == #"{"percent":50,"message":"embedding"}"#)
    }

    @Test("every error code has a distinct wire string")
    func codes() {
        let wire = BatonError.Code.all.map(\.wireValue)
        #expect(Set(wire).count == wire.count)
        #expect(wire.contains("lease_lost"))
        #expect(BatonError.Code(wireValue: "lease_lost") == .leaseLost)
        #expect(BatonError.Code(wireValue: "no_such_code") == nil)
    }
}

@Suite("When an enqueued job becomes due")
struct EnqueueScheduleTests {
    func request(_ schedule: EnqueueRequest.Schedule?) -> EnqueueRequest {
        EnqueueRequest(queue: "q", payload: "1", priority: 0, schedule: schedule)
    }

    @Test("now, after a delay, or at a time, never before now")
    func runAt() {
        #expect(self.request(nil).runAt(now: 1_000) == 1_000)
        #expect(self.request(.delay(milliseconds: 250)).runAt(now: 1_000) == 1_250)
        #expect(self.request(.at(epochMilliseconds: 5_000)).runAt(now: 1_000) == 5_000)
        #expect(self.request(.at(epochMilliseconds: 0)).runAt(now: 1_000) == 1_000, "a time already past means now")
    }
}
