import ArgumentParser
import BatonClient
import BatonCore

/// The jobs a bulk `retry`, `cancel` or `purge` changes: a queue's jobs in one state.
struct JobFilter: ParsableArguments {
    @Option(help: "Change every matching job of this queue instead of one job (with --state).")
    var queue: String?

    @Option(help: "The state of the jobs to change.")
    var state: JobState?

    @Option(help: "Only jobs whose last error contains this text.")
    var errorContains: String?

    @Option(help: "Change at most this many jobs.")
    var limit: Int?

    var isGiven: Bool { self.queue != nil }

    /// Checks the filter against one job's id argument: exactly one of the two.
    func validate(job: Int64?, action: BulkChange.Action) throws {
        guard (job == nil) == (self.queue != nil) else {
            throw ValidationError("Give a job's id, or --queue and --state for every matching job.")
        }
        if self.queue != nil, self.state == nil {
            throw ValidationError("--queue needs --state: one of \(action.states.map(\.rawValue).joined(separator: ", ")).")
        }
        if self.queue == nil, self.state != nil || self.errorContains != nil || self.limit != nil {
            throw ValidationError("--state, --error-contains and --limit go with --queue.")
        }
    }

    func change(_ action: BulkChange.Action, reason: String? = nil) -> BulkChange {
        BulkChange(action: action, queue: self.queue!, state: self.state!, errorContains: self.errorContains, limit: self.limit, reason: reason)
    }
}

extension JobState: ExpressibleByArgument {}

extension ConnectionOptions {
    /// Runs a bulk change and prints how many jobs it changed.
    func run(_ change: BulkChange) async throws {
        let result = try await self.withClient { client in try await client.changeJobs(change) }
        if self.json {
            print(#"{"changed":\#(result.changed),"done":\#(result.done)}"#)
        } else {
            print("\(result.changed) \(change.action == .purge ? "purged" : change.action == .retry ? "retried" : "cancelled")"
                + (result.done ? "" : " (batond stopped before the rest)"))
        }
    }
}

struct Cancel: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Cancel an unfinished job, or every matching job of a queue; a running one's worker is told at its next heartbeat."
    )

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The job's id.")
    var job: Int64?

    @OptionGroup var filter: JobFilter

    @Option(help: "Why, stored as the job's last error.")
    var reason: String?

    func validate() throws { try self.filter.validate(job: self.job, action: .cancel) }

    func run() async throws {
        guard let job = self.job else { return try await self.connection.run(self.filter.change(.cancel, reason: self.reason)) }
        let state = try await self.connection.withClient { client in try await client.cancel(job, reason: self.reason) }
        self.connection.report(state, of: job)
    }
}

struct Purge: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Delete a queue's finished jobs in one state, with their audit trails.")

    @OptionGroup var connection: ConnectionOptions

    @OptionGroup var filter: JobFilter

    func validate() throws {
        guard self.filter.isGiven else { throw ValidationError("Give --queue and --state: the finished jobs to delete.") }
        try self.filter.validate(job: nil, action: .purge)
    }

    func run() async throws {
        try await self.connection.run(self.filter.change(.purge))
    }
}

struct Pause: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Hold a job back; a running one's worker is told at its next heartbeat and gets its attempt back."
    )

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The job's id.")
    var job: Int64

    func run() async throws {
        let state = try await self.connection.withClient { client in try await client.pause(self.job) }
        self.connection.report(state, of: self.job)
    }
}

struct Resume: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Let a paused job run again, from its checkpoint.")

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The job's id.")
    var job: Int64

    func run() async throws {
        let state = try await self.connection.withClient { client in try await client.resume(self.job) }
        self.connection.report(state, of: self.job)
    }
}

struct Retry: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a failed or cancelled job again, attempts reset; or every matching job of a queue."
    )

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The job's id.")
    var job: Int64?

    @OptionGroup var filter: JobFilter

    func validate() throws { try self.filter.validate(job: self.job, action: .retry) }

    func run() async throws {
        guard let job = self.job else { return try await self.connection.run(self.filter.change(.retry)) }
        let state = try await self.connection.withClient { client in try await client.retry(job) }
        self.connection.report(state, of: job)
    }
}

struct SetPriority: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set-priority", abstract: "Give an unfinished job a new priority; a running one keeps it for its next attempt."
    )

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The job's id.")
    var job: Int64

    @Option(parsing: .unconditional, help: "The new priority; higher is claimed first.")
    var priority: Int32

    func run() async throws {
        let state = try await self.connection.withClient { client in try await client.setPriority(self.job, to: Int64(self.priority)) }
        self.connection.report(state, of: self.job)
    }
}

struct PauseQueue: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pause-queue", abstract: "Stop claims from a queue; running jobs finish normally."
    )

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The queue.")
    var queue: String

    func run() async throws {
        try await self.connection.withClient { client in try await client.pauseQueue(self.queue) }
    }
}

struct ResumeQueue: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "resume-queue", abstract: "Let claims take from a queue again.")

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The queue.")
    var queue: String

    func run() async throws {
        try await self.connection.withClient { client in try await client.resumeQueue(self.queue) }
    }
}

struct SetQueue: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set-queue",
        abstract: "Change a queue's settings: how many of its jobs run at once, how long each attempt may run.",
        discussion: "Settings left out stay as they are."
    )

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The queue.")
    var queue: String

    @Option(help: "The most jobs that may run at once.")
    var maxRunning: Int?

    @Flag(help: "Remove the queue's limit on running jobs.")
    var noLimit = false

    @Option(help: "Stop (and retry) an attempt that runs longer than this, for jobs that set no time limit of their own.")
    var timeoutMs: Int64?

    @Flag(help: "Remove the queue's time limit.")
    var noTimeout = false

    @OptionGroup var breaker: BreakerOptions

    func validate() throws {
        guard !(self.maxRunning != nil && self.noLimit), !(self.timeoutMs != nil && self.noTimeout) else {
            throw ValidationError("Give --max-running N or --no-limit, and --timeout-ms N or --no-timeout, not both.")
        }
        guard self.maxRunning != nil || self.noLimit || self.timeoutMs != nil || self.noTimeout || self.breaker.change != nil else {
            throw ValidationError("Give a setting to change: --max-running, --no-limit, --timeout-ms, --no-timeout, --breaker-… or --no-breaker.")
        }
    }

    func run() async throws {
        var change = QueueSettings.Change()
        if self.maxRunning != nil || self.noLimit { change.maxRunning = .some(self.maxRunning) }
        if self.timeoutMs != nil || self.noTimeout { change.timeoutMilliseconds = .some(self.timeoutMs) }
        change.breaker = self.breaker.change
        _ = try await self.connection.withClient { client in try await client.setQueue(self.queue, change) }
    }
}

/// A circuit breaker's flags, for a queue (`set-queue`) or a named limit (`set-limit`).
struct BreakerOptions: ParsableArguments {
    @Option(help: "Open the circuit breaker after this many failed attempts (with --breaker-window-ms and --breaker-cooldown-ms).")
    var breakerFailures: Int?

    @Option(help: "The window those failures must fall in, in milliseconds.")
    var breakerWindowMs: Int64?

    @Option(help: "How long an open breaker holds its jobs back before its trial, in milliseconds.")
    var breakerCooldownMs: Int64?

    @Flag(help: "Remove the circuit breaker.")
    var noBreaker = false

    func validate() throws {
        let parts = [self.breakerFailures != nil, self.breakerWindowMs != nil, self.breakerCooldownMs != nil].filter { $0 }.count
        guard parts == 0 || parts == 3, !(parts == 3 && self.noBreaker) else {
            throw ValidationError("Give all three of --breaker-failures, --breaker-window-ms and --breaker-cooldown-ms, or --no-breaker.")
        }
    }

    /// The change the flags ask for: `nil` for none, `.some(nil)` to remove the breaker.
    var change: CircuitBreaker.Settings?? {
        if self.noBreaker { return .some(nil) }
        guard let failures = self.breakerFailures, let window = self.breakerWindowMs, let cooldown = self.breakerCooldownMs else { return nil }
        return .some(CircuitBreaker.Settings(failures: failures, windowMilliseconds: window, cooldownMilliseconds: cooldown))
    }
}

extension ConnectionOptions {
    /// Prints a job's state after a change: `12 cancelled`, or `{"job":12,"state":"cancelled"}`.
    func report(_ state: JobState, of job: Int64) {
        print(self.json ? #"{"job":\#(job),"state":"\#(state.rawValue)"}"# : "\(job) \(state.rawValue)")
    }
}
