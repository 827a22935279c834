/// Writes compact JSON, one value after another, as UTF-8 bytes.
///
/// Replies are written field by field rather than through `Encodable`, because most of
/// what a reply carries (payloads, checkpoints, results) is JSON text already and is
/// spliced in as it is with ``rawValue(_:)``. The writer appends bytes and formats numbers
/// itself: every reply is written on the authority's thread, where `String` appends and
/// the temporary strings of number formatting were a tenth of its time.
public struct JSONWriter: Sendable {
    /// What has been written so far.
    public private(set) var bytes: [UInt8]
    /// Whether the next member of the current container needs a comma before it.
    private var needsComma = false

    public init(capacity: Int = 256) {
        self.bytes = []
        self.bytes.reserveCapacity(capacity)
    }

    /// What has been written so far, as text.
    public var text: String { String(decoding: self.bytes, as: UTF8.self) }

    // MARK: Containers

    public mutating func beginObject() {
        self.separate()
        self.bytes.append(UInt8(ascii: "{"))
        self.needsComma = false
    }

    public mutating func endObject() {
        self.bytes.append(UInt8(ascii: "}"))
        self.needsComma = true
    }

    public mutating func beginArray() {
        self.separate()
        self.bytes.append(UInt8(ascii: "["))
        self.needsComma = false
    }

    public mutating func endArray() {
        self.bytes.append(UInt8(ascii: "]"))
        self.needsComma = true
    }

    /// Writes a member name; the next value written is its value.
    public mutating func key(_ name: String) {
        self.separate()
        self.appendQuoted(name)
        self.bytes.append(UInt8(ascii: ":"))
        self.needsComma = false
    }

    /// Ends the line: a reply or request on the wire is one JSON value and a newline.
    public mutating func newline() {
        self.bytes.append(UInt8(ascii: "\n"))
    }

    // MARK: Values

    public mutating func null() {
        self.separate()
        self.bytes.append(contentsOf: "null".utf8)
        self.needsComma = true
    }

    public mutating func bool(_ value: Bool) {
        self.separate()
        self.bytes.append(contentsOf: value ? "true".utf8 : "false".utf8)
        self.needsComma = true
    }

    public mutating func integer(_ value: some BinaryInteger) {
        self.separate()
        if let small = Int64(exactly: value) {
            self.appendDecimal(small)
        } else {
            self.bytes.append(contentsOf: String(value).utf8)
        }
        self.needsComma = true
    }

    public mutating func double(_ value: Double) {
        self.separate()
        if value.isFinite, value == value.rounded(), abs(value) < 1e15 {
            self.appendDecimal(Int64(value))
        } else {
            self.bytes.append(contentsOf: (value.isFinite ? String(value) : "null").utf8)
        }
        self.needsComma = true
    }

    public mutating func string(_ value: String) {
        self.separate()
        self.appendQuoted(value)
        self.needsComma = true
    }

    /// Splices in text that is already valid JSON.
    public mutating func rawValue(_ json: String) {
        self.separate()
        self.bytes.append(contentsOf: json.utf8)
        self.needsComma = true
    }

    public mutating func value(_ value: JSONValue) {
        switch value {
        case .null: self.null()
        case .bool(let bool): self.bool(bool)
        case .integer(let integer): self.integer(integer)
        case .double(let double): self.double(double)
        case .string(let string): self.string(string)
        case .array(let array):
            self.beginArray()
            for element in array { self.value(element) }
            self.endArray()
        case .object(let object):
            self.beginObject()
            for (name, member) in object.sorted(by: { $0.key < $1.key }) {
                self.key(name)
                self.value(member)
            }
            self.endObject()
        case .verbatim(let text): self.rawValue(text)
        }
    }

    // MARK: Members, for brevity at call sites

    public mutating func member(_ name: String, _ value: String) {
        self.key(name)
        self.string(value)
    }

    public mutating func member(_ name: String, _ value: Int64) {
        self.key(name)
        self.integer(value)
    }

    public mutating func member(_ name: String, _ value: Int) {
        self.key(name)
        self.integer(value)
    }

    public mutating func member(_ name: String, _ value: Bool) {
        self.key(name)
        self.bool(value)
    }

    /// Writes `name: value`, or `name: null` when there is no value.
    public mutating func member(_ name: String, optional value: String?) {
        self.key(name)
        if let value { self.string(value) } else { self.null() }
    }

    public mutating func member(_ name: String, optional value: Int64?) {
        self.key(name)
        if let value { self.integer(value) } else { self.null() }
    }

    /// Writes `name: <json>`, or `name: null`, for text that is already JSON.
    public mutating func member(_ name: String, rawJSON value: String?) {
        self.key(name)
        if let value { self.rawValue(value) } else { self.null() }
    }

    // MARK: Escaping and numbers

    private mutating func separate() {
        if self.needsComma { self.bytes.append(UInt8(ascii: ",")) }
    }

    private mutating func appendQuoted(_ string: String) {
        self.bytes.append(UInt8(ascii: "\""))
        let utf8 = string.utf8
        // Most strings need no escaping: append them whole.
        if !utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) {
            self.bytes.append(contentsOf: utf8)
        } else {
            for byte in utf8 {
                switch byte {
                case UInt8(ascii: "\""): self.bytes.append(contentsOf: #"\""#.utf8)
                case UInt8(ascii: "\\"): self.bytes.append(contentsOf: #"\\"#.utf8)
                case UInt8(ascii: "\n"): self.bytes.append(contentsOf: #"\n"#.utf8)
                case UInt8(ascii: "\r"): self.bytes.append(contentsOf: #"\r"#.utf8)
                case UInt8(ascii: "\t"): self.bytes.append(contentsOf: #"\t"#.utf8)
                case 0..<0x20:
                    // Other control characters as \u00XX. Every other byte, ASCII or part
                    // of a multi-byte character, is written as it is.
                    let hex = Array("0123456789abcdef".utf8)
                    self.bytes.append(contentsOf: #"\u00"#.utf8)
                    self.bytes.append(hex[Int(byte >> 4)])
                    self.bytes.append(hex[Int(byte & 0xF)])
                default:
                    self.bytes.append(byte)
                }
            }
        }
        self.bytes.append(UInt8(ascii: "\""))
    }

    private mutating func appendDecimal(_ value: Int64) {
        if value < 0 { self.bytes.append(UInt8(ascii: "-")) }
        // The magnitude as UInt64, so that Int64.min needs no special case; its digits are
        // produced last first into a buffer on the stack, room for 20 of them.
        var magnitude = value.magnitude
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
        withUnsafeMutableBytes(of: &digits) { buffer in
            var index = buffer.count
            repeat {
                index -= 1
                buffer[index] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
            } while magnitude > 0
            self.bytes.append(contentsOf: buffer[index...])
        }
    }
}
