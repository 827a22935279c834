import ArgumentParser
import BatonClient
import BatonCore
import BatonProtocol

struct SetLimit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set-limit",
        abstract: "Create or change a named limit that jobs of any queue count against (enqueue --limit NAME).",
        discussion: """
            A name ending in ':*' is a template: 'tenant:*' gives each name starting with 'tenant:' a limit of its own. \
            Settings left out stay as they are; a limit left with none is removed.
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The limit's name, or a template such as 'tenant:*'.")
    var name: String

    @Option(help: "The most jobs naming it that may run at once, in any queue.")
    var maxRunning: Int?

    @Flag(help: "Remove the limit on running jobs.")
    var noMaxRunning = false

    @Option(help: "The most jobs naming it that may start in any span of --per-ms milliseconds.")
    var rate: Int?

    @Option(help: "The span of the rate, in milliseconds.")
    var perMs: Int64?

    @Flag(help: "Remove the rate.")
    var noRate = false

    @OptionGroup var breaker: BreakerOptions

    func validate() throws {
        guard (self.rate == nil) == (self.perMs == nil) else { throw ValidationError("Give --rate N and --per-ms MS together.") }
        guard !(self.maxRunning != nil && self.noMaxRunning), !(self.rate != nil && self.noRate) else {
            throw ValidationError("Give --max-running N or --no-max-running, and --rate N --per-ms MS or --no-rate, not both.")
        }
        guard self.maxRunning != nil || self.noMaxRunning || self.rate != nil || self.noRate || self.breaker.change != nil else {
            throw ValidationError("Give a setting to change: --max-running, --no-max-running, --rate with --per-ms, --no-rate, --breaker-… or --no-breaker.")
        }
    }

    func run() async throws {
        var change = LimitSettings.Change()
        if self.maxRunning != nil || self.noMaxRunning { change.maxRunning = .some(self.maxRunning) }
        if let rate = self.rate, let per = self.perMs {
            change.rate = .some(LimitSettings.Rate(count: rate, perMilliseconds: per))
        } else if self.noRate {
            change.rate = .some(nil)
        }
        change.breaker = self.breaker.change
        _ = try await self.connection.withClient { client in try await client.setLimit(self.name, change) }
    }
}

struct Limits: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the named limits: those set, and the names jobs use, with their running jobs and rate use."
    )

    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        let limits = try await self.connection.withClient { client in try await client.limits() }
        if self.connection.json {
            for limit in limits {
                var writer = JSONWriter()
                writer.beginObject()
                writer.member("name", limit.name)
                writer.member("rule", optional: limit.rule)
                writer.member("max_running", optional: limit.settings.maxRunning.map { Int64($0) })
                writer.member("rate_count", optional: limit.settings.rate.map { Int64($0.count) })
                writer.member("rate_per_ms", optional: limit.settings.rate?.perMilliseconds)
                writer.member("running", Int64(limit.running))
                writer.member("started_in_window", Int64(limit.startedInWindow))
                writer.member("holding", limit.holding)
                writer.member("waiting", Int64(limit.waiting))
                writer.member("breaker", optional: limit.breakerState)
                writer.endObject()
                print(String(decoding: writer.bytes, as: UTF8.self))
            }
            return
        }
        print(limits.isEmpty ? "no limits" : Stats.render(Self.rows(limits[...])))
    }

    /// A table of limits: running jobs against `max_running`, starts in the window against the rate.
    static func rows(_ limits: ArraySlice<LimitInfo>) -> [[String]] {
        var rows = [["LIMIT", "RULE", "RUNNING", "WAITING", "RATE", "BREAKER", "HOLDING"]]
        for limit in limits {
            let running = limit.settings.maxRunning.map { "\(limit.running)/\($0)" } ?? "\(limit.running)"
            let rate = limit.settings.rate.map { "\(limit.startedInWindow)/\($0.count) per \($0.perMilliseconds) ms" } ?? "-"
            let breaker = limit.breakerState.map { $0 == "half_open" ? "half-open" : $0 } ?? "-"
            rows.append([limit.name, limit.rule ?? "-", running, "\(limit.waiting)", rate, breaker, limit.holding ? "yes" : "no"])
        }
        return rows
    }
}
