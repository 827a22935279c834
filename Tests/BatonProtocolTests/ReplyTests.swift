import BatonCore
import BatonProtocol
import Testing

@Suite("Writing replies")
struct ReplyTests {
    @Test("strings are escaped, ids echoed as they came")
    func escaping() {
        let line = String(decoding: Reply.failure(id: #""r\"1""#, BatonError(.invalidArgument, "bad \"queue\"\n\u{01}")), as: UTF8.self)
        #expect(line == #"{"id":"r\"1","ok":false,"error":{"code":"invalid_argument","message":"bad \"queue\"\n\u0001"}}"# + "\n")
    }

    @Test("raw JSON is spliced as it is, and a missing id is null")
    func splicing() {
        let line = String(decoding: Reply.success(id: nil) { $0.member("payload", rawJSON: #"{"a": [1, 2]}"#) }, as: UTF8.self)
        #expect(line == #"{"id":null,"ok":true,"payload":{"a": [1, 2]}}"# + "\n")
    }

    @Test("integers are written in full, negative ones and the extremes too")
    func integers() {
        var writer = JSONWriter()
        writer.beginArray()
        for value: Int64 in [0, 7, -7, 1_732_680_000_123, .max, .min] { writer.integer(value) }
        writer.integer(UInt64.max)
        writer.double(-3)
        writer.double(2.5)
        writer.endArray()
        #expect(writer.text == "[0,7,-7,1732680000123,9223372036854775807,-9223372036854775808,18446744073709551615,-3,2.5]")
    }

    @Test("non-ASCII text passes through, control characters are escaped")
    func unicode() {
        var writer = JSONWriter()
        writer.string("é ✓ 🎉\t\u{1F}")
        #expect(writer.text == #""é ✓ 🎉\t\u001f""#)
    }

    @Test("a parsed value written back reads the same")
    func roundTrip() throws {
        let text = #"{"a":[1,2.5,"é\n",null,true],"b":{}}"#
        let value = try Array(text.utf8).withUnsafeBufferPointer { try JSONParser.parse($0, maximumDepth: 8) }
        #expect(value.jsonText == text)
    }
}
