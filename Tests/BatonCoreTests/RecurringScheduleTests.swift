import BatonCore
import Foundation
import Testing

@Suite("Recurring schedules: which slot fires, and when")
struct RecurringScheduleTests {
    static func every(_ period: Int64, overlap: RecurringSchedule.Overlap = .allow, catchUp: RecurringSchedule.CatchUp = .none) -> RecurringSchedule {
        RecurringSchedule(
            name: "report", queue: "q", payload: "{}", rule: .every(milliseconds: period, anchor: 0), overlap: overlap, catchUp: catchUp,
            nextAt: period)
    }

    @Test("an every_ms schedule fires its slot on time and waits for the next")
    func onTime() {
        let schedule = Self.every(1_000)
        #expect(schedule.due(now: 999, previousUnfinished: false) == (nil, 1_000))
        #expect(schedule.due(now: 1_020, previousUnfinished: false) == (1_000, 2_000))
    }

    @Test("after downtime, catch_up none skips the missed slots and latest fires the last of them once")
    func catchUp() {
        let hourly = Self.every(3_600_000)
        let now: Int64 = 5 * 3_600_000 + 120_000  // five slots missed, the last two minutes ago
        #expect(hourly.due(now: now, previousUnfinished: false) == (nil, 6 * 3_600_000))
        var latest = hourly
        latest.catchUp = .latest
        #expect(latest.due(now: now, previousUnfinished: false) == (5 * 3_600_000, 6 * 3_600_000))
        // A slot a little late (within the grace) is on time, whatever catch_up says.
        #expect(hourly.due(now: 3_600_000 + 30_000, previousUnfinished: false) == (3_600_000, 7_200_000))
    }

    @Test("overlap skip enqueues nothing while the previous job is unfinished, and moves on")
    func overlapSkip() {
        let schedule = Self.every(1_000, overlap: .skip)
        #expect(schedule.due(now: 1_000, previousUnfinished: true) == (nil, 2_000))
        #expect(schedule.due(now: 1_000, previousUnfinished: false) == (1_000, 2_000))
    }

    @Test("a minutely cron schedule down for a year finds its latest slot in a bounded walk")
    func longDowntime() throws {
        let cron = try CronSchedule(parsing: "* * * * *")
        let start: Int64 = 1_767_225_600_000  // 2026-01-01T00:00:00Z
        let schedule = RecurringSchedule(
            name: "tick", queue: "q", payload: "{}", rule: .cron(cron, expression: "* * * * *", timeZone: TimeZone(identifier: "UTC")!),
            catchUp: .latest, nextAt: start + 60_000)
        let now = start + 365 * 86_400_000 + 90_000
        let (fire, next) = schedule.due(now: now, previousUnfinished: false)
        #expect(fire == start + 365 * 86_400_000 + 60_000 && next == start + 365 * 86_400_000 + 120_000)
    }

    @Test("a cron schedule's slots follow its time zone")
    func zone() throws {
        let cron = try CronSchedule(parsing: "0 9 * * *")
        let schedule = RecurringSchedule(
            name: "morning", queue: "q", payload: "{}",
            rule: .cron(cron, expression: "0 9 * * *", timeZone: TimeZone(identifier: "Europe/Paris")!))
        // 2026-07-01T00:00:00Z; 09:00 in Paris in summer is 07:00 UTC.
        let midnight: Int64 = 1_782_864_000_000
        let slot = try #require(schedule.slot(after: midnight))
        #expect(slot == midnight + 7 * 3_600_000, "\(slot - midnight)")
    }
}
