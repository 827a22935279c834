/// A JSON value, as the request parser produces it.
///
/// Integers that fit in 64 bits stay integers, so ids, tokens and times never pass
/// through a `Double` and lose precision.
public enum JSONValue: Hashable, Sendable {
    case null
    case bool(Bool)
    case integer(Int64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])
    /// Valid JSON kept as the text it was written with, unparsed: the request parser reads a
    /// payload, a result or a checkpoint's state this way (see
    /// ``JSONParser/parseObject(_:maximumDepth:verbatimKeys:)``), so that storing one costs
    /// its bytes and no tree of values.
    case verbatim(String)

    /// A short name for the value's kind, for error messages.
    public var kindDescription: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .integer, .double: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        case .verbatim(let text): (try? JSONValue(parsing: text))?.kindDescription ?? "JSON text"
        }
    }

    /// The value written as compact JSON text.
    public var jsonText: String {
        if case .verbatim(let text) = self { return text }
        var writer = JSONWriter()
        writer.value(self)
        return writer.text
    }
}

extension JSONValue {
    /// Parses JSON text, such as a payload given on a command line.
    ///
    /// - Throws: ``JSONParser/Failure`` when the text is not one JSON value.
    public init(parsing text: String, maximumDepth: Int = 64) throws(JSONParser.Failure) {
        let bytes = Array(text.utf8)
        let parsed = bytes.withUnsafeBufferPointer { buffer in
            Result { () throws(JSONParser.Failure) in try JSONParser.parse(buffer, maximumDepth: maximumDepth) }
        }
        self = try parsed.get()
    }
}

extension JSONValue: Encodable {
    /// Encodes the value as itself, so a `JSONValue` can be a payload or a result.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .integer(let value): try container.encode(value)
        case .double(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        case .verbatim(let text): try JSONValue(parsing: text, maximumDepth: 512).encode(to: encoder)
        }
    }
}
