import Foundation

/// A five-field cron expression (minute, hour, day of month, month, day of week) and the
/// times it names in a time zone: the rule behind recurring jobs.
///
/// Each field is `*`, a value, a range `a-b`, any of those with a step (`*/15`, `8-18/2`),
/// or a comma-separated list of them. Months may be named `jan`…`dec` and days of the week
/// `sun`…`sat` (any case); day of week 0 and 7 are both Sunday. As in Vixie cron and its
/// descendants, when both the day of month and the day of week are restricted (neither
/// starts with `*`), a day matches if either does; otherwise it must match both.
///
/// Times are wall-clock times in the schedule's zone, which makes daylight saving explicit:
/// - a time that a spring-forward gap skips (02:30 on the night clocks go from 02:00 to
///   03:00) fires once, at the first minute after the gap, as the clock shows it;
/// - a time that a fall-back repeats (01:30 on the night clocks go from 02:00 back to
///   01:00) fires once, at its first occurrence.
public struct CronSchedule: Hashable, Sendable {
    /// Bit `n` set: value `n` is in the field.
    let minutes: UInt64
    let hours: UInt64
    let daysOfMonth: UInt64
    let months: UInt64
    /// Sunday is 0.
    let daysOfWeek: UInt64
    let dayOfMonthRestricted: Bool
    let dayOfWeekRestricted: Bool

    /// Parses `text`; throws ``CronScheduleError`` naming the field at fault.
    public init(parsing text: String) throws(CronScheduleError) {
        let fields = text.split(whereSeparator: { $0 == " " || $0 == "\t" })
        guard fields.count == 5 else {
            throw CronScheduleError("a cron expression has five fields (minute hour day-of-month month day-of-week), not \(fields.count)")
        }
        self.minutes = try Self.field(fields[0], name: "minute", range: 0...59)
        self.hours = try Self.field(fields[1], name: "hour", range: 0...23)
        self.daysOfMonth = try Self.field(fields[2], name: "day of month", range: 1...31)
        self.months = try Self.field(fields[3], name: "month", range: 1...12, names: Self.monthNames, firstName: 1)
        let days = try Self.field(fields[4], name: "day of week", range: 0...7, names: Self.dayNames, firstName: 0)
        // 7 is Sunday too.
        self.daysOfWeek = (days & ~(1 << 7)) | (days >> 7 & 1)
        self.dayOfMonthRestricted = !fields[2].hasPrefix("*")
        self.dayOfWeekRestricted = !fields[4].hasPrefix("*")
    }

    /// The first time after `date` (strictly) that the schedule names in `timeZone`, or
    /// `nil` if it names none in the next 30 years (`0 0 31 2 *`).
    public func nextFire(after date: Date, in timeZone: TimeZone) -> Date? {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        var day = calendar.startOfDay(for: date)
        for _ in 0..<(366 * 30) {
            let parts = calendar.dateComponents([.year, .month, .day, .weekday], from: day)
            if let year = parts.year, let month = parts.month, let dayOfMonth = parts.day, let weekday = parts.weekday,
                self.matches(month: month, dayOfMonth: dayOfMonth, dayOfWeek: weekday - 1)
            {
                for hour in 0...23 where self.hours >> hour & 1 == 1 {
                    for minute in 0...59 where self.minutes >> minute & 1 == 1 {
                        let wanted = DateComponents(year: year, month: month, day: dayOfMonth, hour: hour, minute: minute)
                        guard let fire = Self.firstInstant(of: wanted, in: calendar), fire > date else { continue }
                        return fire
                    }
                }
            }
            guard let next = calendar.date(byAdding: .day, value: 1, to: day) else { return nil }
            day = calendar.startOfDay(for: next)
        }
        return nil
    }

    func matches(month: Int, dayOfMonth: Int, dayOfWeek: Int) -> Bool {
        guard self.months >> month & 1 == 1 else { return false }
        let byMonthDay = self.daysOfMonth >> dayOfMonth & 1 == 1
        let byWeekday = self.daysOfWeek >> dayOfWeek & 1 == 1
        return self.dayOfMonthRestricted && self.dayOfWeekRestricted ? byMonthDay || byWeekday : byMonthDay && byWeekday
    }

    /// The instant a wall-clock time first shows in `calendar`'s zone; for a time a gap
    /// skips, the first instant after the gap.
    static func firstInstant(of wanted: DateComponents, in calendar: Calendar) -> Date? {
        // The wall time read as if it were UTC; each instant that shows it is that less the
        // zone's offset at the instant. Offsets around it: the day before and the day after.
        guard let wall = Self.utc.date(from: wanted) else { return nil }
        let zone = calendar.timeZone
        let offsets = Set([-86_400.0, 0, 86_400.0].map { zone.secondsFromGMT(for: wall.addingTimeInterval($0)) })
        let candidates = offsets.map { wall.addingTimeInterval(-TimeInterval($0)) }
        if let first = candidates.filter({ zone.secondsFromGMT(for: $0) == Int(wall.timeIntervalSince($0)) }).min() {
            return first
        }
        // No instant shows it: the clock jumps over it, and the jump is the first after.
        return candidates.min().flatMap { zone.nextDaylightSavingTimeTransition(after: $0) }
    }

    static let utc: Calendar = {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(secondsFromGMT: 0)!
        return calendar
    }()

    static let monthNames = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    static let dayNames = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]

    /// One field's values as bits.
    static func field(
        _ text: Substring, name: String, range: ClosedRange<Int>, names: [String] = [], firstName: Int = 0
    ) throws(CronScheduleError) -> UInt64 {
        var bits: UInt64 = 0
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let pieces = part.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
            var step = 1
            if pieces.count == 2 {
                guard let value = Int(pieces[1]), value > 0, value <= range.upperBound else {
                    throw CronScheduleError("\(name): the step in '\(part)' must be a number from 1 to \(range.upperBound)")
                }
                step = value
            }
            let span: ClosedRange<Int>
            if pieces[0] == "*" {
                span = range
            } else {
                let ends = pieces[0].split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
                var values: [Int] = []
                for end in ends {
                    if let value = Int(end) {
                        values.append(value)
                    } else if let index = names.firstIndex(of: end.lowercased()) {
                        values.append(index + firstName)
                    } else {
                        throw CronScheduleError("\(name): '\(part)' is not a value, a range or a step")
                    }
                }
                guard values.allSatisfy(range.contains) else {
                    throw CronScheduleError("\(name): '\(part)' is outside \(range.lowerBound)-\(range.upperBound)")
                }
                guard values.count == 1 || values[0] <= values[1] else {
                    throw CronScheduleError("\(name): the range '\(part)' runs backwards")
                }
                // A single value with a step runs to the end of the field, as in Vixie cron.
                span = values[0]...(values.count == 2 ? values[1] : (pieces.count == 2 ? range.upperBound : values[0]))
            }
            for value in stride(from: span.lowerBound, through: span.upperBound, by: step) {
                bits |= 1 << UInt64(value)
            }
        }
        return bits
    }
}

/// A cron expression that does not parse.
public struct CronScheduleError: Error, Equatable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
