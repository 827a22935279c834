import BatonProtocol
import NIOCore

/// The console's way to the authority: the same requests a socket client sends, built by
/// batond (never taken from the browser), answered once their batch has committed.
struct ConsoleAuthority: Sendable {
    let authority: any JobAuthority

    /// A refusal from the authority, with its protocol code.
    struct Refusal: Error {
        var code: String
        var message: String
    }

    /// The reply's fields, or the authority's refusal.
    func ask(_ request: Request) async throws -> JSONValue {
        let reply = self.authority.loop.makePromise(of: Outcome.self)
        self.authority.submit([
            Submission(
                id: nil, request: request, connection: .webConsole, reply: reply,
                receivedAt: self.authority.clock.monotonicMilliseconds()
            )
        ])
        let outcome = try await reply.futureResult.get()
        let line = outcome.render?() ?? outcome.line
        // Deeper than a request may nest, so that any stored payload reads back.
        let value = try JSONValue(parsing: String(decoding: line, as: UTF8.self), maximumDepth: 256)
        guard value["ok"] == .bool(true) else {
            throw Refusal(code: value["error"]?["code"]?.string ?? "internal", message: value["error"]?["message"]?.string ?? "refused")
        }
        return value
    }
}

extension ConnectionIdentity {
    /// The web console: not a socket peer, so outside the access policy, as the metrics
    /// endpoint is. It is reached over `--http-listen`, loopback unless told otherwise.
    static let webConsole = ConnectionIdentity(number: .max, peer: nil)

    var isWebConsole: Bool { self.number == Self.webConsole.number }
}

/// Reading replies: a missing member or a value of another kind reads as `nil`.
extension JSONValue {
    subscript(key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        return members[key]
    }

    var string: String? {
        if case .string(let text) = self { return text }
        return nil
    }

    var integer: Int64? {
        switch self {
        case .integer(let value): value
        case .double(let value) where value.rounded() == value && abs(value) < 9e15: Int64(value)
        default: nil
        }
    }

    var number: Double? {
        switch self {
        case .integer(let value): Double(value)
        case .double(let value): value
        default: nil
        }
    }

    var array: [JSONValue] {
        if case .array(let values) = self { return values }
        return []
    }

    var members: [String: JSONValue] {
        if case .object(let members) = self { return members }
        return [:]
    }

    var isNull: Bool { self == .null }

    /// The value as indented JSON text, for a person to read.
    var prettyText: String {
        var text = ""
        self.writePretty(into: &text, indent: "")
        return text
    }

    private func writePretty(into text: inout String, indent: String) {
        let inner = indent + "  "
        switch self {
        case .array(let values) where !values.isEmpty:
            text += "[\n"
            for (index, value) in values.enumerated() {
                text += inner
                value.writePretty(into: &text, indent: inner)
                text += index == values.count - 1 ? "\n" : ",\n"
            }
            text += indent + "]"
        case .object(let members) where !members.isEmpty:
            text += "{\n"
            let keys = members.keys.sorted()
            for (index, key) in keys.enumerated() {
                text += inner + JSONValue.string(key).jsonText + ": "
                members[key]!.writePretty(into: &text, indent: inner)
                text += index == keys.count - 1 ? "\n" : ",\n"
            }
            text += indent + "}"
        default:
            text += self.jsonText
        }
    }
}
