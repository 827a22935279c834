import BatonCore
import Foundation
import Testing

@Suite("Cron schedules: parsing, and the times they name across daylight saving")
struct CronScheduleTests {
    static func date(_ text: String) -> Date { try! Date(text, strategy: .iso8601) }
    static let utc = TimeZone(secondsFromGMT: 0)!
    static let newYork = TimeZone(identifier: "America/New_York")!

    /// The next `count` fire times after `start`, as ISO 8601 in UTC.
    static func fires(_ expression: String, after start: String, in zone: TimeZone = utc, count: Int = 4) throws -> [String] {
        let schedule = try CronSchedule(parsing: expression)
        var times: [String] = []
        var after = Self.date(start)
        for _ in 0..<count {
            guard let next = schedule.nextFire(after: after, in: zone) else { break }
            times.append(next.formatted(.iso8601))
            after = next
        }
        return times
    }

    @Test("steps, ranges, lists and names")
    func fields() throws {
        #expect(try Self.fires("*/15 * * * *", after: "2026-01-01T10:07:00Z")
            == ["2026-01-01T10:15:00Z", "2026-01-01T10:30:00Z", "2026-01-01T10:45:00Z", "2026-01-01T11:00:00Z"])
        #expect(try Self.fires("0 9-17/4 * * mon-fri", after: "2026-01-02T12:00:00Z")  // a Friday
            == ["2026-01-02T13:00:00Z", "2026-01-02T17:00:00Z", "2026-01-05T09:00:00Z", "2026-01-05T13:00:00Z"])
        #expect(try Self.fires("30 6 1,15 Feb,MAR *", after: "2026-01-20T00:00:00Z")
            == ["2026-02-01T06:30:00Z", "2026-02-15T06:30:00Z", "2026-03-01T06:30:00Z", "2026-03-15T06:30:00Z"])
        // 7 is Sunday as well as 0.
        #expect(try Self.fires("0 0 * * 7", after: "2026-01-01T00:00:00Z", count: 2) == ["2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"])
        // A value with a step runs to the end of the field.
        #expect(try Self.fires("50/5 0 * * *", after: "2026-01-01T00:00:00Z", count: 3)
            == ["2026-01-01T00:50:00Z", "2026-01-01T00:55:00Z", "2026-01-02T00:50:00Z"])
    }

    @Test("with both days restricted, a day matches if either does")
    func daysEitherWay() throws {
        // The 13th, and every Friday: January 2026 has Friday the 2nd, 9th and the 13th a Tuesday.
        #expect(try Self.fires("0 12 13 * fri", after: "2026-01-01T00:00:00Z")
            == ["2026-01-02T12:00:00Z", "2026-01-09T12:00:00Z", "2026-01-13T12:00:00Z", "2026-01-16T12:00:00Z"])
        // A day field that starts with `*` does not count as restricted: odd days that are Mondays.
        #expect(try Self.fires("0 12 */2 * mon", after: "2026-01-01T00:00:00Z", count: 3)
            == ["2026-01-05T12:00:00Z", "2026-01-19T12:00:00Z", "2026-02-09T12:00:00Z"])
    }

    @Test("a leap day is found years ahead; a day that never comes is none")
    func rareAndNever() throws {
        #expect(try Self.fires("0 0 29 2 *", after: "2026-03-01T00:00:00Z", count: 2) == ["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"])
        #expect(try CronSchedule(parsing: "0 0 31 2 *").nextFire(after: Self.date("2026-01-01T00:00:00Z"), in: Self.utc) == nil)
    }

    @Test("a local time keeps to the wall clock across daylight saving")
    func wallClock() throws {
        // 09:00 in New York: 14:00 UTC in winter, 13:00 in summer (clocks went forward on 8 March 2026).
        #expect(try Self.fires("0 9 * * *", after: "2026-03-06T00:00:00Z", in: Self.newYork)
            == ["2026-03-06T14:00:00Z", "2026-03-07T14:00:00Z", "2026-03-08T13:00:00Z", "2026-03-09T13:00:00Z"])
    }

    @Test("a time the spring-forward gap skips fires once, when the clock jumps; a repeated time fires once")
    func transitions() throws {
        // 8 March 2026, 02:00 EST (07:00 UTC) became 03:00 EDT: 02:30 fires at the jump.
        #expect(try Self.fires("30 2 * * *", after: "2026-03-07T12:00:00Z", in: Self.newYork)
            == ["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z", "2026-03-10T06:30:00Z", "2026-03-11T06:30:00Z"])
        // 02:30 and 03:00 both land at the jump: one fire.
        #expect(try Self.fires("0,30 2-3 8 3 *", after: "2026-03-08T00:00:00Z", in: Self.newYork, count: 3)
            == ["2026-03-08T07:00:00Z", "2026-03-08T07:30:00Z", "2027-03-08T07:00:00Z"])
        // 1 November 2026, 02:00 EDT (06:00 UTC) went back to 01:00 EST: 01:30 happens twice, fires once.
        #expect(try Self.fires("30 1 * * *", after: "2026-10-31T12:00:00Z", in: Self.newYork, count: 2)
            == ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"])
    }

    @Test("what does not parse says which field and why")
    func errors() {
        for (text, mentions) in [
            ("* * * *", "five fields"), ("60 * * * *", "minute"), ("* 24 * * *", "hour"), ("* * 0 * *", "day of month"),
            ("* * * 13 *", "month"), ("* * * * 8", "day of week"), ("*/0 * * * *", "step"), ("5-1 * * * *", "backwards"),
            ("* * * foo *", "month"), ("1,,2 * * * *", "minute"), ("* * * * * *", "five fields"),
        ] {
            #expect(throws: CronScheduleError.self, "\(text)") { try CronSchedule(parsing: text) }
            do {
                _ = try CronSchedule(parsing: text)
            } catch {
                #expect(error.description.contains(mentions), "\(text): \(error)")
            }
        }
    }
}
