import BatonCore
import BatonProtocol

/// When a recurring job's slots come.
public enum ScheduleRule: Hashable, Sendable {
    /// A five-field cron expression, read in an IANA time zone.
    case cron(String, timeZone: String = "UTC")
    /// Every so often, from when the schedule is made.
    case every(Duration)
}

/// A recurring job, as `schedules` lists it.
public struct ScheduleInfo: Sendable {
    public var name: String
    public var queue: String
    public var payload: JSONValue
    public var priority: Int64
    public var rule: ScheduleRule
    public var overlap: RecurringSchedule.Overlap
    public var catchUp: RecurringSchedule.CatchUp
    /// The next slot, in milliseconds since the epoch.
    public var nextAt: Int64?
    /// The job its last fired slot enqueued.
    public var lastJob: Int64?
}

extension BatonClient {
    /// Creates or replaces the recurring job `name`: at each slot of `rule`, batond
    /// enqueues a job of `queue` with `payload`; each slot fires at most once.
    ///
    /// - Returns: the next slot, in milliseconds since the epoch.
    @discardableResult
    public func schedule<Payload: Encodable>(
        _ name: String, queue: String, payload: Payload, rule: ScheduleRule, priority: Int32 = 0,
        overlap: RecurringSchedule.Overlap = .allow, catchUp: RecurringSchedule.CatchUp = .none
    ) async throws -> Int64? {
        let text = try jsonText(payload)
        let reply = try await self.request("schedule") { request in
            request.member("name", name)
            request.member("queue", queue)
            request.member("payload", rawJSON: text)
            request.member("priority", Int64(priority))
            switch rule {
            case .cron(let expression, let zone):
                request.member("cron", expression)
                request.member("timezone", zone)
            case .every(let period):
                request.member("every_ms", period.milliseconds)
            }
            request.member("overlap", overlap.rawValue)
            request.member("catch_up", catchUp.rawValue)
        }
        return reply.optionalInt64("next_at")
    }

    /// Deletes a recurring job; whether there was one. The jobs it enqueued stay.
    @discardableResult
    public func unschedule(_ name: String) async throws -> Bool {
        try await self.request("unschedule") { $0.member("name", name) }.bool("removed")
    }

    /// Every recurring job, by name.
    public func schedules() async throws -> [ScheduleInfo] {
        let reply = try await self.request("schedules")
        guard case .array(let items)? = reply["schedules"] else {
            throw BatonConnectionError(.protocolViolation, "a schedules reply without schedules")
        }
        return try items.map { item in
            guard case .object(let fields) = item else { throw BatonConnectionError(.protocolViolation, "a schedule that is not an object") }
            let rule: ScheduleRule =
                if let cron = fields.optionalString("cron") {
                    .cron(cron, timeZone: fields.optionalString("timezone") ?? "UTC")
                } else {
                    .every(.milliseconds(fields.optionalInt64("every_ms") ?? 0))
                }
            return ScheduleInfo(
                name: try fields.string("name"), queue: try fields.string("queue"), payload: fields["payload"] ?? .null,
                priority: fields.optionalInt64("priority") ?? 0, rule: rule,
                overlap: RecurringSchedule.Overlap(rawValue: fields.optionalString("overlap") ?? "") ?? .allow,
                catchUp: RecurringSchedule.CatchUp(rawValue: fields.optionalString("catch_up") ?? "") ?? .none,
                nextAt: fields.optionalInt64("next_at"), lastJob: fields.optionalInt64("last_job"))
        }
    }
}
