import BatonCore
import BatonProtocol
import Testing

@Suite("Writing replies")
struct ReplyTests {
    @Test("strings are escaped, ids echoed as they came")
    func escaping() {
        let line = Reply.failure(id: #""r\"1""#, BatonError(.invalidArgument, "bad \"queue\"\n\u{01}"))
        #expect(line == #"{"id":"r\"1","ok":false,"error":{"code":"invalid_argument","message":"bad \"queue\"\n\u0001"}}"# + "\n")
    }

    @Test("raw JSON is spliced as it is, and a missing id is null")
    func splicing() {
        let line = Reply.success(id: nil) { $0.member("payload", rawJSON: #"{"a": [1, 2]}"#) }
        #expect(line == #"{"id":null,"ok":true,"payload":{"a": [1, 2]}}"# + "\n")
    }

    @Test("a parsed value written back reads the same")
    func roundTrip() throws {
        let text = #"{"a":[1,2.5,"é\n",null,true],"b":{}}"#
        let value = try Array(text.utf8).withUnsafeBufferPointer { try JSONParser.parse($0, maximumDepth: 8) }
        #expect(value.jsonText == text)
    }
}
