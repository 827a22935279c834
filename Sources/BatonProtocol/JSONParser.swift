/// A strict, single-pass JSON parser for request lines.
///
/// It exists, rather than Foundation's decoder, for three things the protocol needs on its
/// hot path: a nesting limit enforced while parsing (so a hostile line cannot exhaust the
/// stack), the exact text of each top-level field (so a payload is stored as the client
/// wrote it, without being re-serialized), and error messages that say where a line broke.
public struct JSONParser {
    /// Why a line is not acceptable JSON.
    public enum Failure: Error, Hashable, Sendable {
        /// Not JSON at all: the message says what was expected where.
        case syntax(String)
        /// Nested deeper than the limit.
        case tooDeep(limit: Int)
        /// More values, outside verbatim members, than the limit.
        case tooManyValues(limit: Int)
    }

    /// A top-level object's fields, each with its value and its exact source text.
    public struct TopLevelObject: Sendable {
        public var fields: [String: Field]

        public struct Field: Sendable {
            public var value: JSONValue
            /// The field's value exactly as it appeared on the line.
            public var text: String
        }
    }

    private let bytes: UnsafeBufferPointer<UInt8>
    private let maximumDepth: Int
    private let verbatimKeys: Set<String>
    private let maximumValues: Int
    /// How many more values the parser may build.
    private var valuesLeft: Int
    private var index = 0

    private init(
        bytes: UnsafeBufferPointer<UInt8>, maximumDepth: Int, verbatimKeys: Set<String> = [], maximumValues: Int = .max
    ) {
        self.bytes = bytes
        self.maximumDepth = maximumDepth
        self.verbatimKeys = verbatimKeys
        self.valuesLeft = maximumValues
        self.maximumValues = maximumValues
    }

    /// Parses a whole line as one JSON value.
    public static func parse(_ bytes: UnsafeBufferPointer<UInt8>, maximumDepth: Int) throws(Failure) -> JSONValue {
        var parser = JSONParser(bytes: bytes, maximumDepth: maximumDepth)
        parser.skipWhitespace()
        let value = try parser.parseValue(depth: 1)
        try parser.expectEnd()
        return value
    }

    /// Parses a line that must be a JSON object, keeping each field's source text.
    ///
    /// - Parameter verbatimKeys: members, at any depth, whose values are checked but kept as
    ///   ``JSONValue/verbatim(_:)`` text rather than built into values. A request's payload is
    ///   stored as text, so building it would only cost memory: a megabyte of `[1,1,…]` is half
    ///   a million values, twenty times the line. With them verbatim, the parser's working
    ///   memory is the line's size again, plus what the request's own fields hold.
    /// - Parameter maximumValues: how many values the parser may build outside verbatim
    ///   members, which bounds what the request's own fields can hold.
    /// - Returns: `nil` when the line is valid JSON but not an object.
    public static func parseObject(
        _ bytes: UnsafeBufferPointer<UInt8>,
        maximumDepth: Int,
        verbatimKeys: Set<String> = [],
        maximumValues: Int = .max
    ) throws(Failure) -> TopLevelObject? {
        var parser = JSONParser(
            bytes: bytes, maximumDepth: maximumDepth, verbatimKeys: verbatimKeys, maximumValues: maximumValues)
        parser.skipWhitespace()
        guard parser.peek() == UInt8(ascii: "{") else {
            _ = try parser.parseValue(depth: 1)
            try parser.expectEnd()
            return nil
        }
        parser.index += 1
        parser.valuesLeft -= 1  // the object itself
        // Room for any request's arguments at once: grown one key at a time, the table was
        // allocated three times for a four-key request.
        var fields: [String: TopLevelObject.Field] = [:]
        fields.reserveCapacity(12)
        parser.skipWhitespace()
        if parser.peek() == UInt8(ascii: "}") {
            parser.index += 1
        } else {
            while true {
                parser.skipWhitespace()
                let key = try parser.parseKey()
                parser.skipWhitespace()
                let start = parser.index
                if parser.verbatimKeys.contains(key) {
                    try parser.skipValue(depth: 2)
                    let text = parser.text(from: start)
                    fields[key] = TopLevelObject.Field(value: .verbatim(text), text: text)
                } else {
                    let value = try parser.parseValue(depth: 2)
                    fields[key] = TopLevelObject.Field(value: value, text: parser.text(from: start))
                }
                parser.skipWhitespace()
                if try parser.endOfContainer(closing: UInt8(ascii: "}")) { break }
            }
        }
        try parser.expectEnd()
        return TopLevelObject(fields: fields)
    }

    // MARK: - Grammar

    private mutating func parseValue(depth: Int) throws(Failure) -> JSONValue {
        self.valuesLeft -= 1
        guard self.valuesLeft >= 0 else { throw .tooManyValues(limit: self.maximumValues) }
        guard let byte = self.peek() else {
            throw .syntax("unexpected end of line")
        }
        switch byte {
        case UInt8(ascii: "{"):
            return try self.parseObject(depth: depth)
        case UInt8(ascii: "["):
            return try self.parseArray(depth: depth)
        case UInt8(ascii: "\""):
            return .string(try self.parseString())
        case UInt8(ascii: "t"):
            try self.expectLiteral("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try self.expectLiteral("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try self.expectLiteral("null")
            return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return try self.parseNumber()
        default:
            throw .syntax("unexpected character \(Self.describe(byte)) at byte \(self.index)")
        }
    }

    private mutating func parseObject(depth: Int) throws(Failure) -> JSONValue {
        guard depth <= self.maximumDepth else { throw .tooDeep(limit: self.maximumDepth) }
        self.index += 1
        var object: [String: JSONValue] = [:]
        self.skipWhitespace()
        if self.peek() == UInt8(ascii: "}") {
            self.index += 1
            return .object(object)
        }
        while true {
            self.skipWhitespace()
            let key = try self.parseKey()
            self.skipWhitespace()
            if self.verbatimKeys.contains(key) {
                let start = self.index
                try self.skipValue(depth: depth + 1)
                object[key] = .verbatim(self.text(from: start))
            } else {
                object[key] = try self.parseValue(depth: depth + 1)
            }
            self.skipWhitespace()
            if try self.endOfContainer(closing: UInt8(ascii: "}")) { return .object(object) }
        }
    }

    private mutating func parseArray(depth: Int) throws(Failure) -> JSONValue {
        guard depth <= self.maximumDepth else { throw .tooDeep(limit: self.maximumDepth) }
        self.index += 1
        var array: [JSONValue] = []
        self.skipWhitespace()
        if self.peek() == UInt8(ascii: "]") {
            self.index += 1
            return .array(array)
        }
        while true {
            self.skipWhitespace()
            array.append(try self.parseValue(depth: depth + 1))
            self.skipWhitespace()
            if try self.endOfContainer(closing: UInt8(ascii: "]")) { return .array(array) }
        }
    }

    /// Checks a value as ``parseValue(depth:)`` does, building nothing that outlives one string.
    private mutating func skipValue(depth: Int) throws(Failure) {
        guard let byte = self.peek() else {
            throw .syntax("unexpected end of line")
        }
        let closing: UInt8
        switch byte {
        case UInt8(ascii: "{"): closing = UInt8(ascii: "}")
        case UInt8(ascii: "["): closing = UInt8(ascii: "]")
        default:
            // A scalar: parseValue checks it, and since it is not kept, it does not count.
            let valuesLeft = self.valuesLeft
            _ = try self.parseValue(depth: depth)
            self.valuesLeft = valuesLeft
            return
        }
        guard depth <= self.maximumDepth else { throw .tooDeep(limit: self.maximumDepth) }
        self.index += 1
        self.skipWhitespace()
        if self.peek() == closing {
            self.index += 1
            return
        }
        while true {
            self.skipWhitespace()
            if closing == UInt8(ascii: "}") {
                _ = try self.parseKey()
                self.skipWhitespace()
            }
            try self.skipValue(depth: depth + 1)
            self.skipWhitespace()
            if try self.endOfContainer(closing: closing) { return }
        }
    }

    /// The line's text from `start` to where the parser stands.
    private func text(from start: Int) -> String {
        String(decoding: UnsafeBufferPointer(rebasing: self.bytes[start..<self.index]), as: UTF8.self)
    }

    /// Consumes a `,` (more to come) or the closing bracket (done).
    private mutating func endOfContainer(closing: UInt8) throws(Failure) -> Bool {
        switch self.peek() {
        case UInt8(ascii: ","):
            self.index += 1
            return false
        case closing:
            self.index += 1
            return true
        case let other:
            let found = other.map(Self.describe) ?? "end of line"
            throw .syntax("expected ',' or '\(Character(Unicode.Scalar(closing)))' at byte \(self.index), found \(found)")
        }
    }

    private mutating func parseKey() throws(Failure) -> String {
        guard self.peek() == UInt8(ascii: "\"") else {
            throw .syntax("expected a quoted field name at byte \(self.index)")
        }
        let key = try self.parseString()
        self.skipWhitespace()
        guard self.peek() == UInt8(ascii: ":") else {
            throw .syntax("expected ':' after field name \"\(key)\"")
        }
        self.index += 1
        return key
    }

    private mutating func parseString() throws(Failure) -> String {
        self.index += 1  // opening quote
        let start = self.index
        // Fast path: no escapes, so the bytes between the quotes are the string.
        while self.index < self.bytes.count {
            let byte = self.bytes[self.index]
            if byte == UInt8(ascii: "\"") {
                let slice = UnsafeBufferPointer(rebasing: self.bytes[start..<self.index])
                self.index += 1
                guard let string = String(validating: slice, as: UTF8.self) else {
                    throw .syntax("a string is not valid UTF-8")
                }
                return string
            }
            if byte == UInt8(ascii: "\\") { break }
            if byte < 0x20 { throw .syntax("a control character must be escaped in a string (byte \(self.index))") }
            self.index += 1
        }
        var scalars = Array(UnsafeBufferPointer(rebasing: self.bytes[start..<self.index]))
        while self.index < self.bytes.count {
            let byte = self.bytes[self.index]
            self.index += 1
            switch byte {
            case UInt8(ascii: "\""):
                guard let string = String(validating: scalars, as: UTF8.self) else {
                    throw .syntax("a string is not valid UTF-8")
                }
                return string
            case UInt8(ascii: "\\"):
                try self.parseEscape(into: &scalars)
            case 0..<0x20:
                throw .syntax("a control character must be escaped in a string (byte \(self.index - 1))")
            default:
                scalars.append(byte)
            }
        }
        throw .syntax("unterminated string")
    }

    private mutating func parseEscape(into output: inout [UInt8]) throws(Failure) {
        guard let byte = self.next() else { throw .syntax("unterminated string") }
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): output.append(byte)
        case UInt8(ascii: "b"): output.append(0x08)
        case UInt8(ascii: "f"): output.append(0x0C)
        case UInt8(ascii: "n"): output.append(0x0A)
        case UInt8(ascii: "r"): output.append(0x0D)
        case UInt8(ascii: "t"): output.append(0x09)
        case UInt8(ascii: "u"):
            var scalar = UInt32(try self.parseHex4())
            if (0xD800..<0xDC00).contains(scalar) {
                // A high surrogate must be followed by an escaped low surrogate.
                guard self.next() == UInt8(ascii: "\\"), self.next() == UInt8(ascii: "u") else {
                    throw .syntax("unpaired surrogate in \\u escape")
                }
                let low = UInt32(try self.parseHex4())
                guard (0xDC00..<0xE000).contains(low) else { throw .syntax("unpaired surrogate in \\u escape") }
                scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
            }
            guard let unicode = Unicode.Scalar(scalar) else { throw .syntax("invalid \\u escape") }
            output.append(contentsOf: UTF8.encode(unicode)!)
        default:
            throw .syntax("invalid escape \\\(Character(Unicode.Scalar(byte)))")
        }
    }

    private mutating func parseHex4() throws(Failure) -> UInt16 {
        var value: UInt16 = 0
        for _ in 0..<4 {
            guard let byte = self.next() else { throw .syntax("unterminated \\u escape") }
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw .syntax("invalid hex digit in \\u escape")
            }
            value = value << 4 | UInt16(digit)
        }
        return value
    }

    private mutating func parseNumber() throws(Failure) -> JSONValue {
        let start = self.index
        var isInteger = true
        if self.peek() == UInt8(ascii: "-") { self.index += 1 }
        guard let first = self.peek(), Self.isDigit(first) else {
            throw .syntax("invalid number at byte \(start)")
        }
        if first == UInt8(ascii: "0") {
            self.index += 1
            if let next = self.peek(), Self.isDigit(next) {
                throw .syntax("a number may not have a leading zero (byte \(start))")
            }
        } else {
            self.skipDigits()
        }
        if self.peek() == UInt8(ascii: ".") {
            isInteger = false
            self.index += 1
            guard let digit = self.peek(), Self.isDigit(digit) else { throw .syntax("invalid number at byte \(start)") }
            self.skipDigits()
        }
        if self.peek() == UInt8(ascii: "e") || self.peek() == UInt8(ascii: "E") {
            isInteger = false
            self.index += 1
            if self.peek() == UInt8(ascii: "+") || self.peek() == UInt8(ascii: "-") { self.index += 1 }
            guard let digit = self.peek(), Self.isDigit(digit) else { throw .syntax("invalid number at byte \(start)") }
            self.skipDigits()
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: self.bytes[start..<self.index]), as: UTF8.self)
        if isInteger, let integer = Int64(text) {
            return .integer(integer)
        }
        guard let double = Double(text), double.isFinite else {
            throw .syntax("number \(text) is out of range")
        }
        return .double(double)
    }

    // MARK: - Bytes

    private mutating func expectLiteral(_ literal: StaticString) throws(Failure) {
        let count = literal.utf8CodeUnitCount
        guard self.index + count <= self.bytes.count,
            memcmpEqual(self.bytes.baseAddress! + self.index, literal.utf8Start, count)
        else {
            throw .syntax("unexpected characters at byte \(self.index)")
        }
        self.index += count
    }

    private mutating func expectEnd() throws(Failure) {
        self.skipWhitespace()
        guard self.index == self.bytes.count else {
            throw .syntax("unexpected characters after the JSON value at byte \(self.index)")
        }
    }

    private mutating func skipWhitespace() {
        while self.index < self.bytes.count {
            switch self.bytes[self.index] {
            case 0x20, 0x09, 0x0A, 0x0D: self.index += 1
            default: return
            }
        }
    }

    private mutating func skipDigits() {
        while let byte = self.peek(), Self.isDigit(byte) { self.index += 1 }
    }

    private func peek() -> UInt8? {
        self.index < self.bytes.count ? self.bytes[self.index] : nil
    }

    private mutating func next() -> UInt8? {
        defer { self.index += 1 }
        return self.peek()
    }

    private static func isDigit(_ byte: UInt8) -> Bool {
        byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")
    }

    private static func describe(_ byte: UInt8) -> String {
        (0x21..<0x7F).contains(byte) ? "'\(Character(Unicode.Scalar(byte)))'" : "byte 0x\(String(byte, radix: 16))"
    }
}

private func memcmpEqual(_ lhs: UnsafePointer<UInt8>, _ rhs: UnsafePointer<UInt8>, _ count: Int) -> Bool {
    for offset in 0..<count where lhs[offset] != rhs[offset] {
        return false
    }
    return true
}
