/// Writes compact JSON text, one value after another, into a `String`.
///
/// Replies are written field by field rather than through `Encodable`, because most of
/// what a reply carries (payloads, checkpoints, results) is JSON text already and is
/// spliced in as it is with ``rawValue(_:)``.
public struct JSONWriter: Sendable {
    public private(set) var text: String
    /// Whether the next member of the current container needs a comma before it.
    private var needsComma = false

    public init(capacity: Int = 128) {
        self.text = ""
        self.text.reserveCapacity(capacity)
    }

    // MARK: Containers

    public mutating func beginObject() {
        self.separate()
        self.text.append("{")
        self.needsComma = false
    }

    public mutating func endObject() {
        self.text.append("}")
        self.needsComma = true
    }

    public mutating func beginArray() {
        self.separate()
        self.text.append("[")
        self.needsComma = false
    }

    public mutating func endArray() {
        self.text.append("]")
        self.needsComma = true
    }

    /// Writes a member name; the next value written is its value.
    public mutating func key(_ name: String) {
        self.separate()
        self.appendQuoted(name)
        self.text.append(":")
        self.needsComma = false
    }

    // MARK: Values

    public mutating func null() {
        self.separate()
        self.text.append("null")
        self.needsComma = true
    }

    public mutating func bool(_ value: Bool) {
        self.separate()
        self.text.append(value ? "true" : "false")
        self.needsComma = true
    }

    public mutating func integer(_ value: some BinaryInteger) {
        self.separate()
        self.text.append(String(value))
        self.needsComma = true
    }

    public mutating func double(_ value: Double) {
        self.separate()
        if value.isFinite, value == value.rounded(), abs(value) < 1e15 {
            self.text.append(String(Int64(value)))
        } else {
            self.text.append(value.isFinite ? String(value) : "null")
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
        self.text.append(json)
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

    // MARK: Escaping

    private mutating func separate() {
        if self.needsComma { self.text.append(",") }
    }

    private mutating func appendQuoted(_ string: String) {
        self.text.append("\"")
        // Most strings need no escaping; append them whole.
        if !string.utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) {
            self.text.append(string)
        } else {
            for scalar in string.unicodeScalars {
                switch scalar {
                case "\"": self.text.append("\\\"")
                case "\\": self.text.append("\\\\")
                case "\n": self.text.append("\\n")
                case "\r": self.text.append("\\r")
                case "\t": self.text.append("\\t")
                case _ where scalar.value < 0x20:
                    let hex = String(scalar.value, radix: 16)
                    self.text.append("\\u" + String(repeating: "0", count: 4 - hex.count) + hex)
                default:
                    self.text.unicodeScalars.append(scalar)
                }
            }
        }
        self.text.append("\"")
    }
}
