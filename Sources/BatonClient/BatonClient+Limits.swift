import BatonCore
import BatonProtocol

/// A named limit's use, as `limits` lists it.
public struct LimitInfo: Hashable, Sendable {
    public var name: String
    /// The setting it runs under: its own name, a template (`tenant:*`), or `nil` when unset.
    public var rule: String?
    public var settings: LimitSettings
    /// Jobs naming it that run now.
    public var running: Int
    /// Starts within its rate window.
    public var startedInWindow: Int
    /// Whether it has held a claim back since it last freed a slot.
    public var holding: Bool
    /// Its breaker's state (`closed`, `open`, `half_open`), where it has one.
    public var breakerState: String?
    /// Jobs naming it that wait to run (queued or retrying).
    public var waiting: Int
}

extension BatonClient {
    /// Creates or changes the named limit `name` (a name ending in `:*` is a template for
    /// every name with that prefix): the settings `change` names are set, `.some(nil)`
    /// removes one. The settings survive restarts.
    ///
    /// - Returns: the limit's settings now.
    @discardableResult
    public func setLimit(_ name: String, _ change: LimitSettings.Change) async throws -> LimitSettings {
        let reply = try await self.request("set_limit") { request in
            request.member("name", name)
            if let maxRunning = change.maxRunning {
                if let maxRunning { request.member("max_running", maxRunning) } else { request.member("max_running", rawJSON: nil) }
            }
            if let rate = change.rate {
                request.key("rate")
                if let rate {
                    request.beginObject()
                    request.member("count", rate.count)
                    request.member("per_ms", rate.perMilliseconds)
                    request.endObject()
                } else {
                    request.null()
                }
            }
            if let breaker = change.breaker { request.member("breaker", breaker: breaker) }
        }
        return try Self.limitSettings(reply)
    }

    /// Every limit that has settings, and every name in use.
    public func limits() async throws -> [LimitInfo] {
        let reply = try await self.request("limits")
        guard case .array(let items)? = reply["limits"] else {
            throw BatonConnectionError(.protocolViolation, "a limits reply without limits")
        }
        return try items.map { item in
            guard case .object(let fields) = item else { throw BatonConnectionError(.protocolViolation, "a limit that is not an object") }
            return LimitInfo(
                name: try fields.string("name"), rule: fields.optionalString("rule"), settings: try Self.limitSettings(fields),
                running: Int(fields.optionalInt64("running") ?? 0), startedInWindow: Int(fields.optionalInt64("started_in_window") ?? 0),
                holding: (try? fields.bool("holding")) ?? false, breakerState: fields.optionalString("breaker_state"),
                waiting: Int(fields.optionalInt64("waiting") ?? 0)
            )
        }
    }

    private static func limitSettings(_ fields: [String: JSONValue]) throws -> LimitSettings {
        var settings = LimitSettings(maxRunning: fields.optionalInt64("max_running").map { Int($0) })
        if case .object(let rate)? = fields["rate"] {
            settings.rate = LimitSettings.Rate(count: Int(try rate.int64("count")), perMilliseconds: try rate.int64("per_ms"))
        }
        settings.breaker = try fields.breaker()
        return settings
    }
}
