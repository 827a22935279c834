import ArgumentParser
import BatonClient
import BatonCore
import BatonProtocol
import Foundation

extension RecurringSchedule.Overlap: ExpressibleByArgument {}
extension RecurringSchedule.CatchUp: ExpressibleByArgument {}

struct Schedule: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create or replace a recurring job: a job enqueued at each slot of a cron expression or a period.",
        discussion: "Prints the next slot. Each slot fires at most once, across restarts and hosts."
    )

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The schedule's name.")
    var name: String

    @Argument(help: "The queue its jobs go to.")
    var queue: String

    @Argument(help: "The jobs' payload, as JSON.")
    var payload: String

    @Option(help: "A five-field cron expression: minute hour day-of-month month day-of-week.")
    var cron: String?

    @Option(help: "The IANA time zone the cron expression is read in (default UTC).")
    var timezone: String?

    @Option(help: "A slot every this many milliseconds, instead of --cron.")
    var everyMs: Int64?

    @Option(help: "skip: no job for a slot while the last one is unfinished; allow (default): always.")
    var overlap: RecurringSchedule.Overlap = .allow

    @Option(help: "After downtime, none (default): skip the missed slots; latest: fire the latest once.")
    var catchUp: RecurringSchedule.CatchUp = .none

    @Option(help: "The jobs' priority.")
    var priority: Int32 = 0

    func validate() throws {
        guard (self.cron == nil) != (self.everyMs == nil) else { throw ValidationError("Give either --cron or --every-ms.") }
        if self.timezone != nil, self.cron == nil { throw ValidationError("--timezone goes with --cron.") }
    }

    func run() async throws {
        let payload = try parseJSON(self.payload, what: "the payload")
        let rule: ScheduleRule = if let cron = self.cron { .cron(cron, timeZone: self.timezone ?? "UTC") } else { .every(.milliseconds(self.everyMs!)) }
        let next = try await self.connection.withClient { client in
            try await client.schedule(
                self.name, queue: self.queue, payload: payload, rule: rule, priority: self.priority, overlap: self.overlap,
                catchUp: self.catchUp)
        }
        if self.connection.json {
            print(#"{"name":\#(JSONValue.string(self.name).jsonText),"next_at":\#(next.map(String.init) ?? "null")}"#)
        } else {
            print("\(self.name) next \(next.map(Schedules.timestamp) ?? "never")")
        }
    }
}

struct Unschedule: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Delete a recurring job; the jobs it enqueued stay.")

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The schedule's name.")
    var name: String

    func run() async throws {
        let removed = try await self.connection.withClient { client in try await client.unschedule(self.name) }
        guard removed else {
            printError("baton: no schedule \(self.name)")
            throw ExitCode(1)
        }
    }
}

struct Schedules: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the recurring jobs, with each one's next slot.")

    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        let schedules = try await self.connection.withClient { client in try await client.schedules() }
        if self.connection.json {
            for schedule in schedules {
                var writer = JSONWriter()
                writer.beginObject()
                writer.member("name", schedule.name)
                writer.member("queue", schedule.queue)
                writer.member("rule", Self.rule(schedule.rule))
                writer.member("overlap", schedule.overlap.rawValue)
                writer.member("catch_up", schedule.catchUp.rawValue)
                writer.member("next_at", optional: schedule.nextAt)
                writer.member("last_job", optional: schedule.lastJob)
                writer.endObject()
                print(String(decoding: writer.bytes, as: UTF8.self))
            }
            return
        }
        var rows = [["NAME", "QUEUE", "RULE", "OVERLAP", "CATCH-UP", "NEXT", "LAST JOB"]]
        for schedule in schedules {
            rows.append([
                schedule.name, schedule.queue, Self.rule(schedule.rule), schedule.overlap.rawValue, schedule.catchUp.rawValue,
                schedule.nextAt.map(Self.timestamp) ?? "never", schedule.lastJob.map(String.init) ?? "-",
            ])
        }
        print(Stats.render(rows))
    }

    static func rule(_ rule: ScheduleRule) -> String {
        switch rule {
        case .cron(let expression, let zone): "cron \(expression) (\(zone))"
        case .every(let period): "every \(period.components.seconds * 1_000 + period.components.attoseconds / 1_000_000_000_000_000) ms"
        }
    }

    static func timestamp(_ milliseconds: Int64) -> String {
        Date(timeIntervalSince1970: Double(milliseconds) / 1_000).formatted(.iso8601.year().month().day().time(includingFractionalSeconds: false))
    }
}
