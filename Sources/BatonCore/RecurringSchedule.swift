import Foundation

/// A recurring job (the `schedule` op): a job to enqueue, and the rule of the slots at
/// which to enqueue it.
///
/// Each slot fires at most once: the store advances `nextAt` past it in the same commit as
/// the enqueue (guarded by the slot it read, where several hosts share the store), and the
/// job's unique key names the schedule and the slot.
public struct RecurringSchedule: Hashable, Sendable {
    public enum Rule: Hashable, Sendable {
        /// A five-field cron expression, in an IANA time zone.
        case cron(CronSchedule, expression: String, timeZone: TimeZone)
        /// Every `milliseconds`, counted from `anchor` (wall-clock milliseconds).
        case every(milliseconds: Int64, anchor: Int64)
    }

    /// What a slot does while the job of the previous one is unfinished.
    public enum Overlap: String, Hashable, Sendable, CaseIterable {
        /// Enqueue nothing for it.
        case skip
        /// Enqueue it all the same.
        case allow
    }

    /// What happens to slots that passed while nothing could fire them (batond was down).
    public enum CatchUp: String, Hashable, Sendable, CaseIterable {
        /// They are skipped.
        case none
        /// The latest of them fires once.
        case latest
    }

    public var name: String
    public var queue: String
    /// The job's payload, as JSON text.
    public var payload: String
    public var priority: Int64
    public var rule: Rule
    public var overlap: Overlap
    public var catchUp: CatchUp
    /// The next slot to fire, wall-clock milliseconds; `nil` when the rule names no more.
    public var nextAt: Int64?
    /// The job the last fired slot enqueued.
    public var lastJob: Int64?
    /// The trace of whoever made the schedule, which its jobs carry.
    public var trace: TraceContext?

    public init(
        name: String, queue: String, payload: String, priority: Int64 = 0, rule: Rule, overlap: Overlap = .allow,
        catchUp: CatchUp = .none, nextAt: Int64? = nil, lastJob: Int64? = nil
    ) {
        self.name = name
        self.queue = queue
        self.payload = payload
        self.priority = priority
        self.rule = rule
        self.overlap = overlap
        self.catchUp = catchUp
        self.nextAt = nextAt
        self.lastJob = lastJob
    }

    /// The stored form of the rule: a cron expression and its zone, or a period and its anchor.
    public var storedRule: (cron: String?, timeZone: String?, every: Int64?, anchor: Int64?) {
        switch self.rule {
        case .cron(_, let expression, let zone): (expression, zone.identifier, nil, nil)
        case .every(let period, let anchor): (nil, nil, period, anchor)
        }
    }

    /// The rule from its stored form.
    public static func rule(cron: String?, timeZone: String?, every: Int64?, anchor: Int64?) throws(CronScheduleError) -> Rule {
        if let cron {
            guard let zone = TimeZone(identifier: timeZone ?? "UTC") else { throw CronScheduleError("unknown time zone \(timeZone ?? "")") }
            return .cron(try CronSchedule(parsing: cron), expression: cron, timeZone: zone)
        }
        guard let every, every > 0 else { throw CronScheduleError("a schedule needs a cron expression or a period") }
        return .every(milliseconds: every, anchor: anchor ?? 0)
    }

    /// How late a slot may fire and still count as on time: one that could only fire later
    /// than this (batond was down) is a missed slot, which `catchUp` decides about.
    public static let graceMilliseconds: Int64 = 60_000

    /// The first slot strictly after `time`, or `nil` if the rule names none.
    public func slot(after time: Int64) -> Int64? {
        switch self.rule {
        case .every(let period, let anchor):
            guard time >= anchor else { return anchor + period }
            return anchor + ((time - anchor) / period + 1) * period
        case .cron(let cron, _, let zone):
            let date = Date(timeIntervalSince1970: Double(time) / 1000)
            return cron.nextFire(after: date, in: zone).map { Int64(($0.timeIntervalSince1970 * 1000).rounded()) }
        }
    }

    /// The latest slot at or before `now`, starting from the slot `start` (which is). Far
    /// behind, it jumps to an hour, a day or a year before `now` instead of walking every
    /// slot between: the walk is bounded however long batond was down.
    func latestSlot(from start: Int64, atOrBefore now: Int64) -> Int64 {
        var latest = start
        var steps = 0
        while let next = self.slot(after: latest), next <= now {
            latest = next
            steps += 1
            if steps == 64 {
                for window: Int64 in [3_600_000, 86_400_000, 366 * 86_400_000] where now - window > latest {
                    if let near = self.slot(after: now - window), near <= now, near > latest {
                        latest = near
                        break
                    }
                }
            }
        }
        return latest
    }

    /// What to do at wall-clock `now`.
    ///
    /// - Parameter previousUnfinished: whether the job of the last fired slot is unfinished.
    /// - Returns: the slot to enqueue a job for (`nil` for none: not due yet, missed with
    ///   `catchUp: none`, or skipped for an overlap), and the next slot to wait for.
    public func due(now: Int64, previousUnfinished: Bool) -> (fire: Int64?, next: Int64?) {
        guard let nextAt = self.nextAt, nextAt <= now else { return (nil, self.nextAt) }
        let latest = self.latestSlot(from: nextAt, atOrBefore: now)
        let next = self.slot(after: latest)
        let onTime = now - latest <= Self.graceMilliseconds
        guard onTime || self.catchUp == .latest, !(self.overlap == .skip && previousUnfinished) else { return (nil, next) }
        return (latest, next)
    }

    /// Sets the first slot of a schedule made (or replaced) at `now`: an `every_ms` schedule
    /// counts its periods from then.
    public mutating func setFirstSlot(now: Int64) {
        if case .every(let period, _) = self.rule { self.rule = .every(milliseconds: period, anchor: now) }
        self.nextAt = self.slot(after: now)
    }

    /// The unique key of the job a slot enqueues: a slot's job is never enqueued twice
    /// while it is unfinished.
    public func uniqueKey(slot: Int64) -> String {
        "schedule:\(self.name)@\(slot)"
    }
}
