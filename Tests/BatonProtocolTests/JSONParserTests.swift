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
    func parseObject(_ text: String, verbatim: Set<String>) throws(JSONParser.Failure) -> JSONParser.TopLevelObject? {
        let bytes = Array(text.utf8)
        return try bytes.withUnsafeBufferPointer { buffer throws(JSONParser.Failure) in
            try JSONParser.parseObject(buffer, maximumDepth: 4, verbatimKeys: verbatim)
        }
    }

    @Test("verbatim members keep their text, at the top and nested, and are still checked")
    func verbatimMembers() throws {
        let line = #"{"payload": [1, {"x": 2}], "jobs": [{"payload": {"b" : 1}, "queue": "q"}]}"#
        let object = try #require(try self.parseObject(line, verbatim: ["payload"]))
        #expect(object.fields["payload"]?.value == .verbatim(#"[1, {"x": 2}]"#))
        #expect(object.fields["jobs"]?.value
            == .array([.object(["payload": .verbatim(#"{"b" : 1}"#), "queue": .string("q")])]))
        #expect(JSONValue.verbatim(#"{"b" : 1}"#).jsonText == #"{"b" : 1}"#)

        for bad in [#"{"payload": [1,]}"#, #"{"jobs": [{"payload": {"a" 1}}]}"#, #"{"payload": "\ud800"}"#] {
            #expect(throws: JSONParser.Failure.self) { try self.parseObject(bad, verbatim: ["payload"]) }
        }
        // Depth counts inside a verbatim value exactly as elsewhere: the object is depth 1.
        #expect(throws: JSONParser.Failure.tooDeep(limit: 4)) {
            try self.parseObject(#"{"payload": [[[[1]]]]}"#, verbatim: ["payload"])
        }
        #expect(try self.parseObject(#"{"payload": [[[1]]]}"#, verbatim: ["payload"]) != nil)
    }

    @Test("values outside verbatim members are counted against a limit")
    func valueLimit() throws {
        func parse(_ text: String) throws(JSONParser.Failure) -> JSONParser.TopLevelObject? {
            try Array(text.utf8).withUnsafeBufferPointer { buffer throws(JSONParser.Failure) in
                try JSONParser.parseObject(buffer, maximumDepth: 8, verbatimKeys: ["payload"], maximumValues: 5)
            }
        }
        // {"a": [1, 2, 3]} is five values: the object, the array and three numbers.
        #expect(try parse(#"{"a": [1, 2, 3]}"#) != nil)
        #expect(throws: JSONParser.Failure.tooManyValues(limit: 5)) { try parse(#"{"a": [1, 2, 3, 4]}"#) }
        // A verbatim member's insides are not built, so they do not count.
        #expect(try parse(#"{"payload": [1, 2, 3, 4, 5, 6, 7, 8], "a": 1}"#) != nil)
    }
}
