import BatonProtocol
import Testing

@Suite("The request-line JSON parser")
struct JSONParserTests {
    func parse(_ text: String, depth: Int = 32) throws(JSONParser.Failure) -> JSONValue {
        let bytes = Array(text.utf8)
        return try bytes.withUnsafeBufferPointer { buffer throws(JSONParser.Failure) in
            try JSONParser.parse(buffer, maximumDepth: depth)
        }
    }

    @Test("values of every kind")
    func values() throws {
        #expect(try self.parse(#" {"a": [1, -2.5, true, false, null, "x"]} "#)
            == .object(["a": .array([.integer(1), .double(-2.5), .bool(true), .bool(false), .null, .string("x")])]))
        #expect(try self.parse("9223372036854775807") == .integer(.max))
        #expect(try self.parse("1e3") == .double(1_000))
        #expect(try self.parse("18446744073709551616") == .double(18_446_744_073_709_551_616))
    }

    @Test("escapes, including surrogate pairs")
    func escapes() throws {
        #expect(try self.parse(#""a\"b\\c\/d\n\t\u00e9\ud83d\ude00""#) == .string("a\"b\\c/d\n\té😀"))
    }

    @Test("malformed text is refused", arguments: [
        "", "{", "[1,]", #"{"a" 1}"#, #"{"a":1,}"#, "01", "1.", "-", "tru", #""\x""#, #""\ud800""#,
        "\"a\u{01}b\"", #"{"a":1} x"#, "nan", "[1 2]",
    ])
    func malformed(text: String) {
        #expect(throws: JSONParser.Failure.self) { try self.parse(text) }
    }

    @Test("invalid UTF-8 in a string is refused")
    func invalidUTF8() {
        let bytes: [UInt8] = [0x22, 0xFF, 0xFE, 0x22]
        #expect(throws: JSONParser.Failure.self) {
            try bytes.withUnsafeBufferPointer { buffer throws(JSONParser.Failure) in
                _ = try JSONParser.parse(buffer, maximumDepth: 4)
            }
        }
    }

    @Test("nesting is bounded while parsing, not after")
    func depthLimit() throws {
        #expect(throws: JSONParser.Failure.tooDeep(limit: 3)) { try self.parse("[[[[]]]]", depth: 3) }
        #expect(try self.parse("[[[]]]", depth: 3) == .array([.array([.array([])])]))
        // Far past any stack a recursive parser could survive.
        let hostile = String(repeating: "[", count: 1_000_000)
        #expect(throws: JSONParser.Failure.tooDeep(limit: 32)) { try self.parse(hostile) }
    }

    @Test("a top-level object keeps each field's exact text")
    func fieldText() throws {
        let text = #"{"op":"enqueue", "payload" : {"b": 1.50, "a": [ 1 ]} }"#
        let bytes = Array(text.utf8)
        let object = try bytes.withUnsafeBufferPointer { try JSONParser.parseObject($0, maximumDepth: 8) }
        #expect(object?.fields["payload"]?.text == #"{"b": 1.50, "a": [ 1 ]}"#)
        #expect(object?.fields["op"]?.value == .string("enqueue"))
        let notObject = try Array("[1]".utf8).withUnsafeBufferPointer { try JSONParser.parseObject($0, maximumDepth: 8) }
        #expect(notObject == nil)
    }
}
