import BatonCore
import BatonProtocol
import Foundation

/// Reading typed values out of a reply's fields.
extension Dictionary where Key == String, Value == JSONValue {
    func int64(_ name: String) throws -> Int64 {
        guard case .integer(let value)? = self[name] else { throw Self.missing(name, "an integer") }
        return value
    }

    func optionalInt64(_ name: String) -> Int64? {
        if case .integer(let value)? = self[name] { return value }
        return nil
    }

    func string(_ name: String) throws -> String {
        guard case .string(let value)? = self[name] else { throw Self.missing(name, "a string") }
        return value
    }

    func optionalString(_ name: String) -> String? {
        if case .string(let value)? = self[name] { return value }
        return nil
    }

    func bool(_ name: String) throws -> Bool {
        guard case .bool(let value)? = self[name] else { throw Self.missing(name, "a boolean") }
        return value
    }

    func object(_ name: String) throws -> [String: JSONValue] {
        guard case .object(let value)? = self[name] else { throw Self.missing(name, "an object") }
        return value
    }

    /// The `breaker` a reply shows (`{failures, window_ms, cooldown_ms}`), `nil` for `null`.
    func breaker() throws -> CircuitBreaker.Settings? {
        guard case .object(let fields)? = self["breaker"] else { return nil }
        return CircuitBreaker.Settings(
            failures: Int(try fields.int64("failures")), windowMilliseconds: try fields.int64("window_ms"),
            cooldownMilliseconds: try fields.int64("cooldown_ms"))
    }

    /// A JSON value other than `null`.
    func value(_ name: String) -> JSONValue? {
        guard let value = self[name], value != .null else { return nil }
        return value
    }

    private static func missing(_ name: String, _ kind: String) -> BatonConnectionError {
        BatonConnectionError(.protocolViolation, "the reply's `\(name)` is not \(kind)")
    }
}

extension JSONValue {
    /// Decodes the value as a `Decodable` type.
    func decode<T: Decodable>(_ type: T.Type) throws -> T {
        try JSONDecoder().decode(T.self, from: Data(self.jsonText.utf8))
    }
}

/// Encodes a value as JSON text for a request.
func jsonText<T: Encodable>(_ value: T) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.withoutEscapingSlashes]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}

extension Duration {
    /// The duration in whole milliseconds, rounded up so that a short wait is not zero.
    var milliseconds: Int64 {
        let (seconds, attoseconds) = self.components
        return seconds * 1_000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
    }
}
